#include "router/decision_log.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace llmpool::router {
namespace {

using namespace std::chrono_literals;

class DecisionLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("llmpool-decision-log-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

  std::filesystem::path dir_;
};

TEST_F(DecisionLogTest, CreatesItsFolderAppendsAndFlushesOnDestruction) {
  std::string path = (dir_ / "sub" / "log.jsonl").string();
  {
    DecisionLog::Options o;
    o.flush_interval = 1h;  // only flush() and the destructor write
    auto log = DecisionLog::open(path, o);
    ASSERT_TRUE(log.is_ok()) << log.status().message();
    (*log)->append("{\"a\":1}");
    (*log)->append("{\"a\":2}");
    EXPECT_EQ(lines(path).size(), 0u);  // buffered, not written yet
    (*log)->flush();
    EXPECT_EQ(lines(path), (std::vector<std::string>{"{\"a\":1}", "{\"a\":2}"}));
    EXPECT_EQ((*log)->written(), 2);
    (*log)->append("{\"a\":3}");
  }
  EXPECT_EQ(lines(path).size(), 3u);
  // A second log on the same file appends.
  auto again = DecisionLog::open(path);
  ASSERT_TRUE(again.is_ok());
  (*again)->append("{\"a\":4}");
  (*again)->flush();
  EXPECT_EQ(lines(path).back(), "{\"a\":4}");
}

TEST_F(DecisionLogTest, TheWriterThreadWritesWithoutBeingAsked) {
  std::string path = (dir_ / "log.jsonl").string();
  DecisionLog::Options o;
  o.flush_interval = 10ms;
  auto log = DecisionLog::open(path, o);
  ASSERT_TRUE(log.is_ok());
  (*log)->append("x");
  for (int i = 0; i < 500 && (*log)->written() < 1; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(lines(path), std::vector<std::string>{"x"});
}

TEST_F(DecisionLogTest, LinesPastTheBufferLimitAreDroppedAndCounted) {
  std::string path = (dir_ / "log.jsonl").string();
  DecisionLog::Options o;
  o.flush_interval = 1h;
  o.flush_bytes = 1 << 20;
  o.max_buffer = 10;
  auto log = DecisionLog::open(path, o);
  ASSERT_TRUE(log.is_ok());
  (*log)->append("12345");    // 6 bytes with the newline
  (*log)->append("6789abc");  // would pass 10: dropped
  EXPECT_EQ((*log)->dropped(), 1);
  (*log)->flush();
  EXPECT_EQ(lines(path), std::vector<std::string>{"12345"});
}

TEST_F(DecisionLogTest, ConcurrentAppendsKeepWholeLines) {
  std::string path = (dir_ / "log.jsonl").string();
  DecisionLog::Options o;
  o.flush_interval = 1ms;
  o.flush_bytes = 64;
  {
    auto log = DecisionLog::open(path, o);
    ASSERT_TRUE(log.is_ok());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 250; ++i) (*log)->append("thread " + std::to_string(t) + " line " + std::to_string(i));
      });
    for (auto& th : threads) th.join();
  }
  auto all = lines(path);
  ASSERT_EQ(all.size(), 1000u);
  for (const auto& l : all) EXPECT_EQ(l.rfind("thread ", 0), 0u) << l;
}

TEST_F(DecisionLogTest, AFileThatCannotBeOpenedIsUnavailable) {
  auto log = DecisionLog::open("/proc/llmpool-no/log.jsonl");
  ASSERT_FALSE(log.is_ok());
  EXPECT_EQ(log.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(log.status().message().find("/proc/llmpool-no/log.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace llmpool::router
