#include "ensemble/hooks.h"

#include <utility>

namespace llmpool::ensemble {

AttemptHooks instance_hooks(std::vector<std::shared_ptr<router::InstanceStats>> stats,
                            std::shared_ptr<qos::RetryBudget> budget) {
  auto table = std::make_shared<const std::vector<std::shared_ptr<router::InstanceStats>>>(std::move(stats));
  auto at = [table](size_t i) -> router::InstanceStats* { return i < table->size() ? (*table)[i].get() : nullptr; };

  AttemptHooks h;
  h.admit = [at, budget](size_t provider, AttemptKind kind) {
    router::InstanceStats* s = at(provider);
    // Ask the breaker first without taking a probe slot, so that a refused
    // instance never costs a retry token.
    if (s != nullptr && !s->breaker().would_allow()) return false;
    const bool retry = kind == AttemptKind::kHedge || kind == AttemptKind::kFallback;
    if (retry && budget != nullptr && !budget->try_withdraw()) return false;
    if (s != nullptr) {
      if (!s->breaker().allow()) return false;  // lost a race for the half-open probe
      s->on_start();
    }
    return true;
  };
  h.on_attempt_end = [at](const AttemptRecord& rec) {
    router::InstanceStats* s = at(rec.provider);
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
