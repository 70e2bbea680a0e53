#include "qos/circuit_breaker.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace llmpool::qos {
namespace {

using namespace std::chrono_literals;

class CircuitBreakerTest : public ::testing::Test {
 protected:
  CircuitBreakerTest()
      : breaker_({3, 10s}, clock_, [this](BreakerState from, BreakerState to) {
          transitions_.push_back(std::string(breaker_state_name(from)) + "->" + breaker_state_name(to));
        }) {}

  void fail(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(breaker_.allow());
      breaker_.record_failure();
    }
  }

  ManualClock clock_;
  std::vector<std::string> transitions_;
  CircuitBreaker breaker_;
};

TEST_F(CircuitBreakerTest, StartsClosedAndAllows) {
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
  EXPECT_TRUE(breaker_.allow());
  EXPECT_TRUE(breaker_.would_allow());
}

TEST_F(CircuitBreakerTest, OpensAfterConsecutiveFailures) {
  fail(2);
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker_.consecutive_failures(), 2);
  fail(1);
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.allow());
  EXPECT_FALSE(breaker_.would_allow());
  EXPECT_EQ(transitions_, std::vector<std::string>{"closed->open"});
  EXPECT_EQ(breaker_.times_opened(), 1);
}

TEST_F(CircuitBreakerTest, SuccessResetsTheFailureCount) {
  fail(2);
  ASSERT_TRUE(breaker_.allow());
  breaker_.record_success();
  fail(2);
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
}

TEST_F(CircuitBreakerTest, HalfOpensAfterCooldownAndAdmitsOneProbe) {
  fail(3);
  clock_.advance(9999ms);
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  EXPECT_FALSE(breaker_.allow());
  clock_.advance(1ms);
  EXPECT_EQ(breaker_.state(), BreakerState::kHalfOpen);
  EXPECT_TRUE(breaker_.would_allow());
  EXPECT_TRUE(breaker_.allow());    // the probe
  EXPECT_FALSE(breaker_.allow());   // only one at a time
  EXPECT_FALSE(breaker_.would_allow());
  EXPECT_EQ(transitions_, (std::vector<std::string>{"closed->open", "open->half_open"}));
}

TEST_F(CircuitBreakerTest, ProbeSuccessCloses) {
  fail(3);
  clock_.advance(10s);
  ASSERT_TRUE(breaker_.allow());
  breaker_.record_success();
  EXPECT_EQ(breaker_.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker_.consecutive_failures(), 0);
  EXPECT_TRUE(breaker_.allow());
  EXPECT_TRUE(breaker_.allow());
  EXPECT_EQ(transitions_, (std::vector<std::string>{"closed->open", "open->half_open", "half_open->closed"}));
}

TEST_F(CircuitBreakerTest, ProbeFailureReopensAndRestartsCooldown) {
  fail(3);
  clock_.advance(10s);
  ASSERT_TRUE(breaker_.allow());
  breaker_.record_failure();
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  EXPECT_EQ(breaker_.times_opened(), 2);
  clock_.advance(5s);
  EXPECT_FALSE(breaker_.allow());
  clock_.advance(5s);
  EXPECT_TRUE(breaker_.allow());
}

TEST_F(CircuitBreakerTest, CancelledProbeFreesTheSlotWithoutChangingState) {
  fail(3);
  clock_.advance(10s);
  ASSERT_TRUE(breaker_.allow());
  breaker_.record_cancelled();
  EXPECT_EQ(breaker_.state(), BreakerState::kHalfOpen);
  EXPECT_TRUE(breaker_.allow());
}

TEST_F(CircuitBreakerTest, LostProbeIsForgottenAfterAnotherCooldown) {
  fail(3);
  clock_.advance(10s);
  ASSERT_TRUE(breaker_.allow());
  clock_.advance(9s);
  EXPECT_FALSE(breaker_.allow());
  clock_.advance(1s);
  EXPECT_TRUE(breaker_.would_allow());
  EXPECT_TRUE(breaker_.allow());
}

TEST_F(CircuitBreakerTest, StragglersWhileOpenAreIgnored) {
  ASSERT_TRUE(breaker_.allow());  // starts before the breaker opens
  fail(3);
  breaker_.record_success();      // the straggler reports late
  EXPECT_EQ(breaker_.state(), BreakerState::kOpen);
  breaker_.record_failure();
  EXPECT_EQ(breaker_.times_opened(), 1);
}

TEST_F(CircuitBreakerTest, StateNamesMatchMetrics) {
  EXPECT_STREQ(breaker_state_name(BreakerState::kClosed), "closed");
  EXPECT_STREQ(breaker_state_name(BreakerState::kOpen), "open");
  EXPECT_STREQ(breaker_state_name(BreakerState::kHalfOpen), "half_open");
}

TEST_F(CircuitBreakerTest, ThresholdBelowOneActsAsOne) {
  CircuitBreaker b({0, 1s}, clock_);
  ASSERT_TRUE(b.allow());
  b.record_failure();
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST_F(CircuitBreakerTest, ConcurrentCallersGetExactlyOneProbe) {
  fail(3);
  clock_.advance(10s);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i)
        if (breaker_.allow()) admitted.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 1);
}

}  // namespace
}  // namespace llmpool::qos
