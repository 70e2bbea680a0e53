// RouterService: the router as the server runs it. It owns the per-instance
// statistics (one InstanceStats, with its circuit breaker, per model name),
// the canary controller, the retry budget, the admission gate, one
// EnsembleRunner per route group and the decision log, and turns one parsed
// request into a routed answer:
//
//   resolve members -> classify -> assign canary (by tenant and the OpenAI
//   `user`) -> score with relaxation -> order attempts -> regulate effort
//   -> build the run input -> EnsembleRunner::run (breaker + retry budget
//   hooks) -> deliver: decision log line, feedback record, InstanceStats /
//   canary updates
//
// Tenancy: a request runs for GenerateRequest::tenant ("" without
// tenancy), which the API sets from credentials. The decision log line
// carries it, the feedback record is the tenant's own (another tenant's
// feedback call sees NotFound, as for an unknown id), the canary buckets
// by tenant and user (canary_key), and metrics carry a `tenant` label for
// the configured tenants only (Options::tenants / set_tenants, and those
// Options::tenant_known vouches for later; any other tenant is
// obs::kUnknownLabel, no tenant no label).
//
// `model: "auto"` or a route group name routes among the group's models
// (auto without a configured group: every model); an explicit model name
// skips the choice but keeps the fallbacks of the groups it belongs to.
// docs/routing.md describes the flow, the decision log and the metrics.
//
// Models are reached through the ModelDirectory (the pool) only when an
// attempt starts, so scoring never loads a model. Candidates are built from
// ModelDirectory::list(): id and model are the model's name.
//
// Threading: every public method is thread-safe; route()'s `done` runs on a
// provider's or the timer's thread, on the thread that cancels the
// request's token (the run hears it at once through a subscription), or
// inside route() for early errors.
// apply() swaps the configuration for requests that start afterwards;
// requests in flight finish with what they started with. The clock, timer,
// random source and metrics registry passed in Options must outlive the
// service; the directory is shared. Routed runs call back into the service:
// destroy it only once they have ended (close_and_drain() returned true).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/chat.h"
#include "common/status.h"
#include "config/config.h"
#include "ensemble/runner.h"
#include "obs/metrics.h"
#include "providers/directory.h"
#include "qos/admission.h"
#include "qos/clock.h"
#include "qos/retry_budget.h"
#include "qos/timer.h"
#include "router/canary.h"
#include "router/classifier.h"
#include "router/decision_log.h"
#include "router/effort.h"
#include "router/instance_stats.h"
#include "router/scorer.h"

namespace llmpool::router {

// What a request asks of the router beyond the generation itself.
struct RouteHints {
  std::string user;                                   // OpenAI `user`: the canary key
  std::optional<ReasoningEffort> reasoning_effort;    // OpenAI `reasoning_effort`
  bool temperature_set = false;                       // the client chose a temperature
  std::optional<ensemble::StrategyKind> strategy;     // extension `ensemble.strategy`
  int32_t k = 0;                                      // extension `ensemble.k`; 0: the group's
  std::string judge;                                  // extension `ensemble.judge`; "": the group's
};

// Which model answered and why: response headers, the `llmpool` field.
struct RouteInfo {
  std::string model;         // the model that answered ("" when none did)
  std::string route;         // the group, or the model asked for by name
  std::string reason;        // one line
  std::string arm;           // canary arm, when the request was in a canary route
  nlohmann::json ensemble;   // to_json(EnsembleDecision); null for a direct request
  // Each attempt's tokens, by model, as known when the answer was delivered
  // (the judge's too); empty for a direct request. Usage and the rate
  // limiter charge these, so an ensemble costs what its members spent.
  std::vector<std::pair<std::string, Usage>> member_usage = {};
};

struct RouteRequest {
  GenerateRequest generate;  // generate.model: "auto", a group name or a model name
  RouteHints hints;
  std::string response_id;   // the id the answer carries; the key for feedback
  // Streaming, for FASTEST runs only (the gathering strategies answer
  // whole): with on_delta set, the first attempt to produce output commits
  // the run (EnsembleRunner). on_stream_start is then called once, before
  // that attempt's first delta, with what is known of the answer: its
  // model, route, reason and a provisional fastest decision (the full one
  // comes with `done` and in the decision log); on_delta gets each delta
  // of that attempt in order. Neither runs concurrently with the other or
  // with `done`, nor after `done`. A run that fails before any delta calls
  // neither.
  std::function<void(const RouteInfo&)> on_stream_start;
  std::function<void(Delta)> on_delta;
};

struct RouteOutcome {
  Result<Completion> completion;
  RouteInfo info;
};

// Where a response id leads, for POST /v1/feedback.
struct FeedbackTarget {
  std::string model;         // the instance that answered
  std::string route;         // canary route ("" when none)
  std::string arm;           // canary arm ("" when none)
  std::string tenant = {};   // whose response it is; only that tenant may rate it ("" without tenancy)
};

// An explicit-model request served without the router's choice (it still
// counts in the instance's statistics and its breaker).
class DirectAttempt {
 public:
  DirectAttempt() = default;
  // Records the attempt's end once: success or failure (server-side errors
  // only: a rejected request says nothing about health), with its latency.
  // A generation the client cancelled (`cancelled`) says nothing either.
  void finish(const Status& status, bool cancelled = false);
  const std::string& model() const { return model_; }
  // What remember() takes for this answer: the model and the tenant.
  FeedbackTarget feedback_target() const { return {model_, "", "", tenant_}; }

 private:
  friend class RouterService;
  std::shared_ptr<InstanceStats> stats_;  // null: the breaker did not take this attempt
  std::string model_;
  std::string tenant_;
  qos::Clock::TimePoint start_{};
  const qos::Clock* clock_ = nullptr;
  bool done_ = false;
};

class RouterService {
 public:
  struct Options {
    const qos::Clock* clock = nullptr;          // default: SystemClock::instance()
    qos::Timer* timer = nullptr;                // default: a ThreadTimer the service owns
    qos::RandomSource* random = nullptr;        // default: a SeededRandom from std::random_device
    obs::MetricsRegistry* metrics = nullptr;    // optional
    // Response ids remembered for feedback, each with whether it was rated:
    // the newest `feedback_capacity` answers; the oldest is forgotten first.
    size_t feedback_capacity = 100000;
    DecisionLog::Options log;
    // The configured tenants (YAML and the tenant store): the only tenant
    // names metrics carry as a `tenant` label. See set_tenants().
    std::vector<std::string> tenants;
    // Optional: asked about a request's tenant that is not one of `tenants`
    // (a tenant added since, by the admin API or the CLI). True: it gets its
    // own label from then on; false: obs::kUnknownLabel. Called without the
    // service's lock held; may block briefly (a database lookup).
    std::function<bool(const std::string&)> tenant_known;
  };

  // Builds the service for `config` (routing section and models).
  // InvalidArgument when the canary or runner options are refused,
  // Unavailable when the decision log cannot be opened.
  static Result<std::unique_ptr<RouterService>> create(const config::Config& config,
                                                       std::shared_ptr<providers::ModelDirectory> directory,
                                                       Options options);
  ~RouterService();

  // Applies a new configuration (hot reload). On error nothing changes but
  // the metric label names (MetricsRegistry::label), which follow the
  // configured models since the pool serves them either way.
  // Statistics are kept unless the instance or breaker options changed;
  // canary counters are kept unless the canary section changed.
  Status apply(const config::Config& config);
  // True when the service runs `config`'s routing section and models (so a
  // reload has nothing to apply here). After a refused apply() it is false
  // for the refused config: the next reload tries it again.
  bool is_current(const config::Config& config) const;
  // Replaces the configured tenants (Options::tenants) when they change: a
  // request's tenant is its `tenant` metric label when it is one of these,
  // obs::kUnknownLabel when it is another, and requests without a tenant
  // carry no such label. Their series are created at once (at 0).
  void set_tenants(std::vector<std::string> tenants);

  // True when `model` goes through the router's choice or a fallback
  // chain: "auto", a group name, a model with fallbacks, or any request
  // that names an ensemble strategy.
  bool routes(const std::string& model, const RouteHints& hints) const;

  // Runs a routed request; `done` is called exactly once. Cancelling
  // `cancel` (may be null) ends the run at once and cancels its attempts.
  void route(RouteRequest request, CancelTokenPtr cancel, std::function<void(RouteOutcome)> done);

  // For a request sent straight to `model` on behalf of `tenant`:
  // statistics and breaker bookkeeping (see DirectAttempt) and the effort
  // regulation a request with `reasoning_effort` asks for.
  DirectAttempt start_direct(const std::string& model, const std::string& tenant = "");
  void regulate_direct(GenerateRequest& request, const RouteHints& hints) const;

  // Remembers where `response_id` came from, for feedback; target.tenant
  // is the tenant it was answered for. The newest
  // Options::feedback_capacity ids are kept (memory bounded by that);
  // remembering one more forgets the oldest, rated or not.
  void remember(const std::string& response_id, FeedbackTarget target);
  // Records feedback from `tenant` (the caller's, "" without tenancy) for
  // a remembered response: the instance's quality and, in a canary route,
  // the arm's helpful rate (which may switch it off). One rating per
  // response: AlreadyExists (HTTP 409, code "feedback_exists") for an id
  // already rated, NotFound (param "response_id") for an unknown or
  // forgotten one, and the very same NotFound for another tenant's
  // response (rated or not), so that ids cannot be probed.
  Result<FeedbackTarget> feedback(const std::string& response_id, bool helpful, const std::string& tenant = "");

  // Global backpressure: a hold per generation. ResourceExhausted over
  // routing.admission.max_active (answer 429 with Retry-After), Unavailable
  // once closed.
  Result<qos::AdmissionGate::Hold> admit();
  int32_t retry_after_seconds() const { return gate_.retry_after_seconds(); }
  // Shutdown: refuse new generations, then wait (blocking) for the running
  // ones, at most `timeout`. True if drained.
  bool close_and_drain(std::chrono::milliseconds timeout);

  // What one routed request carries from the choice to the answer
  // (defined in service.cpp).
  struct RunContextBase {
    virtual ~RunContextBase() = default;
  };

  // GET /api/routing-metrics.
  nlohmann::json metrics_json();
  // Writes the decision log out now.
  void flush_log();

 private:
  struct State;
  struct Instances;
  struct CollectorSlot;
  struct Plan;  // one request on its way through route()'s stages

  RouterService(std::shared_ptr<providers::ModelDirectory> directory, Options options);
  Result<std::shared_ptr<const State>> build_state(const config::Config& config,
                                                   const std::shared_ptr<const State>& previous);
  std::shared_ptr<const State> state() const;
  std::shared_ptr<InstanceStats> stats_for(const State& st, const std::string& model);
  void on_canary_event(const CanaryEvent& event);

  // route()'s stages, in order (service.cpp says what each does). A
  // refusal comes back as a Status and ends the request.
  Status resolve_members(Plan& p) const;
  void assign_canary(Plan& p, const RouteHints& hints) const;
  void score_with_relaxation(Plan& p, int32_t max_tokens);
  Status order_attempts(Plan& p, const RouteHints& hints);
  void regulate_first_choice(Plan& p, const RouteHints& hints, GenerateRequest& request) const;
  Result<ensemble::RunInput> build_run_input(Plan& p, RouteRequest& rq, CancelTokenPtr cancel);
  void deliver(const State& st, const RunContextBase& ctx, Result<ensemble::EnsembleResult> r,
               const std::function<void(RouteOutcome)>& done);

  // The `tenant` label value for `tenant` (see set_tenants); "" for none.
  std::string tenant_label(const std::string& tenant) const;
  // `name`{labels..., tenant} from the registry; null without one.
  obs::Counter* tenant_counter(const std::string& name, const char* help, const std::string& tenant,
                               obs::Labels labels);
  // CONSENSUS below its threshold: runs the request again on the best model
  // tagged "reasoning" and delivers that answer (or, if it fails, `first`).
  // False when no such model can take it (the caller delivers `first`).
  bool escalate(const std::shared_ptr<const State>& st, const std::shared_ptr<RunContextBase>& ctx,
                const ensemble::EnsembleResult& first,
                const std::shared_ptr<std::function<void(Result<ensemble::EnsembleResult>)>>& deliver);
  void collect_metrics(std::string& out);

  std::shared_ptr<providers::ModelDirectory> directory_;
  Options options_;
  const qos::Clock& clock_;
  std::unique_ptr<qos::Timer> own_timer_;
  std::unique_ptr<qos::RandomSource> own_random_;
  qos::Timer& timer_;
  qos::RandomSource& random_;
  qos::AdmissionGate gate_;
  obs::Histogram* overhead_ = nullptr;
  std::shared_ptr<CollectorSlot> slot_;  // the metrics collector's way back to this service

  mutable std::mutex mu_;
  std::shared_ptr<const State> state_;                  // guarded by mu_
  std::map<std::string, double> last_score_;            // model -> score in the last decision; guarded by mu_
  // Options::tenants, and those tenant_known added; guarded by mu_.
  mutable std::shared_ptr<const std::set<std::string, std::less<>>> tenants_;

  struct Rateable {
    std::string response_id;
    FeedbackTarget target;
    bool rated = false;
  };
  std::mutex feedback_mu_;
  std::list<Rateable> feedback_fifo_;  // newest first; guarded by feedback_mu_
  std::unordered_map<std::string, std::list<Rateable>::iterator> feedback_index_;  // guarded by feedback_mu_
};

}  // namespace llmpool::router
