// The fabric's operator endpoint, registered on an HttpRouter:
//   GET /api/workers   the worker fleet from its heartbeats (docs/api.md):
//     {"object":"list","heartbeat_ms":N,"data":[{"id","tenant","models":[{"name",
//      "slots","free","pending"}],"in_flight","paused","share","version",
//      "last_seen_ms","silent"}]}
//   A worker is "silent" after 3 heartbeat periods without one.
// The fleet view must outlive the router. The handler never blocks.
#pragma once

#include <memory>

#include "api/router.h"
#include "fabric/fleet.h"

namespace llmpool::api {

void add_fabric_routes(HttpRouter& router, std::shared_ptr<fabric::FleetView> fleet);

}  // namespace llmpool::api
