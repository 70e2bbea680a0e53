// InstanceStats: what the router remembers about one provider instance
// between requests — recent latencies (EWMA and a bounded window for p95),
// its circuit breaker, requests in flight through the router, the success
// rate, user feedback (quality) and whether it is excluded for being slow.
// InstanceSnapshot is the plain copy the scorer reads.
//
// Slow exclusion has hysteresis: an instance whose windowed p95 exceeds
// `slow_p95_ms` (with at least `min_samples` samples) is excluded, and stays
// excluded until its p95 drops to `recover_ratio * slow_p95_ms` or its
// samples age out of the window (`max_sample_age`), which is how an
// instance that gets no traffic while excluded comes back.
//
// Every attempt the router starts must end in exactly one of on_success,
// on_failure or on_cancelled (which also report to the breaker); start the
// attempt only if breaker().allow() said so (try_start() asks and counts
// it). This is the health::InstanceHealth contract the ensemble's hooks
// use.
//
// Thread-safe. The clock must outlive the object. Usually held by
// std::shared_ptr, shared between the router's table and attempts in flight.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "health/instance_health.h"
#include "qos/circuit_breaker.h"
#include "qos/clock.h"

namespace llmpool::router {

struct InstanceStatsOptions {
  double ewma_alpha = 0.2;                        // weight of the newest latency in the EWMA
  size_t window_size = 128;                       // latencies kept for p95
  std::chrono::milliseconds max_sample_age{300000};  // older samples leave the window (5 min)
  size_t min_samples = 5;                         // fewer: p95 is not trusted for exclusion
  double slow_p95_ms = 0.0;                       // exclude above this p95; 0 disables
  double recover_ratio = 0.8;                     // re-include at or below ratio * slow_p95_ms
  double quality_prior = 0.5;                     // quality before any feedback
  double quality_alpha = 0.05;                    // weight of each feedback in the quality EWMA
  double success_alpha = 0.1;                     // weight of each attempt in the success-rate EWMA
  qos::BreakerOptions breaker;
};

struct InstanceSnapshot {
  std::string id;
  double ewma_ms = 0.0;          // 0 when no sample yet
  double p95_ms = 0.0;           // over the live window; 0 when empty
  size_t samples = 0;            // live samples in the window
  int64_t in_flight = 0;         // attempts started through the router and not ended
  double success_rate = 1.0;     // EWMA of 1 (success) / 0 (failure)
  double quality = 0.5;          // EWMA of feedback: 1 helpful, 0 not
  int64_t feedback = 0;          // feedback events seen
  qos::BreakerState breaker = qos::BreakerState::kClosed;
  bool breaker_allows = true;    // breaker().would_allow()
  bool slow_excluded = false;
};

class InstanceStats final : public health::InstanceHealth {
 public:
  InstanceStats(std::string id, InstanceStatsOptions options, const qos::Clock& clock,
                qos::CircuitBreaker::Listener on_breaker_transition = {});

  const std::string& id() const { return id_; }
  qos::CircuitBreaker& breaker() { return breaker_; }

  void on_start();
  // health::InstanceHealth: breaker().would_allow(); and breaker().allow()
  // followed by on_start() when it says yes.
  bool would_allow() override { return breaker_.would_allow(); }
  [[nodiscard]] bool try_start() override;
  // A finished attempt: latency joins the window; the breaker hears success.
  void on_success(double latency_ms) override;
  // A failed attempt (error, timeout). A positive latency (e.g. a timeout's
  // elapsed time) joins the window, so stalls push p95 up too.
  void on_failure(double latency_ms = 0.0) override;
  // An abandoned attempt (hedge loser, client gone): no health signal.
  void on_cancelled() override;
  void record_feedback(bool helpful);

  // A consistent copy; also re-evaluates slow exclusion.
  InstanceSnapshot snapshot();

 private:
  struct Sample {
    qos::Clock::TimePoint at;
    double ms;
  };
  void add_latency_locked(double ms, qos::Clock::TimePoint now);
  void expire_locked(qos::Clock::TimePoint now);
  double p95_locked() const;

  const std::string id_;
  const InstanceStatsOptions options_;
  const qos::Clock& clock_;
  qos::CircuitBreaker breaker_;

  mutable std::mutex mu_;
  std::deque<Sample> window_;
  double ewma_ms_ = 0.0;
  bool has_ewma_ = false;
  int64_t in_flight_ = 0;
  double success_rate_ = 1.0;
  double quality_;
  int64_t feedback_ = 0;
  bool slow_excluded_ = false;
};

// The q-quantile (0..1) of `values` by nearest rank; 0 for none. Sorts a copy.
double quantile(std::vector<double> values, double q);

}  // namespace llmpool::router
