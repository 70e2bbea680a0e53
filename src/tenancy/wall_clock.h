// WallClock: the calendar time (Unix seconds) that key expiry, JWT `exp` /
// `nbf` and HMAC timestamps are compared with. Unlike qos::Clock it is not
// monotonic: it is the time clients put in their credentials.
//
// Ownership: whoever builds a component that takes a `const WallClock&`
// keeps the clock alive longer than the component; SystemWallClock::
// instance() lives for the whole program. Thread-safety: thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace llmpool::tenancy {

class WallClock {
 public:
  virtual ~WallClock() = default;
  // Seconds since the Unix epoch.
  virtual int64_t now_unix() const = 0;
};

// The system's real-time clock.
class SystemWallClock final : public WallClock {
 public:
  int64_t now_unix() const override {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  static const SystemWallClock& instance() {
    static const SystemWallClock clock;
    return clock;
  }
};

// A clock that tests set and move by hand. Starts at `start` (default
// 2026-01-01T00:00:00Z).
class ManualWallClock final : public WallClock {
 public:
  explicit ManualWallClock(int64_t start = 1767225600) : now_(start) {}
  int64_t now_unix() const override { return now_.load(std::memory_order_acquire); }
  void set(int64_t t) { now_.store(t, std::memory_order_release); }
  void advance(int64_t seconds) { now_.fetch_add(seconds, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace llmpool::tenancy
