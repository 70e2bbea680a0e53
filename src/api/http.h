// Transport-neutral HTTP request/response values and the ResponseWriter a
// handler answers through, so route handlers and their tests never include
// Beast (which lives only in http_server.cpp).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "common/chat.h"

namespace llmpool::api {

struct Principal;  // api/auth.h

struct HttpRequest {
  std::string method;   // "GET", "POST", ...
  std::string target;   // path and query as received
  std::string path;     // target without the query
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  // Who sent it: set by the HttpRouter's guard (api/auth.h) before the
  // handler runs; null when no guard is set (auth off) or the route is open.
  // Requests made inside the process (batch lines, api::route_dispatch) may
  // set it beforehand: the guard then leaves them alone.
  mutable std::shared_ptr<const Principal> principal;

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

// How a handler answers: either one whole response, or a stream (chunked
// transfer encoding, e.g. server-sent events). Thread-safe: any method may
// be called from any thread (an engine thread, typically). Only the first
// respond() or start_stream() counts; write() and end() apply to a started
// stream. The cancel token is cancelled when the client disconnects or a
// write fails, so the work behind the answer can stop.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void respond(HttpResponse response) = 0;
  virtual void start_stream(int status, std::string content_type,
                            std::map<std::string, std::string> headers = {}) = 0;
  virtual void write(std::string data) = 0;
  virtual void end() = 0;
  virtual const CancelTokenPtr& cancel_token() const = 0;
};
using ResponseWriterPtr = std::shared_ptr<ResponseWriter>;

// A route handler. It must not block: long work is handed to a provider
// whose callbacks write the answer.
using Handler = std::function<void(const HttpRequest&, ResponseWriterPtr)>;

// A ResponseWriter that keeps everything in memory (tests, internal calls).
class BufferedResponseWriter : public ResponseWriter {
 public:
  void respond(HttpResponse response) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return;
    started_ = finished_ = true;
    response_ = std::move(response);
  }
  void start_stream(int status, std::string content_type, std::map<std::string, std::string> headers) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return;
    started_ = true;
    response_.status = status;
    response_.content_type = std::move(content_type);
    response_.headers = std::move(headers);
  }
  void write(std::string data) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_ && !finished_) response_.body += data;
  }
  void end() override {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
  }
  const CancelTokenPtr& cancel_token() const override { return cancel_; }

  bool finished() const {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_;
  }
  HttpResponse response() const {
    std::lock_guard<std::mutex> lock(mu_);
    return response_;
  }

 private:
  mutable std::mutex mu_;
  bool started_ = false;
  bool finished_ = false;
  HttpResponse response_;
  CancelTokenPtr cancel_ = std::make_shared<CancelToken>();
};

}  // namespace llmpool::api
