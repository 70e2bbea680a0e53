// The OpenAI-compatible endpoints and /health, registered on an HttpRouter.
// The registry must outlive the router. Handlers never block: chat work is
// handed to the model's provider, whose callback responds.
#pragma once

#include <memory>

#include "api/router.h"
#include "providers/registry.h"

namespace llmpool::api {

void add_openai_routes(HttpRouter& router, std::shared_ptr<const providers::ModelRegistry> registry);

}  // namespace llmpool::api
