#include "ensemble/runner.h"

#include <algorithm>
#include <exception>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <utility>

namespace llmpool::ensemble {

// Keep in step with prompts/judge.txt.
const char* const kBuiltinJudgePrompt = R"judge(You are judging answers to a user's request. Several assistants answered the
same request independently. Pick the single best answer.

Judge by, in this order:
1. Correctness: facts, code and calculations must be right.
2. Completeness: the answer addresses every part of the request.
3. Safety: no harmful, private or made-up content.
4. Clarity: direct and well organised.
Do not prefer an answer for being longer, and ignore the order in which the
answers are listed.

## Request

{{question}}

## Candidates ({{count}})

{{candidates}}

## Your verdict

Reply with JSON only, naming the best candidate by its number (1 to {{count}}):
{"winner": N}
)judge";

struct EnsembleRunner::Shared {
  Shared(RunnerOptions o, std::string t, const qos::Clock& c, qos::Timer& tm)
      : options(std::move(o)), judge_template(std::move(t)), clock(c), timer(tm) {}
  RunnerOptions options;
  std::string judge_template;
  const qos::Clock& clock;
  qos::Timer& timer;
};

const char* attempt_outcome_name(AttemptOutcome outcome) {
  switch (outcome) {
    case AttemptOutcome::kSuccess: return "success";
    case AttemptOutcome::kFailure: return "failure";
    case AttemptOutcome::kCancelled: return "cancelled";
    case AttemptOutcome::kSkipped: return "skipped";
  }
  return "failure";
}

const char* attempt_kind_name(AttemptKind kind) {
  switch (kind) {
    case AttemptKind::kPrimary: return "primary";
    case AttemptKind::kHedge: return "hedge";
    case AttemptKind::kFallback: return "fallback";
    case AttemptKind::kCandidate: return "candidate";
    case AttemptKind::kJudge: return "judge";
  }
  return "primary";
}

namespace {

Status with_code(StatusCode code, std::string msg) {
  switch (code) {
    case StatusCode::kInvalidArgument: return Status::invalid_argument(std::move(msg));
    case StatusCode::kNotFound: return Status::not_found(std::move(msg));
    case StatusCode::kAlreadyExists: return Status::already_exists(std::move(msg));
    case StatusCode::kResourceExhausted: return Status::resource_exhausted(std::move(msg));
    case StatusCode::kDeadlineExceeded: return Status::deadline_exceeded(std::move(msg));
    case StatusCode::kUnimplemented: return Status::unimplemented(std::move(msg));
    case StatusCode::kInternal: return Status::internal(std::move(msg));
    case StatusCode::kUnauthenticated: return Status::unauthenticated(std::move(msg));
    case StatusCode::kPermissionDenied: return Status::permission_denied(std::move(msg));
    default: return Status::unavailable(std::move(msg));
  }
}

double ms_between(qos::Clock::TimePoint a, qos::Clock::TimePoint b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string question_of(const GenerateRequest& r) {
  if (r.prompt) return *r.prompt;
  for (auto it = r.messages.rbegin(); it != r.messages.rend(); ++it)
    if (it->role == "user") return it->content;
  return r.messages.empty() ? std::string() : r.messages.back().content;
}

void add_usage(Usage& total, const Usage& u) {
  total.prompt_tokens += u.prompt_tokens;
  total.completion_tokens += u.completion_tokens;
  total.cached_prompt_tokens += u.cached_prompt_tokens;
}

// What a choice answered, for voting and judging: its text, or its tool
// calls written out when it answered with calls only.
std::string answer_text(const Choice& c) {
  if (!c.text.empty() || c.tool_calls.empty()) return c.text;
  std::string out;
  for (const auto& call : c.tool_calls) {
    if (!out.empty()) out += "\n";
    out += "tool call " + call.name + " " + call.arguments;
  }
  return out;
}

std::string fmt_ms(double ms) { return std::to_string(static_cast<int64_t>(ms + 0.5)) + " ms"; }

class RunState final : public RunHandle, public std::enable_shared_from_this<RunState> {
 public:
  RunState(std::shared_ptr<const EnsembleRunner::Shared> shared, RunInput in, RunDone done)
      : shared_(std::move(shared)), opt_(shared_->options), in_(std::move(in)), done_(std::move(done)) {}

  void start();
  void cancel() override;

 private:
  enum class Phase { kRunning, kJudging, kFinished };

  struct Slot {
    size_t provider = 0;
    std::string model;
    bool judge = false;
    CancelTokenPtr cancel;
    qos::Clock::TimePoint started{};
    bool running = true;
    bool cancelled_by_us = false;
    std::optional<Result<Completion>> result;
    double latency_ms = 0.0;
    size_t record = 0;  // index into records_
  };
  struct Launch {
    size_t slot;
    providers::ProviderPtr provider;
    GenerateRequest request;
    CancelTokenPtr cancel;
  };
  // What to do once the lock is released: nothing user-supplied runs under it
  // (except admit), so a provider that answers synchronously cannot deadlock.
  struct Actions {
    std::vector<AttemptRecord> ended;
    std::vector<Launch> launches;
    std::optional<Result<EnsembleResult>> finish;
    RunDone done;
    // The caller's token's subscription, dropped once the run finished. It
    // is reset here, with no lock held: a reset waits for a cancel callback
    // running on another thread, and that callback takes mu_.
    CancelToken::Subscription unsubscribe;
  };
  struct CandidateRef {
    size_t slot;
    size_t choice;
  };

  void run_actions(Actions& a);
  void cancel_attempts();
  void on_slot_done(size_t slot, Result<Completion> r);
  void on_slot_delta(size_t slot, Delta d);
  void on_hedge_timer();
  void on_deadline();

  bool admit_locked(size_t provider, AttemptKind kind);
  void skip_locked(size_t provider, AttemptKind kind);
  void start_slot_locked(Actions& a, size_t provider, AttemptKind kind, GenerateRequest req, int32_t n);
  bool launch_next_locked(Actions& a, bool hedge);
  void schedule_hedge_locked(size_t provider);
  size_t running_locked() const;
  bool good(const Result<Completion>& r) const;
  void cancel_running_locked(std::optional<size_t> keep = std::nullopt);
  void finish_locked(Actions& a, Result<EnsembleResult> r);
  void finish_fastest_locked(Actions& a, size_t slot);
  void gathered_locked(Actions& a);
  void judged_locked(Actions& a, size_t slot);
  void judge_fallback_locked(Actions& a, const std::string& why);
  void finish_with_candidate_locked(Actions& a, EnsembleDecision d);
  Usage total_usage_locked() const;
  Status all_failed_locked(const std::string& what) const;

  const std::shared_ptr<const EnsembleRunner::Shared> shared_;
  const RunnerOptions& opt_;
  RunInput in_;
  RunDone done_;

  std::mutex mu_;
  Phase phase_ = Phase::kRunning;
  std::vector<Slot> slots_;
  std::vector<AttemptRecord> records_;  // every attempt and skipped provider, in order
  size_t next_provider_ = 0;            // FASTEST: the next provider to try
  bool any_started_ = false;
  std::optional<qos::Timer::TaskId> hedge_timer_;
  std::optional<qos::Timer::TaskId> deadline_timer_;
  Status last_error_;
  std::optional<size_t> committed_;     // FASTEST streaming: the slot whose deltas are forwarded
  // Held while on_delta or done runs, so that they never overlap and no
  // delta follows done. Recursive: on_delta may cancel the run, which calls
  // done on the same thread. Taken only without mu_ held.
  std::recursive_mutex cb_mu_;
  bool done_called_ = false;            // guarded by cb_mu_
  // Gathering strategies.
  std::vector<CandidateAnswer> answers_;
  std::vector<CandidateRef> refs_;
  EnsembleDecision pending_;     // JUDGE: the decision waiting for the judge
  std::vector<size_t> judged_;   // JUDGE: answers_ index of each candidate shown to the judge
  CancelToken::Subscription caller_cancel_;  // on in_.cancel while running; guarded by mu_
  // Attempts' tokens to cancel once mu_ is released (cancel_attempts()): a
  // provider's subscription may call back into the run at once.
  std::vector<CancelTokenPtr> to_cancel_;  // guarded by mu_
};

void RunState::cancel_attempts() {
  std::vector<CancelTokenPtr> tokens;
  {
    std::lock_guard lock(mu_);
    tokens.swap(to_cancel_);
  }
  for (const auto& t : tokens) t->cancel();
}

void RunState::run_actions(Actions& a) {
  cancel_attempts();
  if (in_.on_attempt_end) {
    for (const auto& rec : a.ended) in_.on_attempt_end(rec);
  }
  for (auto& l : a.launches) {
    auto self = shared_from_this();
    const size_t slot = l.slot;
    GenerateCallbacks cb;
    cb.on_done = [self, slot](Result<Completion> r) { self->on_slot_done(slot, std::move(r)); };
    if (in_.on_delta && in_.strategy == StrategyKind::kFastest)
      cb.on_delta = [self, slot](Delta d) { self->on_slot_delta(slot, std::move(d)); };
    try {
      l.provider->generate(std::move(l.request), l.cancel, std::move(cb));
    } catch (const std::exception& e) {
      // A provider must not throw; if one does, it is that attempt's failure.
      on_slot_done(slot, Status::internal(std::string("provider threw: ") + e.what()));
    }
  }
  if (a.finish && a.done) {
    std::lock_guard cb_lock(cb_mu_);
    done_called_ = true;
    a.done(std::move(*a.finish));
  }
  a.unsubscribe.reset();
}

void RunState::on_slot_delta(size_t slot, Delta d) {
  size_t provider = 0;
  {
    std::lock_guard lock(mu_);
    if (phase_ != Phase::kRunning) return;
    if (!committed_) {
      const bool says_something =
          !d.text.empty() || !d.reasoning_content.empty() || !d.tool_calls.empty() || !d.logprobs.empty();
      const Slot& s = slots_[slot];
      if (!says_something || !s.running || s.cancelled_by_us) return;
      // The first words out commit the run to this attempt: the client will
      // see them, so no other attempt may answer any more.
      committed_ = slot;
      if (hedge_timer_) shared_->timer.cancel(*hedge_timer_);
      hedge_timer_.reset();
      cancel_running_locked(slot);
    } else if (*committed_ != slot) {
      return;
    }
    provider = slots_[slot].provider;
  }
  cancel_attempts();  // the attempts this delta made losers
  std::lock_guard cb_lock(cb_mu_);
  if (done_called_) return;
  in_.on_delta(provider, std::move(d));
}

void RunState::start() {
  Actions a;
  {
    std::lock_guard lock(mu_);
    if (in_.providers.empty() ||
        std::any_of(in_.providers.begin(), in_.providers.end(), [](const auto& p) { return p == nullptr; })) {
      finish_locked(a, Status::invalid_argument("an ensemble needs at least one provider and no empty ones"));
    } else if (in_.strategy == StrategyKind::kJudge && in_.judge == nullptr) {
      finish_locked(a, Status::invalid_argument("the judge strategy needs a judge model", "judge"));
    } else if (in_.cancel && in_.cancel->cancelled()) {
      finish_locked(a, Status::unavailable("cancelled by the caller"));
    } else if (in_.deadline.expired(shared_->clock)) {
      finish_locked(a, Status::deadline_exceeded("the deadline passed before the ensemble started"));
    } else {
      if (!in_.deadline.is_never()) {
        std::weak_ptr<RunState> w = weak_from_this();
        deadline_timer_ = shared_->timer.schedule_after(in_.deadline.remaining(shared_->clock), [w] {
          if (auto s = w.lock()) s->on_deadline();
        });
      }
      if (in_.strategy == StrategyKind::kFastest) {
        launch_next_locked(a, false);
      } else {
        const size_t n = in_.providers.size();
        const size_t k = in_.k > 0 ? static_cast<size_t>(in_.k) : n;
        if (n == 1 && k > 1) {
          // k samples of one model: one request with n = k shares the prompt's KV.
          if (admit_locked(0, AttemptKind::kCandidate)) {
            start_slot_locked(a, 0, AttemptKind::kCandidate, in_.request, static_cast<int32_t>(k));
          } else {
            skip_locked(0, AttemptKind::kCandidate);
          }
        } else {
          for (size_t i = 0; i < k; ++i) {
            size_t p = i % n;
            if (admit_locked(p, AttemptKind::kCandidate)) start_slot_locked(a, p, AttemptKind::kCandidate, in_.request, 1);
            else skip_locked(p, AttemptKind::kCandidate);
          }
        }
      }
      if (!any_started_) finish_locked(a, Status::unavailable("no provider admitted the request"));
    }
  }
  run_actions(a);
  if (!in_.cancel) return;
  // Subscribed once the attempts are under way: a token cancelled before
  // runs the callback here, at once. The subscription is kept unless the
  // run finished meanwhile; it is destroyed (if at all) after the lock.
  std::weak_ptr<RunState> weak = weak_from_this();
  CancelToken::Subscription sub = in_.cancel->subscribe([weak] {
    if (auto run = weak.lock()) run->cancel();
  });
  std::lock_guard lock(mu_);
  if (phase_ != Phase::kFinished) caller_cancel_ = std::move(sub);
}

void RunState::cancel() {
  Actions a;
  {
    std::lock_guard lock(mu_);
    if (phase_ == Phase::kFinished) return;
    finish_locked(a, Status::unavailable("cancelled by the caller"));
  }
  run_actions(a);
}

bool RunState::admit_locked(size_t provider, AttemptKind kind) { return !in_.admit || in_.admit(provider, kind); }

void RunState::skip_locked(size_t provider, AttemptKind kind) {
  const bool judge = kind == AttemptKind::kJudge;
  AttemptRecord rec;
  rec.provider = provider;
  rec.model = judge ? in_.judge->info().name : in_.providers[provider]->info().name;
  rec.kind = kind;
  rec.outcome = AttemptOutcome::kSkipped;
  rec.status = Status::unavailable("not admitted (breaker open or retry budget spent)");
  records_.push_back(std::move(rec));
}

void RunState::start_slot_locked(Actions& a, size_t provider, AttemptKind kind, GenerateRequest req, int32_t n) {
  const bool judge = kind == AttemptKind::kJudge;
  const providers::ProviderPtr& p = judge ? in_.judge : in_.providers[provider];
  Slot s;
  s.provider = provider;
  s.model = p->info().name;
  s.judge = judge;
  s.cancel = std::make_shared<CancelToken>();
  s.started = shared_->clock.now();
  s.record = records_.size();

  AttemptRecord rec;
  rec.provider = provider;
  rec.model = s.model;
  rec.kind = kind;
  rec.outcome = AttemptOutcome::kCancelled;  // until it reports back
  rec.status = Status::unavailable("still running");
  records_.push_back(std::move(rec));

  req.model = s.model;
  req.n = n;
  a.launches.push_back({slots_.size(), p, std::move(req), s.cancel});
  slots_.push_back(std::move(s));
  any_started_ = true;
}

bool RunState::launch_next_locked(Actions& a, bool hedge) {
  if (committed_) return false;  // a streamed answer has begun: nobody else may answer
  while (next_provider_ < in_.providers.size()) {
    const size_t p = next_provider_++;
    // Until something has started, a refused provider's successor is still the primary attempt.
    const AttemptKind kind = !any_started_ ? AttemptKind::kPrimary : hedge ? AttemptKind::kHedge : AttemptKind::kFallback;
    if (!admit_locked(p, kind)) {
      skip_locked(p, kind);
      continue;
    }
    start_slot_locked(a, p, kind, in_.request, in_.request.n);
    schedule_hedge_locked(p);
    return true;
  }
  return false;
}

void RunState::schedule_hedge_locked(size_t provider) {
  if (hedge_timer_) {
    shared_->timer.cancel(*hedge_timer_);
    hedge_timer_.reset();
  }
  if (!opt_.hedge || opt_.max_parallel < 2 || next_provider_ >= in_.providers.size() ||
      running_locked() >= static_cast<size_t>(opt_.max_parallel))
    return;
  qos::Clock::Duration delay = provider < in_.expected_p95.size() ? in_.expected_p95[provider] : qos::Clock::Duration::zero();
  if (delay <= qos::Clock::Duration::zero()) delay = opt_.default_hedge_delay;
  if (delay <= qos::Clock::Duration::zero()) return;
  delay = std::max<qos::Clock::Duration>(delay, opt_.min_hedge_delay);
  std::weak_ptr<RunState> w = weak_from_this();
  hedge_timer_ = shared_->timer.schedule_after(delay, [w] {
    if (auto s = w.lock()) s->on_hedge_timer();
  });
}

size_t RunState::running_locked() const {
  return static_cast<size_t>(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.running; }));
}

bool RunState::good(const Result<Completion>& r) const {
  if (!r.is_ok() || r->choices.empty()) return false;
  const Choice& c = r->choices[0];
  if (c.finish_reason == FinishReason::kCancelled) return false;
  return !opt_.reject_empty || !answer_text(c).empty();
}

void RunState::on_hedge_timer() {
  Actions a;
  {
    std::lock_guard lock(mu_);
    hedge_timer_.reset();
    if (phase_ != Phase::kRunning || in_.strategy != StrategyKind::kFastest) return;
    if (running_locked() < static_cast<size_t>(opt_.max_parallel)) launch_next_locked(a, true);
  }
  run_actions(a);
}

void RunState::on_deadline() {
  Actions a;
  {
    std::lock_guard lock(mu_);
    deadline_timer_.reset();
    if (phase_ == Phase::kFinished) return;
    if (phase_ == Phase::kJudging) {
      judge_fallback_locked(a, "the judge did not answer before the deadline");
    } else if (in_.strategy == StrategyKind::kFastest) {
      std::string msg = "no good answer before the deadline";
      if (!last_error_.is_ok()) msg += "; last error: " + last_error_.message();
      finish_locked(a, Status::deadline_exceeded(msg));
    } else {
      cancel_running_locked();
      last_error_ = Status::deadline_exceeded("the deadline passed while gathering answers");
      gathered_locked(a);
    }
  }
  run_actions(a);
}

void RunState::on_slot_done(size_t slot, Result<Completion> r) {
  Actions a;
  {
    std::lock_guard lock(mu_);
    Slot& s = slots_[slot];
    if (!s.running && s.result) return;  // a provider that reports twice: ignore the second
    s.running = false;
    s.latency_ms = ms_between(s.started, shared_->clock.now());
    AttemptRecord& rec = records_[s.record];
    rec.latency_ms = s.latency_ms;
    if (r.is_ok()) rec.usage = r->usage;
    const bool counts_as_good = in_.strategy == StrategyKind::kFastest && !s.judge ? good(r) : r.is_ok();
    if (s.cancelled_by_us) {
      rec.outcome = AttemptOutcome::kCancelled;
      rec.status = Status::unavailable("cancelled: another attempt answered or the run ended");
    } else if (counts_as_good) {
      rec.outcome = AttemptOutcome::kSuccess;
      rec.status = Status::ok();
    } else {
      rec.outcome = AttemptOutcome::kFailure;
      if (!r.is_ok()) rec.status = r.status();
      else if (!r->choices.empty() && r->choices[0].finish_reason == FinishReason::kCancelled)
        rec.status = Status::unavailable("the generation was cancelled");
      else rec.status = Status::unavailable("empty answer");
    }
    a.ended.push_back(rec);
    const AttemptOutcome outcome = rec.outcome;
    const Status status = rec.status;
    s.result = std::move(r);

    if (phase_ == Phase::kFinished || outcome == AttemptOutcome::kCancelled) {
      // Nothing to decide: a loser reporting back, or the run is over.
    } else if (s.judge) {
      judged_locked(a, slot);
    } else if (in_.strategy == StrategyKind::kFastest) {
      if (outcome == AttemptOutcome::kSuccess) {
        finish_fastest_locked(a, slot);
      } else if (committed_ == slot) {
        // Part of this answer is out already: no fallback can continue it.
        last_error_ = status;
        finish_locked(a, with_code(status.code(), "model '" + s.model +
                                                      "' failed after it had started streaming: " + status.message()));
      } else {
        last_error_ = status;
        if (!launch_next_locked(a, false) && running_locked() == 0) {
          finish_locked(a, all_failed_locked("every provider failed"));
        }
      }
    } else {
      if (outcome != AttemptOutcome::kSuccess) last_error_ = status;
      if (running_locked() == 0) gathered_locked(a);
    }
  }
  run_actions(a);
}

void RunState::cancel_running_locked(std::optional<size_t> keep) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (!s.running || s.cancelled_by_us || keep == i) continue;
    s.cancelled_by_us = true;
    to_cancel_.push_back(s.cancel);
    records_[s.record].outcome = AttemptOutcome::kCancelled;
    records_[s.record].status = Status::unavailable("cancelled: another attempt answered or the run ended");
    records_[s.record].latency_ms = ms_between(s.started, shared_->clock.now());
  }
}

void RunState::finish_locked(Actions& a, Result<EnsembleResult> r) {
  if (phase_ == Phase::kFinished) return;
  phase_ = Phase::kFinished;
  if (hedge_timer_) shared_->timer.cancel(*hedge_timer_);
  if (deadline_timer_) shared_->timer.cancel(*deadline_timer_);
  hedge_timer_.reset();
  deadline_timer_.reset();
  cancel_running_locked();
  if (r.is_ok()) r->attempts = records_;
  a.finish = std::move(r);
  a.done = std::move(done_);
  a.unsubscribe = std::move(caller_cancel_);
}

Usage RunState::total_usage_locked() const {
  Usage total;
  for (const auto& s : slots_)
    if (s.result && s.result->is_ok()) add_usage(total, (*s.result)->usage);
  return total;
}

Status RunState::all_failed_locked(const std::string& what) const {
  size_t tried = 0;
  for (const auto& rec : records_) tried += rec.outcome == AttemptOutcome::kSkipped ? 0 : 1;
  std::string msg = what + " (" + std::to_string(tried) + " attempt" + (tried == 1 ? "" : "s") + ")";
  if (!last_error_.is_ok()) msg += "; last error: " + last_error_.message();
  return with_code(last_error_.is_ok() ? StatusCode::kUnavailable : last_error_.code(), std::move(msg));
}

void RunState::finish_fastest_locked(Actions& a, size_t slot) {
  cancel_running_locked();  // losers first, so the metadata shows them cancelled
  const Slot& s = slots_[slot];
  const Completion& c = s.result->value();
  EnsembleResult res;
  res.completion.choices = c.choices;  // n > 1: every choice of the winner
  res.completion.usage = c.usage;
  res.model = s.model;
  res.total_usage = total_usage_locked();

  EnsembleDecision& d = res.decision;
  d.strategy = strategy_name(StrategyKind::kFastest);
  for (size_t i = 0; i < records_.size(); ++i) {
    const auto& rec = records_[i];
    CandidateVote v;
    v.model = rec.model;
    v.ok = rec.outcome == AttemptOutcome::kSuccess;
    if (!v.ok) v.error = std::string(attempt_outcome_name(rec.outcome)) + ": " + rec.status.message();
    v.votes = i == s.record ? 1.0 : 0.0;
    v.latency_ms = rec.latency_ms;
    d.candidates.push_back(std::move(v));
  }
  d.winner = s.record;
  d.winner_model = s.model;
  d.winner_votes = 1.0;
  d.total_votes = 1.0;
  d.reason = (committed_ ? "first to stream: " : "first good answer: ") + s.model + " after " + fmt_ms(s.latency_ms);
  if (records_[s.record].kind == AttemptKind::kHedge) d.reason += " (hedged attempt)";
  if (records_[s.record].kind == AttemptKind::kFallback) d.reason += " (fallback)";
  if (records_.size() > 1) d.reason += "; " + std::to_string(records_.size()) + " attempts";
  finish_locked(a, std::move(res));
}

void RunState::gathered_locked(Actions& a) {
  answers_.clear();
  refs_.clear();
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.judge) continue;
    const double weight = s.provider < in_.weights.size() ? in_.weights[s.provider] : 1.0;
    if (s.result && s.result->is_ok() && !s.cancelled_by_us && !(*s.result)->choices.empty()) {
      const auto& choices = (*s.result)->choices;
      for (size_t j = 0; j < choices.size(); ++j) {
        CandidateAnswer ans;
        ans.model = s.model;
        ans.text = answer_text(choices[j]);
        ans.weight = weight;
        ans.latency_ms = s.latency_ms;
        if (choices[j].finish_reason == FinishReason::kCancelled) {
          ans.ok = false;
          ans.error = "cancelled";
        } else if (opt_.reject_empty && ans.text.empty()) {
          ans.ok = false;
          ans.error = "empty answer";
        }
        answers_.push_back(std::move(ans));
        refs_.push_back({i, j});
      }
    } else {
      CandidateAnswer ans;
      ans.model = s.model;
      ans.ok = false;
      ans.weight = weight;
      ans.latency_ms = s.latency_ms;
      if (s.cancelled_by_us) ans.error = "no answer before the deadline";
      else if (s.result && !s.result->is_ok()) ans.error = s.result->status().message();
      else ans.error = "no answer";
      answers_.push_back(std::move(ans));
      refs_.push_back({i, 0});
    }
  }

  EnsembleDecision d;
  switch (in_.strategy) {
    case StrategyKind::kVoting: d = vote(answers_); break;
    case StrategyKind::kWeighted: d = weighted_vote(answers_); break;
    case StrategyKind::kConsensus: d = consensus(answers_, opt_.consensus_threshold); break;
    case StrategyKind::kJudge: {
      judged_.clear();
      for (size_t i = 0; i < answers_.size(); ++i)
        if (answers_[i].ok && !normalize_answer(answers_[i].text).empty()) judged_.push_back(i);
      if (judged_.empty()) {
        finish_locked(a, all_failed_locked("no candidate answered"));
        return;
      }
      pending_ = vote(answers_);
      pending_.strategy = strategy_name(StrategyKind::kJudge);
      if (judged_.size() == 1) {
        pending_.winner = judged_[0];
        pending_.reason = "only one candidate answered; the judge was not asked";
        finish_with_candidate_locked(a, pending_);
        return;
      }
      const size_t judge_index = in_.providers.size();
      if (!admit_locked(judge_index, AttemptKind::kJudge)) {
        skip_locked(judge_index, AttemptKind::kJudge);
        judge_fallback_locked(a, "the judge was not admitted");
        return;
      }
      std::vector<std::string> shown;
      for (size_t i : judged_) shown.push_back(answers_[i].text);
      GenerateRequest jr;
      ChatMessage ask;
      ask.role = "user";
      ask.content = render_judge_prompt(shared_->judge_template, question_of(in_.request), shown,
                                        opt_.judge_max_candidate_chars);
      jr.messages.push_back(std::move(ask));
      jr.sampling.temperature = 0.0f;
      jr.sampling.max_tokens = opt_.judge_max_tokens;
      jr.priority = in_.request.priority;
      phase_ = Phase::kJudging;
      start_slot_locked(a, judge_index, AttemptKind::kJudge, std::move(jr), 1);
      return;
    }
    case StrategyKind::kFastest: break;  // not a gathering strategy
  }
  if (!d.winner) {
    finish_locked(a, all_failed_locked("no candidate answered"));
    return;
  }
  finish_with_candidate_locked(a, std::move(d));
}

void RunState::judge_fallback_locked(Actions& a, const std::string& why) {
  EnsembleDecision d = pending_;
  d.winner = judged_[0];
  d.reason = why + "; fell back to candidate 1";
  finish_with_candidate_locked(a, std::move(d));
}

void RunState::judged_locked(Actions& a, size_t slot) {
  const Slot& s = slots_[slot];
  if (!s.result->is_ok()) {
    judge_fallback_locked(a, "the judge failed (" + s.result->status().message() + ")");
    return;
  }
  const auto& choices = (*s.result)->choices;
  std::string said = choices.empty() ? std::string() : choices[0].text;
  auto pick = parse_judge_choice(said, judged_.size());
  if (!pick) {
    std::string quoted = said.substr(0, 80);
    for (auto& c : quoted)
      if (c == '\n' || c == '\r') c = ' ';
    judge_fallback_locked(a, "the judge's answer named no candidate ('" + quoted + (said.size() > 80 ? "...')" : "')"));
    return;
  }
  EnsembleDecision d = pending_;
  d.winner = judged_[*pick - 1];
  d.reason = "judge " + s.model + " chose candidate " + std::to_string(*pick) + " of " + std::to_string(judged_.size());
  finish_with_candidate_locked(a, std::move(d));
}

void RunState::finish_with_candidate_locked(Actions& a, EnsembleDecision d) {
  cancel_running_locked();
  const size_t w = *d.winner;
  d.winner_model = answers_[w].model;
  d.winner_votes = d.candidates[w].votes;
  const CandidateRef ref = refs_[w];
  const Completion& c = slots_[ref.slot].result->value();
  EnsembleResult res;
  res.completion.choices = {c.choices[ref.choice]};
  res.completion.choices[0].index = 0;
  res.completion.usage = c.usage;
  res.model = answers_[w].model;
  res.total_usage = total_usage_locked();
  res.decision = std::move(d);
  finish_locked(a, std::move(res));
}

}  // namespace

Result<std::unique_ptr<EnsembleRunner>> EnsembleRunner::create(RunnerOptions options, const qos::Clock& clock,
                                                               qos::Timer& timer) {
  if (options.max_parallel < 1) return Status::invalid_argument("max_parallel must be at least 1", "max_parallel");
  if (!(options.consensus_threshold > 0.0 && options.consensus_threshold <= 1.0))
    return Status::invalid_argument("consensus_threshold must be in (0, 1]", "consensus_threshold");
  if (options.judge_max_tokens < 1)
    return Status::invalid_argument("judge_max_tokens must be at least 1", "judge_max_tokens");
  std::string templ = kBuiltinJudgePrompt;
  if (!options.judge_prompt_path.empty()) {
    std::ifstream in(options.judge_prompt_path, std::ios::binary);
    if (!in) {
      return Status::not_found("cannot read the judge prompt template '" + options.judge_prompt_path + "'",
                               "judge_prompt_path");
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    templ = ss.str();
    if (templ.find("{{candidates}}") == std::string::npos) {
      return Status::invalid_argument("the judge prompt template '" + options.judge_prompt_path +
                                          "' has no {{candidates}} placeholder",
                                      "judge_prompt_path");
    }
  }
  auto shared = std::make_shared<const Shared>(std::move(options), std::move(templ), clock, timer);
  return std::unique_ptr<EnsembleRunner>(new EnsembleRunner(std::move(shared)));
}

std::shared_ptr<RunHandle> EnsembleRunner::run(RunInput input, RunDone done) const {
  auto state = std::make_shared<RunState>(shared_, std::move(input), std::move(done));
  state->start();
  return state;
}

const std::string& EnsembleRunner::judge_template() const { return shared_->judge_template; }

}  // namespace llmpool::ensemble
