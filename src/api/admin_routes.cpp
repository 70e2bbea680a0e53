#include "api/admin_routes.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string_view>

#include "api/errors.h"

namespace llmpool::api {
namespace {

using nlohmann::json;

constexpr std::string_view kModelsPrefix = "/api/models/";

HttpResponse json_response(const json& j) {
  HttpResponse r;
  r.body = dump_json(j);
  return r;
}

// 409 for a model that cannot be unloaded now; other errors as usual.
HttpResponse admin_error(const Status& st) {
  HttpResponse r = error_response(st);
  if (st.error_code() == "model_busy") r.status = 409;
  return r;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

json capacity_status_json(const pool::PoolStatus& status, int64_t now_ms, pool::TimePoint steady_now) {
  json models = json::array();
  for (const auto& m : status.models) {
    const auto& c = m.config;
    int64_t queued = m.stats.queued + m.waiting_for_load;
    // Uses that are not waiting in the engine's queue: running requests and held leases.
    int64_t active = std::max<int64_t>(0, m.in_flight - m.stats.queued);
    json j = {
        {"name", c.name},
        {"aliases", c.aliases},
        {"type", c.type},
        {"state", pool::model_state_name(m.state)},
        {"memory_bytes", m.memory_bytes},
        {"active", active},
        {"queued", queued},
        {"waiting_for_load", m.waiting_for_load},
        {"parallel", c.is_remote() ? 0 : c.parallel},
        {"max_concurrent", c.max_concurrent},
        {"max_queue", c.max_queue},
        {"context", c.context},
        {"keep_alive", config::format_duration_ms(c.keep_alive_ms)},
        {"keep_alive_ms", c.keep_alive_ms},
        {"pinned", c.pinned},
        {"warm", c.warm},
        {"priority", c.priority},
        {"capabilities", c.capabilities},
    };
    if (m.last_used) {
      int64_t ago = std::chrono::duration_cast<std::chrono::milliseconds>(steady_now - *m.last_used).count();
      j["last_used"] = (now_ms - ago) / 1000;  // unix seconds
      j["idle_ms"] = m.in_flight > 0 ? 0 : ago;
    } else {
      j["last_used"] = nullptr;
      j["idle_ms"] = nullptr;
    }
    j["error"] = m.error.empty() ? json() : json(m.error);
    models.push_back(std::move(j));
  }
  json pool = {
      {"memory_budget_bytes", status.config.memory_budget_bytes},
      {"memory_used_bytes", status.memory_used_bytes},
      {"max_loaded_models", status.config.max_loaded_models},
      {"loaded_local_models", status.loaded_local_models},
      {"old_versions_finishing", status.retired_busy},
      {"load_timeout_ms", status.config.load_timeout_ms},
      {"watchdog_free_memory_percent", status.config.watchdog_free_memory_percent},
  };
  if (auto mi = pool::read_meminfo(); mi && mi->total_bytes > 0)
    pool["free_memory_percent"] = 100.0 * static_cast<double>(mi->available_bytes) / static_cast<double>(mi->total_bytes);
  return {{"object", "capacity_status"}, {"pool", pool}, {"models", models}};
}

void add_admin_routes(HttpRouter& router, std::shared_ptr<pool::ModelPool> pool) {
  router.add("GET", "/api/capacity-status", [pool](const HttpRequest&, ResponseWriterPtr w) {
    w->respond(json_response(capacity_status_json(pool->status(), unix_now_ms(), pool::SteadyClock::now())));
  });
  router.add_prefix("POST", std::string(kModelsPrefix), [pool](const HttpRequest& req, ResponseWriterPtr w) {
    std::string_view rest = std::string_view(req.path).substr(kModelsPrefix.size());
    std::string_view action;
    for (std::string_view a : {"/load", "/unload"})
      if (rest.size() > a.size() && rest.substr(rest.size() - a.size()) == a) {
        action = a.substr(1);
        rest.remove_suffix(a.size());
        break;
      }
    if (action.empty())
      return w->respond(error_response(Status::not_found(
          "no route for POST " + req.path + " (use /api/models/{name}/load or /api/models/{name}/unload)", "",
          "unknown_url")));
    auto name = percent_decode(rest);
    if (!name || name->empty())
      return w->respond(error_response(Status::invalid_argument("bad model name in the path", "model")));
    if (action == "unload") {
      Status st = pool->unload(*name);
      if (!st) return w->respond(admin_error(st));
      return w->respond(json_response({{"model", *name}, {"state", "unloaded"}}));
    }
    pool->load(*name, [w, name = *name](Status st) {
      if (!st) return w->respond(admin_error(st));
      w->respond(json_response({{"model", name}, {"state", "ready"}}));
    });
  });
}

}  // namespace llmpool::api
