// Clock and RandomSource: the two sources of non-determinism that the
// router, qos and ensemble code take by injection, so that tests can pin
// time and chance down.
//
// Clock is monotonic (steady_clock's time points); SystemClock reads the
// real steady clock, ManualClock moves only when a test advances it.
// RandomSource yields uniformly distributed 64-bit values; SeededRandom is
// a deterministic generator (SplitMix64 over an atomic counter) whose
// sequence depends only on its seed and the number of draws.
//
// Ownership: whoever constructs a component that takes a `const Clock&` or
// `RandomSource&` keeps the clock or source alive longer than the
// component. SystemClock::instance() lives for the whole program.
// Thread-safety: every class here is thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace llmpool::qos {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;

  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

// The real monotonic clock.
class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  // One shared instance, for production wiring.
  static const SystemClock& instance() {
    static const SystemClock clock;
    return clock;
  }
};

// A clock that moves only when told. Starts one hour after the steady
// clock's epoch so that "now - something" never underflows in tests.
class ManualClock final : public Clock {
 public:
  ManualClock() : ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::hours(1)).count()) {}

  TimePoint now() const override {
    return TimePoint(std::chrono::duration_cast<Duration>(std::chrono::nanoseconds(ns_.load(std::memory_order_acquire))));
  }
  // Moves time forward by `d` (negative durations are ignored: the clock is monotonic).
  void advance(std::chrono::nanoseconds d) {
    if (d.count() > 0) ns_.fetch_add(d.count(), std::memory_order_acq_rel);
  }
  // Sets the time to `t` if it is later than now.
  void set(TimePoint t) {
    int64_t target = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    int64_t cur = ns_.load(std::memory_order_acquire);
    while (target > cur && !ns_.compare_exchange_weak(cur, target, std::memory_order_acq_rel)) {
    }
  }

 private:
  std::atomic<int64_t> ns_;
};

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // A uniformly distributed 64-bit value.
  virtual uint64_t next_u64() = 0;

  // Uniform in [0, 1), from the top 53 bits of next_u64().
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n); 0 when n is 0. Lemire's multiply-shift (bias < n / 2^64).
  uint64_t below(uint64_t n) {
    if (n == 0) return 0;
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }
};

// Deterministic: the i-th draw is SplitMix64(seed + i * golden gamma).
// Lock-free; concurrent callers get distinct draws of the same sequence.
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  uint64_t next_u64() override {
    uint64_t z = state_.fetch_add(0x9e3779b97f4a7c15ULL, std::memory_order_relaxed) + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::atomic<uint64_t> state_;
};

}  // namespace llmpool::qos
