#include "providers/io_loop.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <thread>

namespace llmpool {
namespace {

TEST(IoLoopTest, AThreadIsMarkedWithALoopForAScopeAndNested) {
  EXPECT_EQ(current_io_loop(), nullptr);
  auto a = std::make_shared<IoLoop>();
  auto b = std::make_shared<IoLoop>();
  {
    ScopedIoLoop mark_a(a);
    EXPECT_EQ(current_io_loop(), a);
    {
      ScopedIoLoop mark_b(b);
      EXPECT_EQ(current_io_loop(), b);
    }
    EXPECT_EQ(current_io_loop(), a);
    std::thread other([] { EXPECT_EQ(current_io_loop(), nullptr); });  // per thread
    other.join();
  }
  EXPECT_EQ(current_io_loop(), nullptr);
}

TEST(IoLoopTest, ShutdownDestroysWhatIsStillPendingAndCloseIsSeen) {
  auto loop = std::make_shared<IoLoop>();
  EXPECT_TRUE(loop->open());
  auto held = std::make_shared<int>(1);
  boost::asio::post(loop->context(), [held] {});  // never run
  EXPECT_EQ(held.use_count(), 2);
  loop->close();
  EXPECT_FALSE(loop->open());
  loop->shutdown();
  EXPECT_EQ(held.use_count(), 1);
}

}  // namespace
}  // namespace llmpool
