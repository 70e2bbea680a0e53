// HttpServer: the HTTP/1.1 front door (Boost.Beast on Asio, C++20
// coroutines). Accepts connections, reads requests with a body limit and an
// idle timeout, hands each to the HttpRouter, and writes the response when
// the handler's Responder is called (from any thread). Keep-alive is honoured.
//
// Threading: start() runs `io_threads` Asio threads; handlers are invoked on
// them and must not block. stop() closes the listener, waits up to the grace
// period for requests in flight, then stops the I/O threads and joins them.
// The destructor calls stop(). The router must outlive the server.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "api/router.h"
#include "common/status.h"
#include "config/config.h"

namespace llmpool::api {

class HttpServer {
 public:
  HttpServer(config::ServerConfig config, const HttpRouter& router);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving. Port 0 picks a free port (see port()).
  // Returns Unavailable if the address cannot be bound.
  Status start();
  // The bound port, after start().
  uint16_t port() const;
  // Requests accepted and not yet answered.
  int64_t in_flight() const;
  // Idempotent. Blocks for at most the configured grace period plus joins.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmpool::api
