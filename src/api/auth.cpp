#include "api/auth.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "api/errors.h"

namespace llmpool::api {
namespace {

constexpr const char* kInvalidKey = "invalid_api_key";

Status bad_credential(const std::string& why) {
  return Status::unauthenticated("invalid credentials: " + why, "", kInvalidKey);
}

// Keeps Status messages short and free of anything a client sent.
Status rewrap(const Status& st) {
  if (st.code() == StatusCode::kUnauthenticated) return bad_credential(st.message());
  if (st.code() == StatusCode::kResourceExhausted) return st;
  if (st.code() == StatusCode::kUnavailable) {  // a backend the check needs is down: retry later
    spdlog::error("authentication: {}", st.message());
    return Status::unavailable("credentials could not be checked now; retry later");
  }
  spdlog::error("authentication failed on the server side: {}", st.message());
  return Status::internal("credentials could not be checked");
}

bool iequals_prefix(const std::string& s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

std::string trim(std::string s) {
  auto sp = [](unsigned char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && sp(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && sp(s[i])) ++i;
  return s.substr(i);
}

// The lower of a key's and its tenant's limit, 0 meaning none.
int64_t lower_limit(int64_t key, int64_t tenant) {
  if (key <= 0) return tenant;
  if (tenant <= 0) return key;
  return std::min(key, tenant);
}

tenancy::KeyLimits tenant_limits(const tenancy::Tenant& t) {
  return {t.requests_per_minute, t.tokens_per_minute, t.max_concurrent_requests};
}

}  // namespace

const char* auth_method_name(AuthMethod method) {
  switch (method) {
    case AuthMethod::kApiKey: return "api_key";
    case AuthMethod::kJwt: return "jwt";
    case AuthMethod::kHmac: return "hmac";
  }
  return "api_key";
}

const std::string& Principal::tenant_name() const {
  static const std::string kNone;
  return tenant ? tenant->name : kNone;
}

bool Principal::allows_model(const std::string& name) const { return admin || (tenant && tenant->allows_model(name)); }

bool Principal::allows_route_group(const std::string& group) const {
  return admin || (tenant && tenant->allows_route_group(group));
}

Access route_access(const std::string& path) {
  if (path == "/health") return Access::kOpen;
  if (path == "/metrics" || path.rfind("/admin/", 0) == 0 || path == "/admin" || path.rfind("/api/", 0) == 0)
    return Access::kAdmin;
  return Access::kTenant;
}

tenancy::Tenant to_tenant(const config::TenantConfig& tc) {
  tenancy::Tenant t;
  t.name = tc.name;
  t.plan = tc.plan;
  t.quotas = {tc.throughput, tc.storage_days, tc.max_consumers};
  t.allowed_models = tc.allowed_models;
  t.route_groups = tc.route_groups;
  t.max_priority = tc.max_priority;
  t.requests_per_minute = tc.requests_per_minute;
  t.tokens_per_minute = tc.tokens_per_minute;
  t.max_concurrent_requests = tc.max_concurrent_requests;
  t.daily_token_budget = tc.daily_token_budget;
  t.monthly_token_budget = tc.monthly_token_budget;
  return t;
}

Status sync_yaml_tenants(tenancy::TenantStore& store, const std::vector<config::TenantConfig>& tenants) {
  for (const auto& tc : tenants) {
    tenancy::Tenant t = to_tenant(tc);
    auto existing = store.get_tenant(t.name);
    if (existing) {
      RETURN_IF_ERROR(store.update_tenant(t));
    } else if (existing.status().code() == StatusCode::kNotFound) {
      RETURN_IF_ERROR(store.add_tenant(t));
    } else {
      return existing.status();
    }
  }
  return Status::ok();
}

// ------------------------------------------------------------ Authenticator

Authenticator::Authenticator(std::shared_ptr<tenancy::TenantStore> store, const tenancy::WallClock& clock)
    : store_(std::move(store)), clock_(clock) {
  if (store_) hmac_ = std::make_unique<tenancy::HmacVerifier>(*store_, clock_);
}

Result<std::shared_ptr<Authenticator>> Authenticator::create(const config::Config& config,
                                                             std::shared_ptr<tenancy::TenantStore> store,
                                                             const tenancy::WallClock& clock) {
  std::shared_ptr<Authenticator> a(new Authenticator(std::move(store), clock));
  RETURN_IF_ERROR(a->apply(config));
  return a;
}

Result<std::shared_ptr<const Authenticator::State>> Authenticator::build_state(const config::Config& config,
                                                                               const tenancy::WallClock& clock) {
  auto st = std::make_shared<State>();
  st->hmac = config.auth.hmac_enabled;
  for (const auto& tc : config.tenants) st->yaml_tenants.push_back(to_tenant(tc));
  const config::JwtAuthConfig& j = config.auth.jwt;
  if (j.enabled()) {
    tenancy::JwtConfig jc;
    auto alg = tenancy::parse_jwt_algorithm(j.algorithm);
    if (!alg) return Status::invalid_argument("auth.jwt.algorithm: " + alg.status().message(), "auth.jwt.algorithm");
    jc.algorithm = *alg;
    jc.secret_env = j.hs256_secret_env;
    jc.public_key_file = j.public_key_file;
    jc.jwks_file = j.jwks_file;
    jc.issuer = j.issuer;
    jc.audience = j.audience;
    jc.tenant_claim = j.tenant_claim;
    jc.leeway_seconds = j.leeway_s;
    auto v = tenancy::JwtVerifier::create(jc, clock);
    if (!v) {
      std::string param = v.status().param().empty() ? "auth.jwt" : "auth.jwt." + v.status().param();
      return Status::invalid_argument(param + ": " + v.status().message(), param);
    }
    st->jwt = std::move(v).value();
  }
  return std::shared_ptr<const State>(std::move(st));
}

Status Authenticator::apply(const config::Config& config) {
  if (config.auth.hmac_enabled && !store_)
    return Status::invalid_argument("auth.hmac.enabled needs data_dir (where HMAC keys live)", "auth.hmac.enabled");
  ASSIGN_OR_RETURN(auto st, build_state(config, clock_));
  std::lock_guard lock(mu_);
  state_ = std::move(st);
  return Status::ok();
}

std::shared_ptr<const Authenticator::State> Authenticator::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

bool Authenticator::declared_in_config(const std::string& tenant) const {
  auto st = state();
  for (const auto& t : st->yaml_tenants)
    if (t.name == tenant) return true;
  return false;
}

bool Authenticator::tenant_exists(const std::string& tenant) const { return find_tenant(*state(), tenant).is_ok(); }

Result<tenancy::Tenant> Authenticator::find_tenant(const State& st, const std::string& name) const {
  for (const auto& t : st.yaml_tenants)
    if (t.name == name) return t;
  if (store_) {
    auto t = store_->get_tenant(name);
    if (t) return t;
    if (t.status().code() != StatusCode::kNotFound) return t.status();
  }
  return Status::unauthenticated("the credential's tenant does not exist");
}

bool hmac_signed(const HttpRequest& req) {
  return !req.header("x-llmpool-key-id").empty() || !req.header("x-llmpool-signature").empty();
}

Result<std::shared_ptr<const Principal>> Authenticator::authenticate(const HttpRequest& req) const {
  try {
    auto st = state();
    auto p = std::make_shared<Principal>();
    if (hmac_signed(req)) {
      const std::string hmac_id = req.header("x-llmpool-key-id");
      if (!st->hmac || !hmac_) return bad_credential("HMAC request signing is not enabled on this server");
      const std::string timestamp = req.header("x-llmpool-timestamp");
      const std::string signature = req.header("x-llmpool-signature");
      tenancy::SignedRequest sr{req.method, req.target, req.body, hmac_id, timestamp, signature};
      auto id = hmac_->verify(sr);
      if (!id) return rewrap(id.status());
      auto t = find_tenant(*st, id->tenant);
      if (!t) return rewrap(t.status());
      p->method = AuthMethod::kHmac;
      p->key_id = id->key_id;
      p->key_limits = tenant_limits(*t);
      p->tenant = std::move(t).value();
      return std::shared_ptr<const Principal>(std::move(p));
    }
    std::string token;
    if (std::string a = req.header("authorization"); !a.empty()) {
      if (!iequals_prefix(a, "bearer ")) return bad_credential("the Authorization header must be 'Bearer <key>'");
      token = trim(a.substr(7));
    } else {
      token = trim(req.header("x-api-key"));
    }
    if (token.empty())
      return bad_credential("no credentials: send 'Authorization: Bearer <key>', 'x-api-key: <key>' or a signed request");
    if (token.rfind("llmp_", 0) == 0) {
      if (!store_) return bad_credential("API keys are not enabled on this server (no data_dir)");
      auto k = store_->verify_key(token);
      if (!k) return rewrap(k.status());
      p->method = AuthMethod::kApiKey;
      p->admin = k->key.admin;
      p->key_id = k->key.prefix;
      p->key_limits = k->effective;
      if (k->tenant) {
        // The YAML's tenant wins over the database's copy (a reload may not have synced yet).
        auto t = find_tenant(*st, k->tenant->name);
        if (!t) return rewrap(t.status());
        p->key_limits = {lower_limit(k->key.limits.requests_per_minute, t->requests_per_minute),
                         lower_limit(k->key.limits.tokens_per_minute, t->tokens_per_minute),
                         lower_limit(k->key.limits.max_concurrent_requests, t->max_concurrent_requests)};
        p->tenant = std::move(t).value();
      }
      return std::shared_ptr<const Principal>(std::move(p));
    }
    if (!st->jwt) return bad_credential("unknown API key");
    auto id = st->jwt->verify(token);
    if (!id) return rewrap(id.status());
    auto t = find_tenant(*st, id->tenant);
    if (!t) return rewrap(t.status());
    p->method = AuthMethod::kJwt;
    p->key_id = "jwt:" + id->subject.substr(0, 128);
    p->key_limits = tenant_limits(*t);
    p->tenant = std::move(t).value();
    return std::shared_ptr<const Principal>(std::move(p));
  } catch (const std::exception& e) {
    spdlog::error("authentication threw: {}", e.what());
    return Status::internal("credentials could not be checked");
  }
}

void Authenticator::share_replays(std::shared_ptr<ratelimit::Limiter> limiter) {
  if (!hmac_ || !limiter) return;
  hmac_->share_replays([limiter = std::move(limiter)](std::string_view entry, int64_t ttl_seconds) {
    return limiter->claim_once(entry, ttl_seconds);
  });
}

std::shared_ptr<const Principal> Authenticator::principal_for_tenant(const std::string& tenant) const {
  auto p = std::make_shared<Principal>();
  p->key_id = "batch";
  if (tenant.empty()) {
    p->admin = true;
    return p;
  }
  auto t = find_tenant(*state(), tenant);
  if (!t) return nullptr;
  p->key_limits = tenant_limits(*t);
  p->tenant = std::move(t).value();
  return p;
}

Result<std::shared_ptr<const Principal>> Authenticator::guard(const HttpRequest& req) const {
  Access need = route_access(req.path);
  if (need == Access::kOpen) return std::shared_ptr<const Principal>();
  ASSIGN_OR_RETURN(auto p, authenticate(req));
  if (need == Access::kAdmin && !p->admin)
    return Status::permission_denied(req.method + " " + req.path.substr(0, 256) + " needs an admin key", "",
                                     "permission_denied");
  return p;
}

// ------------------------------------------------------------------ helpers

Status model_not_found(const std::string& model) {
  return Status::not_found("The model '" + model.substr(0, 256) + "' does not exist or you do not have access to it.",
                           "model", "model_not_found");
}

Status authorize_generation(const Principal* p, GenerateRequest& request, bool is_model,
                            const std::string& canonical) {
  if (!p) return Status::ok();
  request.tenant = p->tenant_name();
  if (p->admin) return Status::ok();
  if (!p->tenant) return model_not_found(request.model);
  request.priority = std::min(request.priority, p->tenant->max_priority);
  bool allowed = is_model ? (p->allows_model(canonical) || p->allows_model(request.model))
                          : p->allows_route_group(request.model);
  return allowed ? Status::ok() : model_not_found(request.model);
}

std::optional<ratelimit::Subject> limit_subject(const Principal* p) {
  if (!p || !p->tenant) return std::nullopt;
  const tenancy::Tenant& t = *p->tenant;
  ratelimit::Subject s;
  s.tenant = t.name;
  s.key = p->key_id;
  s.tenant_limits = {t.requests_per_minute, t.tokens_per_minute, t.max_concurrent_requests, t.daily_token_budget,
                     t.monthly_token_budget};
  s.key_limits = {p->key_limits.requests_per_minute, p->key_limits.tokens_per_minute,
                  p->key_limits.max_concurrent_requests, 0, 0};
  return s;
}

void LimitCharge::finish(int64_t used_tokens) {
  std::call_once(once_, [&] {
    if (limiter_) limiter_->finish(ticket_, std::max<int64_t>(0, used_tokens));
  });
}

void add_rate_headers(const ratelimit::RateHeaders& h, std::map<std::string, std::string>& headers) {
  auto secs = [](double s) {
    // OpenAI writes durations such as "1s" or "6m0s"; whole seconds, rounded up, keep it simple.
    return std::to_string(static_cast<int64_t>(std::ceil(std::max(0.0, s)))) + "s";
  };
  if (h.limit_requests >= 0) headers["x-ratelimit-limit-requests"] = std::to_string(h.limit_requests);
  if (h.remaining_requests >= 0) headers["x-ratelimit-remaining-requests"] = std::to_string(h.remaining_requests);
  if (h.reset_requests_seconds >= 0) headers["x-ratelimit-reset-requests"] = secs(h.reset_requests_seconds);
  if (h.limit_tokens >= 0) headers["x-ratelimit-limit-tokens"] = std::to_string(h.limit_tokens);
  if (h.remaining_tokens >= 0) headers["x-ratelimit-remaining-tokens"] = std::to_string(h.remaining_tokens);
  if (h.reset_tokens_seconds >= 0) headers["x-ratelimit-reset-tokens"] = secs(h.reset_tokens_seconds);
}

HttpResponse rate_limited_response(const ratelimit::Decision& d) {
  std::string code = d.code.empty() ? "rate_limit_exceeded" : d.code;
  HttpResponse r = error_response(Status::resource_exhausted(
      d.message.empty() ? "Rate limit reached; retry later." : d.message, "", code));
  r.headers["Retry-After"] = std::to_string(std::max<int32_t>(1, d.retry_after_seconds));
  add_rate_headers(d.headers, r.headers);
  return r;
}

}  // namespace llmpool::api
