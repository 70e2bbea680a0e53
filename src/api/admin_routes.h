// Operator endpoints for the model pool, registered on an HttpRouter:
//   GET  /api/capacity-status          every model's state, memory, load and limits
//   POST /api/models/{name}/load       load now (waits, up to pool.load_timeout_ms)
//   POST /api/models/{name}/unload     unload an idle model; 409 model_busy if it is not idle
// {name} is a model name or alias, percent-decoded (names may hold '/').
// The pool must outlive the router. Handlers never block.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>

#include "api/router.h"
#include "pool/model_pool.h"

namespace llmpool::api {

void add_admin_routes(HttpRouter& router, std::shared_ptr<pool::ModelPool> pool);

// The /api/capacity-status document (exposed for tests). `unix_now_ms` and
// `steady_now` map the pool's steady clock to wall-clock time.
nlohmann::json capacity_status_json(const pool::PoolStatus& status, int64_t unix_now_ms,
                                    pool::TimePoint steady_now);

}  // namespace llmpool::api
