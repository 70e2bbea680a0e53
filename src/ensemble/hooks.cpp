#include "ensemble/hooks.h"

#include <utility>

namespace llmpool::ensemble {

AttemptHooks instance_hooks(std::vector<std::shared_ptr<health::InstanceHealth>> health,
                            std::shared_ptr<qos::RetryBudget> budget) {
  auto table = std::make_shared<const std::vector<std::shared_ptr<health::InstanceHealth>>>(std::move(health));
  auto at = [table](size_t i) -> health::InstanceHealth* { return i < table->size() ? (*table)[i].get() : nullptr; };

  AttemptHooks h;
  h.admit = [at, budget](size_t provider, AttemptKind kind) {
    health::InstanceHealth* s = at(provider);
    // Ask the breaker first without taking a probe slot, so that a refused
    // instance never costs a retry token.
    if (s != nullptr && !s->would_allow()) return false;
    const bool retry = kind == AttemptKind::kHedge || kind == AttemptKind::kFallback;
    if (retry && budget != nullptr && !budget->try_withdraw()) return false;
    // A refusal here lost a race for the half-open probe.
    return s == nullptr || s->try_start();
  };
  h.on_attempt_end = [at](const AttemptRecord& rec) {
    health::InstanceHealth* s = at(rec.provider);
    if (s == nullptr) return;
    switch (rec.outcome) {
      case AttemptOutcome::kSuccess: s->on_success(rec.latency_ms); break;
      case AttemptOutcome::kFailure:
        s->on_failure(rec.status.code() == StatusCode::kDeadlineExceeded ? rec.latency_ms : 0.0);
        break;
      case AttemptOutcome::kCancelled: s->on_cancelled(); break;
      case AttemptOutcome::kSkipped: break;
    }
  };
  return h;
}

}  // namespace llmpool::ensemble
