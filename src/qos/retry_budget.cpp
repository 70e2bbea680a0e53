#include "qos/retry_budget.h"

#include <algorithm>

namespace llmpool::qos {

namespace {
Clock::Duration bucket_length(const RetryBudgetOptions& o) {
  int32_t n = std::max<int32_t>(1, o.buckets);
  auto len = std::chrono::duration_cast<Clock::Duration>(o.window) / n;
  return std::max<Clock::Duration>(len, std::chrono::milliseconds(1));
}
}  // namespace

RetryBudget::RetryBudget(RetryBudgetOptions options, const Clock& clock)
    : options_(options),
      clock_(clock),
      bucket_len_(bucket_length(options)),
      buckets_(static_cast<size_t>(std::max<int32_t>(1, options.buckets))) {}

int64_t RetryBudget::tick_now() const { return clock_.now().time_since_epoch() / bucket_len_; }

RetryBudget::Bucket& RetryBudget::bucket_locked(int64_t tick) {
  Bucket& b = buckets_[static_cast<size_t>(tick % static_cast<int64_t>(buckets_.size()))];
  if (b.tick != tick) b = Bucket{tick, 0, 0};  // an expired slice is reused
  return b;
}

void RetryBudget::sums_locked(int64_t tick, int64_t& requests, int64_t& retries) const {
  requests = 0;
  retries = 0;
  const int64_t oldest = tick - static_cast<int64_t>(buckets_.size()) + 1;
  for (const Bucket& b : buckets_) {
    if (b.tick >= oldest && b.tick <= tick) {
      requests += b.requests;
      retries += b.retries;
    }
  }
}

double RetryBudget::available_locked(int64_t tick) const {
  int64_t requests, retries;
  sums_locked(tick, requests, retries);
  const double window_s = std::chrono::duration<double>(bucket_len_ * static_cast<int64_t>(buckets_.size())).count();
  const double allowed = std::max(0.0, options_.retry_ratio) * static_cast<double>(requests) +
                         std::max(0.0, options_.min_retries_per_second) * window_s;
  return allowed - static_cast<double>(retries);
}

void RetryBudget::record_request() {
  std::lock_guard lock(mu_);
  ++bucket_locked(tick_now()).requests;
}

bool RetryBudget::try_withdraw() {
  std::lock_guard lock(mu_);
  int64_t tick = tick_now();
  // A small epsilon keeps 0.2 * 5 = 0.99999... from refusing the one retry it allows.
  if (available_locked(tick) < 1.0 - 1e-9) return false;
  ++bucket_locked(tick).retries;
  return true;
}

double RetryBudget::available() const {
  std::lock_guard lock(mu_);
  return available_locked(tick_now());
}

int64_t RetryBudget::requests_in_window() const {
  std::lock_guard lock(mu_);
  int64_t requests, retries;
  sums_locked(tick_now(), requests, retries);
  return requests;
}

int64_t RetryBudget::retries_in_window() const {
  std::lock_guard lock(mu_);
  int64_t requests, retries;
  sums_locked(tick_now(), requests, retries);
  return retries;
}

}  // namespace llmpool::qos
