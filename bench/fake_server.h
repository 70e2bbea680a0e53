// FakeServer: an HTTP server on loopback made of llmpool's own HttpServer,
// for upstreams that tests and benchmarks script themselves (the remote
// provider tests, llmpool-fake-upstream). Routes are added before start().
//
// Handlers run on the server's I/O threads and must not block. Handlers
// that must wait run on threads of their own (spawn(), joined by stop()) and
// wait with hold(), which ends on release(), when the client goes away, or
// after 10 s.
//
// Thread-safe after start(); stop() (also from the destructor) releases the
// holders, joins the spawned threads and stops the server.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "api/http_server.h"
#include "api/router.h"
#include "common/status.h"

namespace llmpool::fake {

// One server-sent event: "data: JSON\n\n".
std::string sse(const nlohmann::json& j);
// A chat.completion.chunk with one choice whose delta is `text`.
nlohmann::json chat_chunk(int index, const std::string& text, const char* finish = nullptr);

class FakeServer {
 public:
  FakeServer() = default;
  ~FakeServer() { stop(); }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  void post(const std::string& path, api::Handler handler) { router_.add("POST", path, std::move(handler)); }
  void get(const std::string& path, api::Handler handler) { router_.add("GET", path, std::move(handler)); }

  // Binds host:port (port 0: a free one) and serves on `io_threads` threads.
  // Unavailable when the address cannot be bound.
  Status start(const std::string& host = "127.0.0.1", uint16_t port = 0, int io_threads = 2);
  void stop();

  uint16_t port() const { return server_->port(); }
  std::string url(const std::string& path = "") const;

  // Runs `fn` on a thread of its own, joined by stop().
  void spawn(std::function<void()> fn);

  // Blocks until release(), the client's disconnect (`cancel`) or 10 s.
  // Returns true when released.
  bool hold(const CancelTokenPtr& cancel);
  void release();
  // Waits until `n` handlers are in hold().
  bool wait_holding(int n, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits until `n` held handlers noticed that their client went away.
  bool wait_client_gone(int n, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // The last request body and headers seen by a handler that records them.
  void record(const api::HttpRequest& req);
  nlohmann::json last_body();
  std::string last_header(const std::string& name);
  int requests();

 private:
  api::HttpRouter router_;
  std::unique_ptr<api::HttpServer> server_;
  std::string host_ = "127.0.0.1";
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  bool released_ = false;
  int holding_ = 0;
  int client_gone_ = 0;
  std::string last_body_;
  std::map<std::string, std::string> last_headers_;
  int requests_ = 0;
};

}  // namespace llmpool::fake
