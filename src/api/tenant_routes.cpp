#include "api/tenant_routes.h"

#include "api/errors.h"
#include "api/request_reader.h"

namespace llmpool::api {
namespace {

using nlohmann::json;

constexpr std::string_view kTenantsPrefix = "/admin/tenants/";
constexpr std::string_view kKeysPrefix = "/admin/keys/";
constexpr int64_t kMaxLimit = int64_t{1} << 50;

HttpResponse json_response(const json& j, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.body = dump_json(j);
  return r;
}

json tenant_json(const tenancy::Tenant& t, bool from_config) {
  return {{"object", "tenant"},
          {"name", t.name},
          {"plan", t.plan},
          {"models", t.allowed_models},
          {"route_groups", t.route_groups},
          {"max_priority", t.max_priority},
          {"requests_per_minute", t.requests_per_minute},
          {"tokens_per_minute", t.tokens_per_minute},
          {"max_concurrent_requests", t.max_concurrent_requests},
          {"daily_token_budget", t.daily_token_budget},
          {"monthly_token_budget", t.monthly_token_budget},
          {"throughput", t.quotas.throughput},
          {"storage_days", t.quotas.storage_days},
          {"max_consumers", t.quotas.max_consumers},
          {"source", from_config ? "config" : "database"},
          {"created_at", t.created_at},
          {"updated_at", t.updated_at}};
}

json key_json(const tenancy::ApiKeyInfo& k) {
  return {{"object", "api_key"},
          {"id", k.prefix},
          {"tenant", k.tenant.empty() ? json() : json(k.tenant)},
          {"admin", k.admin},
          {"created_at", k.created_at},
          {"expires_at", k.expires_at ? json(k.expires_at) : json()},
          {"revoked_at", k.revoked_at ? json(*k.revoked_at) : json()},
          {"requests_per_minute", k.limits.requests_per_minute},
          {"tokens_per_minute", k.limits.tokens_per_minute},
          {"max_concurrent_requests", k.limits.max_concurrent_requests}};
}

Status optional_list(const FieldReader& body, std::string_view key, std::vector<std::string>* out) {
  auto f = body.field(key);
  if (!f) return Status::ok();
  RETURN_IF_ERROR(f->want_array(1024));
  out->clear();
  for (size_t i = 0; i < f->size(); ++i) {
    ASSIGN_OR_RETURN(std::string s, f->item(i).string(256, /*non_empty=*/true));
    out->push_back(std::move(s));
  }
  return Status::ok();
}

// The fields of a tenant body present in `body`, written over `t`.
Status read_tenant_fields(const FieldReader& body, tenancy::Tenant& t) {
  RETURN_IF_ERROR(body.optional_string("plan", 64, &t.plan));
  RETURN_IF_ERROR(body.optional_string("throughput", 64, &t.quotas.throughput));
  RETURN_IF_ERROR(body.optional_int("storage_days", 0, 100000, &t.quotas.storage_days));
  RETURN_IF_ERROR(body.optional_int("max_consumers", 0, 1000000, &t.quotas.max_consumers));
  RETURN_IF_ERROR(optional_list(body, "models", &t.allowed_models));
  RETURN_IF_ERROR(optional_list(body, "route_groups", &t.route_groups));
  int64_t prio = t.max_priority;
  RETURN_IF_ERROR(body.optional_int("max_priority", -1000, 1000, &prio));
  t.max_priority = static_cast<int32_t>(prio);
  RETURN_IF_ERROR(body.optional_int("requests_per_minute", 0, kMaxLimit, &t.requests_per_minute));
  RETURN_IF_ERROR(body.optional_int("tokens_per_minute", 0, kMaxLimit, &t.tokens_per_minute));
  RETURN_IF_ERROR(body.optional_int("max_concurrent_requests", 0, 1000000, &t.max_concurrent_requests));
  RETURN_IF_ERROR(body.optional_int("daily_token_budget", 0, kMaxLimit, &t.daily_token_budget));
  RETURN_IF_ERROR(body.optional_int("monthly_token_budget", 0, kMaxLimit, &t.monthly_token_budget));
  return Status::ok();
}

Status read_only(const std::string& name) {
  return Status::permission_denied("tenant '" + name + "' is declared in the config file and is read-only here",
                                   "name", "tenant_read_only");
}

// Defence in depth: the guard already refused non-admins.
bool is_admin(const HttpRequest& req) { return req.principal && req.principal->admin; }

Status not_admin() { return Status::permission_denied("this route needs an admin key", "", "permission_denied"); }

// The value of `name` in the query of `target` ("" when absent).
std::string query_param(const std::string& target, std::string_view name) {
  auto q = target.find('?');
  if (q == std::string::npos) return {};
  std::string_view rest = std::string_view(target).substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=')
      return std::string(pair.substr(name.size() + 1));
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return {};
}

Status check_day(const std::string& day, const char* param) {
  if (day.empty()) return Status::ok();
  bool ok = day.size() == 10 && day[4] == '-' && day[7] == '-';
  for (size_t i = 0; ok && i < day.size(); ++i)
    if (i != 4 && i != 7 && (day[i] < '0' || day[i] > '9')) ok = false;
  return ok ? Status::ok() : Status::invalid_argument(std::string("'") + param + "' must be a day YYYY-MM-DD", param);
}

// The usage document for `tenant` ("": everyone) between the query's from and to.
Result<json> usage_json(tenancy::TenantStore& store, tenancy::UsageRecorder* recorder, const std::string& tenant,
                        const std::string& target) {
  std::string from = query_param(target, "from"), to = query_param(target, "to");
  RETURN_IF_ERROR(check_day(from, "from"));
  RETURN_IF_ERROR(check_day(to, "to"));
  if (recorder) (void)recorder->flush();  // a failure is logged; what was written is shown
  ASSIGN_OR_RETURN(auto rows, store.usage(tenant, from, to));
  json data = json::array();
  int64_t requests = 0, prompt = 0, completion = 0;
  for (const auto& r : rows) {
    data.push_back({{"tenant", r.tenant}, {"key_id", r.key_id}, {"model", r.model}, {"day", r.day},
                    {"requests", r.requests}, {"prompt_tokens", r.prompt_tokens},
                    {"completion_tokens", r.completion_tokens}});
    requests += r.requests;
    prompt += r.prompt_tokens;
    completion += r.completion_tokens;
  }
  return json{{"object", "usage"},
              {"data", data},
              {"total", {{"requests", requests}, {"prompt_tokens", prompt}, {"completion_tokens", completion}}}};
}

}  // namespace

void add_tenant_routes(HttpRouter& router, std::shared_ptr<Authenticator> auth,
                       std::shared_ptr<tenancy::UsageRecorder> usage) {
  auto store = auth->store();
  if (!store) return;
  router.add("GET", "/v1/usage", [store, usage](const HttpRequest& req, ResponseWriterPtr w) {
    const Principal* p = req.principal.get();
    if (!p || !p->tenant)
      return w->respond(error_response(Status::invalid_argument(
          "this credential has no tenant: an admin sees everyone's usage at /admin/usage", "", "no_tenant")));
    auto r = usage_json(*store, usage.get(), p->tenant->name, req.target);
    w->respond(r ? json_response(*r) : error_response(r.status()));
  });
  router.add("GET", "/admin/usage", [store, usage](const HttpRequest& req, ResponseWriterPtr w) {
    if (!is_admin(req)) return w->respond(error_response(not_admin()));
    std::string tenant = query_param(req.target, "tenant");
    if (!tenant.empty())
      if (Status st = tenancy::validate_tenant_name(tenant, "tenant"); !st) return w->respond(error_response(st));
    auto r = usage_json(*store, usage.get(), tenant, req.target);
    w->respond(r ? json_response(*r) : error_response(r.status()));
  });
  router.add("GET", "/admin/tenants", [auth, store](const HttpRequest& req, ResponseWriterPtr w) {
    if (!is_admin(req)) return w->respond(error_response(not_admin()));
    auto all = store->list_tenants();
    if (!all) return w->respond(error_response(all.status()));
    json data = json::array();
    for (const auto& t : *all) data.push_back(tenant_json(t, auth->declared_in_config(t.name)));
    w->respond(json_response({{"object", "list"}, {"data", data}}));
  });
  router.add("POST", "/admin/tenants", [auth, store](const HttpRequest& req, ResponseWriterPtr w) {
    if (!is_admin(req)) return w->respond(error_response(not_admin()));
    auto run = [&]() -> Result<json> {
      ASSIGN_OR_RETURN(json j, parse_body(req.body));
      FieldReader body(j);
      tenancy::Tenant t;
      ASSIGN_OR_RETURN(t.name, body.required_string("name", 64, /*non_empty=*/true));
      RETURN_IF_ERROR(tenancy::validate_tenant_name(t.name));
      if (auth->declared_in_config(t.name)) return read_only(t.name);
      RETURN_IF_ERROR(read_tenant_fields(body, t));
      RETURN_IF_ERROR(store->add_tenant(t));
      ASSIGN_OR_RETURN(tenancy::Tenant added, store->get_tenant(t.name));
      return tenant_json(added, false);
    };
    auto r = run();
    w->respond(r ? json_response(*r, 201) : error_response(r.status()));
  });
  for (const char* method : {"PATCH", "DELETE"}) {
    std::string m = method;
    router.add_prefix(m, std::string(kTenantsPrefix), [auth, store, m](const HttpRequest& req, ResponseWriterPtr w) {
      if (!is_admin(req)) return w->respond(error_response(not_admin()));
      std::string name = req.path.substr(kTenantsPrefix.size());
      auto run = [&]() -> Result<json> {
        RETURN_IF_ERROR(tenancy::validate_tenant_name(name));
        if (auth->declared_in_config(name)) return read_only(name);
        if (m == "DELETE") {
          RETURN_IF_ERROR(store->remove_tenant(name));
          return json{{"object", "tenant.deleted"}, {"name", name}, {"deleted", true}};
        }
        ASSIGN_OR_RETURN(json j, parse_body(req.body));
        FieldReader body(j);
        ASSIGN_OR_RETURN(tenancy::Tenant t, store->get_tenant(name));
        RETURN_IF_ERROR(read_tenant_fields(body, t));
        RETURN_IF_ERROR(store->update_tenant(t));
        ASSIGN_OR_RETURN(tenancy::Tenant updated, store->get_tenant(name));
        return tenant_json(updated, false);
      };
      auto r = run();
      w->respond(r ? json_response(*r) : error_response(r.status()));
    });
  }
  router.add("GET", "/admin/keys", [store](const HttpRequest& req, ResponseWriterPtr w) {
    if (!is_admin(req)) return w->respond(error_response(not_admin()));
    auto keys = store->list_keys();
    if (!keys) return w->respond(error_response(keys.status()));
    auto hmac = store->list_hmac_keys();
    if (!hmac) return w->respond(error_response(hmac.status()));
    json data = json::array();
    for (const auto& k : *keys) data.push_back(key_json(k));
    for (const auto& k : *hmac)
      data.push_back({{"object", "hmac_key"},
                      {"id", k.key_id},
                      {"tenant", k.tenant},
                      {"created_at", k.created_at},
                      {"revoked_at", k.revoked_at ? json(*k.revoked_at) : json()}});
    w->respond(json_response({{"object", "list"}, {"data", data}}));
  });
  router.add("POST", "/admin/keys", [store](const HttpRequest& req, ResponseWriterPtr w) {
    if (!is_admin(req)) return w->respond(error_response(not_admin()));
    auto run = [&]() -> Result<json> {
      ASSIGN_OR_RETURN(json j, parse_body(req.body));
      FieldReader body(j);
      tenancy::NewApiKey spec;
      bool hmac = false;
      RETURN_IF_ERROR(body.optional_string("tenant", 64, &spec.tenant));
      RETURN_IF_ERROR(body.optional_bool("admin", &spec.admin));
      RETURN_IF_ERROR(body.optional_bool("hmac", &hmac));
      RETURN_IF_ERROR(body.optional_int("expires_at", 0, int64_t{1} << 40, &spec.expires_at));
      RETURN_IF_ERROR(body.optional_int("requests_per_minute", 0, kMaxLimit, &spec.limits.requests_per_minute));
      RETURN_IF_ERROR(body.optional_int("tokens_per_minute", 0, kMaxLimit, &spec.limits.tokens_per_minute));
      RETURN_IF_ERROR(
          body.optional_int("max_concurrent_requests", 0, 1000000, &spec.limits.max_concurrent_requests));
      if (hmac) {
        if (spec.admin) return Status::invalid_argument("an HMAC key is a tenant key: drop 'admin'", "admin");
        if (spec.tenant.empty()) return Status::invalid_argument("'tenant' is required for an HMAC key", "tenant");
        ASSIGN_OR_RETURN(tenancy::HmacKey k, store->create_hmac_key(spec.tenant));
        return json{{"object", "hmac_key"}, {"id", k.info.key_id}, {"tenant", k.info.tenant}, {"secret", k.secret}};
      }
      if (!spec.admin && spec.tenant.empty())
        return Status::invalid_argument("'tenant' is required (or 'admin': true)", "tenant");
      ASSIGN_OR_RETURN(tenancy::CreatedApiKey k, store->create_key(spec));
      json out = key_json(k.info);
      out["key"] = k.key;
      return out;
    };
    auto r = run();
    w->respond(r ? json_response(*r, 201) : error_response(r.status()));
  });
  router.add_prefix("DELETE", std::string(kKeysPrefix), [store](const HttpRequest& req, ResponseWriterPtr w) {
    if (!is_admin(req)) return w->respond(error_response(not_admin()));
    std::string id = req.path.substr(kKeysPrefix.size());
    if (id.empty() || id.size() > 64)
      return w->respond(error_response(Status::not_found("no such key", "id")));
    Status st = id.rfind("hk_", 0) == 0 ? store->revoke_hmac_key(id) : store->revoke_key(id);
    if (!st) return w->respond(error_response(st));
    w->respond(json_response({{"object", "key.revoked"}, {"id", id}, {"revoked", true}}));
  });
}

}  // namespace llmpool::api
