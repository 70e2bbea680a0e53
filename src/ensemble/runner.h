// EnsembleRunner: runs one request on several providers and combines them.
//
//   FASTEST    providers are tried in order. The first good answer wins and
//              the other attempts are cancelled. Hedging: while an attempt
//              runs past its provider's expected p95 (RunInput::expected_p95,
//              else RunnerOptions::default_hedge_delay), the next provider
//              starts too, up to max_parallel at once. A failed attempt
//              starts the next provider at once (a fallback chain).
//   VOTING, WEIGHTED, CONSENSUS
//              k answers at once (providers in order, wrapping around; one
//              provider with k > 1 gets one request with n = k so the
//              samples share the prompt's KV), then the decision function
//              of strategies.h.
//   JUDGE      k answers as above, then the judge provider picks one with
//              the prompt template loaded from RunnerOptions::judge_prompt_path
//              (placeholders {{question}}, {{count}}, {{candidates}}). An
//              unparsable or failed judgement falls back to the first good
//              candidate, with the reason in the decision.
//
// Streaming (FASTEST only): with RunInput::on_delta set, every attempt runs
// with deltas. The first attempt to deliver a non-empty delta (text,
// reasoning, a tool call or logprobs) commits the run: the other running
// attempts are cancelled (they end kCancelled, as losers do), no hedge or
// fallback starts afterwards, and from then on the committed attempt's
// deltas, and only those, go to on_delta in order. Failures before the
// commit behave as without streaming; a committed attempt that then fails
// ends the run with its error (the caller already holds part of an answer).
// on_delta is never called concurrently, nor after `done` was called; it
// runs on the committed provider's thread. The gathering strategies ignore
// on_delta: they deliver whole answers only.
//
// FASTEST delivers every choice of the winning completion (n > 1 asks each
// attempt for n choices); the gathering strategies deliver one choice, the
// winner. A "good" answer: an ok Completion whose first choice did not end
// cancelled and (with reject_empty) is not empty. The deadline cancels
// what still runs: FASTEST then fails with DeadlineExceeded; the gathering
// strategies decide on the answers they have (failing only with none); a
// judge that has not answered falls back as above.
//
// Hooks: RunInput::admit is asked before every attempt with the provider's
// index (providers.size() means the judge) and the attempt's kind — the
// router's breaker says no there, and its retry budget for hedges and
// fallbacks; a refused provider is skipped. RunInput::on_attempt_end is
// called exactly once per started attempt when the provider reports back,
// even after the run has finished (losers end as kCancelled).
//
// Threading: run() returns at once; `done` is called exactly once, on a
// provider's, the timer's, the caller's thread (possibly inside run()) or
// the thread that cancels RunInput::cancel,
// never while on_delta runs on another thread. A cancel() from inside
// on_delta calls `done` before on_delta returns.
// admit runs under the run's lock: it must not call back into the run.
// Callbacks must not block. The clock and the timer must outlive every run;
// the runner itself may be destroyed while runs are in flight.
// EnsembleRunner is immutable after create(): thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/chat.h"
#include "common/status.h"
#include "ensemble/strategies.h"
#include "providers/provider.h"
#include "qos/clock.h"
#include "qos/deadline.h"
#include "qos/timer.h"

namespace llmpool::ensemble {

struct RunnerOptions {
  int32_t max_parallel = 2;                          // FASTEST: attempts at once (1: no hedging)
  bool hedge = true;                                 // FASTEST: start the next provider after the expected p95
  std::chrono::milliseconds default_hedge_delay{0};  // used without an estimate; 0: no hedge then
  std::chrono::milliseconds min_hedge_delay{1};      // floor for any hedge delay
  bool reject_empty = true;                          // an empty answer is not good
  double consensus_threshold = 0.6;                  // CONSENSUS: agreement needed, (0, 1]
  std::string judge_prompt_path = "prompts/judge.txt";  // "" uses kBuiltinJudgePrompt
  size_t judge_max_candidate_chars = 4000;           // each candidate is cut to this in the judge prompt
  int32_t judge_max_tokens = 256;                    // the judge's answer budget
};

// The judge template that ships in prompts/judge.txt, for runs without a file.
extern const char* const kBuiltinJudgePrompt;

enum class AttemptOutcome { kSuccess, kFailure, kCancelled, kSkipped };
const char* attempt_outcome_name(AttemptOutcome outcome);

// Why an attempt starts. Hedges and fallbacks are retries in the retry
// budget's sense; candidates of a gathering strategy and the judge are not.
enum class AttemptKind {
  kPrimary,    // FASTEST: the first attempt that starts
  kHedge,      // FASTEST: started because the running attempt passed its p95
  kFallback,   // FASTEST: started because an attempt failed
  kCandidate,  // VOTING, WEIGHTED, CONSENSUS, JUDGE: one of the k answers
  kJudge,      // JUDGE: the judge's call
};
const char* attempt_kind_name(AttemptKind kind);

struct AttemptRecord {
  size_t provider = 0;    // index into RunInput::providers; providers.size() for the judge
  std::string model;
  AttemptKind kind = AttemptKind::kPrimary;
  AttemptOutcome outcome = AttemptOutcome::kSuccess;
  Status status;          // why it failed or was skipped
  double latency_ms = 0.0;
  Usage usage{};          // the tokens it reported (an answer, or a cancelled generation's part)
};

struct RunInput {
  StrategyKind strategy = StrategyKind::kFastest;
  int32_t k = 0;  // answers to gather (not FASTEST); 0: one per provider
  std::vector<providers::ProviderPtr> providers;       // in order of preference
  std::vector<qos::Clock::Duration> expected_p95;      // FASTEST: per provider; missing or 0: default delay
  std::vector<double> weights;                         // WEIGHTED: per provider quality; missing: 1
  providers::ProviderPtr judge;                        // JUDGE only
  GenerateRequest request;
  qos::Deadline deadline = qos::Deadline::never();
  // The caller's token (a client's disconnect): its cancel() ends the run at
  // once, like RunHandle::cancel(), and cancels the running attempts' own
  // tokens on the same thread, with no polling. Null: none.
  CancelTokenPtr cancel;
  std::function<bool(size_t provider, AttemptKind kind)> admit;
  std::function<void(const AttemptRecord&)> on_attempt_end;
  // FASTEST: stream the committed attempt's deltas (see the top of this
  // file); `provider` indexes `providers`. Empty: whole answers only.
  std::function<void(size_t provider, Delta delta)> on_delta;
};

struct EnsembleResult {
  Completion completion;   // the winning answer (FASTEST: all its choices; else one, as choice 0), with its attempt's usage
  std::string model;       // who gave it
  EnsembleDecision decision;
  std::vector<AttemptRecord> attempts;  // as known when the result was delivered
  Usage total_usage;       // all attempts, the judge included
};

using RunDone = std::function<void(Result<EnsembleResult>)>;

// A run in flight. cancel() ends it now: done gets Unavailable
// ("cancelled by the caller") unless it already had its answer.
class RunHandle {
 public:
  virtual ~RunHandle() = default;
  virtual void cancel() = 0;
};

class EnsembleRunner {
 public:
  // NotFound if judge_prompt_path is set but cannot be read; InvalidArgument
  // for options out of range.
  static Result<std::unique_ptr<EnsembleRunner>> create(RunnerOptions options, const qos::Clock& clock,
                                                        qos::Timer& timer);

  // Starts a run. InvalidArgument (through `done`) for no providers, or
  // JUDGE without a judge.
  std::shared_ptr<RunHandle> run(RunInput input, RunDone done) const;

  const std::string& judge_template() const;

  struct Shared;  // options, template, clock and timer, shared with runs

 private:
  explicit EnsembleRunner(std::shared_ptr<const Shared> shared) : shared_(std::move(shared)) {}
  std::shared_ptr<const Shared> shared_;
};

}  // namespace llmpool::ensemble
