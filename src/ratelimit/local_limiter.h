// LocalLimiter: the Limiter of one process, for servers without Redis.
//
// Every limit of limiter.h is kept in memory under one mutex, so a check
// and its charge are one atomic step and concurrent admissions cannot
// overshoot. Per-minute limits are GCRA buckets, budgets count per UTC day
// and month by the injected Clock, and concurrency leases are held until
// finish() (they cannot outlive this process, so they need no expiry).
// Refused requests change nothing. State is kept per tenant and per key
// and swept when idle, so a stream of new key ids does not grow memory
// without end (a budget's usage is kept until its period ends).
//
// Ownership: the clock outlives the limiter. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ratelimit/checks.h"
#include "ratelimit/clock.h"
#include "ratelimit/limiter.h"

namespace llmpool::ratelimit {

class LocalLimiter final : public Limiter {
 public:
  explicit LocalLimiter(const Clock& clock = SystemClock::instance());

  Result<Decision> admit(const Subject& subject, int64_t reserve_tokens) override;
  void finish(const std::string& ticket, int64_t used_tokens) override;

  // For tests: how many tenants and keys have state, and admitted requests
  // not finished yet.
  size_t tracked_subjects() const;
  size_t open_tickets() const;

 private:
  struct Bucket {
    double level = 0;
    int64_t last_ms = 0;
    int64_t limit = 1;  // the limit it last drained at (for the sweep)
  };
  struct Budget {
    int64_t period = -1;
    int64_t used = 0;
  };
  struct State {
    Bucket requests, tokens;
    Budget day, month;
    int64_t running = 0;
  };
  struct Held {
    std::string state_key;  // in states_
    Kind kind;
    int64_t limit;
    int64_t cost;
    int64_t period;  // budgets: the day or month charged
  };

  static std::string state_key(const Subject& s, Scope scope);
  Outcome evaluate(State& st, const Check& c, int64_t now) const;
  void charge(State& st, const Check& c, int64_t now);
  void sweep_locked(int64_t now);

  const Clock& clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, State> states_;               // guarded by mu_
  std::unordered_map<std::string, std::vector<Held>> tickets_;  // guarded by mu_
  uint64_t next_ticket_ = 1;                                    // guarded by mu_
  uint64_t admits_since_sweep_ = 0;                             // guarded by mu_
};

}  // namespace llmpool::ratelimit
