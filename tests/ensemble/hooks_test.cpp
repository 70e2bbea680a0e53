#include "ensemble/hooks.h"

#include <gtest/gtest.h>

#include <optional>

#include "fake_provider.h"
#include "router/instance_stats.h"  // the real health::InstanceHealth the router plugs in

namespace llmpool::ensemble {
namespace {

using namespace std::chrono_literals;
using testing::answer;
using testing::failure;
using testing::FakeProvider;
using testing::stall;

class AttemptHooksTest : public ::testing::Test {
 protected:
  AttemptHooksTest() {
    RunnerOptions o;
    o.judge_prompt_path = "";
    runner_ = EnsembleRunner::create(o, clock_, timer_).value();
    router::InstanceStatsOptions so;
    so.breaker = {2, 10s};
    a_stats_ = std::make_shared<router::InstanceStats>("a#0", so, clock_);
    b_stats_ = std::make_shared<router::InstanceStats>("b#0", so, clock_);
  }

  // Runs FASTEST over a then b and returns the model that answered, or the error.
  Result<std::string> run_once(std::shared_ptr<qos::RetryBudget> budget = nullptr) {
    RunInput in;
    in.providers = {a_, b_};
    AttemptHooks h = instance_hooks({a_stats_, b_stats_}, budget);
    in.admit = h.admit;
    in.on_attempt_end = h.on_attempt_end;
    std::optional<Result<EnsembleResult>> out;
    runner_->run(std::move(in), [&](Result<EnsembleResult> r) { out.emplace(std::move(r)); });
    timer_.advance(1s);
    if (!out) return Status::internal("no result");
    if (!*out) return out->status();
    return (*out)->model;
  }

  qos::ManualClock clock_;
  qos::ManualTimer timer_{clock_};
  std::unique_ptr<EnsembleRunner> runner_;
  std::shared_ptr<router::InstanceStats> a_stats_, b_stats_;
  std::shared_ptr<FakeProvider> a_, b_;
};

TEST_F(AttemptHooksTest, FailingInstanceIsRoutedAroundAndRecoversThroughHalfOpen) {
  a_ = std::make_shared<FakeProvider>(
      "a", timer_,
      std::vector<testing::Script>{failure(Status::unavailable("down"), 10), failure(Status::unavailable("down"), 10),
                                   answer("back", 10)});
  b_ = std::make_shared<FakeProvider>("b", timer_, std::vector<testing::Script>{answer("from b", 10)});

  EXPECT_EQ(*run_once(), "b");  // a fails, b answers as the fallback
  EXPECT_EQ(*run_once(), "b");  // a fails again: its breaker opens
  EXPECT_EQ(a_stats_->breaker().state(), qos::BreakerState::kOpen);
  EXPECT_EQ(a_->calls(), 2);
  EXPECT_EQ(*run_once(), "b");  // a is skipped without a call
  EXPECT_EQ(a_->calls(), 2);

  clock_.advance(10s);          // the cooldown passes: a half-open probe
  EXPECT_EQ(*run_once(), "a");
  EXPECT_EQ(a_->calls(), 3);
  EXPECT_EQ(a_stats_->breaker().state(), qos::BreakerState::kClosed);
  EXPECT_EQ(a_stats_->snapshot().in_flight, 0);
  EXPECT_EQ(b_stats_->snapshot().in_flight, 0);
}

TEST_F(AttemptHooksTest, RetryBudgetRefusesFallbacksButNotPrimaries) {
  a_ = std::make_shared<FakeProvider>("a", timer_,
                                      std::vector<testing::Script>{failure(Status::unavailable("down"), 10)});
  b_ = std::make_shared<FakeProvider>("b", timer_, std::vector<testing::Script>{answer("from b", 10)});
  auto budget = std::make_shared<qos::RetryBudget>(qos::RetryBudgetOptions{0.0, 0.1, 10s, 10}, clock_);  // one retry
  EXPECT_EQ(*run_once(budget), "b");
  auto second = run_once(budget);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.status().message(), "every provider failed (1 attempt); last error: down");
  EXPECT_EQ(b_->calls(), 1);
}

TEST_F(AttemptHooksTest, QuickFailuresStayOutOfTheLatencyWindowButTimeoutsCount) {
  auto h = instance_hooks({a_stats_});
  ASSERT_TRUE(h.admit(0, AttemptKind::kPrimary));
  AttemptRecord rec;
  rec.provider = 0;
  rec.outcome = AttemptOutcome::kFailure;
  rec.status = Status::unavailable("503");
  rec.latency_ms = 3;
  h.on_attempt_end(rec);
  EXPECT_EQ(a_stats_->snapshot().samples, 0u);
  ASSERT_TRUE(h.admit(0, AttemptKind::kPrimary));
  rec.status = Status::deadline_exceeded("timed out");
  rec.latency_ms = 30000;
  h.on_attempt_end(rec);
  EXPECT_DOUBLE_EQ(a_stats_->snapshot().p95_ms, 30000.0);
}

TEST_F(AttemptHooksTest, CancelledAttemptsReleaseInFlightAndTheProbe) {
  auto h = instance_hooks({a_stats_});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(h.admit(0, AttemptKind::kPrimary));
    AttemptRecord f;
    f.outcome = AttemptOutcome::kFailure;
    h.on_attempt_end(f);
  }
  clock_.advance(10s);
  ASSERT_TRUE(h.admit(0, AttemptKind::kHedge));   // the probe
  EXPECT_FALSE(h.admit(0, AttemptKind::kHedge));  // one at a time
  AttemptRecord c;
  c.outcome = AttemptOutcome::kCancelled;
  h.on_attempt_end(c);
  EXPECT_EQ(a_stats_->snapshot().in_flight, 0);
  EXPECT_TRUE(h.admit(0, AttemptKind::kHedge));
}

TEST_F(AttemptHooksTest, RefusedBreakerCostsNoRetryToken) {
  auto budget = std::make_shared<qos::RetryBudget>(qos::RetryBudgetOptions{0.0, 0.1, 10s, 10}, clock_);
  auto h = instance_hooks({a_stats_, b_stats_}, budget);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(h.admit(0, AttemptKind::kPrimary));
    AttemptRecord f;
    f.outcome = AttemptOutcome::kFailure;
    h.on_attempt_end(f);
  }
  EXPECT_FALSE(h.admit(0, AttemptKind::kFallback));  // breaker open
  EXPECT_EQ(budget->retries_in_window(), 0);
  EXPECT_TRUE(h.admit(1, AttemptKind::kFallback));
  EXPECT_EQ(budget->retries_in_window(), 1);
}

TEST_F(AttemptHooksTest, CandidatesAndJudgeDoNotSpendTheRetryBudget) {
  auto budget = std::make_shared<qos::RetryBudget>(qos::RetryBudgetOptions{0.0, 0.0, 10s, 10}, clock_);  // none
  auto h = instance_hooks({a_stats_}, budget);
  EXPECT_TRUE(h.admit(0, AttemptKind::kCandidate));
  EXPECT_TRUE(h.admit(0, AttemptKind::kJudge));
  EXPECT_TRUE(h.admit(5, AttemptKind::kPrimary));  // no stats for it: admitted, nothing recorded
  EXPECT_FALSE(h.admit(5, AttemptKind::kHedge));   // but a hedge still needs the budget
}

}  // namespace
}  // namespace llmpool::ensemble
