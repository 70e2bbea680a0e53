#include "ensemble/runner.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <optional>

#include "fake_provider.h"

namespace llmpool::ensemble {
namespace {

using namespace std::chrono_literals;
using testing::answer;
using testing::failure;
using testing::FakeProvider;
using testing::Script;
using testing::stall;
using testing::streamed;

class EnsembleRunnerTest : public ::testing::Test {
 protected:
  EnsembleRunnerTest() {
    RunnerOptions o;
    o.judge_prompt_path = "";  // the built-in template
    runner_ = make(o);
  }

  std::unique_ptr<EnsembleRunner> make(RunnerOptions o) {
    auto r = EnsembleRunner::create(std::move(o), clock_, timer_);
    EXPECT_TRUE(r) << r.status().to_string();
    return std::move(r).value();
  }

  std::shared_ptr<FakeProvider> fake(std::string name, std::vector<Script> scripts) {
    return std::make_shared<FakeProvider>(std::move(name), timer_, std::move(scripts));
  }

  RunInput input(StrategyKind s, std::vector<providers::ProviderPtr> ps) {
    RunInput in;
    in.strategy = s;
    in.providers = std::move(ps);
    ChatMessage m;
    m.role = "user";
    m.content = "What is the capital of France?";
    in.request.messages.push_back(m);
    in.on_attempt_end = [this](const AttemptRecord& r) { ended_.push_back(r); };
    return in;
  }

  // Starts a run and records when (on the manual clock) it finished.
  void start(RunInput in, const EnsembleRunner* runner = nullptr) {
    t0_ = clock_.now();
    handle_ = (runner ? runner : runner_.get())->run(std::move(in), [this](Result<EnsembleResult> r) {
      ASSERT_FALSE(result_.has_value()) << "done called twice";
      result_.emplace(std::move(r));
      done_after_ = clock_.now() - t0_;
    });
  }

  // Records the run's deltas, and whether one came after done.
  void streaming(RunInput& in) {
    in.on_delta = [this](size_t provider, Delta d) {
      if (result_.has_value()) delta_after_done_ = true;
      delta_providers_.push_back(provider);
      streamed_text_ += d.text;
    };
  }

  // The run answered with `model` (provider index `provider`), and only its
  // deltas were forwarded: two pieces and the finish, none after done.
  void expect_streamed_from(const std::string& model, size_t provider) {
    ASSERT_TRUE(result_ && *result_) << (result_ ? result_->status().to_string() : "no result");
    EXPECT_EQ((*result_)->model, model);
    EXPECT_EQ(streamed_text_, (*result_)->completion.choices.at(0).text);
    EXPECT_EQ(delta_providers_, std::vector<size_t>(3, provider));
    EXPECT_FALSE(delta_after_done_);
  }

  qos::ManualClock clock_;
  qos::ManualTimer timer_{clock_};
  std::vector<size_t> delta_providers_;
  std::string streamed_text_;
  bool delta_after_done_ = false;
  std::unique_ptr<EnsembleRunner> runner_;
  std::shared_ptr<RunHandle> handle_;
  std::optional<Result<EnsembleResult>> result_;
  qos::Clock::Duration done_after_{};
  qos::Clock::TimePoint t0_{};
  std::vector<AttemptRecord> ended_;
};

// ---- FASTEST ----

TEST_F(EnsembleRunnerTest, FastestAnswersFromTheFirstProviderWithinItsP95) {
  auto a = fake("a", {answer("Paris", 100)});
  auto b = fake("b", {answer("Paris", 10)});
  auto in = input(StrategyKind::kFastest, {a, b});
  in.expected_p95 = {200ms, 200ms};
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_) << result_->status().to_string();
  EXPECT_EQ(done_after_, 100ms);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ((*result_)->completion.choices[0].text, "Paris");
  EXPECT_EQ(b->calls(), 0);
  EXPECT_EQ((*result_)->decision.strategy, "fastest");
  EXPECT_EQ((*result_)->decision.winner_model, "a");
  EXPECT_EQ((*result_)->attempts.size(), 1u);
  EXPECT_EQ(a->request(0).model, "a");
}

TEST_F(EnsembleRunnerTest, HedgesAfterTheExpectedP95AndTheFasterAnswerWins) {
  auto a = fake("a", {stall()});
  auto b = fake("b", {answer("Paris", 100)});
  auto in = input(StrategyKind::kFastest, {a, b});
  in.expected_p95 = {200ms, 300ms};
  start(std::move(in));
  timer_.advance(199ms);
  EXPECT_EQ(b->calls(), 0);
  timer_.advance(1ms);
  EXPECT_EQ(b->calls(), 1);  // the hedge starts at a's p95
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ(done_after_, 300ms);  // 200 ms wait + 100 ms answer, not a's stall
  EXPECT_EQ((*result_)->model, "b");
  EXPECT_TRUE(a->cancelled(0));
  const auto& att = (*result_)->attempts;
  ASSERT_EQ(att.size(), 2u);
  EXPECT_EQ(att[0].outcome, AttemptOutcome::kCancelled);
  EXPECT_EQ(att[1].outcome, AttemptOutcome::kSuccess);
  EXPECT_EQ(att[1].kind, AttemptKind::kHedge);
  EXPECT_EQ(att[0].kind, AttemptKind::kPrimary);
  EXPECT_NE((*result_)->decision.reason.find("hedged"), std::string::npos) << (*result_)->decision.reason;
  // The loser reported back (cancelled) exactly once: breakers see it as such.
  ASSERT_EQ(ended_.size(), 2u);
  EXPECT_EQ(ended_[0].model, "b");
  EXPECT_EQ(ended_[1].model, "a");
  EXPECT_EQ(ended_[1].outcome, AttemptOutcome::kCancelled);
}

TEST_F(EnsembleRunnerTest, HedgeLoserIsCancelledWhenTheFirstAttemptWins) {
  auto a = fake("a", {answer("Paris", 250)});
  auto b = fake("b", {answer("Lyon", 1000)});
  auto in = input(StrategyKind::kFastest, {a, b});
  in.expected_p95 = {200ms};
  start(std::move(in));
  timer_.advance(2s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ(done_after_, 250ms);
  EXPECT_EQ(b->calls(), 1);
  EXPECT_TRUE(b->cancelled(0));
  ASSERT_EQ(ended_.size(), 2u);
  EXPECT_EQ(ended_[1].outcome, AttemptOutcome::kCancelled);
}

TEST_F(EnsembleRunnerTest, NoHedgeWithoutAnEstimateOrDefaultDelay) {
  auto a = fake("a", {answer("Paris", 5000)});
  auto b = fake("b", {answer("Paris", 10)});
  start(input(StrategyKind::kFastest, {a, b}));
  timer_.advance(6s);
  EXPECT_EQ(b->calls(), 0);
  EXPECT_EQ((*result_)->model, "a");
}

TEST_F(EnsembleRunnerTest, DefaultHedgeDelayAppliesWithoutAnEstimate) {
  RunnerOptions o;
  o.judge_prompt_path = "";
  o.default_hedge_delay = 500ms;
  auto runner = make(o);
  auto a = fake("a", {stall()});
  auto b = fake("b", {answer("Paris", 10)});
  start(input(StrategyKind::kFastest, {a, b}), runner.get());
  timer_.advance(1s);
  EXPECT_EQ(done_after_, 510ms);
}

TEST_F(EnsembleRunnerTest, MaxParallelOneIsAPlainFallbackChain) {
  RunnerOptions o;
  o.judge_prompt_path = "";
  o.max_parallel = 1;
  auto runner = make(o);
  auto a = fake("a", {answer("Paris", 3000)});
  auto b = fake("b", {answer("Paris", 10)});
  auto in = input(StrategyKind::kFastest, {a, b});
  in.expected_p95 = {100ms};
  start(std::move(in), runner.get());
  timer_.advance(4s);
  EXPECT_EQ(b->calls(), 0);
  EXPECT_EQ((*result_)->model, "a");
}

TEST_F(EnsembleRunnerTest, FailureStartsTheNextProviderAtOnce) {
  auto a = fake("a", {failure(Status::unavailable("upstream 503"), 50)});
  auto b = fake("b", {answer("Paris", 100)});
  start(input(StrategyKind::kFastest, {a, b}));
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ(done_after_, 150ms);
  EXPECT_EQ((*result_)->model, "b");
  const auto& att = (*result_)->attempts;
  ASSERT_EQ(att.size(), 2u);
  EXPECT_EQ(att[0].outcome, AttemptOutcome::kFailure);
  EXPECT_EQ(att[0].status.message(), "upstream 503");
  EXPECT_EQ(att[1].kind, AttemptKind::kFallback);
  EXPECT_NE((*result_)->decision.reason.find("(fallback)"), std::string::npos);
  EXPECT_EQ((*result_)->decision.candidates[0].error, "failure: upstream 503");
}

TEST_F(EnsembleRunnerTest, EmptyAnswerIsNotAGoodAnswer) {
  auto a = fake("a", {answer("", 50)});
  auto b = fake("b", {answer("Paris", 50)});
  start(input(StrategyKind::kFastest, {a, b}));
  timer_.advance(1s);
  EXPECT_EQ((*result_)->model, "b");
  EXPECT_EQ((*result_)->attempts[0].status.message(), "empty answer");
}

TEST_F(EnsembleRunnerTest, ToolCallsCountAsAnAnswer) {
  Script s = answer("", 50);
  ToolCall call;
  call.name = "get_weather";
  call.arguments = R"({"city":"Paris"})";
  s.tool_calls = {call};
  auto a = fake("a", {s});
  start(input(StrategyKind::kFastest, {a}));
  timer_.advance(1s);
  ASSERT_TRUE(*result_);
  EXPECT_EQ((*result_)->completion.choices[0].tool_calls.size(), 1u);
}

TEST_F(EnsembleRunnerTest, AllFailuresReturnTheLastError) {
  auto a = fake("a", {failure(Status::unavailable("down"), 10)});
  auto b = fake("b", {failure(Status::resource_exhausted("queue full"), 10)});
  start(input(StrategyKind::kFastest, {a, b}));
  timer_.advance(1s);
  ASSERT_TRUE(result_);
  ASSERT_FALSE(*result_);
  EXPECT_EQ(result_->status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(result_->status().message(), "every provider failed (2 attempts); last error: queue full");
}

TEST_F(EnsembleRunnerTest, DeadlineEndsAFastestRunAndCancelsTheAttempt) {
  auto a = fake("a", {stall()});
  auto in = input(StrategyKind::kFastest, {a});
  in.deadline = qos::Deadline::after(clock_, 1s);
  start(std::move(in));
  timer_.advance(2s);
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(done_after_, 1s);
  EXPECT_TRUE(a->cancelled(0));
  ASSERT_EQ(ended_.size(), 1u);
  EXPECT_EQ(ended_[0].outcome, AttemptOutcome::kCancelled);
}

TEST_F(EnsembleRunnerTest, ExpiredDeadlineFailsBeforeStarting) {
  auto a = fake("a", {answer("x")});
  auto in = input(StrategyKind::kFastest, {a});
  in.deadline = qos::Deadline::after(clock_, 0ms);
  start(std::move(in));
  EXPECT_EQ(result_->status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(a->calls(), 0);
}

TEST_F(EnsembleRunnerTest, AdmitHookSkipsRefusedProvidersAndNamesEachAttemptsKind) {
  auto a = fake("a", {answer("x", 10)});
  auto b = fake("b", {failure(Status::unavailable("down"), 10)});
  auto c = fake("c", {answer("Paris", 10)});
  auto in = input(StrategyKind::kFastest, {a, b, c});
  std::vector<std::pair<size_t, AttemptKind>> asked;
  in.admit = [&](size_t p, AttemptKind kind) {
    asked.emplace_back(p, kind);
    return p != 0;  // a's breaker is open
  };
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ((*result_)->model, "c");
  EXPECT_EQ(a->calls(), 0);
  EXPECT_EQ(asked, (std::vector<std::pair<size_t, AttemptKind>>{
                       {0, AttemptKind::kPrimary}, {1, AttemptKind::kPrimary}, {2, AttemptKind::kFallback}}));
  const auto& att = (*result_)->attempts;
  ASSERT_EQ(att.size(), 3u);
  EXPECT_EQ(att[0].outcome, AttemptOutcome::kSkipped);
  EXPECT_EQ(ended_.size(), 2u);  // skipped attempts never started, so never end
}

TEST_F(EnsembleRunnerTest, NothingAdmittedIsUnavailable) {
  auto a = fake("a", {answer("x")});
  auto in = input(StrategyKind::kFastest, {a});
  in.admit = [](size_t, AttemptKind) { return false; };
  start(std::move(in));
  EXPECT_EQ(result_->status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(result_->status().message(), "no provider admitted the request");
}

TEST_F(EnsembleRunnerTest, SynchronousProvidersAnswerInsideRun) {
  auto a = fake("a", {failure(Status::unavailable("down"), 0)});
  auto b = fake("b", {answer("Paris", 0)});
  start(input(StrategyKind::kFastest, {a, b}));
  ASSERT_TRUE(result_ && *result_);  // no timer advanced
  EXPECT_EQ((*result_)->model, "b");
}

TEST_F(EnsembleRunnerTest, CancelEndsTheRunAndItsAttempts) {
  auto a = fake("a", {stall()});
  start(input(StrategyKind::kFastest, {a}));
  timer_.advance(50ms);
  handle_->cancel();
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(result_->status().message(), "cancelled by the caller");
  EXPECT_TRUE(a->cancelled(0));
  handle_->cancel();  // idempotent; done is not called again
  timer_.advance(1s);
  EXPECT_EQ(ended_.size(), 1u);
}

TEST_F(EnsembleRunnerTest, TheCallersTokenEndsTheRunAndReachesTheAttemptsAtOnce) {
  auto a = fake("a", {stall()});
  auto b = fake("b", {stall()});
  RunnerOptions o;
  o.judge_prompt_path = "";
  o.default_hedge_delay = 10ms;
  auto runner = make(o);
  RunInput in = input(StrategyKind::kFastest, {a, b});
  auto token = std::make_shared<CancelToken>();
  in.cancel = token;
  start(std::move(in), runner.get());
  timer_.advance(20ms);  // the hedge runs too
  ASSERT_EQ(b->calls(), 1);
  ASSERT_FALSE(result_);
  token->cancel();  // no timer advance: the run hears it through its subscription
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().message(), "cancelled by the caller");
  EXPECT_TRUE(a->cancelled(0));
  EXPECT_TRUE(b->cancelled(0));
  EXPECT_EQ(done_after_, 20ms);
}

TEST_F(EnsembleRunnerTest, ATokenCancelledBeforeTheRunStartsNoAttempt) {
  auto a = fake("a", {answer("Paris")});
  RunInput in = input(StrategyKind::kFastest, {a});
  in.cancel = std::make_shared<CancelToken>();
  in.cancel->cancel();
  start(std::move(in));
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().message(), "cancelled by the caller");
  EXPECT_EQ(a->calls(), 0);
}

TEST_F(EnsembleRunnerTest, AFinishedRunNoLongerListensToTheToken) {
  auto a = fake("a", {answer("Paris", 0)});
  RunInput in = input(StrategyKind::kFastest, {a});
  auto token = std::make_shared<CancelToken>();
  in.cancel = token;
  start(std::move(in));
  ASSERT_TRUE(result_ && *result_);
  std::weak_ptr<RunHandle> run = handle_;
  handle_.reset();
  EXPECT_TRUE(run.expired());  // the token holds no reference to the run
  token->cancel();             // nothing left to reach
  EXPECT_EQ(ended_.size(), 1u);
}

// A provider that ends its attempt from inside its token's callback, as a
// provider subscribing for prompt cancellation may: the run must not hold
// its lock while it cancels an attempt.
class SubscribingProvider : public providers::Provider {
 public:
  SubscribingProvider() { info_.name = "subscriber"; }
  const providers::ModelInfo& info() const override { return info_; }
  void generate(GenerateRequest, CancelTokenPtr cancel, GenerateCallbacks cb) override {
    auto callbacks = std::make_shared<GenerateCallbacks>(std::move(cb));
    subs_.push_back(cancel->subscribe([callbacks] {
      Completion c;
      c.choices.push_back({});
      c.choices[0].finish_reason = FinishReason::kCancelled;
      callbacks->on_done(std::move(c));
    }));
  }

 private:
  providers::ModelInfo info_;
  std::vector<CancelToken::Subscription> subs_;
};

TEST_F(EnsembleRunnerTest, AnAttemptMayEndInsideItsCancelCallback) {
  auto p = std::make_shared<SubscribingProvider>();
  RunInput in = input(StrategyKind::kFastest, {p});
  auto token = std::make_shared<CancelToken>();
  in.cancel = token;
  start(std::move(in));
  token->cancel();
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().message(), "cancelled by the caller");
  ASSERT_EQ(ended_.size(), 1u);
  EXPECT_EQ(ended_[0].outcome, AttemptOutcome::kCancelled);
}

// ---- FASTEST, streaming ----

TEST_F(EnsembleRunnerTest, StreamingCommitsOnTheFirstDeltaAndCancelsTheOthers) {
  auto a = fake("a", {streamed({"Pa", "ris"}, 100, 200)});
  auto b = fake("b", {streamed({"Lyon"}, 200)});
  auto c = fake("c", {answer("Nice", 1)});
  auto in = input(StrategyKind::kFastest, {a, b, c});
  in.expected_p95 = {50ms, 80ms, 50ms};  // without the commit, c would hedge at 130 ms
  streaming(in);
  RunnerOptions o;
  o.judge_prompt_path = "";
  o.max_parallel = 3;
  auto runner = make(o);
  start(std::move(in), runner.get());
  timer_.advance(60ms);
  EXPECT_EQ(b->calls(), 1);  // the hedge
  EXPECT_FALSE(b->cancelled(0));
  timer_.advance(40ms);  // a's first piece
  EXPECT_TRUE(b->cancelled(0));
  EXPECT_EQ(streamed_text_, "Pa");
  EXPECT_FALSE(result_.has_value());
  timer_.advance(2s);
  expect_streamed_from("a", 0);
  EXPECT_EQ(streamed_text_, "Paris");
  EXPECT_EQ(c->calls(), 0);  // no hedge once committed, even with a free slot
  const auto& att = (*result_)->attempts;
  ASSERT_EQ(att.size(), 2u);
  EXPECT_EQ(att[0].outcome, AttemptOutcome::kSuccess);
  EXPECT_EQ(att[1].outcome, AttemptOutcome::kCancelled);
  ASSERT_EQ(ended_.size(), 2u);
  EXPECT_EQ(ended_[0].model, "b");
  EXPECT_EQ(ended_[0].outcome, AttemptOutcome::kCancelled);
}

TEST_F(EnsembleRunnerTest, StreamingHedgeThatStreamsFirstWins) {
  auto a = fake("a", {streamed({"Lyon"}, 500)});
  auto b = fake("b", {streamed({"Par", "is"}, 100)});
  auto in = input(StrategyKind::kFastest, {a, b});
  in.expected_p95 = {200ms, 200ms};
  streaming(in);
  start(std::move(in));
  timer_.advance(300ms);  // the hedge started at 200 ms and streams at 300 ms
  EXPECT_TRUE(a->cancelled(0));
  timer_.advance(1s);
  expect_streamed_from("b", 1);
  EXPECT_EQ(streamed_text_, "Paris");
  const auto& att = (*result_)->attempts;
  ASSERT_EQ(att.size(), 2u);
  EXPECT_EQ(att[0].outcome, AttemptOutcome::kCancelled);
  EXPECT_EQ(att[1].kind, AttemptKind::kHedge);
  EXPECT_EQ(att[1].outcome, AttemptOutcome::kSuccess);
  EXPECT_NE((*result_)->decision.reason.find("first to stream"), std::string::npos) << (*result_)->decision.reason;
}

TEST_F(EnsembleRunnerTest, StreamingFailureBeforeAnyDeltaFallsBackAndTheFallbackStreams) {
  auto a = fake("a", {failure(Status::unavailable("model a is down"), 50)});
  auto b = fake("b", {streamed({"Par", "is"}, 100)});
  auto in = input(StrategyKind::kFastest, {a, b});
  streaming(in);
  start(std::move(in));
  timer_.advance(1s);
  expect_streamed_from("b", 1);
  EXPECT_EQ(streamed_text_, "Paris");
  const auto& att = (*result_)->attempts;
  ASSERT_EQ(att.size(), 2u);
  EXPECT_EQ(att[0].outcome, AttemptOutcome::kFailure);
  EXPECT_EQ(att[1].kind, AttemptKind::kFallback);
}

TEST_F(EnsembleRunnerTest, StreamingCommittedAttemptFailingEndsTheRunWithItsError) {
  Script broken = streamed({"Pa", "ri"}, 100);
  broken.error = Status::internal("the engine stopped");
  auto a = fake("a", {broken});
  auto b = fake("b", {answer("Paris", 10)});
  auto in = input(StrategyKind::kFastest, {a, b});
  streaming(in);
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(result_);
  ASSERT_FALSE(*result_);
  EXPECT_EQ(result_->status().code(), StatusCode::kInternal);
  EXPECT_NE(result_->status().message().find("failed after it had started streaming"), std::string::npos)
      << result_->status().message();
  EXPECT_NE(result_->status().message().find("the engine stopped"), std::string::npos);
  EXPECT_EQ(b->calls(), 0);  // no fallback after part of an answer is out
  EXPECT_EQ(streamed_text_, "Pari");
  ASSERT_EQ(ended_.size(), 1u);
  EXPECT_EQ(ended_[0].outcome, AttemptOutcome::kFailure);
}

TEST_F(EnsembleRunnerTest, StreamingSendsNoDeltaAfterDone) {
  auto a = fake("a", {streamed({"a", "b", "c", "d"}, 100, 100)});
  auto in = input(StrategyKind::kFastest, {a});
  streaming(in);
  start(std::move(in));
  timer_.advance(150ms);
  EXPECT_EQ(streamed_text_, "a");
  handle_->cancel();
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().message(), "cancelled by the caller");
  timer_.advance(1s);
  EXPECT_EQ(streamed_text_, "a");
  EXPECT_FALSE(delta_after_done_);
  EXPECT_EQ(ended_.size(), 1u);
}

TEST_F(EnsembleRunnerTest, StreamingCallerMayCancelFromInsideTheDeltaCallback) {
  auto a = fake("a", {streamed({"a", "b", "c"}, 100)});
  auto in = input(StrategyKind::kFastest, {a});
  int deltas = 0;
  in.on_delta = [&](size_t, Delta) {
    ++deltas;
    handle_->cancel();  // e.g. the client went away while its chunk was written
    EXPECT_TRUE(result_.has_value());  // done ran on this thread, inside the callback
  };
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ(deltas, 1);
  ASSERT_TRUE(result_);
  EXPECT_EQ(result_->status().message(), "cancelled by the caller");
  EXPECT_TRUE(a->cancelled(0));
  EXPECT_EQ(ended_.size(), 1u);
}

TEST_F(EnsembleRunnerTest, FastestKeepsEveryChoiceOfTheWinner) {
  Script two = answer("", 100);
  two.choices = {"Paris", "Paris, France"};
  auto a = fake("a", {two});
  auto in = input(StrategyKind::kFastest, {a});
  in.request.n = 2;
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ(a->request(0).n, 2);
  const auto& ch = (*result_)->completion.choices;
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[0].index, 0);
  EXPECT_EQ(ch[0].text, "Paris");
  EXPECT_EQ(ch[1].index, 1);
  EXPECT_EQ(ch[1].text, "Paris, France");
}

TEST_F(EnsembleRunnerTest, GatheringStrategiesIgnoreTheDeltaCallback) {
  auto a = fake("a", {streamed({"Par", "is"}, 100)});
  auto b = fake("b", {streamed({"Par", "is"}, 100)});
  auto in = input(StrategyKind::kVoting, {a, b});
  streaming(in);
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ((*result_)->completion.choices.at(0).text, "Paris");
  EXPECT_TRUE(delta_providers_.empty());
}

TEST_F(EnsembleRunnerTest, RejectsRunsWithoutProviders) {
  start(input(StrategyKind::kFastest, {}));
  EXPECT_EQ(result_->status().code(), StatusCode::kInvalidArgument);
}

// ---- VOTING, WEIGHTED, CONSENSUS ----

TEST_F(EnsembleRunnerTest, VotingGathersEveryAnswerAndPicksTheMajority) {
  auto a = fake("a", {answer("Lyon", 100)});
  auto b = fake("b", {answer("Paris.", 300)});
  auto c = fake("c", {answer("paris", 200)});
  start(input(StrategyKind::kVoting, {a, b, c}));
  timer_.advance(250ms);
  EXPECT_FALSE(result_);  // still waiting for b
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ(done_after_, 300ms);
  const auto& r = **result_;
  EXPECT_EQ(r.model, "b");  // the earliest candidate of the winning group
  EXPECT_EQ(r.completion.choices[0].text, "Paris.");
  EXPECT_EQ(r.decision.strategy, "voting");
  EXPECT_DOUBLE_EQ(r.decision.winner_votes, 2.0);
  EXPECT_EQ(r.decision.candidates.size(), 3u);
  EXPECT_EQ(r.total_usage.completion_tokens, 15);
  EXPECT_EQ(r.completion.usage.completion_tokens, 5);
}

TEST_F(EnsembleRunnerTest, KSamplesOfOneProviderShareOneRequest) {
  Script s = answer("", 100);
  s.choices = {"4", "four", "4."};
  auto a = fake("a", {s});
  auto in = input(StrategyKind::kVoting, {a});
  in.k = 3;
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(*result_);
  EXPECT_EQ(a->calls(), 1);
  EXPECT_EQ(a->request(0).n, 3);
  EXPECT_EQ((*result_)->completion.choices[0].text, "4");
  EXPECT_EQ((*result_)->completion.choices[0].index, 0);
  EXPECT_DOUBLE_EQ((*result_)->decision.winner_votes, 2.0);
}

TEST_F(EnsembleRunnerTest, KLargerThanTheProvidersWrapsAround) {
  auto a = fake("a", {answer("x", 10)});
  auto b = fake("b", {answer("y", 10)});
  auto in = input(StrategyKind::kVoting, {a, b});
  in.k = 3;
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ(a->calls(), 2);
  EXPECT_EQ(b->calls(), 1);
  EXPECT_EQ((*result_)->model, "a");
}

TEST_F(EnsembleRunnerTest, WeightedVotingUsesProviderQuality) {
  auto a = fake("a", {answer("A", 10)});
  auto b = fake("b", {answer("B", 10)});
  auto c = fake("c", {answer("B", 10)});
  auto in = input(StrategyKind::kWeighted, {a, b, c});
  in.weights = {0.9, 0.3, 0.3};
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ((*result_)->decision.strategy, "weighted");
}

TEST_F(EnsembleRunnerTest, ConsensusReportsEscalation) {
  auto a = fake("a", {answer("1", 10)});
  auto b = fake("b", {answer("2", 10)});
  auto c = fake("c", {answer("3", 10)});
  start(input(StrategyKind::kConsensus, {a, b, c}));
  timer_.advance(1s);
  ASSERT_TRUE(*result_);
  EXPECT_TRUE((*result_)->decision.escalate);
  EXPECT_EQ((*result_)->model, "a");
}

TEST_F(EnsembleRunnerTest, GatheringDecidesOnWhatArrivedByTheDeadline) {
  auto a = fake("a", {answer("Paris", 100)});
  auto b = fake("b", {answer("Paris", 200)});
  auto c = fake("c", {stall()});
  auto in = input(StrategyKind::kVoting, {a, b, c});
  in.deadline = qos::Deadline::after(clock_, 500ms);
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_);
  EXPECT_EQ(done_after_, 500ms);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ((*result_)->decision.candidates[2].error, "no answer before the deadline");
  EXPECT_TRUE(c->cancelled(0));
  EXPECT_EQ((*result_)->attempts[2].outcome, AttemptOutcome::kCancelled);
}

TEST_F(EnsembleRunnerTest, GatheringFailsWhenNoCandidateAnswered) {
  auto a = fake("a", {failure(Status::unavailable("down"), 10)});
  auto b = fake("b", {answer("", 10)});
  start(input(StrategyKind::kVoting, {a, b}));
  timer_.advance(1s);
  ASSERT_FALSE(*result_);
  EXPECT_NE(result_->status().message().find("no candidate answered (2 attempts)"), std::string::npos)
      << result_->status().message();
}

// ---- JUDGE ----

TEST_F(EnsembleRunnerTest, JudgePicksTheCandidateItNames) {
  auto a = fake("a", {answer("Lyon", 100)});
  auto b = fake("b", {answer("Paris", 200)});
  auto judge = fake("judge", {answer("{\"winner\": 2}", 50)});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(result_ && *result_) << result_->status().to_string();
  EXPECT_EQ(done_after_, 250ms);
  EXPECT_EQ((*result_)->model, "b");
  EXPECT_EQ((*result_)->decision.strategy, "judge");
  EXPECT_EQ((*result_)->decision.reason, "judge judge chose candidate 2 of 2");
  GenerateRequest jr = judge->request(0);
  ASSERT_EQ(jr.messages.size(), 1u);
  const std::string& prompt = jr.messages[0].content;
  EXPECT_NE(prompt.find("What is the capital of France?"), std::string::npos);
  EXPECT_NE(prompt.find("Candidate 1:\nLyon"), std::string::npos);
  EXPECT_NE(prompt.find("Candidate 2:\nParis"), std::string::npos);
  EXPECT_EQ(prompt.find("{{"), std::string::npos);
  EXPECT_FLOAT_EQ(jr.sampling.temperature, 0.0f);
  EXPECT_EQ(jr.sampling.max_tokens, 256);
  EXPECT_EQ((*result_)->total_usage.completion_tokens, 15);  // both candidates and the judge
  EXPECT_EQ((*result_)->attempts.back().kind, AttemptKind::kJudge);
}

TEST_F(EnsembleRunnerTest, JudgeSeesOnlyCandidatesThatAnswered) {
  auto a = fake("a", {failure(Status::unavailable("down"), 10)});
  auto b = fake("b", {answer("Lyon", 10)});
  auto c = fake("c", {answer("Paris", 10)});
  auto judge = fake("judge", {answer("2", 10)});
  auto in = input(StrategyKind::kJudge, {a, b, c});
  in.judge = judge;
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ((*result_)->model, "c");
  EXPECT_EQ(judge->request(0).messages[0].content.find("Candidate 3"), std::string::npos);
}

TEST_F(EnsembleRunnerTest, UnparsableJudgementFallsBackToTheFirstCandidate) {
  auto a = fake("a", {answer("Lyon", 10)});
  auto b = fake("b", {answer("Paris", 10)});
  auto judge = fake("judge", {answer("They are both lovely cities.", 10)});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  start(std::move(in));
  timer_.advance(1s);
  ASSERT_TRUE(*result_);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ((*result_)->decision.reason,
            "the judge's answer named no candidate ('They are both lovely cities.'); fell back to candidate 1");
}

TEST_F(EnsembleRunnerTest, FailedJudgeFallsBackToTheFirstCandidate) {
  auto a = fake("a", {answer("Lyon", 10)});
  auto b = fake("b", {answer("Paris", 10)});
  auto judge = fake("judge", {failure(Status::unavailable("judge down"), 10)});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ((*result_)->decision.reason, "the judge failed (judge down); fell back to candidate 1");
}

TEST_F(EnsembleRunnerTest, JudgeThatMissesTheDeadlineFallsBack) {
  auto a = fake("a", {answer("Lyon", 10)});
  auto b = fake("b", {answer("Paris", 10)});
  auto judge = fake("judge", {stall()});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  in.deadline = qos::Deadline::after(clock_, 1s);
  start(std::move(in));
  timer_.advance(2s);
  ASSERT_TRUE(*result_);
  EXPECT_EQ(done_after_, 1s);
  EXPECT_EQ((*result_)->decision.reason, "the judge did not answer before the deadline; fell back to candidate 1");
  EXPECT_TRUE(judge->cancelled(0));
}

TEST_F(EnsembleRunnerTest, JudgeIsNotAskedAboutASingleAnswer) {
  auto a = fake("a", {answer("Lyon", 10)});
  auto b = fake("b", {failure(Status::unavailable("down"), 10)});
  auto judge = fake("judge", {answer("1", 10)});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ((*result_)->model, "a");
  EXPECT_EQ(judge->calls(), 0);
  EXPECT_EQ((*result_)->decision.reason, "only one candidate answered; the judge was not asked");
}

TEST_F(EnsembleRunnerTest, JudgeAdmissionUsesTheIndexAfterTheProviders) {
  auto a = fake("a", {answer("Lyon", 10)});
  auto b = fake("b", {answer("Paris", 10)});
  auto judge = fake("judge", {answer("2", 10)});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  std::vector<AttemptKind> kinds;
  in.admit = [&](size_t p, AttemptKind kind) {
    kinds.push_back(kind);
    return p != 2;
  };
  start(std::move(in));
  timer_.advance(1s);
  EXPECT_EQ(judge->calls(), 0);
  EXPECT_EQ((*result_)->decision.reason, "the judge was not admitted; fell back to candidate 1");
  EXPECT_EQ(kinds, (std::vector<AttemptKind>{AttemptKind::kCandidate, AttemptKind::kCandidate, AttemptKind::kJudge}));
}

TEST_F(EnsembleRunnerTest, JudgeStrategyNeedsAJudge) {
  auto a = fake("a", {answer("x")});
  start(input(StrategyKind::kJudge, {a}));
  EXPECT_EQ(result_->status().param(), "judge");
}

// ---- creation and the template ----

TEST_F(EnsembleRunnerTest, LoadsTheShippedJudgeTemplate) {
  RunnerOptions o;
  o.judge_prompt_path = std::string(LLMPOOL_SOURCE_DIR) + "/prompts/judge.txt";
  auto r = EnsembleRunner::create(o, clock_, timer_);
  ASSERT_TRUE(r) << r.status().to_string();
  EXPECT_EQ((*r)->judge_template(), kBuiltinJudgePrompt);  // the built-in copy is in step with the file
  for (const char* ph : {"{{question}}", "{{candidates}}", "{{count}}"})
    EXPECT_NE((*r)->judge_template().find(ph), std::string::npos) << ph;
}

TEST_F(EnsembleRunnerTest, CreateFailsForAMissingOrInvalidTemplate) {
  RunnerOptions o;
  o.judge_prompt_path = "/nonexistent/judge.txt";
  auto missing = EnsembleRunner::create(o, clock_, timer_);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().param(), "judge_prompt_path");

  std::string path = ::testing::TempDir() + "judge_no_placeholder.txt";
  std::ofstream(path) << "Pick one.";
  o.judge_prompt_path = path;
  EXPECT_EQ(EnsembleRunner::create(o, clock_, timer_).status().code(), StatusCode::kInvalidArgument);
  std::remove(path.c_str());

  RunnerOptions bad;
  bad.judge_prompt_path = "";
  bad.max_parallel = 0;
  EXPECT_EQ(EnsembleRunner::create(bad, clock_, timer_).status().param(), "max_parallel");
}

TEST_F(EnsembleRunnerTest, UsesACustomTemplateFile) {
  std::string path = ::testing::TempDir() + "judge_custom.txt";
  std::ofstream(path) << "Q={{question}} C={{candidates}} N={{count}}";
  RunnerOptions o;
  o.judge_prompt_path = path;
  auto runner = make(o);
  auto a = fake("a", {answer("x", 10)});
  auto b = fake("b", {answer("y", 10)});
  auto judge = fake("judge", {answer("1", 10)});
  auto in = input(StrategyKind::kJudge, {a, b});
  in.judge = judge;
  start(std::move(in), runner.get());
  timer_.advance(1s);
  EXPECT_EQ(judge->request(0).messages[0].content,
            "Q=What is the capital of France? C=Candidate 1:\nx\n\nCandidate 2:\ny N=2");
  std::remove(path.c_str());
}

TEST(EnsembleRunnerRealTimeTest, HedgingWorksWithTheThreadTimer) {
  qos::ThreadTimer timer;
  RunnerOptions o;
  o.judge_prompt_path = "";
  auto runner = EnsembleRunner::create(o, qos::SystemClock::instance(), timer).value();
  auto a = std::make_shared<FakeProvider>("a", timer, std::vector<Script>{stall()});
  auto b = std::make_shared<FakeProvider>("b", timer, std::vector<Script>{answer("Paris", 5)});
  RunInput in;
  in.providers = {a, b};
  in.expected_p95 = {20ms};
  std::promise<Result<EnsembleResult>> p;
  auto handle = runner->run(std::move(in), [&](Result<EnsembleResult> r) { p.set_value(std::move(r)); });
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  auto r = f.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->model, "b");
  // Let the stalled loser notice its cancellation before the providers go away.
  for (int i = 0; i < 200 && a->answered() == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(a->answered(), 1);
}

}  // namespace
}  // namespace llmpool::ensemble
