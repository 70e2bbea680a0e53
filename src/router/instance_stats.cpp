#include "router/instance_stats.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace llmpool::router {

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  size_t idx = rank == 0 ? 0 : rank - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(idx), values.end());
  return values[idx];
}

InstanceStats::InstanceStats(std::string id, InstanceStatsOptions options, const qos::Clock& clock,
                             qos::CircuitBreaker::Listener on_breaker_transition)
    : id_(std::move(id)),
      options_(options),
      clock_(clock),
      breaker_(options.breaker, clock, std::move(on_breaker_transition)),
      quality_(std::clamp(options.quality_prior, 0.0, 1.0)) {}

void InstanceStats::on_start() {
  std::lock_guard lock(mu_);
  ++in_flight_;
}

bool InstanceStats::try_start() {
  if (!breaker_.allow()) return false;
  on_start();
  return true;
}

void InstanceStats::add_latency_locked(double ms, qos::Clock::TimePoint now) {
  if (!(ms >= 0.0) || !std::isfinite(ms)) return;
  double a = std::clamp(options_.ewma_alpha, 0.0, 1.0);
  ewma_ms_ = has_ewma_ ? a * ms + (1.0 - a) * ewma_ms_ : ms;
  has_ewma_ = true;
  window_.push_back({now, ms});
  while (window_.size() > std::max<size_t>(1, options_.window_size)) window_.pop_front();
}

void InstanceStats::on_success(double latency_ms) {
  breaker_.record_success();
  std::lock_guard lock(mu_);
  if (in_flight_ > 0) --in_flight_;
  add_latency_locked(latency_ms, clock_.now());
  double a = std::clamp(options_.success_alpha, 0.0, 1.0);
  success_rate_ = a * 1.0 + (1.0 - a) * success_rate_;
}

void InstanceStats::on_failure(double latency_ms) {
  breaker_.record_failure();
  std::lock_guard lock(mu_);
  if (in_flight_ > 0) --in_flight_;
  if (latency_ms > 0) add_latency_locked(latency_ms, clock_.now());
  double a = std::clamp(options_.success_alpha, 0.0, 1.0);
  success_rate_ = (1.0 - a) * success_rate_;
}

void InstanceStats::on_cancelled() {
  breaker_.record_cancelled();
  std::lock_guard lock(mu_);
  if (in_flight_ > 0) --in_flight_;
}

void InstanceStats::record_feedback(bool helpful) {
  std::lock_guard lock(mu_);
  double a = std::clamp(options_.quality_alpha, 0.0, 1.0);
  quality_ = a * (helpful ? 1.0 : 0.0) + (1.0 - a) * quality_;
  ++feedback_;
}

void InstanceStats::expire_locked(qos::Clock::TimePoint now) {
  while (!window_.empty() && now - window_.front().at > options_.max_sample_age) window_.pop_front();
}

double InstanceStats::p95_locked() const {
  std::vector<double> v;
  v.reserve(window_.size());
  for (const auto& s : window_) v.push_back(s.ms);
  return quantile(std::move(v), 0.95);
}

InstanceSnapshot InstanceStats::snapshot() {
  InstanceSnapshot s;
  s.id = id_;
  s.breaker = breaker_.state();
  s.breaker_allows = breaker_.would_allow();
  std::lock_guard lock(mu_);
  expire_locked(clock_.now());
  s.ewma_ms = has_ewma_ ? ewma_ms_ : 0.0;
  s.samples = window_.size();
  s.p95_ms = p95_locked();
  s.in_flight = in_flight_;
  s.success_rate = success_rate_;
  s.quality = quality_;
  s.feedback = feedback_;

  if (options_.slow_p95_ms > 0) {
    const bool trusted = s.samples >= std::max<size_t>(1, options_.min_samples);
    if (!slow_excluded_) {
      if (trusted && s.p95_ms > options_.slow_p95_ms) slow_excluded_ = true;
    } else if (!trusted || s.p95_ms <= options_.recover_ratio * options_.slow_p95_ms) {
      slow_excluded_ = false;
    }
  } else {
    slow_excluded_ = false;
  }
  s.slow_excluded = slow_excluded_;
  return s;
}

}  // namespace llmpool::router
