// The one mapping from Status to HTTP status and OpenAI error JSON:
//   {"error":{"message":..., "type":..., "param":..., "code":...}}
#pragma once

#include <nlohmann/json.hpp>

#include "api/http.h"
#include "common/status.h"

namespace llmpool::api {

int http_status_for(StatusCode code);
// OpenAI's error `type` for the code ("invalid_request_error", ...).
const char* error_type_for(StatusCode code);
nlohmann::json error_json(const Status& status);
// A complete error response; adds Retry-After for ResourceExhausted (429)
// and Unavailable (503).
HttpResponse error_response(const Status& status);

// Serialises JSON for the wire. Invalid UTF-8 (a model can emit half a
// character) is replaced, never thrown.
std::string dump_json(const nlohmann::json& j);

}  // namespace llmpool::api
