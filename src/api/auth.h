// Authentication and authorization at the API edge (docs/tenancy.md).
//
// Authenticator checks the credentials of every request before its route's
// handler runs (HttpRouter::set_guard), once, before the body is parsed:
//   - `Authorization: Bearer <key>` or `x-api-key: <key>`: an API key
//     (`llmp_...`, checked against the TenantStore) or, when auth.jwt is
//     configured, a JWT (any other bearer value);
//   - `X-Llmpool-Key-Id` / `X-Llmpool-Timestamp` / `X-Llmpool-Signature`:
//     an HMAC-signed request, when auth.hmac.enabled (the signature covers
//     the method, the target with its query string, and the body).
// Each route needs one of three access levels (route_access):
//   open    /health (and the metrics listener, which has no guard);
//   admin   /admin/..., /api/... (model load and unload, capacity, routing
//           metrics) and /metrics: an admin API key;
//   tenant  everything else: any valid credential.
// A missing or bad credential is 401 (code invalid_api_key, with
// WWW-Authenticate); a valid one on an admin route without admin rights is
// 403 (code permission_denied). The reason says what was wrong with the
// credential, never what a valid one would be.
//
// The Principal a guard accepts rides on the request (HttpRequest::
// principal) to the handlers, which use the helpers below: the tenant's
// models and route groups (404 model_not_found otherwise, the same answer
// as for a model that does not exist), the priority cap and the limiter's
// Subject. With auth off there is no guard and no principal: every helper
// then allows everything, so behaviour is unchanged.
//
// Tenants: YAML-declared tenants win over the database's (see
// sync_yaml_tenants); JWTs and HMAC keys name a tenant, which must exist.
//
// Thread-safety: authenticate() and guard() are thread-safe; apply()
// swaps the configuration atomically for requests that start afterwards.
// Ownership: the store is shared; the clock outlives the authenticator.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/http.h"
#include "common/chat.h"
#include "common/status.h"
#include "config/config.h"
#include "ratelimit/limiter.h"
#include "tenancy/hmac_auth.h"
#include "tenancy/jwt.h"
#include "tenancy/tenant_store.h"
#include "tenancy/usage_recorder.h"
#include "tenancy/wall_clock.h"

namespace llmpool::api {

enum class AuthMethod { kApiKey, kJwt, kHmac };
const char* auth_method_name(AuthMethod method);

// Who a request comes from.
struct Principal {
  AuthMethod method = AuthMethod::kApiKey;
  bool admin = false;
  std::string key_id;                    // API key prefix, HMAC key id, or "jwt:<sub>"
  std::optional<tenancy::Tenant> tenant;  // absent only for an admin key without a tenant
  tenancy::KeyLimits key_limits;          // each the lower of the key's and the tenant's; 0: none

  // The tenant's name, or "".
  const std::string& tenant_name() const;
  // Admins reach every model and group; a tenant its allowed ones.
  bool allows_model(const std::string& name) const;
  bool allows_route_group(const std::string& group) const;
};

enum class Access { kOpen, kTenant, kAdmin };
// The access level a request needs, by its path (exact strings, as the
// HttpRouter matches them).
Access route_access(const std::string& path);

// A tenant as tenancy stores it.
tenancy::Tenant to_tenant(const config::TenantConfig& tc);
// Writes the YAML tenants into the store: added when absent, every field
// replaced when present (the YAML wins). Tenants only in the database are
// left alone.
Status sync_yaml_tenants(tenancy::TenantStore& store, const std::vector<config::TenantConfig>& tenants);

// True when `req` carries HMAC signing headers (X-Llmpool-Key-Id or
// X-Llmpool-Signature): the guard then checks the signature, and with a
// shared limiter asks Redis whether it is new.
bool hmac_signed(const HttpRequest& req);

class Authenticator {
 public:
  // `store` may be null when only JWTs are accepted (tenants then come from
  // the YAML alone). InvalidArgument (param names the auth.jwt field) when
  // the JWT verifier cannot be built (missing secret variable, unreadable
  // key file).
  static Result<std::shared_ptr<Authenticator>> create(
      const config::Config& config, std::shared_ptr<tenancy::TenantStore> store,
      const tenancy::WallClock& clock = tenancy::SystemWallClock::instance());

  // Reloads: rebuilds the JWT verifier (rereading its key files and secret)
  // and takes the new YAML tenants. On error nothing changes.
  Status apply(const config::Config& config);

  // Checks the request's credentials. Unauthenticated (code
  // invalid_api_key) when missing or bad; ResourceExhausted when the HMAC
  // replay cache is full; Unavailable when the shared replay check is down.
  Result<std::shared_ptr<const Principal>> authenticate(const HttpRequest& request) const;
  // The principal a batch line runs as: the batch's tenant with its own
  // limits (key id "batch"), or an admin principal for a batch created
  // without a tenant (by an admin key). Null when the tenant no longer
  // exists: the line then meets the guard and is refused (401).
  std::shared_ptr<const Principal> principal_for_tenant(const std::string& tenant) const;
  // HMAC signatures are then accepted once across every instance that
  // shares the limiter's backend (Limiter::claim_once; Redis), not only
  // once per process. Call before serving; the limiter outlives this.
  void share_replays(std::shared_ptr<ratelimit::Limiter> limiter);
  // authenticate(), then route_access(): what HttpRouter::set_guard takes.
  // Open routes pass without credentials (null principal).
  Result<std::shared_ptr<const Principal>> guard(const HttpRequest& request) const;

  const std::shared_ptr<tenancy::TenantStore>& store() const { return store_; }
  // True for a tenant declared in the YAML (read-only for the admin API).
  bool declared_in_config(const std::string& tenant) const;
  // True for a tenant of the YAML or the store (one added at run time, by
  // the admin API or the CLI, too).
  bool tenant_exists(const std::string& tenant) const;

 private:
  struct State {
    std::unique_ptr<tenancy::JwtVerifier> jwt;  // null: JWTs not accepted
    bool hmac = false;
    std::vector<tenancy::Tenant> yaml_tenants;
  };
  Authenticator(std::shared_ptr<tenancy::TenantStore> store, const tenancy::WallClock& clock);
  static Result<std::shared_ptr<const State>> build_state(const config::Config& config,
                                                          const tenancy::WallClock& clock);
  std::shared_ptr<const State> state() const;
  // The tenant named `name`: the YAML's, else the store's. Unauthenticated
  // when there is none (a credential for a tenant that does not exist).
  Result<tenancy::Tenant> find_tenant(const State& st, const std::string& name) const;

  std::shared_ptr<tenancy::TenantStore> store_;
  const tenancy::WallClock& clock_;
  std::unique_ptr<tenancy::HmacVerifier> hmac_;  // with a store only
  mutable std::mutex mu_;
  std::shared_ptr<const State> state_;  // guarded by mu_
};

// ---- helpers for the handlers; `p` is req.principal (null: auth off) ----

// What the OpenAI routes do for tenants beyond authorization.
struct TenancyOptions {
  std::shared_ptr<ratelimit::Limiter> limiter;         // null: no rate limits
  std::shared_ptr<tenancy::UsageRecorder> usage;       // null: usage not recorded
};

// OpenAI's answer for a model the caller may not use, the same as for one
// that does not exist: 404, code model_not_found, param model.
Status model_not_found(const std::string& model);

// A generation request under `p`: sets request.tenant, caps its priority at
// the tenant's max_priority, and checks that the tenant may use
// `request.model` (`is_model`: it names a model, by its `canonical` name,
// rather than a route group). model_not_found otherwise.
Status authorize_generation(const Principal* p, GenerateRequest& request, bool is_model,
                            const std::string& canonical);

// The limiter's subject for `p`, or nullopt when nothing is to be limited
// (auth off, or an admin key without a tenant).
std::optional<ratelimit::Subject> limit_subject(const Principal* p);

// A limiter admission that is finished exactly once: by finish(), or with
// 0 tokens when dropped without it (a request that ended before any usage).
class LimitCharge {
 public:
  LimitCharge(std::shared_ptr<ratelimit::Limiter> limiter, std::string ticket)
      : limiter_(std::move(limiter)), ticket_(std::move(ticket)) {}
  ~LimitCharge() { finish(0); }
  LimitCharge(const LimitCharge&) = delete;
  LimitCharge& operator=(const LimitCharge&) = delete;
  void finish(int64_t used_tokens);
  ratelimit::RateHeaders headers;  // the admission's x-ratelimit-* values, for the answer

 private:
  std::shared_ptr<ratelimit::Limiter> limiter_;
  std::string ticket_;
  std::once_flag once_;
};

// The 429 (or, for a limiter that fails closed, 503) answer for a refused
// admission, OpenAI-shaped, with Retry-After and the x-ratelimit-* headers.
HttpResponse rate_limited_response(const ratelimit::Decision& decision);
// The x-ratelimit-* headers of `h` (the values >= 0), added to `headers`.
void add_rate_headers(const ratelimit::RateHeaders& h, std::map<std::string, std::string>& headers);

}  // namespace llmpool::api
