// The admin API for tenants and keys (admin keys only: the guard's
// route_access puts /admin/... at the admin level), registered on an
// HttpRouter when auth is on:
//   GET    /admin/tenants             every tenant (the config's and the database's)
//   POST   /admin/tenants             add one: {name, plan, models, route_groups, max_priority,
//                                     requests_per_minute, tokens_per_minute, max_concurrent_requests,
//                                     daily_token_budget, monthly_token_budget, throughput,
//                                     storage_days, max_consumers}
//   PATCH  /admin/tenants/{name}      change the fields given
//   DELETE /admin/tenants/{name}      remove it and its keys
//   GET    /admin/keys                every key (never a secret)
//   POST   /admin/keys                {tenant, admin, hmac, expires_at, requests_per_minute,
//                                     tokens_per_minute, max_concurrent_requests}: the key, once
//   DELETE /admin/keys/{id}           revoke (an API key's prefix, or an HMAC key id)
//   GET    /admin/usage[?tenant=&from=&to=]   everyone's usage (days YYYY-MM-DD, UTC)
//   GET    /v1/usage[?from=&to=]      the caller's own tenant's usage (any credential)
// Usage rows are per tenant, key, model and day: requests, prompt and
// completion tokens; the recorder (when given) is flushed before reading.
// Tenants declared in the YAML are read-only here (403). Errors are OpenAI
// error JSON naming the field. The authenticator must outlive the router.
#pragma once

#include <memory>

#include "api/auth.h"
#include "api/router.h"

namespace llmpool::api {

void add_tenant_routes(HttpRouter& router, std::shared_ptr<Authenticator> auth,
                       std::shared_ptr<tenancy::UsageRecorder> usage = nullptr);

}  // namespace llmpool::api
