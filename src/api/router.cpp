#include "api/router.h"

#include <spdlog/spdlog.h>

#include "api/errors.h"

namespace llmpool::api {

void HttpRouter::add(const std::string& method, const std::string& path, Handler handler) {
  routes_[path][method] = with_error_boundary(std::move(handler));
}

void HttpRouter::dispatch(const HttpRequest& request, ResponseWriterPtr writer) const {
  auto path = routes_.find(request.path);
  if (path == routes_.end()) {
    writer->respond(error_response(Status::not_found("no route for " + request.method + " " + request.path,
                                             "", "unknown_url")));
    return;
  }
  auto handler = path->second.find(request.method);
  if (handler == path->second.end()) {
    std::string allowed;
    for (const auto& [m, h] : path->second) allowed += (allowed.empty() ? "" : ", ") + m;
    HttpResponse r = error_response(Status::invalid_argument(
        "method " + request.method + " is not allowed on " + request.path + " (allowed: " + allowed + ")",
        "", "method_not_allowed"));
    r.status = 405;
    r.headers["Allow"] = allowed;
    writer->respond(std::move(r));
    return;
  }
  handler->second(request, std::move(writer));
}

Handler with_error_boundary(Handler handler) {
  return [handler = std::move(handler)](const HttpRequest& req, ResponseWriterPtr writer) {
    try {
      handler(req, writer);
    } catch (const std::exception& e) {
      spdlog::error("handler for {} {} threw: {}", req.method, req.path, e.what());
      writer->respond(error_response(Status::internal("internal error while handling the request")));
      writer->end();  // a stream already started ends here
    } catch (...) {
      spdlog::error("handler for {} {} threw a non-standard exception", req.method, req.path);
      writer->respond(error_response(Status::internal("internal error while handling the request")));
      writer->end();  // a stream already started ends here
    }
  };
}

}  // namespace llmpool::api
