// Deadline: the absolute time by which a request must be answered. It is a
// plain value that travels with the request (router -> fallbacks -> ensemble
// -> provider); each hop asks remaining() and derives tighter child deadlines
// for the attempts it starts, so a retry never outlives its parent.
//
// Time is read from an injected qos::Clock (see clock.h), never implicitly.
// Deadline::never() has no limit: remaining() is Duration::max() and it
// never expires. Copyable value; thread-compatible.
#pragma once

#include <algorithm>
#include <chrono>

#include "qos/clock.h"

namespace llmpool::qos {

class Deadline {
 public:
  using TimePoint = Clock::TimePoint;
  using Duration = Clock::Duration;

  // No limit.
  static Deadline never() { return Deadline(TimePoint::max()); }
  static Deadline at(TimePoint when) { return Deadline(when); }
  // `budget` from the clock's now. A non-positive budget is already expired.
  template <typename Rep, typename Period>
  static Deadline after(const Clock& clock, std::chrono::duration<Rep, Period> budget) {
    return Deadline(add_saturating(clock.now(), std::chrono::duration_cast<Duration>(budget)));
  }

  bool is_never() const { return when_ == TimePoint::max(); }
  TimePoint when() const { return when_; }

  // Time left, never negative; Duration::max() for never().
  Duration remaining(const Clock& clock) const {
    if (is_never()) return Duration::max();
    TimePoint now = clock.now();
    return now >= when_ ? Duration::zero() : when_ - now;
  }
  bool expired(const Clock& clock) const { return !is_never() && clock.now() >= when_; }

  // A deadline for a sub-operation: at most `budget` from now and never
  // later than this one.
  template <typename Rep, typename Period>
  Deadline child(const Clock& clock, std::chrono::duration<Rep, Period> budget) const {
    return earliest(after(clock, budget));
  }
  // A deadline `fraction` (clamped to [0, 1]) of the remaining time from
  // now, e.g. 0.5 to leave half the budget for a fallback. never() stays never().
  Deadline child_fraction(const Clock& clock, double fraction) const {
    if (is_never()) return *this;
    fraction = std::clamp(fraction, 0.0, 1.0);
    auto left = remaining(clock);
    auto part = std::chrono::duration_cast<Duration>(std::chrono::duration<double, Duration::period>(
        static_cast<double>(left.count()) * fraction));
    return Deadline(clock.now() + part);
  }
  Deadline earliest(const Deadline& other) const { return Deadline(std::min(when_, other.when_)); }

  friend bool operator==(const Deadline& a, const Deadline& b) { return a.when_ == b.when_; }

 private:
  explicit Deadline(TimePoint when) : when_(when) {}
  static TimePoint add_saturating(TimePoint t, Duration d) {
    if (d > Duration::zero() && t > TimePoint::max() - d) return TimePoint::max();
    return t + d;
  }

  TimePoint when_;
};

}  // namespace llmpool::qos
