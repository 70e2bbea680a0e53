// HttpServer: the HTTP/1.1 front door (Boost.Beast on Asio, C++20
// coroutines). Accepts connections, reads requests under limits, hands each
// to the HttpRouter, and writes the response when the handler's
// ResponseWriter is called (from any thread). Keep-alive and pipelining are
// honoured: requests on one connection are answered one at a time, in order.
//
// Limits (all from config::ServerConfig; Envoy's overload manager and
// Beast's parser limits are the models):
// - At most `max_connections` client connections are open. One more is
//   answered 503 (OpenAI error JSON, Retry-After) once its request head has
//   arrived, then closed; past a small number of such refusals in progress a
//   further connection is closed at once.
// - Accept errors (EMFILE, ENFILE, ...) are retried after a backoff that
//   doubles from 10 ms to 1 s, never in a tight loop; the first of a burst
//   is logged, the burst's size when accepting works again.
// - A request's line and headers must arrive within `header_timeout_ms`
//   (from the first byte; a new connection must send its first byte in that
//   time too) and fit in `max_header_bytes` (else 431). Between requests a
//   keep-alive connection may stay silent for `idle_timeout_ms`. A body must
//   arrive within `body_timeout_ms` plus one second per `body_min_rate`
//   bytes received. A timed-out connection is closed.
// - A body over `max_body_bytes` gets 413 (when Content-Length says so, the
//   body is not read). `Expect: 100-continue` gets `100 Continue` before the
//   body is read.
// - Every close that leaves a request without a response is logged at debug
//   with its reason.
//
// A client that disappears while its answer is being made is noticed (its
// request's cancel token is cancelled). A client that only half-closes
// (shutdown(SHUT_WR) after its request) still gets its answer: on the
// peer's FIN an HTTP/1.1 exchange that has sent nothing yet is sent an
// interim `100 Continue` (an event stream under way, an SSE comment line),
// which a half-closed client ignores and a closed one answers with a reset.
// Where nothing harmless can be sent, a FIN counts as a close.
//
// Draining: begin_drain() closes the listener; from then on a new request,
// also on a connection already open, gets 503 with Retry-After and
// `Connection: close`, while requests in flight go on. stop() waits (a
// gate, no polling) until they are answered or the grace period that began
// with begin_drain() has passed, then closes every connection and joins.
//
// Threading: start() runs `io_threads` Asio threads; handlers are invoked on
// them and must not block. All methods are thread-safe. The destructor calls
// stop(). The router (and the metrics registry, when given) must outlive
// the server.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "api/router.h"
#include "common/status.h"
#include "config/config.h"

namespace llmpool::obs {
class MetricsRegistry;
}

namespace llmpool::api {

// Counters of the server's own decisions (also exported as metrics when a
// registry is given).
struct HttpServerStats {
  int64_t connections = 0;              // client connections open now
  int64_t accept_errors = 0;            // accept() calls that failed
  int64_t connections_refused = 0;      // over max_connections: 503, or closed at once
  int64_t closed_without_response = 0;  // connections closed while a request had no answer
};

class HttpServer {
 public:
  HttpServer(config::ServerConfig config, const HttpRouter& router, obs::MetricsRegistry* metrics = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving. Port 0 picks a free port (see port()).
  // Returns InvalidArgument if server.host is not an IP address and
  // Unavailable if the address cannot be bound.
  Status start();
  // The bound port, after start().
  uint16_t port() const;
  // Requests accepted and not yet answered.
  int64_t in_flight() const;
  HttpServerStats stats() const;

  // Stops accepting and refuses new requests with 503 (see above); requests
  // in flight go on. Starts the grace period. Idempotent; does not block.
  void begin_drain();
  // begin_drain(), then waits until the requests in flight are answered or
  // the grace period (server.shutdown_grace_ms after begin_drain()) is over,
  // closes every connection and joins the I/O threads. Idempotent. Returns
  // false if requests were still in flight when the grace ran out.
  bool stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

namespace detail {

// What a readable-looking socket really holds, looked at without reading:
// the disconnect watcher's decision (kept here so that tests can check it on
// real sockets). `fd` is a connected TCP socket.
enum class PeerState {
  kConnected,  // nothing to read and no FIN: a readiness report was stale
  kData,       // bytes are waiting (a pipelined request, say)
  kHalfClosed, // the peer sent FIN: it closed, or only shut down its sending side
  kGone,       // reset or otherwise dead
};
PeerState peer_state(int fd);

}  // namespace detail

}  // namespace llmpool::api
