// RetryBudget: caps retries (and fallbacks, and hedges) as a share of recent
// traffic, the token-bucket idea of Finagle's RetryBudget and Envoy's
// retry_budget. Retries are allowed while
//
//   retries_in_window + 1 <= retry_ratio * requests_in_window
//                            + min_retries_per_second * window_seconds
//
// where the window is the last `window` of time, kept as `buckets` slices
// that expire one at a time. The floor lets a quiet service still retry;
// the ratio keeps a failing upstream from being hit by a retry storm.
//
// Callers record_request() once per original request and call
// try_withdraw() before each retry; a true answer counts the retry.
// Thread-safe. The clock must outlive the budget.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "qos/clock.h"

namespace llmpool::qos {

struct RetryBudgetOptions {
  // Retries allowed per original request, on top of the floor. 0.2 = 20%.
  double retry_ratio = 0.2;
  // Retries always allowed per second of window, whatever the traffic.
  double min_retries_per_second = 1.0;
  // How far back requests and retries count. At least one bucket long.
  std::chrono::milliseconds window{10000};
  // Slices of the window; more slices expire old traffic more smoothly.
  int32_t buckets = 10;
};

class RetryBudget {
 public:
  RetryBudget(RetryBudgetOptions options, const Clock& clock);

  // Counts one original request (not a retry).
  void record_request();
  // True, and counts the retry, if the budget allows one more now.
  bool try_withdraw();
  // Retries still allowed now (may be fractional; <= 0 means none).
  double available() const;
  int64_t requests_in_window() const;
  int64_t retries_in_window() const;

 private:
  struct Bucket {
    int64_t tick = -1;  // which slice of time this bucket holds
    int64_t requests = 0;
    int64_t retries = 0;
  };
  int64_t tick_now() const;
  Bucket& bucket_locked(int64_t tick);
  void sums_locked(int64_t tick, int64_t& requests, int64_t& retries) const;
  double available_locked(int64_t tick) const;

  const RetryBudgetOptions options_;
  const Clock& clock_;
  const Clock::Duration bucket_len_;
  mutable std::mutex mu_;
  std::vector<Bucket> buckets_;
};

}  // namespace llmpool::qos
