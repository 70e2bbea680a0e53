#include "api/errors.h"

#include "common/json.h"

namespace llmpool::api {

int http_status_for(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists: return 409;
    case StatusCode::kResourceExhausted: return 429;
    case StatusCode::kInternal: return 500;
    case StatusCode::kUnimplemented: return 501;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
  }
  return 500;
}

const char* error_type_for(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "";
    case StatusCode::kInvalidArgument: return "invalid_request_error";
    case StatusCode::kNotFound: return "invalid_request_error";
    case StatusCode::kAlreadyExists: return "invalid_request_error";
    case StatusCode::kUnauthenticated: return "authentication_error";
    case StatusCode::kPermissionDenied: return "permission_error";
    case StatusCode::kResourceExhausted: return "rate_limit_error";
    case StatusCode::kDeadlineExceeded: return "timeout_error";
    case StatusCode::kUnavailable: return "unavailable_error";
    case StatusCode::kUnimplemented: return "not_supported_error";
    case StatusCode::kInternal: return "server_error";
  }
  return "server_error";
}

nlohmann::json error_json(const Status& status) {
  nlohmann::json e = {{"message", status.message()}, {"type", error_type_for(status.code())}};
  e["param"] = status.param().empty() ? nlohmann::json() : nlohmann::json(status.param());
  e["code"] = status.error_code().empty() ? nlohmann::json() : nlohmann::json(status.error_code());
  return {{"error", e}};
}

HttpResponse error_response(const Status& status) {
  HttpResponse r;
  r.status = http_status_for(status.code());
  r.body = dump_json(error_json(status));
  if (status.code() == StatusCode::kResourceExhausted || status.code() == StatusCode::kUnavailable)
    r.headers["Retry-After"] = "1";
  return r;
}

std::string dump_json(const nlohmann::json& j) { return json_text(j); }

}  // namespace llmpool::api
