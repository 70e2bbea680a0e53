// InstanceHealth: what one attempt asks of a provider instance before it
// starts, and what it reports when it ends. This is the contract between
// the ensemble runner's hooks (ensemble/hooks.h), which call it, and the
// router's per-instance statistics (router::InstanceStats), which implement
// it. It is a module of its own, header only, so that ensemble does not
// depend on router: the router runs ensembles, so router depends on
// ensemble, and both depend on this.
//
// Protocol: an attempt starts only if try_start() said yes, and every
// attempt that started ends in exactly one of on_success, on_failure or
// on_cancelled. would_allow() takes nothing and may be asked any time.
//
// Implementations are thread-safe; callers hold them by std::shared_ptr.
#pragma once

namespace llmpool::health {

class InstanceHealth {
 public:
  virtual ~InstanceHealth() = default;

  // Whether an attempt could start now (the circuit breaker is not open),
  // without taking anything: a refused instance must cost nothing else,
  // such as a retry token.
  virtual bool would_allow() = 0;
  // Admits one attempt and counts it as started. False when refused (an
  // open breaker, or a lost race for a half-open breaker's one probe).
  [[nodiscard]] virtual bool try_start() = 0;

  // The attempt answered; its latency counts.
  virtual void on_success(double latency_ms) = 0;
  // The attempt failed. A positive latency (a timeout's elapsed time)
  // counts as a latency sample; 0 for a quick error, which must not make
  // the instance look fast.
  virtual void on_failure(double latency_ms) = 0;
  // The attempt was abandoned (a hedge's loser, a client gone): no health signal.
  virtual void on_cancelled() = 0;
};

}  // namespace llmpool::health
