// The router's endpoints, registered on an HttpRouter:
//   POST /v1/feedback            {response_id, helpful}: feedback on one answer
//   GET  /api/routing-metrics    per instance and per canary route figures
// Errors are OpenAI error JSON: 400 for a malformed body (the field is
// named), 404 for an unknown or forgotten response id. The service must
// outlive the router. Handlers never block.
#pragma once

#include <memory>

#include "api/router.h"
#include "router/service.h"

namespace llmpool::api {

void add_routing_routes(HttpRouter& router, std::shared_ptr<router::RouterService> routing);

// Parses a /v1/feedback body. InvalidArgument naming the field.
struct FeedbackRequest {
  std::string response_id;
  bool helpful = false;
};
Result<FeedbackRequest> parse_feedback_request(std::string_view body);

}  // namespace llmpool::api
