#include "api/fabric_routes.h"

#include "api/errors.h"

namespace llmpool::api {

using nlohmann::json;

void add_fabric_routes(HttpRouter& router, std::shared_ptr<fabric::FleetView> fleet) {
  router.add("GET", "/api/workers", [fleet](const HttpRequest&, ResponseWriterPtr w) {
    json data = json::array();
    for (const auto& e : fleet->list()) {
      json models = json::array();
      for (const auto& m : e.last.models)
        models.push_back({{"name", m.name}, {"slots", m.slots}, {"free", m.free}, {"pending", m.pending}});
      data.push_back({{"id", e.last.id},
                      {"tenant", e.last.tenant},
                      {"models", models},
                      {"in_flight", e.last.in_flight},
                      {"paused", e.last.paused},
                      {"share", e.last.share},
                      {"version", e.last.version},
                      {"last_seen_ms", e.age_ms},
                      {"silent", e.silent}});
    }
    HttpResponse r;
    r.body = dump_json({{"object", "list"}, {"heartbeat_ms", fleet->heartbeat_ms()}, {"data", data}});
    w->respond(std::move(r));
  });
}

}  // namespace llmpool::api
