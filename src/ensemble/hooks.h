// Hooks that connect an ensemble run's attempts to the router's
// per-instance state: before each attempt, the instance's circuit breaker
// (and, for hedges and fallbacks, the retry budget) must agree; when the
// attempt ends, its outcome and latency go to the instance's statistics and
// breaker. Plug the result into RunInput::admit / RunInput::on_attempt_end.
//
//   admit(p, kind):  breaker(p).would_allow(), then for kHedge/kFallback
//                    budget.try_withdraw(), then breaker(p).allow() and
//                    stats(p).on_start(). False at the first refusal.
//   end(record):     success   -> on_success(latency)
//                    failure   -> on_failure(latency if DeadlineExceeded, else 0):
//                                 a quick error must not make an instance look fast
//                    cancelled -> on_cancelled()       skipped -> nothing
//
// `stats[i]` belongs to RunInput::providers[i]; `stats[providers.size()]`,
// when present, to the judge. A missing or null entry admits freely and
// records nothing. The caller still calls budget.record_request() once per
// original request. The hooks hold shared ownership of what they are given
// and are thread-safe as InstanceStats and RetryBudget are.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "ensemble/runner.h"
#include "qos/retry_budget.h"
#include "router/instance_stats.h"

namespace llmpool::ensemble {

struct AttemptHooks {
  std::function<bool(size_t provider, AttemptKind kind)> admit;
  std::function<void(const AttemptRecord&)> on_attempt_end;
};

AttemptHooks instance_hooks(std::vector<std::shared_ptr<router::InstanceStats>> stats,
                            std::shared_ptr<qos::RetryBudget> budget = nullptr);

}  // namespace llmpool::ensemble
