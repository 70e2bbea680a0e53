// HttpRouter: maps (method, path) — or (method, path prefix) for routes
// with parameters in the path — to a Handler, wraps every handler in an
// error boundary (no exception escapes as a bare 500: it becomes an OpenAI
// error JSON and a log line), and answers unknown paths with 404 and wrong
// methods with 405, both as OpenAI error JSON.
// Built before the server starts; dispatch() is thread-safe afterwards.
//
// Large bodies: with offload_large_bodies(), a request whose body is at
// least that large is handled on one of the router's own threads instead of
// the caller's (an HTTP I/O thread), so reading a multi-megabyte JSON body
// never delays /health or other streams. Its handler sees a copy of the
// request. When the offload queue is full the request is answered 503 with
// Retry-After. The destructor runs the jobs still queued, then joins.
//
// Waiting handlers: with offload_bodies(), the other requests with a body,
// or those its filter picks (serve: the HMAC-signed ones, whose guard waits
// on Redis to see that the signature is new), run on a second set of the
// router's threads, for handlers and guards that wait on the network before
// they answer: the wait then holds one of those threads, never an I/O
// thread. The rest (/health, and without a filter every GET) stay on the
// I/O thread.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/http.h"
#include "common/status.h"

namespace llmpool::api {

class HttpRouter {
 public:
  HttpRouter();
  ~HttpRouter();
  HttpRouter(const HttpRouter&) = delete;  // offloaded jobs hold `this`
  HttpRouter& operator=(const HttpRouter&) = delete;

  void add(const std::string& method, const std::string& path, Handler handler);
  // Every path starting with `prefix` that has no exact route; the longest
  // matching prefix wins. The handler parses the rest of request.path.
  void add_prefix(const std::string& method, const std::string& prefix, Handler handler);
  void dispatch(const HttpRequest& request, ResponseWriterPtr writer) const;
  // Runs before every request's route lookup (authentication, api/auth.h):
  // an error is answered as OpenAI error JSON (401s with WWW-Authenticate)
  // and no handler runs; a principal is put on the request.
  using Guard = std::function<Result<std::shared_ptr<const Principal>>(const HttpRequest&)>;
  void set_guard(Guard guard) { guard_ = std::move(guard); }
  // Every registered (method, path); prefix routes end with '*'.
  std::vector<std::pair<std::string, std::string>> registered() const;
  // Handles requests whose body is at least `min_body_bytes` on `threads`
  // threads of the router's own, with at most `max_queued` waiting.
  void offload_large_bodies(size_t min_body_bytes, int threads, size_t max_queued = 64);
  // Handles the other requests for which `which` is true (without it, those
  // with a body) on `threads` threads of their own, with at most
  // `max_queued` waiting (see above).
  using RequestFilter = std::function<bool(const HttpRequest&)>;
  void offload_bodies(int threads, size_t max_queued = 1024, RequestFilter which = {});

 private:
  class OffloadPool;
  void dispatch_here(const HttpRequest& request, ResponseWriterPtr writer) const;

  Guard guard_;
  size_t offload_min_bytes_ = 0;
  RequestFilter offload_which_;
  std::unique_ptr<OffloadPool> offload_bodies_;  // last two: destroyed (joined) first
  std::unique_ptr<OffloadPool> offload_;
  std::map<std::string, std::map<std::string, Handler>> routes_;  // path -> method -> handler
  std::map<std::string, std::map<std::string, Handler>> prefixes_;  // prefix -> method -> handler
};

// Wraps `handler` so that exceptions become a 500 OpenAI error response.
Handler with_error_boundary(Handler handler);
// Runs fn; an exception becomes that 500 on `writer` (which ends a stream
// already started) and a log line naming `what`. For work a handler left
// to run later, outside its boundary.
void within_error_boundary(const ResponseWriterPtr& writer, std::string_view what, const std::function<void()>& fn);

}  // namespace llmpool::api
