#include "api/router.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "api/errors.h"
#include "providers/io_loop.h"

namespace llmpool::api {

// A fixed set of threads taking jobs from a bounded FIFO queue.
class HttpRouter::OffloadPool {
 public:
  OffloadPool(int threads, size_t max_queued) : max_queued_(max_queued) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~OffloadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // False when the queue is full or the pool is stopping. The job runs
  // marked with the poster's I/O loop (providers/io_loop.h): what it starts for
  // the request (an upstream exchange) goes back to the request's loop.
  bool post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || jobs_.size() >= max_queued_) return false;
      jobs_.push_back([loop = current_io_loop(), job = std::move(job)] {
        ScopedIoLoop mark(loop);
        job();
      });
    }
    cv_.notify_one();
    return true;
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and every job queued before ran
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stopping_ = false;                   // guarded by mu_
  std::vector<std::thread> threads_;
};

HttpRouter::HttpRouter() = default;
HttpRouter::~HttpRouter() = default;

void HttpRouter::offload_large_bodies(size_t min_body_bytes, int threads, size_t max_queued) {
  offload_min_bytes_ = min_body_bytes;
  offload_ = threads > 0 ? std::make_unique<OffloadPool>(threads, max_queued) : nullptr;
}

void HttpRouter::offload_bodies(int threads, size_t max_queued, RequestFilter which) {
  offload_bodies_ = threads > 0 ? std::make_unique<OffloadPool>(threads, max_queued) : nullptr;
  offload_which_ = std::move(which);
}

void HttpRouter::add(const std::string& method, const std::string& path, Handler handler) {
  routes_[path][method] = with_error_boundary(std::move(handler));
}

void HttpRouter::add_prefix(const std::string& method, const std::string& prefix, Handler handler) {
  prefixes_[prefix][method] = with_error_boundary(std::move(handler));
}

void HttpRouter::dispatch(const HttpRequest& request, ResponseWriterPtr writer) const {
  const bool large = offload_ && request.body.size() >= offload_min_bytes_;
  const bool waits = offload_which_ ? offload_which_(request) : !request.body.empty();
  OffloadPool* pool = large ? offload_.get() : waits ? offload_bodies_.get() : nullptr;
  if (!pool) return dispatch_here(request, std::move(writer));
  // The caller's request dies with its connection: the job keeps a copy.
  auto copy = std::make_shared<HttpRequest>(request);
  if (!pool->post([this, copy, writer] { dispatch_here(*copy, writer); }))
    writer->respond(error_response(Status::unavailable(large ? "too many large requests are waiting to be read; retry later"
                                                             : "too many requests are waiting to be handled; retry later")));
}

void HttpRouter::dispatch_here(const HttpRequest& request, ResponseWriterPtr writer) const {
  // A request built inside the process (a batch line) may come with its
  // principal set; one from the network never does (HttpServer leaves it null).
  if (guard_ && !request.principal) {
    auto principal = guard_(request);
    if (!principal) {
      HttpResponse r = error_response(principal.status());
      if (principal.status().code() == StatusCode::kUnauthenticated)
        r.headers["WWW-Authenticate"] = "Bearer realm=\"llmpool\"";
      writer->respond(std::move(r));
      return;
    }
    request.principal = std::move(principal).value();
  }
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

std::vector<std::pair<std::string, std::string>> HttpRouter::registered() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [path, methods] : routes_)
    for (const auto& [m, h] : methods) out.emplace_back(m, path);
  for (const auto& [prefix, methods] : prefixes_)
    for (const auto& [m, h] : methods) out.emplace_back(m, prefix + "*");
  return out;
}

namespace {

// The boundary. `what()` names the work for the log line; it is made only
// when something threw, not for every request.
template <typename What>
void guarded(const ResponseWriterPtr& writer, const What& what, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    spdlog::error("{} threw: {}", what(), e.what());
    writer->respond(error_response(Status::internal("internal error while handling the request")));
    writer->end();  // a stream already started ends here
  } catch (...) {
    spdlog::error("{} threw a non-standard exception", what());
    writer->respond(error_response(Status::internal("internal error while handling the request")));
    writer->end();  // a stream already started ends here
  }
}

}  // namespace

void within_error_boundary(const ResponseWriterPtr& writer, std::string_view what, const std::function<void()>& fn) {
  guarded(writer, [what] { return what; }, fn);
}

Handler with_error_boundary(Handler handler) {
  return [handler = std::move(handler)](const HttpRequest& req, ResponseWriterPtr writer) {
    guarded(writer, [&req] { return "handler for " + req.method + " " + req.path; }, [&] { handler(req, writer); });
  };
}

}  // namespace llmpool::api
