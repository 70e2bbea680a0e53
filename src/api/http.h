// Transport-neutral HTTP request/response values, so route handlers and
// their tests never include Beast (which lives only in http_server.cpp).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

namespace llmpool::api {

struct HttpRequest {
  std::string method;   // "GET", "POST", ...
  std::string target;   // path and query as received
  std::string path;     // target without the query
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  // The header's value, or empty.
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;  // extra headers
};

// Delivers the response for one request. Callable from any thread, once;
// later calls are ignored. Copyable (shares its state).
using Responder = std::function<void(HttpResponse)>;

// A route handler. It must not block: long work is handed to a provider
// whose callback calls `respond`.
using Handler = std::function<void(const HttpRequest&, Responder respond)>;

}  // namespace llmpool::api
