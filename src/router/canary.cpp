#include "router/canary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <utility>

#include "router/instance_stats.h"

namespace llmpool::router {

namespace {
constexpr uint32_t kBuckets = 10000;

double rate(int64_t helpful, int64_t not_helpful) {
  int64_t n = helpful + not_helpful;
  return n > 0 ? static_cast<double>(helpful) / static_cast<double>(n) : 0.0;
}

std::string pct(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", r * 100.0);
  return buf;
}

// a + '\0' + b.
std::string nul_joined(std::string_view a, std::string_view b) {
  std::string out;
  out.reserve(a.size() + 1 + b.size());
  out.append(a);
  out.push_back('\0');
  out.append(b);
  return out;
}
}  // namespace

uint64_t fnv1a64(std::string_view data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint32_t canary_bucket(std::string_view route, std::string_view user_id) {
  return static_cast<uint32_t>(fnv1a64(nul_joined(route, user_id)) % kBuckets);
}

std::string canary_key(std::string_view tenant, std::string_view user_id) {
  if (user_id.empty() || tenant.empty()) return std::string(user_id);
  return nul_joined(tenant, user_id);
}

Result<std::unique_ptr<CanaryController>> CanaryController::create(std::vector<CanaryRouteConfig> configs,
                                                                    CanaryOptions options, qos::RandomSource& random,
                                                                    EventCallback on_event) {
  std::vector<Route> routes;
  std::set<std::string> route_names;
  for (size_t ri = 0; ri < configs.size(); ++ri) {
    auto& rc = configs[ri];
    const std::string where = "canary.routes[" + std::to_string(ri) + "]";
    if (rc.route.empty()) return Status::invalid_argument(where + ".route must not be empty", where + ".route");
    if (!route_names.insert(rc.route).second)
      return Status::invalid_argument(where + ".route '" + rc.route + "' appears twice", where + ".route");
    if (rc.baseline_model.empty())
      return Status::invalid_argument(where + ".baseline_model must not be empty", where + ".baseline_model");
    Route r;
    r.name = rc.route;
    Arm base;
    base.config = {rc.baseline_name.empty() ? "baseline" : rc.baseline_name, rc.baseline_model, 0.0};
    base.baseline = true;
    r.arms.push_back(std::move(base));
    std::set<std::string> arm_names{r.arms[0].config.name};
    uint32_t next = 0;
    for (size_t ai = 0; ai < rc.arms.size(); ++ai) {
      auto& ac = rc.arms[ai];
      const std::string aw = where + ".arms[" + std::to_string(ai) + "]";
      if (ac.name.empty()) return Status::invalid_argument(aw + ".name must not be empty", aw + ".name");
      if (!arm_names.insert(ac.name).second)
        return Status::invalid_argument(aw + ".name '" + ac.name + "' is used twice in the route", aw + ".name");
      if (ac.model.empty()) return Status::invalid_argument(aw + ".model must not be empty", aw + ".model");
      if (!(ac.percent >= 0.0 && ac.percent <= 100.0))
        return Status::invalid_argument(aw + ".percent must be between 0 and 100", aw + ".percent");
      uint32_t width = static_cast<uint32_t>(std::lround(ac.percent * (kBuckets / 100)));
      if (next + width > kBuckets)
        return Status::invalid_argument(where + ".arms: percents add up to more than 100", aw + ".percent");
      Arm arm;
      arm.config = ac;
      arm.begin = next;
      arm.end = next + width;
      next += width;
      r.arms.push_back(std::move(arm));
    }
    r.arms[0].config.percent = (kBuckets - next) / static_cast<double>(kBuckets / 100);
    routes.push_back(std::move(r));
  }
  return std::unique_ptr<CanaryController>(
      new CanaryController(std::move(routes), options, random, std::move(on_event)));
}

CanaryController::CanaryController(std::vector<Route> routes, CanaryOptions options, qos::RandomSource& random,
                                   EventCallback cb)
    : options_(options), random_(random), on_event_(std::move(cb)), routes_(std::move(routes)) {}

CanaryController::Route* CanaryController::find_route_locked(std::string_view route) {
  for (auto& r : routes_)
    if (r.name == route) return &r;
  return nullptr;
}

const CanaryController::Route* CanaryController::find_route_locked(std::string_view route) const {
  for (const auto& r : routes_)
    if (r.name == route) return &r;
  return nullptr;
}

CanaryController::Arm* CanaryController::find_arm(Route& r, std::string_view arm) {
  for (auto& a : r.arms)
    if (a.config.name == arm) return &a;
  return nullptr;
}

std::optional<CanaryAssignment> CanaryController::assign(std::string_view route, std::string_view user_id) {
  uint32_t bucket = user_id.empty() ? static_cast<uint32_t>(random_.below(kBuckets)) : canary_bucket(route, user_id);
  std::lock_guard lock(mu_);
  Route* r = find_route_locked(route);
  if (r == nullptr) return std::nullopt;
  Arm* chosen = &r->arms[0];
  for (size_t i = 1; i < r->arms.size(); ++i) {
    Arm& a = r->arms[i];
    if (bucket >= a.begin && bucket < a.end) {
      if (a.enabled) chosen = &a;
      break;
    }
  }
  ++chosen->requests;
  return CanaryAssignment{r->name, chosen->config.name, chosen->config.model, chosen->baseline, bucket};
}

Status CanaryController::record_feedback(std::string_view route, std::string_view arm, bool helpful) {
  std::vector<CanaryEvent> events;
  {
    std::lock_guard lock(mu_);
    Route* r = find_route_locked(route);
    if (r == nullptr) return Status::not_found("no canary route '" + std::string(route) + "'", "route");
    Arm* a = find_arm(*r, arm);
    if (a == nullptr) return Status::not_found("no arm '" + std::string(arm) + "' in route '" + r->name + "'", "arm");
    ++(helpful ? a->helpful : a->not_helpful);
    judge_locked(*r, events);
  }
  emit(events);
  return Status::ok();
}

void CanaryController::judge_locked(Route& r, std::vector<CanaryEvent>& events) {
  const Arm& base = r.arms[0];
  const int64_t base_n = base.helpful + base.not_helpful;
  if (base_n < options_.min_samples) return;
  const double base_rate = rate(base.helpful, base.not_helpful);
  for (size_t i = 1; i < r.arms.size(); ++i) {
    Arm& a = r.arms[i];
    const int64_t n = a.helpful + a.not_helpful;
    if (!a.enabled || n < options_.min_samples) continue;
    const double arm_rate = rate(a.helpful, a.not_helpful);
    if (arm_rate < base_rate - options_.max_helpful_drop) {
      a.enabled = false;
      CanaryEvent e;
      e.kind = "auto_disabled";
      e.route = r.name;
      e.arm = a.config.name;
      e.arm_helpful_rate = arm_rate;
      e.baseline_helpful_rate = base_rate;
      e.arm_samples = n;
      e.baseline_samples = base_n;
      e.message = "canary '" + a.config.name + "' on route '" + r.name + "' switched off: helpful rate " +
                  pct(arm_rate) + " over " + std::to_string(n) + " ratings is below baseline " + pct(base_rate) +
                  " minus " + pct(options_.max_helpful_drop);
      a.disabled_reason = e.message;
      events.push_back(std::move(e));
    }
  }
}

Status CanaryController::record_latency(std::string_view route, std::string_view arm, double latency_ms) {
  std::lock_guard lock(mu_);
  Route* r = find_route_locked(route);
  if (r == nullptr) return Status::not_found("no canary route '" + std::string(route) + "'", "route");
  Arm* a = find_arm(*r, arm);
  if (a == nullptr) return Status::not_found("no arm '" + std::string(arm) + "' in route '" + r->name + "'", "arm");
  if (!(latency_ms >= 0.0) || !std::isfinite(latency_ms)) return Status::ok();
  ++a->latency_samples;
  a->latency_sum += latency_ms;
  const size_t cap = std::max<size_t>(1, options_.latency_window);
  if (a->latencies.size() < cap) {
    a->latencies.push_back(latency_ms);
  } else {
    a->latencies[a->latency_next] = latency_ms;
    a->latency_next = (a->latency_next + 1) % cap;
  }
  return Status::ok();
}

Status CanaryController::set_enabled(std::string_view route, std::string_view arm, bool enabled) {
  std::vector<CanaryEvent> events;
  {
    std::lock_guard lock(mu_);
    Route* r = find_route_locked(route);
    if (r == nullptr) return Status::not_found("no canary route '" + std::string(route) + "'", "route");
    Arm* a = find_arm(*r, arm);
    if (a == nullptr) return Status::not_found("no arm '" + std::string(arm) + "' in route '" + r->name + "'", "arm");
    if (a->baseline && !enabled) return Status::invalid_argument("the baseline arm cannot be disabled", "arm");
    if (a->enabled == enabled) return Status::ok();
    a->enabled = enabled;
    if (enabled) {
      a->helpful = a->not_helpful = 0;
      a->requests = 0;
      a->latency_samples = 0;
      a->latency_sum = 0.0;
      a->latencies.clear();
      a->latency_next = 0;
      a->disabled_reason.clear();
    } else {
      a->disabled_reason = "disabled by an operator";
    }
    CanaryEvent e;
    e.kind = enabled ? "enabled" : "disabled";
    e.route = r->name;
    e.arm = a->config.name;
    e.message = "canary '" + a->config.name + "' on route '" + r->name + "' " + (enabled ? "enabled" : "disabled") +
                " by an operator";
    events.push_back(std::move(e));
  }
  emit(events);
  return Status::ok();
}

void CanaryController::emit(const std::vector<CanaryEvent>& events) const {
  if (!on_event_) return;
  for (const auto& e : events) on_event_(e);
}

std::vector<CanaryArmStats> CanaryController::stats(std::string_view route) const {
  std::vector<CanaryArmStats> out;
  std::lock_guard lock(mu_);
  const Route* r = find_route_locked(route);
  if (r == nullptr) return out;
  for (const auto& a : r->arms) {
    CanaryArmStats s;
    s.name = a.config.name;
    s.model = a.config.model;
    s.percent = a.config.percent;
    s.baseline = a.baseline;
    s.enabled = a.enabled;
    s.requests = a.requests;
    s.helpful = a.helpful;
    s.not_helpful = a.not_helpful;
    s.helpful_rate = rate(a.helpful, a.not_helpful);
    s.latency_samples = a.latency_samples;
    s.mean_latency_ms = a.latency_samples > 0 ? a.latency_sum / static_cast<double>(a.latency_samples) : 0.0;
    s.p95_latency_ms = quantile(a.latencies, 0.95);
    s.disabled_reason = a.disabled_reason;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> CanaryController::routes() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& r : routes_) out.push_back(r.name);
  return out;
}

}  // namespace llmpool::router
