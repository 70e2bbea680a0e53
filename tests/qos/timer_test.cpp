#include "qos/timer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <vector>

namespace llmpool::qos {
namespace {

using namespace std::chrono_literals;

class ManualTimerTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  ManualTimer timer_{clock_};
  std::vector<std::string> log_;
};

TEST_F(ManualTimerTest, RunsCallbacksInDueOrderAtTheirDueTime) {
  auto t0 = clock_.now();
  std::vector<Clock::Duration> seen;
  timer_.schedule_after(30ms, [&] { log_.push_back("c"); seen.push_back(clock_.now() - t0); });
  timer_.schedule_after(10ms, [&] { log_.push_back("a"); seen.push_back(clock_.now() - t0); });
  timer_.schedule_after(10ms, [&] { log_.push_back("b"); seen.push_back(clock_.now() - t0); });
  EXPECT_EQ(timer_.advance(9ms), 0u);
  EXPECT_EQ(timer_.advance(100ms), 3u);
  EXPECT_EQ(log_, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(seen, (std::vector<Clock::Duration>{10ms, 10ms, 30ms}));
  EXPECT_EQ(clock_.now() - t0, 109ms);
}

TEST_F(ManualTimerTest, CancelledCallbacksNeverRun) {
  auto id = timer_.schedule_after(5ms, [&] { log_.push_back("x"); });
  EXPECT_TRUE(timer_.cancel(id));
  EXPECT_FALSE(timer_.cancel(id));
  timer_.advance(10ms);
  EXPECT_TRUE(log_.empty());
}

TEST_F(ManualTimerTest, CallbacksMayScheduleMoreWork) {
  timer_.schedule_after(5ms, [&] {
    log_.push_back("first");
    timer_.schedule_after(5ms, [&] { log_.push_back("second"); });
  });
  EXPECT_EQ(timer_.advance(10ms), 2u);
  EXPECT_EQ(log_, (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(timer_.pending(), 0u);
}

TEST(ThreadTimerTest, RunsAfterTheDelayAndHonoursCancel) {
  ThreadTimer timer;
  std::promise<void> fired;
  std::atomic<bool> cancelled_ran{false};
  auto id = timer.schedule_after(std::chrono::milliseconds(50), [&] { cancelled_ran = true; });
  timer.schedule_after(std::chrono::milliseconds(1), [&] { fired.set_value(); });
  EXPECT_TRUE(timer.cancel(id));
  EXPECT_EQ(fired.get_future().wait_for(5s), std::future_status::ready);
  std::this_thread::sleep_for(80ms);
  EXPECT_FALSE(cancelled_ran.load());
}

TEST(ThreadTimerTest, DestructionDropsPendingCallbacks) {
  std::atomic<bool> ran{false};
  {
    ThreadTimer timer;
    timer.schedule_after(std::chrono::hours(1), [&] { ran = true; });
  }
  EXPECT_FALSE(ran.load());
}

}  // namespace
}  // namespace llmpool::qos
