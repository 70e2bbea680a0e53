#include "qos/circuit_breaker.h"

#include <algorithm>
#include <utility>

namespace llmpool::qos {

const char* breaker_state_name(BreakerState state) {
  switch (state) {
    case BreakerState::kClosed: return "closed";
    case BreakerState::kOpen: return "open";
    case BreakerState::kHalfOpen: return "half_open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(BreakerOptions options, const Clock& clock, Listener on_transition)
    : options_(options), clock_(clock), listener_(std::move(on_transition)) {
}

BreakerState CircuitBreaker::effective_state_locked(Clock::TimePoint now) const {
  if (state_ == BreakerState::kOpen && now - opened_at_ >= options_.cooldown) return BreakerState::kHalfOpen;
  return state_;
}

void CircuitBreaker::refresh_locked(Clock::TimePoint now, Transitions& tr) {
  if (state_ == BreakerState::kOpen && now - opened_at_ >= options_.cooldown) {
    move_locked(BreakerState::kHalfOpen, now, tr);
  }
  // A probe whose result never came back must not keep the breaker shut
  // forever: after another cooldown its slot is free again.
  if (state_ == BreakerState::kHalfOpen && probe_in_flight_ && now - probe_started_ >= options_.cooldown) {
    probe_in_flight_ = false;
  }
}

void CircuitBreaker::move_locked(BreakerState to, Clock::TimePoint now, Transitions& tr) {
  tr.add(state_, to);
  state_ = to;
  probe_in_flight_ = false;
  if (to == BreakerState::kOpen) {
    opened_at_ = now;
    ++times_opened_;
  }
  if (to == BreakerState::kClosed) failures_ = 0;
}

void CircuitBreaker::notify(const Transitions& tr) const {
  if (!listener_) return;
  for (int i = 0; i < tr.count; ++i) listener_(tr.from[i], tr.to[i]);
}

bool CircuitBreaker::allow() {
  Transitions tr;
  bool ok = false;
  {
    std::lock_guard lock(mu_);
    Clock::TimePoint now = clock_.now();
    refresh_locked(now, tr);
    switch (state_) {
      case BreakerState::kClosed: ok = true; break;
      case BreakerState::kOpen: ok = false; break;
      case BreakerState::kHalfOpen:
        if (!probe_in_flight_) {
          probe_in_flight_ = true;
          probe_started_ = now;
          ok = true;
        }
        break;
    }
  }
  notify(tr);
  return ok;
}

bool CircuitBreaker::would_allow() const {
  std::lock_guard lock(mu_);
  Clock::TimePoint now = clock_.now();
  switch (effective_state_locked(now)) {
    case BreakerState::kClosed: return true;
    case BreakerState::kOpen: return false;
    case BreakerState::kHalfOpen:
      // Freshly half-open (lazy) has no probe yet; otherwise the slot must
      // be free or its holder lost.
      if (state_ == BreakerState::kOpen) return true;
      return !probe_in_flight_ || now - probe_started_ >= options_.cooldown;
  }
  return false;
}

void CircuitBreaker::record_success() {
  Transitions tr;
  {
    std::lock_guard lock(mu_);
    Clock::TimePoint now = clock_.now();
    refresh_locked(now, tr);
    if (state_ == BreakerState::kClosed) {
      failures_ = 0;
    } else if (state_ == BreakerState::kHalfOpen && probe_in_flight_) {
      move_locked(BreakerState::kClosed, now, tr);
    }
    // Open, or half-open without a probe: a straggler that started before
    // the breaker opened; it says nothing about recovery.
  }
  notify(tr);
}

void CircuitBreaker::record_failure() {
  Transitions tr;
  {
    std::lock_guard lock(mu_);
    Clock::TimePoint now = clock_.now();
    refresh_locked(now, tr);
    if (state_ == BreakerState::kClosed) {
      ++failures_;
      if (failures_ >= std::max<int32_t>(1, options_.failure_threshold)) move_locked(BreakerState::kOpen, now, tr);
    } else if (state_ == BreakerState::kHalfOpen && probe_in_flight_) {
      ++failures_;
      move_locked(BreakerState::kOpen, now, tr);
    }
  }
  notify(tr);
}

void CircuitBreaker::record_cancelled() {
  Transitions tr;
  {
    std::lock_guard lock(mu_);
    refresh_locked(clock_.now(), tr);
    if (state_ == BreakerState::kHalfOpen) probe_in_flight_ = false;
  }
  notify(tr);
}

BreakerState CircuitBreaker::state() const {
  std::lock_guard lock(mu_);
  return effective_state_locked(clock_.now());
}

int32_t CircuitBreaker::consecutive_failures() const {
  std::lock_guard lock(mu_);
  return failures_;
}

int64_t CircuitBreaker::times_opened() const {
  std::lock_guard lock(mu_);
  return times_opened_;
}

}  // namespace llmpool::qos
