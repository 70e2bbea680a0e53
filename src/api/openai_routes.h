// The OpenAI-compatible endpoints, llama.cpp-style extras and operations
// endpoints, registered on an HttpRouter:
//   GET  /health, /v1/models, /metrics
//   POST /v1/chat/completions, /v1/completions (streaming or not)
//   POST /tokenize, /detokenize
// The metrics registry must outlive the router. Handlers never block:
// generation is handed to the model's provider, whose callbacks answer.
#pragma once

#include <memory>

#include "api/router.h"
#include "obs/metrics.h"
#include "providers/directory.h"

namespace llmpool::api {

void add_openai_routes(HttpRouter& router, std::shared_ptr<providers::ModelDirectory> models,
                       obs::MetricsRegistry& metrics);

}  // namespace llmpool::api
