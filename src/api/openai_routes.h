// The OpenAI-compatible endpoints, llama.cpp-style extras and operations
// endpoints, registered on an HttpRouter:
//   GET  /health, /v1/models, /metrics
//   POST /v1/chat/completions, /v1/completions (streaming or not)
//   POST /tokenize, /detokenize
// With a RouterService, chat and completion requests pass its admission
// gate (429 + Retry-After when full) and `model: "auto"`, route groups and
// models with fallbacks go through it (docs/routing.md); every answer then
// carries x-llmpool-model / x-llmpool-route-reason headers and an `llmpool`
// field. With a principal on the request (api/auth.h: auth on), a tenant
// reaches only its models and route groups, sees only those in /v1/models,
// has its priority capped, and, with a limiter, is admitted by it (429 with
// Retry-After and x-ratelimit-* when refused; the reservation is reconciled
// with the real usage when the answer ends) and, with a usage recorder, has
// its usage counted. The metrics registry must outlive the router. Handlers never block:
// generation is handed to the model's provider, whose callbacks answer.
#pragma once

#include <memory>

#include "api/router.h"
#include "obs/metrics.h"
#include "api/auth.h"
#include "providers/directory.h"
#include "router/service.h"

namespace llmpool::api {

void add_openai_routes(HttpRouter& router, std::shared_ptr<providers::ModelDirectory> models,
                       obs::MetricsRegistry& metrics, std::shared_ptr<router::RouterService> routing = nullptr,
                       TenancyOptions tenancy = {});

}  // namespace llmpool::api
