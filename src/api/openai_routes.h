// The OpenAI-compatible endpoints, llama.cpp-style extras and operations
// endpoints, registered on an HttpRouter:
//   GET  /health, /v1/models, /metrics
//   POST /v1/chat/completions, /v1/completions (streaming or not)
//   POST /tokenize, /detokenize
// With a RouterService, chat and completion requests pass its admission
// gate (429 + Retry-After when full) and `model: "auto"`, route groups and
// models with fallbacks go through it (docs/routing.md); every answer then
// carries x-llmpool-model / x-llmpool-route-reason headers and an `llmpool`
// field. The metrics registry must outlive the router. Handlers never block:
// generation is handed to the model's provider, whose callbacks answer.
#pragma once

#include <memory>

#include "api/router.h"
#include "obs/metrics.h"
#include "providers/directory.h"
#include "router/service.h"

namespace llmpool::api {

void add_openai_routes(HttpRouter& router, std::shared_ptr<providers::ModelDirectory> models,
                       obs::MetricsRegistry& metrics, std::shared_ptr<router::RouterService> routing = nullptr);

}  // namespace llmpool::api
