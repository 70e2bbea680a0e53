// HttpRouter: maps (method, path) — or (method, path prefix) for routes
// with parameters in the path — to a Handler, wraps every handler in an
// error boundary (no exception escapes as a bare 500: it becomes an OpenAI
// error JSON and a log line), and answers unknown paths with 404 and wrong
// methods with 405, both as OpenAI error JSON.
// Built before the server starts; dispatch() is thread-safe afterwards.
#pragma once

#include <map>
#include <string>

#include "api/http.h"

namespace llmpool::api {

class HttpRouter {
 public:
  void add(const std::string& method, const std::string& path, Handler handler);
  // Every path starting with `prefix` that has no exact route; the longest
  // matching prefix wins. The handler parses the rest of request.path.
  void add_prefix(const std::string& method, const std::string& prefix, Handler handler);
  void dispatch(const HttpRequest& request, ResponseWriterPtr writer) const;

 private:
  std::map<std::string, std::map<std::string, Handler>> routes_;  // path -> method -> handler
  std::map<std::string, std::map<std::string, Handler>> prefixes_;  // prefix -> method -> handler
};

// Wraps `handler` so that exceptions become a 500 OpenAI error response.
Handler with_error_boundary(Handler handler);

}  // namespace llmpool::api
