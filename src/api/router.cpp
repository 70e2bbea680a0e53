#include "api/router.h"

#include <spdlog/spdlog.h>

#include "api/errors.h"

namespace llmpool::api {

void HttpRouter::add(const std::string& method, const std::string& path, Handler handler) {
  routes_[path][method] = with_error_boundary(std::move(handler));
}

void HttpRouter::add_prefix(const std::string& method, const std::string& prefix, Handler handler) {
  prefixes_[prefix][method] = with_error_boundary(std::move(handler));
}

void HttpRouter::dispatch(const HttpRequest& request, ResponseWriterPtr writer) const {
  const std::map<std::string, Handler>* methods = nullptr;
  if (auto exact = routes_.find(request.path); exact != routes_.end()) {
    methods = &exact->second;
  } else {
    // The longest matching prefix: in map order a prefix sorts before its extensions.
    for (auto it = prefixes_.rbegin(); it != prefixes_.rend() && !methods; ++it)
      if (request.path.compare(0, it->first.size(), it->first) == 0) methods = &it->second;
  }
  if (!methods) {
    writer->respond(error_response(Status::not_found("no route for " + request.method + " " + request.path,
                                             "", "unknown_url")));
    return;
  }
  auto handler = methods->find(request.method);
  if (handler == methods->end()) {
    std::string allowed;
    for (const auto& [m, h] : *methods) allowed += (allowed.empty() ? "" : ", ") + m;
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
