// Hooks that connect an ensemble run's attempts to each instance's health
// (health::InstanceHealth; the router's InstanceStats, with its circuit
// breaker): before each attempt, the instance (and, for hedges and
// fallbacks, the retry budget) must agree; when the attempt ends, its
// outcome and latency go to the instance. Plug the result into
// RunInput::admit / RunInput::on_attempt_end.
//
//   admit(p, kind):  health(p).would_allow(), then for kHedge/kFallback
//                    budget.try_withdraw(), then health(p).try_start().
//                    False at the first refusal.
//   end(record):     success   -> on_success(latency)
//                    failure   -> on_failure(latency if DeadlineExceeded, else 0):
//                                 a quick error must not make an instance look fast
//                    cancelled -> on_cancelled()       skipped -> nothing
//
// `health[i]` belongs to RunInput::providers[i]; `health[providers.size()]`,
// when present, to the judge. A missing or null entry admits freely and
// records nothing. The caller still calls budget.record_request() once per
// original request. The hooks hold shared ownership of what they are given
// and are thread-safe as InstanceHealth and RetryBudget are.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "ensemble/runner.h"
#include "health/instance_health.h"
#include "qos/retry_budget.h"

namespace llmpool::ensemble {

struct AttemptHooks {
  std::function<bool(size_t provider, AttemptKind kind)> admit;
  std::function<void(const AttemptRecord&)> on_attempt_end;
};

AttemptHooks instance_hooks(std::vector<std::shared_ptr<health::InstanceHealth>> health,
                            std::shared_ptr<qos::RetryBudget> budget = nullptr);

}  // namespace llmpool::ensemble
