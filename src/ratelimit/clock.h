// The calendar clock of the local limiter: Unix time in milliseconds (UTC),
// so that daily and monthly budgets follow UTC days and months. The Redis
// limiter reads Redis's TIME instead, so that every instance agrees.
//
// Ownership: whoever builds a LocalLimiter keeps its clock alive longer;
// SystemClock::instance() lives for the whole program. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace llmpool::ratelimit {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ms() const = 0;  // milliseconds since the Unix epoch
};

class SystemClock final : public Clock {
 public:
  int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  static const SystemClock& instance() {
    static const SystemClock clock;
    return clock;
  }
};

// Moves only when a test says; starts at 2026-01-01T00:00:00Z by default.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1767225600000) : ms_(start_ms) {}
  int64_t now_ms() const override { return ms_.load(std::memory_order_acquire); }
  void set_ms(int64_t ms) { ms_.store(ms, std::memory_order_release); }
  void advance(std::chrono::milliseconds d) { ms_.fetch_add(d.count(), std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> ms_;
};

}  // namespace llmpool::ratelimit
