#include "router/service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <set>
#include <sstream>

#include "ensemble/hooks.h"

namespace llmpool::router {

using nlohmann::json;

// ---------------------------------------------------------------- conversion

namespace {

ClassifierOptions classifier_options(const config::ClassifierConfig& c) {
  ClassifierOptions o;
  o.weights = {c.weight_length, c.weight_code, c.weight_reasoning, c.weight_multi_step, c.weight_technical};
  o.code_preferred = c.code_preferred;
  o.code_required = c.code_required;
  o.reasoning_preferred = c.reasoning_preferred;
  o.reasoning_required_complexity = c.reasoning_required_complexity;
  o.fast_below = c.fast_below;
  o.tools_required = c.tools_required;
  o.length_saturation_tokens = c.length_saturation_tokens;
  o.max_scan_bytes = c.max_scan_bytes;
  return o;
}

InstanceStatsOptions instance_options(const config::RoutingConfig& r) {
  InstanceStatsOptions o;
  o.ewma_alpha = r.instances.ewma_alpha;
  o.window_size = static_cast<size_t>(r.instances.window_size);
  o.max_sample_age = std::chrono::milliseconds(r.instances.max_sample_age_ms);
  o.min_samples = static_cast<size_t>(r.instances.min_samples);
  o.slow_p95_ms = r.instances.slow_p95_ms;
  o.recover_ratio = r.instances.recover_ratio;
  o.quality_prior = r.instances.quality_prior;
  o.quality_alpha = r.instances.quality_alpha;
  o.success_alpha = r.instances.success_alpha;
  o.breaker.failure_threshold = r.breaker.failure_threshold;
  o.breaker.cooldown = std::chrono::milliseconds(r.breaker.cooldown_ms);
  return o;
}

EffortOptions effort_options(const config::EffortConfig& e) {
  EffortOptions o;
  o.hint_weight = e.hint_weight;
  o.minimal_value = e.minimal_value;
  o.low_value = e.low_value;
  o.medium_value = e.medium_value;
  o.high_value = e.high_value;
  o.low_tier_below = e.low_tier_below;
  o.medium_tier_below = e.medium_tier_below;
  o.low_tier_tokens = e.low_tier_tokens;
  o.medium_tier_tokens = e.medium_tier_tokens;
  o.high_tier_tokens = e.high_tier_tokens;
  o.temperature_min = static_cast<float>(e.temperature_min);
  o.temperature_max = static_cast<float>(e.temperature_max);
  o.thinking_above = e.thinking_above;
  return o;
}

ensemble::RunnerOptions runner_options(const config::RoutingConfig& r, const config::RouteGroupConfig* g) {
  ensemble::RunnerOptions o;
  o.judge_prompt_path = r.judge_prompt;
  if (g != nullptr) {
    o.max_parallel = g->hedge_max_parallel;
    o.hedge = g->hedge_max_parallel > 1;
    o.default_hedge_delay = std::chrono::milliseconds(g->hedge_default_delay_ms);
    o.consensus_threshold = g->consensus_threshold;
  }
  return o;
}

std::vector<CanaryRouteConfig> canary_routes(const config::CanaryConfig& c) {
  std::vector<CanaryRouteConfig> out;
  for (const auto& r : c.routes) {
    CanaryRouteConfig rc;
    rc.route = r.route;
    rc.baseline_model = r.baseline_model;
    for (const auto& a : r.arms) rc.arms.push_back({a.name, a.model, a.percent});
    out.push_back(std::move(rc));
  }
  return out;
}

// Header values travel in HTTP: printable ASCII only, bounded.
std::string header_safe(std::string s) {
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = ' ';
  if (s.size() > 512) s.resize(512);
  return s;
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << v;
  return os.str();
}

// One decision-log line; invalid UTF-8 from a model is replaced, never thrown.
std::string log_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A provider that acquires its model from the directory only when an
// attempt starts, so that candidates the run never tries are not loaded.
// The lease is held until the attempt's on_done.
class LazyProvider final : public providers::Provider {
 public:
  LazyProvider(std::shared_ptr<providers::ModelDirectory> directory, providers::ModelInfo info)
      : directory_(std::move(directory)), info_(std::move(info)) {}
  const providers::ModelInfo& info() const override { return info_; }

  void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) override {
    request.model = info_.name;
    auto req = std::make_shared<GenerateRequest>(std::move(request));
    auto cbs = std::make_shared<GenerateCallbacks>(std::move(callbacks));
    directory_->acquire(info_.name, [req, cancel, cbs](Result<providers::ProviderPtr> p) {
      if (!p) {
        cbs->on_done(p.status());
        return;
      }
      providers::ProviderPtr lease = *p;
      GenerateCallbacks inner;
      inner.on_delta = cbs->on_delta;
      inner.on_done = [lease, cbs](Result<Completion> r) { cbs->on_done(std::move(r)); };
      lease->generate(std::move(*req), cancel, std::move(inner));
    });
  }

 private:
  std::shared_ptr<providers::ModelDirectory> directory_;
  providers::ModelInfo info_;
};

// The label values metrics may carry (obs::MetricsRegistry::label): the
// configured model names (an alias counts as its model), route groups,
// "auto", canary routes and arms.
std::map<std::string, std::string, std::less<>> label_names(const config::Config& config) {
  std::map<std::string, std::string, std::less<>> names;
  names[config::kAutoRoute] = config::kAutoRoute;
  for (const auto& m : config.models) {
    names[m.name] = m.name;
    for (const auto& a : m.aliases) names.emplace(a, m.name);
  }
  for (const auto& g : config.routing.groups) names.emplace(g.name, g.name);
  for (const auto& r : config.routing.canary.routes) {
    names.emplace(r.route, r.route);
    for (const auto& a : r.arms) names.emplace(a.name, a.name);
  }
  return names;
}

bool only_embedding(const providers::ModelInfo& info) {
  return !info.capabilities.empty() &&
         std::all_of(info.capabilities.begin(), info.capabilities.end(), [](const std::string& c) {
           return c == "embedding";
         });
}

const char* const kDecisionsHelp = "Requests routed by the router, by tenant (configured tenants only).";
const char* const kFeedbackHelp = "Ratings accepted on POST /v1/feedback, by tenant (configured tenants only).";

}  // namespace

// ------------------------------------------------------------------- state

// The per-instance statistics, shared by every State built with the same
// instance and breaker options.
struct RouterService::Instances {
  InstanceStatsOptions options;
  config::InstancesConfig instances_config;
  config::BreakerConfig breaker_config;
  std::mutex mu;
  std::map<std::string, std::shared_ptr<InstanceStats>> by_model;  // guarded by mu
};

// Everything derived from one configuration. Immutable once built; shared
// with the requests that started under it.
struct RouterService::State {
  config::RoutingConfig routing;
  std::vector<config::ModelConfig> models;
  Classifier classifier;
  ScoreWeights weights;
  ScoreOptions score;
  EffortOptions effort;
  std::shared_ptr<Instances> instances;
  std::shared_ptr<CanaryController> canary;  // null without canary routes
  std::set<std::string> canary_routes;
  std::shared_ptr<qos::RetryBudget> budget;
  std::shared_ptr<ensemble::EnsembleRunner> default_runner;
  std::map<std::string, std::shared_ptr<ensemble::EnsembleRunner>> runners;  // by group name
  std::shared_ptr<DecisionLog> log;

  explicit State(const ClassifierOptions& c) : classifier(c) {}

  const config::ModelConfig* model(const std::string& name) const {
    for (const auto& m : models) {
      if (m.name == name) return &m;
      if (std::find(m.aliases.begin(), m.aliases.end(), name) != m.aliases.end()) return &m;
    }
    return nullptr;
  }
  const ensemble::EnsembleRunner& runner_for(const std::string& group) const {
    auto it = runners.find(group);
    return it == runners.end() ? *default_runner : *it->second;
  }
  // Effort regulation for `model`: max_tokens and temperature (unless the
  // client chose them) and, for a model that thinks, the thinking budget
  // (unless the client set one).
  EffortParams regulate(const Classification& cls, const RouteHints& hints, const std::string& model,
                        GenerateRequest& request) const {
    ThinkingProfile profile;
    if (const config::ModelConfig* mc = this->model(model)) {
      profile.supports_thinking = mc->thinking.supported;
      profile.min_thinking_tokens = mc->thinking.min_tokens;
      profile.max_thinking_tokens = mc->thinking.max_tokens;
      profile.context = mc->context;
    }
    EffortParams ep =
        regulate_effort(cls.complexity, hints.reasoning_effort, profile, cls.features.estimated_tokens, effort);
    apply_effort(ep, request, hints.temperature_set);
    if (profile.supports_thinking && request.thinking_budget < 0)
      request.thinking_budget = ep.thinking ? ep.thinking_budget : 0;
    return ep;
  }

  // Fallbacks of every group that lists `model`, in configuration order.
  std::vector<std::string> fallbacks_of(const std::string& model) const {
    std::vector<std::string> out;
    for (const auto& g : routing.groups)
      if (std::find(g.models.begin(), g.models.end(), model) != g.models.end())
        for (const auto& f : g.fallbacks)
          if (f != model && std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
    return out;
  }
};

// Keeps the metrics collector (which the registry keeps for its lifetime)
// from reaching a destroyed service.
struct RouterService::CollectorSlot {
  std::mutex mu;
  RouterService* service = nullptr;  // guarded by mu
};

RouterService::RouterService(std::shared_ptr<providers::ModelDirectory> directory, Options options)
    : directory_(std::move(directory)),
      options_(options),
      clock_(options.clock != nullptr ? *options.clock : qos::SystemClock::instance()),
      own_timer_(options.timer == nullptr ? std::make_unique<qos::ThreadTimer>() : nullptr),
      own_random_(options.random == nullptr ? std::make_unique<qos::SeededRandom>(std::random_device{}())
                                            : nullptr),
      timer_(options.timer != nullptr ? *options.timer : *own_timer_),
      random_(options.random != nullptr ? *options.random : *own_random_) {}

Result<std::unique_ptr<RouterService>> RouterService::create(const config::Config& config,
                                                             std::shared_ptr<providers::ModelDirectory> directory,
                                                             Options options) {
  std::unique_ptr<RouterService> s(new RouterService(std::move(directory), options));
  if (options.metrics != nullptr) options.metrics->set_label_names(label_names(config));
  auto st = s->build_state(config, nullptr);
  if (!st) return st.status();
  s->state_ = std::move(st).value();
  s->set_tenants(std::move(options.tenants));
  for (const auto& m : config.models) s->stats_for(*s->state_, m.name);  // every instance in /metrics from the start
  s->gate_.set_options({config.routing.admission.max_active, config.routing.admission.retry_after_seconds});
  if (obs::MetricsRegistry* m = options.metrics) {
    std::vector<double> us_buckets = {1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2};
    s->overhead_ = &m->histogram("llmpool_router_overhead_seconds",
                                 "Router time per request from parse to provider call (classify, score, effort).",
                                 {}, us_buckets);
    (void)m->counter("llmpool_router_decisions_total", kDecisionsHelp);
    (void)m->counter("llmpool_router_feedback_total", kFeedbackHelp, {{"helpful", "false"}});
    (void)m->counter("llmpool_router_feedback_total", kFeedbackHelp, {{"helpful", "true"}});
    auto slot = std::make_shared<CollectorSlot>();
    slot->service = s.get();
    s->slot_ = slot;
    m->add_collector([slot](std::string& out) {
      std::lock_guard lock(slot->mu);
      if (slot->service != nullptr) slot->service->collect_metrics(out);
    });
  }
  return s;
}

RouterService::~RouterService() {
  if (slot_) {
    std::lock_guard lock(slot_->mu);  // waits for a scrape in progress
    slot_->service = nullptr;
  }
  flush_log();
}

Result<std::shared_ptr<const RouterService::State>> RouterService::build_state(
    const config::Config& config, const std::shared_ptr<const State>& previous) {
  const config::RoutingConfig& r = config.routing;
  auto st = std::make_shared<State>(classifier_options(r.classifier));
  st->routing = r;
  st->models = config.models;
  st->weights = {r.score.weight_latency, r.score.weight_queue, r.score.weight_fit, r.score.weight_health,
                 r.score.weight_feedback};
  st->score = {r.score.latency_ref_ms, r.score.ewma_share, r.score.unknown_latency_ms, r.score.half_open_health};
  st->effort = effort_options(r.effort);

  if (previous && previous->routing.instances == r.instances && previous->routing.breaker == r.breaker) {
    st->instances = previous->instances;
  } else {
    st->instances = std::make_shared<Instances>();
    st->instances->options = instance_options(r);
    st->instances->instances_config = r.instances;
    st->instances->breaker_config = r.breaker;
  }

  if (previous && previous->routing.canary == r.canary) {
    st->canary = previous->canary;
  } else if (!r.canary.routes.empty()) {
    CanaryOptions co;
    co.min_samples = r.canary.min_samples;
    co.max_helpful_drop = r.canary.max_helpful_drop;
    auto c = CanaryController::create(canary_routes(r.canary), co, random_,
                                      [this](const CanaryEvent& e) { on_canary_event(e); });
    if (!c) return c.status();
    st->canary = std::shared_ptr<CanaryController>(std::move(c).value());
  }
  for (const auto& cr : r.canary.routes) st->canary_routes.insert(cr.route);

  if (previous && previous->routing.retry_budget == r.retry_budget) {
    st->budget = previous->budget;
  } else {
    qos::RetryBudgetOptions bo;
    bo.retry_ratio = r.retry_budget.retry_ratio;
    bo.min_retries_per_second = r.retry_budget.min_retries_per_second;
    bo.window = std::chrono::milliseconds(r.retry_budget.window_ms);
    st->budget = std::make_shared<qos::RetryBudget>(bo, clock_);
  }

  auto make_runner = [&](const config::RouteGroupConfig* g) -> Result<std::shared_ptr<ensemble::EnsembleRunner>> {
    auto runner = ensemble::EnsembleRunner::create(runner_options(r, g), clock_, timer_);
    if (!runner) return runner.status();
    return std::shared_ptr<ensemble::EnsembleRunner>(std::move(runner).value());
  };
  auto def = make_runner(nullptr);
  if (!def) return def.status();
  st->default_runner = *def;
  for (const auto& g : r.groups) {
    auto runner = make_runner(&g);
    if (!runner) return Status::invalid_argument("routing.groups '" + g.name + "': " + runner.status().message());
    st->runners[g.name] = *runner;
  }

  if (previous && previous->log && previous->log->path() == r.decision_log) {
    st->log = previous->log;  // the last step: nothing fails after the limits change
    st->log->set_rotation(r.decision_log_max_bytes, r.decision_log_keep);
  } else if (!r.decision_log.empty()) {
    DecisionLog::Options lo = options_.log;
    lo.max_bytes = r.decision_log_max_bytes;
    lo.keep = r.decision_log_keep;
    auto log = DecisionLog::open(r.decision_log, lo);
    if (!log) return log.status();
    st->log = std::shared_ptr<DecisionLog>(std::move(log).value());
  }
  return std::shared_ptr<const State>(std::move(st));
}

Status RouterService::apply(const config::Config& config) {
  // The pool serves the new models whether or not the routing part is
  // refused, so their names are labels from now on.
  if (options_.metrics != nullptr) options_.metrics->set_label_names(label_names(config));
  auto next = build_state(config, state());
  if (!next) return next.status();
  for (const auto& m : config.models) stats_for(**next, m.name);  // every instance in /metrics from the start
  gate_.set_options({config.routing.admission.max_active, config.routing.admission.retry_after_seconds});
  std::lock_guard lock(mu_);
  state_ = std::move(next).value();
  return Status::ok();
}

bool RouterService::is_current(const config::Config& config) const {
  auto st = state();
  return st->routing == config.routing && st->models == config.models;
}

void RouterService::set_tenants(std::vector<std::string> tenants) {
  auto names = std::make_shared<std::set<std::string, std::less<>>>(tenants.begin(), tenants.end());
  names->erase("");
  {
    std::lock_guard lock(mu_);
    tenants_ = names;
  }
  for (const auto& t : *names) {  // every configured tenant's series from the start
    (void)tenant_counter("llmpool_router_decisions_total", kDecisionsHelp, t, {});
    for (const char* helpful : {"false", "true"})
      (void)tenant_counter("llmpool_router_feedback_total", kFeedbackHelp, t, {{"helpful", helpful}});
  }
}

std::string RouterService::tenant_label(const std::string& tenant) const {
  if (tenant.empty()) return "";
  {
    std::lock_guard lock(mu_);
    if (tenants_ && tenants_->count(tenant)) return tenant;
  }
  if (!options_.tenant_known || !options_.tenant_known(tenant)) return std::string(obs::kUnknownLabel);
  // A tenant added since the start: its own label from now on. The set
  // grows only by tenants that exist, so labels stay bounded.
  std::lock_guard lock(mu_);
  auto names = tenants_ ? std::make_shared<std::set<std::string, std::less<>>>(*tenants_)
                        : std::make_shared<std::set<std::string, std::less<>>>();
  names->insert(tenant);
  tenants_ = std::move(names);
  return tenant;
}

obs::Counter* RouterService::tenant_counter(const std::string& name, const char* help, const std::string& tenant,
                                            obs::Labels labels) {
  if (options_.metrics == nullptr) return nullptr;
  if (std::string label = tenant_label(tenant); !label.empty()) labels.emplace_back("tenant", std::move(label));
  return &options_.metrics->counter(name, help, labels);
}

std::shared_ptr<const RouterService::State> RouterService::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::shared_ptr<InstanceStats> RouterService::stats_for(const State& st, const std::string& model) {
  Instances& in = *st.instances;
  std::lock_guard lock(in.mu);
  auto& slot = in.by_model[model];
  if (!slot) {
    obs::Counter* opens = nullptr;
    if (options_.metrics != nullptr)
      opens = &options_.metrics->counter("llmpool_breaker_opens_total", "Times an instance's circuit breaker opened.",
                                         {{"instance", options_.metrics->label(model)}});
    slot = std::make_shared<InstanceStats>(
        model, in.options, clock_, [model, opens](qos::BreakerState from, qos::BreakerState to) {
          spdlog::info("instance '{}': breaker {} -> {}", model, qos::breaker_state_name(from),
                       qos::breaker_state_name(to));
          if (to == qos::BreakerState::kOpen && opens != nullptr) opens->inc();
        });
  }
  return slot;
}

void RouterService::on_canary_event(const CanaryEvent& e) {
  if (e.kind == "auto_disabled")
    spdlog::warn("canary: route '{}' arm '{}' switched off: {}", e.route, e.arm, e.message);
  else
    spdlog::info("canary: route '{}' arm '{}' {}: {}", e.route, e.arm, e.kind, e.message);
  if (options_.metrics != nullptr)
    options_.metrics
        ->counter("llmpool_canary_events_total", "Canary arms switched off (auto_disabled) or on/off by hand.",
                  {{"route", options_.metrics->label(e.route)}, {"arm", options_.metrics->label(e.arm)}, {"kind", e.kind}})
        .inc();
  auto st = state();
  if (st && st->log) {
    json j = {{"time_ms", unix_ms()},         {"event", "canary"},
              {"kind", e.kind},               {"route", e.route},
              {"arm", e.arm},                 {"arm_helpful_rate", e.arm_helpful_rate},
              {"baseline_helpful_rate", e.baseline_helpful_rate}, {"arm_samples", e.arm_samples},
              {"baseline_samples", e.baseline_samples}, {"message", e.message}};
    st->log->append(log_line(j));
  }
}

bool RouterService::routes(const std::string& model, const RouteHints& hints) const {
  if (hints.strategy) return true;
  if (model == config::kAutoRoute) return true;
  auto st = state();
  if (st->routing.find_group(model) != nullptr) return true;
  const config::ModelConfig* m = st->model(model);
  return m != nullptr && !st->fallbacks_of(m->name).empty();
}

// ------------------------------------------------------------------- route

namespace {

// Everything the end of a routed run needs.
struct RunContext : RouterService::RunContextBase {
  std::string response_id;
  std::string tenant;  // GenerateRequest::tenant: "" without tenancy
  std::string asked;
  std::string route;
  std::string chosen;
  bool explicit_model = false;
  std::optional<CanaryAssignment> canary;
  double chosen_score = 0.0;
  size_t eligible = 0;
  bool relaxed = false;
  ensemble::StrategyKind strategy = ensemble::StrategyKind::kFastest;
  // What the decision log line is built from, once the answer is in (so
  // that formatting it costs the request nothing before the provider call).
  int64_t time_ms = 0;
  Classification classification;
  std::vector<ScoredCandidate> scored;
  std::vector<std::string> order;
  std::optional<EffortParams> effort;
  std::optional<ReasoningEffort> reasoning_effort;
  int32_t max_tokens = 0;
  float temperature = 0.0f;
  int32_t thinking_budget = -1;
  std::string judge;
  double router_us = 0.0;
  // CONSENSUS: the request, kept for an escalation, and what the escalation did.
  std::shared_ptr<GenerateRequest> escalation_request;
  json escalation;
  CancelTokenPtr cancel;  // the client's; the escalation run listens to it too
};

std::string route_reason(const RunContext& c, const ensemble::EnsembleResult* r) {
  std::string reason;
  if (c.explicit_model) {
    reason = "requested by name";
  } else if (c.canary && r != nullptr && r->model == c.canary->model) {
    reason = "canary route '" + c.canary->route + "' arm '" + c.canary->arm + "' (bucket " +
             std::to_string(c.canary->bucket) + ")";
  } else {
    reason = "best score " + fixed(c.chosen_score, 3) + " of " + std::to_string(c.eligible) + " eligible in '" +
             c.route + "'";
  }
  if (c.relaxed) reason += "; no model has the required tags, so they were only preferred";
  if (r != nullptr) {
    if (c.strategy != ensemble::StrategyKind::kFastest) {
      reason += "; " + r->decision.strategy + ": " + r->decision.reason;
      if (!c.escalation.is_null() && c.escalation.value("ok", false))
        reason += "; escalated to '" + r->model + "' (agreement " + fixed(r->decision.agreement, 2) + ")";
    } else if (r->model != c.chosen && !(c.canary && r->model == c.canary->model)) {
      reason += "; answered by fallback/hedge '" + r->model + "' instead of '" + c.chosen + "'";
    }
  }
  return header_safe(reason);
}

// What a stream's first chunk says: the committed attempt's model, before
// the run has ended.
RouteInfo stream_info(const RunContext& c, const std::string& model) {
  ensemble::EnsembleResult r;
  r.model = model;
  r.decision.strategy = ensemble::strategy_name(ensemble::StrategyKind::kFastest);
  r.decision.winner_model = model;
  r.decision.reason = "first to stream: " + model + " (the full decision is in the decision log)";
  RouteInfo info;
  info.model = model;
  info.route = c.route;
  info.reason = route_reason(c, &r);
  if (c.canary) info.arm = c.canary->arm;
  info.ensemble = r.decision;
  return info;
}

json attempts_json(const std::vector<ensemble::AttemptRecord>& attempts) {
  json out = json::array();
  for (const auto& a : attempts) {
    json j = {{"model", a.model},
              {"kind", ensemble::attempt_kind_name(a.kind)},
              {"outcome", ensemble::attempt_outcome_name(a.outcome)},
              {"latency_ms", a.latency_ms}};
    if (!a.status.is_ok()) j["error"] = a.status.message();
    out.push_back(std::move(j));
  }
  return out;
}

json classification_json(const Classification& c) {
  const Features& f = c.features;
  return {{"complexity", c.complexity},
          {"required", c.required},
          {"preferred", c.preferred},
          {"features",
           {{"estimated_tokens", f.estimated_tokens},
            {"length", f.length},
            {"code", f.code},
            {"reasoning", f.reasoning},
            {"multi_step", f.multi_step},
            {"technical", f.technical}}}};
}

// The decision log line's fields known before the run (docs/routing.md).
json decision_json(const RunContext& c) {
  json j = {{"time_ms", c.time_ms},
            {"request_id", c.response_id},
            {"tenant", c.tenant.empty() ? json() : json(c.tenant)},
            {"route", c.route},
            {"model_asked", c.asked},
            {"classification", classification_json(c.classification)},
            {"relaxed_required_tags", c.relaxed},
            {"candidates", c.scored},
            {"strategy", ensemble::strategy_name(c.strategy)},
            {"order", c.order},
            {"chosen", c.chosen.empty() ? json() : json(c.chosen)},
            {"router_us", c.router_us}};
  if (c.canary)
    j["canary"] = {{"route", c.canary->route},
                   {"arm", c.canary->arm},
                   {"model", c.canary->model},
                   {"baseline", c.canary->baseline},
                   {"bucket", c.canary->bucket}};
  j["effort"] = nullptr;
  if (c.effort)
    j["effort"] = {{"effort", c.effort->effort},
                   {"tier", c.effort->tier},
                   {"max_tokens", c.max_tokens},
                   {"temperature", c.temperature},
                   {"thinking", c.effort->thinking},
                   {"thinking_budget", c.thinking_budget},
                   {"reasoning_effort", c.reasoning_effort ? json(reasoning_effort_name(*c.reasoning_effort)) : json()}};
  if (!c.judge.empty()) j["judge"] = c.judge;
  return j;
}

}  // namespace

// One routed request on its way through route()'s stages. It lives on
// route()'s stack; what the end of the run needs goes into `ctx`.
struct RouterService::Plan {
  std::shared_ptr<const State> st;
  std::shared_ptr<RunContext> ctx;
  std::vector<providers::ModelEntry> entries;  // the directory, listed once per request
  const config::RouteGroupConfig* group = nullptr;
  std::vector<std::string> members, fallbacks;
  Classification cls;
  std::vector<Candidate> candidates;
  std::vector<ScoredCandidate> scored;
  std::vector<std::string> order;

  // The directory's entry for a model name or alias; null when not served.
  const providers::ModelEntry* entry_of(const std::string& name) const {
    for (const auto& e : entries)
      if (e.info.name == name || std::find(e.info.aliases.begin(), e.info.aliases.end(), name) != e.info.aliases.end())
        return &e;
    return nullptr;
  }
  std::string group_name() const { return group != nullptr ? group->name : ""; }
};

namespace {

double micros_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

size_t count_eligible(const std::vector<ScoredCandidate>& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](const ScoredCandidate& c) { return !c.excluded; }));
}

}  // namespace

void RouterService::route(RouteRequest rq, CancelTokenPtr cancel, std::function<void(RouteOutcome)> done) {
  const auto t0 = std::chrono::steady_clock::now();
  Plan p;
  p.st = state();
  p.ctx = std::make_shared<RunContext>();
  RunContext& ctx = *p.ctx;
  ctx.response_id = rq.response_id;
  ctx.asked = rq.generate.model;
  ctx.tenant = rq.generate.tenant;
  p.entries = directory_->list();
  auto fail = [&](Status status) {
    RouteOutcome out{std::move(status), RouteInfo{}};
    out.info.route = ctx.asked;
    out.info.reason = header_safe(out.completion.status().message());
    done(std::move(out));
  };

  if (Status s = resolve_members(p); !s) return fail(std::move(s));
  p.cls = p.st->classifier.classify(rq.generate);
  assign_canary(p, rq.hints);
  score_with_relaxation(p, rq.generate.sampling.max_tokens.value_or(0));
  if (Status s = order_attempts(p, rq.hints); !s) {
    ctx.router_us = micros_since(t0);
    if (p.st->log) {
      ctx.classification = std::move(p.cls);
      ctx.scored = std::move(p.scored);
      json j = decision_json(ctx);
      j["error"] = s.message();
      p.st->log->append(log_line(j));
    }
    return fail(std::move(s));
  }
  regulate_first_choice(p, rq.hints, rq.generate);
  auto in = build_run_input(p, rq, std::move(cancel));
  if (!in) return fail(in.status());

  ctx.router_us = micros_since(t0);
  if (overhead_ != nullptr) overhead_->observe(ctx.router_us / 1e6);
  ctx.classification = std::move(p.cls);
  ctx.scored = std::move(p.scored);
  if (obs::Counter* c = tenant_counter("llmpool_router_decisions_total", kDecisionsHelp, ctx.tenant, {})) c->inc();

  using Deliver = std::function<void(Result<ensemble::EnsembleResult>)>;
  auto deliver = std::make_shared<Deliver>(
      [this, st = p.st, ctx = p.ctx, done = std::move(done)](Result<ensemble::EnsembleResult> r) {
        this->deliver(*st, *ctx, std::move(r), done);
      });
  auto on_done = [this, st = p.st, ctx = p.ctx, deliver](Result<ensemble::EnsembleResult> r) {
    if (r && ctx->escalation_request && r->decision.escalate && escalate(st, ctx, *r, deliver)) return;
    (*deliver)(std::move(r));
  };

  // A client's disconnect reaches the runner through its subscription on
  // the token: the run ends and its attempts are cancelled at once.
  (void)p.st->runner_for(p.group_name()).run(std::move(in).value(), std::move(on_done));
}

// Who may answer: the group's models, every model for a plain "auto", or
// the named model followed by its groups' fallbacks.
Status RouterService::resolve_members(Plan& p) const {
  RunContext& ctx = *p.ctx;
  p.group = p.st->routing.find_group(ctx.asked);
  if (p.group != nullptr) {
    ctx.route = p.group->name;
    p.members = p.group->models;
    p.fallbacks = p.group->fallbacks;
  } else if (ctx.asked == config::kAutoRoute) {
    ctx.route = config::kAutoRoute;
    for (const auto& e : p.entries)
      if (!only_embedding(e.info)) p.members.push_back(e.info.name);
  } else {
    const providers::ModelEntry* e = p.entry_of(ctx.asked);
    if (e == nullptr)
      return Status::not_found("model '" + ctx.asked + "' is not served here (nor a route group or \"auto\")", "model",
                               "model_not_found");
    ctx.explicit_model = true;
    ctx.route = e->info.name;
    p.members = {e->info.name};
    p.fallbacks = p.st->fallbacks_of(e->info.name);
  }
  return Status::ok();
}

// The first of [route, required tags..., preferred tags...] with a canary
// route assigns an arm, bucketed by tenant and user (canary_key).
void RouterService::assign_canary(Plan& p, const RouteHints& hints) const {
  RunContext& ctx = *p.ctx;
  if (ctx.explicit_model || !p.st->canary) return;
  const std::string key = canary_key(ctx.tenant, hints.user);
  std::vector<std::string> keys = {ctx.route};
  keys.insert(keys.end(), p.cls.required.begin(), p.cls.required.end());
  keys.insert(keys.end(), p.cls.preferred.begin(), p.cls.preferred.end());
  for (const auto& k : keys) {
    if (!p.st->canary_routes.count(k)) continue;
    ctx.canary = p.st->canary->assign(k, key);
    if (ctx.canary) break;
  }
}

// Candidates (names resolved to the directory's canonical ones), scored;
// when nothing is eligible because a required tag is missing everywhere,
// scored again with the required tags only preferred.
void RouterService::score_with_relaxation(Plan& p, int32_t max_tokens) {
  const State& st = *p.st;
  for (const auto& name : p.members) {
    const providers::ModelEntry* e = p.entry_of(name);
    if (e == nullptr) continue;  // left the directory in a reload
    if (std::any_of(p.candidates.begin(), p.candidates.end(), [&](const Candidate& c) { return c.id == e->info.name; }))
      continue;
    auto stats = stats_for(st, e->info.name);
    Candidate c;
    c.id = c.model = e->info.name;
    c.tags = e->info.capabilities;
    c.context = e->info.context;
    c.load = e->stats;
    c.stats = stats->snapshot();
    p.candidates.push_back(std::move(c));
  }
  Requirements req = requirements_from(p.cls, max_tokens);
  p.scored = score_candidates(req, p.candidates, st.weights, st.score);
  if (count_eligible(p.scored) == 0 && !req.required.empty() &&
      std::any_of(p.scored.begin(), p.scored.end(), [](const ScoredCandidate& c) {
        return c.reason.find("missing required tags") != std::string::npos;
      })) {
    // No model has what the request needs: answer with the best of the rest.
    req.preferred.insert(req.preferred.end(), req.required.begin(), req.required.end());
    req.required.clear();
    p.scored = score_candidates(req, p.candidates, st.weights, st.score);
    p.ctx->relaxed = true;
  }
  p.ctx->eligible = count_eligible(p.scored);
  std::lock_guard lock(mu_);
  for (const auto& s : p.scored) last_score_[s.model] = s.score;
}

// The order of attempts: a canary's model first (when it may take work),
// then the eligible candidates best first, then the fallbacks (for a
// gathering strategy only when nothing is eligible). Unavailable, with
// every candidate's reason, when the order is empty.
Status RouterService::order_attempts(Plan& p, const RouteHints& hints) {
  RunContext& ctx = *p.ctx;
  std::vector<std::string>& order = p.order;
  if (ctx.canary) {
    const providers::ModelEntry* e = p.entry_of(ctx.canary->model);
    auto it = std::find_if(p.scored.begin(), p.scored.end(), [&](const ScoredCandidate& s) {
      return e != nullptr && s.model == e->info.name;
    });
    bool usable = e != nullptr && (it == p.scored.end() ? stats_for(*p.st, e->info.name)->breaker().would_allow()
                                                        : !it->excluded);
    if (usable) order.push_back(e->info.name);
  }
  for (const auto& s : p.scored)
    if (!s.excluded && std::find(order.begin(), order.end(), s.model) == order.end()) order.push_back(s.model);

  ctx.strategy = hints.strategy.value_or(ensemble::StrategyKind::kFastest);
  if (!hints.strategy && p.group != nullptr) {
    if (auto k = ensemble::parse_strategy(p.group->strategy)) ctx.strategy = *k;
  }
  const bool gathering = ctx.strategy != ensemble::StrategyKind::kFastest;
  if (!gathering || order.empty()) {
    for (const auto& f : p.fallbacks) {
      const providers::ModelEntry* e = p.entry_of(f);
      if (e != nullptr && std::find(order.begin(), order.end(), e->info.name) == order.end())
        order.push_back(e->info.name);
    }
  }

  ctx.time_ms = unix_ms();
  ctx.order = order;
  if (order.empty()) {
    std::string why;
    for (const auto& sc : p.scored) why += (why.empty() ? "" : "; ") + sc.model + ": " + sc.reason;
    return Status::unavailable("no model can take this request on route '" + ctx.route + "'" +
                               (why.empty() ? std::string() : " (" + why + ")"));
  }
  ctx.chosen = order.front();
  for (const auto& s : p.scored)
    if (s.model == ctx.chosen) ctx.chosen_score = s.score;
  return Status::ok();
}

// Effort for the first choice (the others get the same request); a model
// asked for by name only when the request carries reasoning_effort.
void RouterService::regulate_first_choice(Plan& p, const RouteHints& hints, GenerateRequest& request) const {
  RunContext& ctx = *p.ctx;
  if (ctx.explicit_model && !hints.reasoning_effort.has_value()) return;
  ctx.effort = p.st->regulate(p.cls, hints, ctx.chosen, request);
  ctx.reasoning_effort = hints.reasoning_effort;
  ctx.max_tokens = request.sampling.max_tokens.value_or(0);
  ctx.temperature = request.sampling.temperature;
  ctx.thinking_budget = request.thinking_budget;
}

// The ensemble run for the order: lazy providers, p95 estimates, quality
// weights, the judge, the breaker and retry-budget hooks, the request and
// (FASTEST with on_delta) the stream. Counts the request in the retry
// budget. InvalidArgument / NotFound for a judge run without a usable judge.
Result<ensemble::RunInput> RouterService::build_run_input(Plan& p, RouteRequest& rq, CancelTokenPtr cancel) {
  const State& st = *p.st;
  RunContext& ctx = *p.ctx;
  const RouteHints& hints = rq.hints;
  ensemble::RunInput in;
  in.strategy = ctx.strategy;
  in.k = hints.k > 0 ? hints.k : (p.group != nullptr ? p.group->k : 0);
  std::vector<std::shared_ptr<health::InstanceHealth>> health;
  for (const auto& name : p.order) {
    const providers::ModelEntry* e = p.entry_of(name);
    auto s = stats_for(st, name);
    auto cand =
        std::find_if(p.candidates.begin(), p.candidates.end(), [&](const Candidate& c) { return c.id == name; });
    InstanceSnapshot snap = cand != p.candidates.end() ? cand->stats : s->snapshot();
    in.providers.push_back(std::make_shared<LazyProvider>(directory_, e->info));
    in.expected_p95.push_back(snap.samples >= st.instances->options.min_samples
                                  ? std::chrono::duration_cast<qos::Clock::Duration>(
                                        std::chrono::duration<double, std::milli>(snap.p95_ms))
                                  : qos::Clock::Duration::zero());
    in.weights.push_back(snap.quality);
    health.push_back(std::move(s));
  }
  if (ctx.strategy == ensemble::StrategyKind::kJudge) {
    std::string judge = !hints.judge.empty() ? hints.judge : (p.group != nullptr ? p.group->judge : "");
    const providers::ModelEntry* e = judge.empty() ? nullptr : p.entry_of(judge);
    if (e == nullptr)
      return judge.empty() ? Status::invalid_argument("strategy judge needs 'ensemble.judge' (a model name)",
                                                      "ensemble.judge")
                           : Status::not_found("judge model '" + judge + "' is not served here", "ensemble.judge",
                                               "model_not_found");
    in.judge = std::make_shared<LazyProvider>(directory_, e->info);
    health.push_back(stats_for(st, e->info.name));
    ctx.judge = e->info.name;
  }
  ensemble::AttemptHooks hooks = ensemble::instance_hooks(std::move(health), st.budget);
  in.admit = std::move(hooks.admit);
  in.on_attempt_end = std::move(hooks.on_attempt_end);
  in.cancel = cancel;
  ctx.cancel = std::move(cancel);
  st.budget->record_request();
  if (ctx.strategy == ensemble::StrategyKind::kConsensus)
    ctx.escalation_request = std::make_shared<GenerateRequest>(rq.generate);
  in.request = std::move(rq.generate);
  if (ctx.strategy == ensemble::StrategyKind::kFastest && rq.on_delta) {
    // The runner calls this one delta at a time and never after done.
    in.on_delta = [ctx = p.ctx, order = p.order, on_start = std::move(rq.on_stream_start),
                   on_delta = std::move(rq.on_delta), started = false](size_t provider, Delta d) mutable {
      if (!started) {
        started = true;
        if (on_start) on_start(stream_info(*ctx, order.at(provider)));
      }
      on_delta(std::move(d));
    };
  }
  return in;
}

// The end of a run: the outcome for the caller, the decision-log line, the
// feedback record (with the tenant) and the canary arm's latency.
void RouterService::deliver(const State& st, const RunContextBase& base, Result<ensemble::EnsembleResult> r,
                            const std::function<void(RouteOutcome)>& done) {
  const auto& ctx = static_cast<const RunContext&>(base);
  RouteOutcome out{Completion{}, RouteInfo{}};
  out.info.route = ctx.route;
  if (ctx.canary) out.info.arm = ctx.canary->arm;
  json log = st.log ? decision_json(ctx) : json();
  if (r) {
    out.info.model = r->model;
    out.info.ensemble = r->decision;
    out.info.reason = route_reason(ctx, &*r);
    if (!ctx.escalation.is_null()) {
      out.info.ensemble["escalation"] = ctx.escalation;
      log["escalation"] = ctx.escalation;
    }
    log["answered_by"] = r->model;
    log["ensemble"] = r->decision;
    log["attempts"] = attempts_json(r->attempts);
    for (const auto& a : r->attempts)
      if (a.usage.prompt_tokens > 0 || a.usage.completion_tokens > 0) out.info.member_usage.emplace_back(a.model, a.usage);
    FeedbackTarget target{r->model, "", "", ctx.tenant};
    if (ctx.canary && r->model == ctx.canary->model) {
      target.route = ctx.canary->route;
      target.arm = ctx.canary->arm;
      double ms = 0;
      for (const auto& a : r->attempts)
        if (a.model == r->model && a.outcome == ensemble::AttemptOutcome::kSuccess) ms = a.latency_ms;
      if (st.canary) (void)st.canary->record_latency(target.route, target.arm, ms);
    }
    remember(ctx.response_id, std::move(target));
    out.completion = std::move(r->completion);
  } else {
    out.info.reason = route_reason(ctx, nullptr);
    log["answered_by"] = nullptr;
    log["error"] = r.status().message();
    out.completion = r.status();
  }
  log["reason"] = out.info.reason;
  if (st.log) st.log->append(log_line(log));
  done(std::move(out));
}

bool RouterService::escalate(const std::shared_ptr<const State>& st, const std::shared_ptr<RunContextBase>& base,
                             const ensemble::EnsembleResult& first,
                             const std::shared_ptr<std::function<void(Result<ensemble::EnsembleResult>)>>& deliver) {
  auto ctx = std::static_pointer_cast<RunContext>(base);
  // The best model tagged "reasoning" that may take work now, other than
  // the one whose answer did not convince.
  std::vector<Candidate> candidates;
  std::vector<providers::ModelEntry> entries = directory_->list();
  for (const auto& e : entries) {
    if (std::find(e.info.capabilities.begin(), e.info.capabilities.end(), "reasoning") == e.info.capabilities.end())
      continue;
    if (e.info.name == first.model) continue;
    Candidate c;
    c.id = c.model = e.info.name;
    c.tags = e.info.capabilities;
    c.context = e.info.context;
    c.load = e.stats;
    c.stats = stats_for(*st, e.info.name)->snapshot();
    candidates.push_back(std::move(c));
  }
  Requirements req;
  req.prompt_tokens = ctx->classification.features.estimated_tokens;
  std::vector<ScoredCandidate> scored = score_candidates(req, candidates, st->weights, st->score);
  ctx->escalation = {{"trigger", "consensus agreement " + fixed(first.decision.agreement, 2) + " below the threshold"},
                     {"agreement", first.decision.agreement},
                     {"from", first.model}};
  if (scored.empty() || scored.front().excluded) {
    ctx->escalation["to"] = nullptr;
    ctx->escalation["ok"] = false;
    ctx->escalation["error"] = "no model tagged reasoning can take the request";
    spdlog::info("routing: {} would escalate, but no reasoning model can take it", ctx->response_id);
    return false;
  }
  const std::string target = scored.front().model;
  ctx->escalation["to"] = target;
  spdlog::info("routing: {} escalates from {} to {} (agreement {:.2f})", ctx->response_id, first.model, target,
               first.decision.agreement);
  const providers::ModelEntry* entry = nullptr;
  for (const auto& e : entries)
    if (e.info.name == target) entry = &e;
  ensemble::RunInput in;
  in.strategy = ensemble::StrategyKind::kFastest;
  in.providers = {std::make_shared<LazyProvider>(directory_, entry->info)};
  ensemble::AttemptHooks hooks = ensemble::instance_hooks({stats_for(*st, target)});
  in.admit = std::move(hooks.admit);
  in.on_attempt_end = std::move(hooks.on_attempt_end);
  in.request = *ctx->escalation_request;
  in.cancel = ctx->cancel;
  auto kept = std::make_shared<ensemble::EnsembleResult>(first);
  st->default_runner->run(std::move(in), [ctx, kept, deliver](Result<ensemble::EnsembleResult> r) {
    if (!r) {
      ctx->escalation["ok"] = false;
      ctx->escalation["error"] = r.status().message();
      return (*deliver)(std::move(*kept));  // the consensus winner still answers
    }
    ctx->escalation["ok"] = true;
    r->decision = kept->decision;  // the response reports the consensus that triggered it
    r->attempts.insert(r->attempts.begin(), kept->attempts.begin(), kept->attempts.end());
    (*deliver)(std::move(r));
  });
  return true;
}

// ----------------------------------------------------------- direct requests

void DirectAttempt::finish(const Status& status, bool cancelled) {
  if (done_ || !stats_) return;
  done_ = true;
  if (cancelled) return stats_->on_cancelled();
  double ms = std::chrono::duration<double, std::milli>(clock_->now() - start_).count();
  switch (status.code()) {
    case StatusCode::kOk: stats_->on_success(ms); break;
    case StatusCode::kUnavailable:
    case StatusCode::kInternal: stats_->on_failure(0.0); break;
    case StatusCode::kDeadlineExceeded: stats_->on_failure(ms); break;
    default: stats_->on_cancelled(); break;  // the request's fault, or a full queue: no health signal
  }
}

DirectAttempt RouterService::start_direct(const std::string& model, const std::string& tenant) {
  DirectAttempt a;
  a.model_ = model;
  a.tenant_ = tenant;
  a.clock_ = &clock_;
  a.start_ = clock_.now();
  auto st = state();
  const config::ModelConfig* mc = st->model(model);
  if (mc == nullptr) return a;
  a.model_ = mc->name;
  auto stats = stats_for(*st, mc->name);
  // An explicit request is served even when the breaker is open (there is no
  // other model to send it to); it only counts when the breaker took it.
  if (stats->try_start()) a.stats_ = std::move(stats);
  return a;
}

void RouterService::regulate_direct(GenerateRequest& request, const RouteHints& hints) const {
  if (!hints.reasoning_effort) return;
  auto st = state();
  st->regulate(st->classifier.classify(request), hints, request.model, request);
}

// ---------------------------------------------------------------- feedback

void RouterService::remember(const std::string& response_id, FeedbackTarget target) {
  if (response_id.empty() || options_.feedback_capacity == 0) return;
  // Every I/O thread comes here once per answer: the entry is allocated
  // before the lock and what it replaces is freed after it, and once the
  // index is full the oldest id's node carries the new id, so that under
  // the lock nodes are only relinked, with two lookups in the index (each
  // costs cache misses), and the other threads rarely wait.
  std::list<Rateable> entry;
  entry.push_back({response_id, std::move(target), false});
  std::list<Rateable> forgotten;  // destroyed after the lock
  std::lock_guard lock(feedback_mu_);
  feedback_fifo_.splice(feedback_fifo_.begin(), entry);
  const auto newest = feedback_fifo_.begin();
  if (feedback_fifo_.size() <= options_.feedback_capacity) {
    auto [it, fresh] = feedback_index_.try_emplace(response_id, newest);
    if (!fresh) {  // a known id: its entry gives way to the new one
      forgotten.splice(forgotten.end(), feedback_fifo_, it->second);
      it->second = newest;
    }
    return;
  }
  // Full (one over: each call adds one). The oldest id's node takes the new id.
  const auto oldest = std::prev(feedback_fifo_.end());
  auto node = feedback_index_.extract(oldest->response_id);
  node.key() = response_id;  // ids have one length: the key's buffer is reused
  node.mapped() = newest;
  auto placed = feedback_index_.insert(std::move(node));
  if (placed.inserted) {
    forgotten.splice(forgotten.end(), feedback_fifo_, oldest);
    return;
  }
  // A known id: its old entry goes instead, and the oldest stays.
  placed.node.key() = oldest->response_id;
  placed.node.mapped() = oldest;
  feedback_index_.insert(std::move(placed.node));
  forgotten.splice(forgotten.end(), feedback_fifo_, placed.position->second);
  placed.position->second = newest;
}

Result<FeedbackTarget> RouterService::feedback(const std::string& response_id, bool helpful,
                                              const std::string& tenant) {
  FeedbackTarget target;
  {
    std::lock_guard lock(feedback_mu_);
    auto it = feedback_index_.find(response_id);
    // Another tenant's response is unknown to this one, rated or not: the
    // same answer, so that a tenant cannot tell its ids from others'.
    if (it == feedback_index_.end() || it->second->target.tenant != tenant)
      return Status::not_found("no response with id '" + response_id.substr(0, 128) +
                                   "' is known (unknown, or too old: the newest " +
                                   std::to_string(options_.feedback_capacity) + " are kept)",
                               "response_id");
    // One rating per answer: a client that repeats one must not move the
    // model's quality score as far as it likes.
    if (it->second->rated)
      return Status::already_exists("response '" + response_id.substr(0, 128) + "' was already rated",
                                    "response_id", "feedback_exists");
    it->second->rated = true;
    target = it->second->target;
  }
  auto st = state();
  stats_for(*st, target.model)->record_feedback(helpful);
  if (!target.arm.empty() && st->canary) {
    // The route may have left the configuration since: that is not the client's problem.
    Status s = st->canary->record_feedback(target.route, target.arm, helpful);
    if (!s) spdlog::debug("feedback for {}: {}", response_id, s.message());
  }
  if (obs::Counter* c = tenant_counter("llmpool_router_feedback_total", kFeedbackHelp, target.tenant,
                                       {{"helpful", helpful ? "true" : "false"}}))
    c->inc();
  return target;
}

// --------------------------------------------------------------- admission

Result<qos::AdmissionGate::Hold> RouterService::admit() {
  auto hold = gate_.enter();
  if (!hold) {
    if (hold.status().code() == StatusCode::kResourceExhausted)
      return Status::resource_exhausted("the server is at its limit of " +
                                        std::to_string(state()->routing.admission.max_active) +
                                        " generations at once (routing.admission.max_active); retry after " +
                                        std::to_string(gate_.retry_after_seconds()) + " s");
    return Status::unavailable("the server is shutting down");
  }
  return hold;
}

bool RouterService::close_and_drain(std::chrono::milliseconds timeout) {
  gate_.close();
  bool drained = gate_.wait_drained(timeout);
  flush_log();
  return drained;
}

void RouterService::flush_log() {
  std::shared_ptr<const State> st;
  {
    std::lock_guard lock(mu_);
    st = state_;
  }
  if (st && st->log) st->log->flush();
}

// ----------------------------------------------------------------- metrics

json RouterService::metrics_json() {
  auto st = state();
  std::vector<providers::ModelEntry> entries = directory_->list();
  std::vector<Candidate> candidates;
  std::vector<InstanceSnapshot> snaps;
  std::vector<std::shared_ptr<InstanceStats>> stats;
  for (const auto& e : entries) {
    auto s = stats_for(*st, e.info.name);
    Candidate c;
    c.id = c.model = e.info.name;
    c.tags = e.info.capabilities;
    c.context = e.info.context;
    c.load = e.stats;
    c.stats = s->snapshot();
    candidates.push_back(c);
    stats.push_back(std::move(s));
  }
  // The score each instance has now for a request that needs nothing.
  std::vector<ScoredCandidate> now = score_candidates(Requirements{}, candidates, st->weights, st->score);
  std::map<std::string, double> last;
  {
    std::lock_guard lock(mu_);
    last = last_score_;
  }
  json instances = json::array();
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Candidate& c = candidates[i];
    const ScoredCandidate* sc = nullptr;
    for (const auto& s : now)
      if (s.index == i) sc = &s;
    auto lit = last.find(c.id);
    instances.push_back({{"id", c.id},
                         {"model", c.model},
                         {"state", entries[i].state},
                         {"avg_latency_ms", c.stats.ewma_ms},
                         {"p95_latency_ms", c.stats.p95_ms},
                         {"latency_samples", c.stats.samples},
                         {"active_requests", std::max<int64_t>(c.stats.in_flight, c.load.active_sequences)},
                         {"router_in_flight", c.stats.in_flight},
                         {"queue_depth", c.load.queued},
                         {"parallel", c.load.parallel},
                         {"capability_tags", c.tags},
                         {"breaker_state", qos::breaker_state_name(c.stats.breaker)},
                         {"breaker_opens", stats[i]->breaker().times_opened()},
                         {"success_rate", c.stats.success_rate},
                         {"quality", c.stats.quality},
                         {"feedback", c.stats.feedback},
                         {"slow_excluded", c.stats.slow_excluded},
                         {"score", sc != nullptr ? json(sc->score) : json()},
                         {"excluded_reason", sc != nullptr && sc->excluded ? json(sc->reason) : json()},
                         {"last_score", lit != last.end() ? json(lit->second) : json()}});
  }
  json routes = json::array();
  if (st->canary) {
    for (const auto& route : st->canary->routes()) {
      json arms = json::array();
      for (const auto& a : st->canary->stats(route))
        arms.push_back({{"name", a.name},
                        {"model", a.model},
                        {"percent", a.percent},
                        {"baseline", a.baseline},
                        {"enabled", a.enabled},
                        {"requests", a.requests},
                        {"helpful", a.helpful},
                        {"not_helpful", a.not_helpful},
                        {"helpful_rate", a.helpful_rate},
                        {"latency_samples", a.latency_samples},
                        {"mean_latency_ms", a.mean_latency_ms},
                        {"p95_latency_ms", a.p95_latency_ms},
                        {"disabled_reason", a.disabled_reason}});
      routes.push_back({{"route", route}, {"arms", arms}});
    }
  }
  json groups = json::array();
  for (const auto& g : st->routing.groups)
    groups.push_back({{"name", g.name}, {"models", g.models}, {"fallbacks", g.fallbacks}, {"strategy", g.strategy}});
  return {{"instances", instances},
          {"routes", routes},
          {"groups", groups},
          {"admission",
           {{"active", gate_.active()},
            {"rejected", gate_.rejected()},
            {"max_active", st->routing.admission.max_active},
            {"closed", gate_.closed()}}},
          {"retry_budget",
           {{"available", st->budget->available()},
            {"requests_in_window", st->budget->requests_in_window()},
            {"retries_in_window", st->budget->retries_in_window()}}},
          {"decision_log", st->log ? json({{"path", st->log->path()},
                                           {"written", st->log->written()},
                                           {"dropped", st->log->dropped()},
                                           {"rotations", st->log->rotations()}})
                                   : json()}};
}

void RouterService::collect_metrics(std::string& out) {
  auto st = state();
  std::vector<std::pair<obs::Labels, double>> state_samples, fail_samples;
  {
    std::lock_guard lock(st->instances->mu);
    // Instances are the directory's models; one that left the configuration
    // in a reload is no longer shown (its label would be kUnknownLabel, and
    // two of them would be one series twice).
    for (const auto& [model, s] : st->instances->by_model) {
      const std::string instance = options_.metrics != nullptr ? options_.metrics->label(model) : model;
      if (instance == obs::kUnknownLabel) continue;
      state_samples.push_back({{{"instance", instance}}, static_cast<double>(s->breaker().state())});
      fail_samples.push_back({{{"instance", instance}}, static_cast<double>(s->breaker().consecutive_failures())});
    }
  }
  obs::append_family(out, "llmpool_breaker_state", "Circuit breaker state per instance: 0 closed, 1 open, 2 half_open.",
                     "gauge", state_samples);
  obs::append_family(out, "llmpool_breaker_consecutive_failures", "Consecutive failures seen by the breaker.", "gauge",
                     fail_samples);
  obs::append_family(out, "llmpool_admission_active", "Generations holding an admission slot.", "gauge",
                     {{{}, static_cast<double>(gate_.active())}});
  obs::append_family(out, "llmpool_admission_rejected_total",
                     "Generations refused with 429 over routing.admission.max_active.", "counter",
                     {{{}, static_cast<double>(gate_.rejected())}});
}

}  // namespace llmpool::router
