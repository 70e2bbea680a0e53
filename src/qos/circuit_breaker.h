// CircuitBreaker: one per provider instance. It stops sending work to an
// instance that keeps failing and lets a single probe through after a
// cooldown to find out whether it recovered.
//
//   closed    --N consecutive failures-->        open
//   open      --cooldown elapsed (lazily)-->     half_open
//   half_open --probe succeeds-->                closed
//   half_open --probe fails-->                   open (cooldown restarts)
//
// allow() says whether an attempt may start now; in half_open it admits one
// probe at a time and marks it. Every attempt that allow() admitted must
// end with exactly one record_success(), record_failure() or
// record_cancelled() (cancelled: the attempt was abandoned, e.g. a hedge
// loser, and says nothing about health). Results of attempts that started
// before the breaker opened are ignored while it is open (in half_open, a
// result is taken as the probe's while a probe is out: attempts are not
// told apart, so a straggler may settle the probe early). A probe that never
// reports back is forgotten after one more cooldown, so a lost callback
// cannot wedge the breaker.
//
// Thread-safe. The clock must outlive the breaker. The transition listener
// runs on the thread that caused the transition, after the breaker's lock is
// released; it must not block.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>

#include "qos/clock.h"

namespace llmpool::qos {

enum class BreakerState { kClosed, kOpen, kHalfOpen };

// "closed", "open", "half_open": the names used in metrics and logs.
const char* breaker_state_name(BreakerState state);

struct BreakerOptions {
  // Consecutive failures that open a closed breaker. At least 1.
  int32_t failure_threshold = 5;
  // How long an open breaker waits before it admits a probe.
  std::chrono::milliseconds cooldown{30000};
};

class CircuitBreaker {
 public:
  using Listener = std::function<void(BreakerState from, BreakerState to)>;

  CircuitBreaker(BreakerOptions options, const Clock& clock, Listener on_transition = {});

  // Whether an attempt may start now. In half_open, true for one caller at
  // a time (the probe); the probe slot stays taken until it is recorded.
  bool allow();
  // Whether allow() would return true now, without taking the probe slot.
  // For scoring candidates before one is picked.
  bool would_allow() const;

  void record_success();
  void record_failure();
  void record_cancelled();

  // The current state; an open breaker whose cooldown has passed reads as
  // half_open.
  BreakerState state() const;
  int32_t consecutive_failures() const;
  // Times the breaker went closed/half_open -> open, for metrics.
  int64_t times_opened() const;

 private:
  // Transitions seen while the lock was held, announced after it is released.
  struct Transitions {
    BreakerState from[2];
    BreakerState to[2];
    int count = 0;
    void add(BreakerState f, BreakerState t) {
      if (f != t && count < 2) {
        from[count] = f;
        to[count] = t;
        ++count;
      }
    }
  };
  // The lazy open -> half_open transition and the lost-probe timeout.
  void refresh_locked(Clock::TimePoint now, Transitions& tr);
  void move_locked(BreakerState to, Clock::TimePoint now, Transitions& tr);
  // The state refresh_locked would produce, without changing anything.
  BreakerState effective_state_locked(Clock::TimePoint now) const;
  void notify(const Transitions& tr) const;

  const BreakerOptions options_;
  const Clock& clock_;
  const Listener listener_;

  mutable std::mutex mu_;
  BreakerState state_ = BreakerState::kClosed;
  Clock::TimePoint opened_at_{};
  bool probe_in_flight_ = false;
  Clock::TimePoint probe_started_{};
  int32_t failures_ = 0;
  int64_t times_opened_ = 0;
};

}  // namespace llmpool::qos
