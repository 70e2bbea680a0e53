// AdmissionGate: global backpressure and draining for generations
// (Seastar's gate plus a limit). Every generation holds an
// AdmissionGate::Hold for as long as it runs.
//
// try_enter() returns an empty Hold when `max_active` holds are already out
// (the caller answers 429 with a Retry-After of retry_after_seconds()) or
// once close() has begun (the caller answers 503). enter() says which, as a
// Status: ResourceExhausted or Unavailable. close() stops new holds for
// good; wait_drained() then waits until every hold is released.
//
// Ownership: the gate must outlive every Hold it handed out. Hold is a
// move-only RAII value; it releases on destruction or release().
// Thread-safe. wait_drained() blocks the calling thread (real time, not an
// injected clock: it waits on a condition variable) — never call it on an
// I/O thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "common/status.h"

namespace llmpool::qos {

struct AdmissionOptions {
  // Generations that may run at once across all models; 0 means no limit.
  int64_t max_active = 256;
  // What a 429 tells the client to wait, in seconds.
  int32_t retry_after_seconds = 1;
};

class AdmissionGate {
 public:
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Hold& operator=(Hold&& other) noexcept {
      if (this != &other) {
        release();
        gate_ = other.gate_;
        other.gate_ = nullptr;
      }
      return *this;
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { release(); }

    explicit operator bool() const { return gate_ != nullptr; }
    void release();

   private:
    friend class AdmissionGate;
    explicit Hold(AdmissionGate* gate) : gate_(gate) {}
    AdmissionGate* gate_ = nullptr;
  };

  explicit AdmissionGate(AdmissionOptions options = {});
  AdmissionGate(const AdmissionGate&) = delete;
  AdmissionGate& operator=(const AdmissionGate&) = delete;

  // A hold, or an empty one when the gate is full or closed.
  Hold try_enter();
  // As try_enter, with the reason on failure: ResourceExhausted (over the
  // limit; retry after retry_after_seconds()) or Unavailable (shutting down).
  Result<Hold> enter();

  // No new holds from now on. Idempotent.
  void close();
  bool closed() const;
  // Waits until no hold is out or `timeout` passes; true if drained. Does
  // not close the gate by itself.
  bool wait_drained(std::chrono::milliseconds timeout);

  int64_t active() const;
  int64_t rejected() const;  // try_enter/enter calls refused for the limit
  int32_t retry_after_seconds() const;
  // Changes the limit (hot reload); holds already out are kept.
  void set_options(AdmissionOptions options);

 private:
  void leave();

  mutable std::mutex mu_;
  std::condition_variable drained_;
  AdmissionOptions options_;
  int64_t active_ = 0;
  int64_t rejected_ = 0;
  bool closed_ = false;
};

}  // namespace llmpool::qos
