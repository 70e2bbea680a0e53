// CanaryController: traffic slices per route (canary and A/B arms) with
// feedback tracking and automatic switch-off (seed 001 phase 5, seed 002
// §5.3).
//
// Each route has a baseline model and arms that each take a percentage of
// the route's traffic. A user always lands in the same arm: the bucket is
// FNV-1a(route + '\0' + key) mod 10000, where the key is the user id, or
// tenant + '\0' + user id for a tenant's request (canary_key), and arms
// own consecutive ranges of buckets in configuration order (1% = 100
// buckets); the rest is the baseline's. A disabled arm keeps its range, which then goes to the
// baseline, so disabling one arm never moves users of another. Requests
// without a user id draw a bucket from the injected RandomSource.
//
// Every arm (baseline included) counts requests, helpful / not-helpful
// feedback and latencies. After each feedback, a canary arm with at least
// `min_samples` feedback, on a route whose baseline also has that many, is
// disabled when helpful_rate(arm) < helpful_rate(baseline) - max_helpful_drop;
// the event callback hears about it (and about manual enable/disable).
//
// Thread-safe. create() validates the configuration (InvalidArgument with
// the offending field). The RandomSource must outlive the controller. The
// event callback runs on the recording thread after the lock is released.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "qos/clock.h"

namespace llmpool::router {

struct CanaryArmConfig {
  std::string name;      // unique within the route, not the baseline's name
  std::string model;     // model (or route group) this arm sends to
  double percent = 0.0;  // share of the route's traffic, 0-100 in steps of 0.01
};

struct CanaryRouteConfig {
  std::string route;                     // e.g. a classifier tag ("code") or a route group name
  std::string baseline_model;
  std::string baseline_name = "baseline";
  std::vector<CanaryArmConfig> arms;     // percents sum to at most 100
};

struct CanaryOptions {
  double max_helpful_drop = 0.10;  // disable below baseline's helpful rate minus this
  int64_t min_samples = 50;        // feedback needed on both sides before judging
  size_t latency_window = 256;     // latencies kept per arm for p95
};

struct CanaryAssignment {
  std::string route;
  std::string arm;
  std::string model;
  bool baseline = false;
  uint32_t bucket = 0;  // 0-9999
};

struct CanaryArmStats {
  std::string name;
  std::string model;
  double percent = 0.0;      // configured share; the baseline's is the remainder
  bool baseline = false;
  bool enabled = true;
  int64_t requests = 0;
  int64_t helpful = 0;
  int64_t not_helpful = 0;
  double helpful_rate = 0.0;  // helpful / (helpful + not_helpful); 0 without feedback
  int64_t latency_samples = 0;
  double mean_latency_ms = 0.0;
  double p95_latency_ms = 0.0;  // over the last latency_window samples
  std::string disabled_reason;
};

struct CanaryEvent {
  std::string kind;  // "auto_disabled", "disabled", "enabled"
  std::string route;
  std::string arm;
  double arm_helpful_rate = 0.0;
  double baseline_helpful_rate = 0.0;
  int64_t arm_samples = 0;
  int64_t baseline_samples = 0;
  std::string message;
};

// FNV-1a, 64 bit: stable across runs, builds and machines.
uint64_t fnv1a64(std::string_view data);
// The user's bucket (0-9999) on `route`; `user_id` is a canary_key().
uint32_t canary_bucket(std::string_view route, std::string_view user_id);
// What a request is bucketed by: "" without a user id (a random bucket),
// the user id without a tenant, else tenant + '\0' + user id, so that one
// user id in two tenants is two users. The tenant changes the key, nothing
// else.
std::string canary_key(std::string_view tenant, std::string_view user_id);

class CanaryController {
 public:
  using EventCallback = std::function<void(const CanaryEvent&)>;

  static Result<std::unique_ptr<CanaryController>> create(std::vector<CanaryRouteConfig> routes, CanaryOptions options,
                                                          qos::RandomSource& random, EventCallback on_event = {});

  // The arm for this request, counted as one request of that arm; nullopt
  // when `route` has no slices configured.
  std::optional<CanaryAssignment> assign(std::string_view route, std::string_view user_id);

  // NotFound (param "route" or "arm") for an unknown route or arm.
  Status record_feedback(std::string_view route, std::string_view arm, bool helpful);
  Status record_latency(std::string_view route, std::string_view arm, double latency_ms);
  // Manual switch. Enabling an arm clears its counters so that it is judged
  // afresh; the baseline cannot be disabled (InvalidArgument).
  Status set_enabled(std::string_view route, std::string_view arm, bool enabled);

  // Baseline first, then arms in configuration order; empty for an unknown route.
  std::vector<CanaryArmStats> stats(std::string_view route) const;
  std::vector<std::string> routes() const;

 private:
  struct Arm {
    CanaryArmConfig config;
    bool baseline = false;
    bool enabled = true;
    uint32_t begin = 0, end = 0;  // bucket range [begin, end)
    int64_t requests = 0, helpful = 0, not_helpful = 0;
    int64_t latency_samples = 0;
    double latency_sum = 0.0;
    std::vector<double> latencies;  // ring buffer
    size_t latency_next = 0;
    std::string disabled_reason;
  };
  struct Route {
    std::string name;
    std::vector<Arm> arms;  // [0] is the baseline
  };

  CanaryController(std::vector<Route> routes, CanaryOptions options, qos::RandomSource& random, EventCallback cb);
  Route* find_route_locked(std::string_view route);
  const Route* find_route_locked(std::string_view route) const;
  static Arm* find_arm(Route& r, std::string_view arm);
  void judge_locked(Route& r, std::vector<CanaryEvent>& events);
  void emit(const std::vector<CanaryEvent>& events) const;

  const CanaryOptions options_;
  qos::RandomSource& random_;
  const EventCallback on_event_;
  mutable std::mutex mu_;
  std::vector<Route> routes_;
};

}  // namespace llmpool::router
