#include "router/instance_stats.h"

#include <gtest/gtest.h>

namespace llmpool::router {
namespace {

using namespace std::chrono_literals;

class InstanceStatsTest : public ::testing::Test {
 protected:
  InstanceStatsOptions options() {
    InstanceStatsOptions o;
    o.ewma_alpha = 0.5;
    o.window_size = 20;
    o.max_sample_age = 60s;
    o.min_samples = 5;
    o.slow_p95_ms = 1000;
    o.recover_ratio = 0.8;
    o.breaker = {2, 10s};
    return o;
  }
  void run(InstanceStats& s, double ms, int times = 1) {
    for (int i = 0; i < times; ++i) {
      ASSERT_TRUE(s.breaker().allow());
      s.on_start();
      s.on_success(ms);
    }
  }
  qos::ManualClock clock_;
};

TEST_F(InstanceStatsTest, QuantileUsesNearestRank) {
  EXPECT_DOUBLE_EQ(quantile({}, 0.95), 0.0);
  EXPECT_DOUBLE_EQ(quantile({5}, 0.95), 5.0);
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(quantile(v, 0.95), 95.0);
  EXPECT_DOUBLE_EQ(quantile(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(quantile(v, 1.0), 100.0);
}

TEST_F(InstanceStatsTest, TracksEwmaAndWindowedP95) {
  InstanceStats s("a", options(), clock_);
  run(s, 100);
  run(s, 300);
  auto snap = s.snapshot();
  EXPECT_DOUBLE_EQ(snap.ewma_ms, 200.0);  // 0.5 * 300 + 0.5 * 100
  EXPECT_DOUBLE_EQ(snap.p95_ms, 300.0);
  EXPECT_EQ(snap.samples, 2u);
  EXPECT_EQ(snap.id, "a");
}

TEST_F(InstanceStatsTest, WindowIsBounded) {
  InstanceStats s("a", options(), clock_);
  run(s, 5000, 5);
  run(s, 10, 20);  // pushes the slow ones out of the 20-sample window
  auto snap = s.snapshot();
  EXPECT_EQ(snap.samples, 20u);
  EXPECT_DOUBLE_EQ(snap.p95_ms, 10.0);
}

TEST_F(InstanceStatsTest, CountsAttemptsInFlight) {
  InstanceStats s("a", options(), clock_);
  s.on_start();
  s.on_start();
  EXPECT_EQ(s.snapshot().in_flight, 2);
  s.on_cancelled();
  EXPECT_EQ(s.snapshot().in_flight, 1);
  s.on_success(10);
  EXPECT_EQ(s.snapshot().in_flight, 0);
}

TEST_F(InstanceStatsTest, FailuresLowerSuccessRateAndOpenTheBreaker) {
  InstanceStats s("a", options(), clock_);
  s.on_start();
  s.on_failure();
  s.on_start();
  s.on_failure();
  auto snap = s.snapshot();
  EXPECT_NEAR(snap.success_rate, 0.81, 1e-9);
  EXPECT_EQ(snap.breaker, qos::BreakerState::kOpen);
  EXPECT_FALSE(snap.breaker_allows);
}

TEST_F(InstanceStatsTest, TimeoutLatencyJoinsTheWindow) {
  InstanceStats s("a", options(), clock_);
  s.on_start();
  s.on_failure(30000);
  EXPECT_DOUBLE_EQ(s.snapshot().p95_ms, 30000.0);
}

TEST_F(InstanceStatsTest, FeedbackMovesQualityFromThePrior) {
  auto o = options();
  o.quality_alpha = 0.5;
  InstanceStats s("a", o, clock_);
  EXPECT_DOUBLE_EQ(s.snapshot().quality, 0.5);
  s.record_feedback(true);
  EXPECT_DOUBLE_EQ(s.snapshot().quality, 0.75);
  s.record_feedback(false);
  EXPECT_DOUBLE_EQ(s.snapshot().quality, 0.375);
  EXPECT_EQ(s.snapshot().feedback, 2);
}

TEST_F(InstanceStatsTest, SlowP95ExcludesOnlyWithEnoughSamples) {
  InstanceStats s("a", options(), clock_);
  run(s, 2000, 4);
  EXPECT_FALSE(s.snapshot().slow_excluded);  // 4 < min_samples
  run(s, 2000);
  EXPECT_TRUE(s.snapshot().slow_excluded);
}

TEST_F(InstanceStatsTest, SlowExclusionHasHysteresis) {
  InstanceStats s("a", options(), clock_);
  run(s, 2000, 5);
  ASSERT_TRUE(s.snapshot().slow_excluded);
  run(s, 900, 20);  // p95 900: below the threshold but above 0.8 * 1000
  EXPECT_TRUE(s.snapshot().slow_excluded);
  run(s, 700, 20);  // p95 700 <= 800: recovered
  EXPECT_FALSE(s.snapshot().slow_excluded);
  run(s, 900, 20);  // 900 again: not above 1000, so it stays included
  EXPECT_FALSE(s.snapshot().slow_excluded);
}

TEST_F(InstanceStatsTest, ExcludedInstanceRecoversWhenItsSamplesAgeOut) {
  InstanceStats s("a", options(), clock_);
  run(s, 2000, 5);
  ASSERT_TRUE(s.snapshot().slow_excluded);
  clock_.advance(59s);
  EXPECT_TRUE(s.snapshot().slow_excluded);
  clock_.advance(2s);
  auto snap = s.snapshot();
  EXPECT_EQ(snap.samples, 0u);
  EXPECT_FALSE(snap.slow_excluded);
  EXPECT_GT(snap.ewma_ms, 0.0);  // the EWMA remembers
}

TEST_F(InstanceStatsTest, ZeroThresholdDisablesSlowExclusion) {
  auto o = options();
  o.slow_p95_ms = 0;
  InstanceStats s("a", o, clock_);
  run(s, 1e7, 10);
  EXPECT_FALSE(s.snapshot().slow_excluded);
}

TEST_F(InstanceStatsTest, ReportsBreakerTransitions) {
  std::vector<std::string> seen;
  InstanceStats s("a", options(), clock_, [&](qos::BreakerState, qos::BreakerState to) {
    seen.push_back(qos::breaker_state_name(to));
  });
  s.on_start();
  s.on_failure();
  s.on_start();
  s.on_failure();
  EXPECT_EQ(seen, std::vector<std::string>{"open"});
}

}  // namespace
}  // namespace llmpool::router
