// HttpClient: an asynchronous HTTP/1.1 client for talking to upstream model
// servers (OpenAI-compatible, Ollama), over plain http or https.
//
// https (TLS 1.2 or later, OpenSSL through Asio SSL): the server's
// certificate is verified against the system's CA store (or only the CAs
// in TlsOptions::ca_file) and must be issued for the URL's host: a DNS
// name is checked against the certificate's names (no partial wildcards),
// an IP address against its IP entries. The host name is sent as SNI
// (IP addresses are not, as RFC 6066 says). TlsOptions::insecure_skip_verify
// turns every check off; it exists for test rigs and says so in the log.
//
// What it does:
// - Runs every request as a coroutine: on the caller's I/O loop when the
//   calling thread has one (providers/io_loop.h: the HTTP server's I/O
//   threads, and work they hand off), else on its own `io_threads` Asio
//   threads. Boost.Beast stays inside http_client.cpp; this header has only
//   plain types and std::function callbacks.
// - Keeps a pool of idle keep-alive connections per scheme://host:port (at most
//   `max_idle_per_host`, each idle for at most `idle_timeout_ms`) and reuses
//   them. A request that finds a pooled connection closed by the server
//   before any byte of the answer arrived is retried once on a new one.
// - Timeouts: `connect_timeout_ms` bounds resolving plus connecting (plus
//   the TLS handshake for https);
//   `read_timeout_ms` is the longest silence allowed, measured per read (and
//   per write), so a long stream that keeps sending is never cut.
// - Cancellation: the request's CancelToken is polled every ~50 ms; when it
//   is set the connection is closed and on_done reports it.
// - Streaming: the body is delivered to on_body chunk by chunk as it arrives.
//
// Thread-safety: every method may be called from any thread. The callbacks
// of one request run on the thread of its loop (the caller's, or one of the
// client's own), one at a time and in order (on_head, on_body...,
// on_done); keep them quick. on_done is called exactly once, also when the
// client is destroyed, or the borrowed loop closed, with the request in
// flight (Unavailable). Idle connections are pooled per loop. The
// destructor closes every connection and waits for the requests in flight
// (at most a few seconds) and joins its own I/O threads; on one of those
// threads, or on a thread that runs a loop (e.g. when the last owner drops
// its pointer inside a callback), it does not wait: what is left finishes
// on its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/chat.h"
#include "common/status.h"

namespace llmpool::providers {

// An absolute http or https URL split into parts:
// http[s]://host[:port][/path].
struct HttpUrl {
  std::string scheme;  // "http" or "https" (lower case)
  std::string host;    // name or IP; IPv6 without brackets
  uint16_t port = 80;  // 80 for http, 443 for https when the URL has none
  std::string path;    // "/v1/chat/completions"; "/" when empty

  bool tls() const { return scheme == "https"; }
  // "http://host:port" (no path; no port when it is the scheme's default),
  // for messages and pool keys.
  std::string origin() const;
  // origin() + path.
  std::string to_string() const;
};

// Parses `url`. InvalidArgument for anything but http[s]://host[:port][/path]
// (no user info, no fragment, no other scheme).
Result<HttpUrl> parse_http_url(std::string_view url);

struct TlsOptions {
  // A PEM file of CA certificates to trust instead of the system's store.
  // Empty: the system's store (/etc/ssl/certs on Debian).
  std::string ca_file;
  // Accept any certificate for any name. For test rigs only: an attacker on
  // the path then reads and changes everything.
  bool insecure_skip_verify = false;
};

// Whether `tls` can be used: InvalidArgument naming the file when ca_file
// cannot be read or holds no certificate. Thread-safe; reads the file.
Status check_tls_options(const TlsOptions& tls);

struct HttpClientOptions {
  int32_t io_threads = 1;
  int32_t max_idle_per_host = 8;     // pooled keep-alive connections per scheme://host:port
  int32_t idle_timeout_ms = 30000;   // pooled connections older than this are closed
  TlsOptions tls;                    // for https URLs
};

struct HttpClientRequest {
  std::string method = "POST";
  std::string url;                             // http://host:port/path?query
  std::map<std::string, std::string> headers;  // extra headers (Authorization, ...)
  std::string content_type = "application/json";
  std::string body;
  int32_t connect_timeout_ms = 5000;
  int32_t read_timeout_ms = 120000;
  // What error messages call the server ("upstream for model 'x'"); empty:
  // its URL. Callers whose errors reach clients set it, so that messages
  // carry no host names.
  std::string label;
};

struct HttpResponseHead {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased

  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// A whole response, for fetch().
struct HttpClientResponse {
  HttpResponseHead head;
  std::string body;
};

struct HttpStreamCallbacks {
  // The status line and headers, once, before any body bytes.
  std::function<void(const HttpResponseHead&)> on_head;
  // Body bytes as they arrive (chunked encoding already removed). Return
  // false to stop reading: the connection is closed and on_done gets ok.
  std::function<bool(std::string_view)> on_body;
  // Exactly once. Ok when the whole response arrived (or on_body stopped
  // it). Otherwise: InvalidArgument for a malformed URL or request,
  // Unavailable when the host cannot be resolved or connected to, its TLS
  // certificate is refused (the message says why: "hostname mismatch",
  // "unable to get local issuer certificate", ...), the connection broke,
  // the response was malformed, the request was cancelled (the caller's
  // token tells) or the client is shutting down; DeadlineExceeded when
  // connecting (TLS handshake included) or a read took longer than its
  // timeout. Messages name the request's label (else its URL).
  std::function<void(Status)> on_done;
};

class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends `request` and streams the answer to `callbacks` (see above).
  // `cancel` may be null. Never blocks; errors come through on_done, which
  // may run before this returns (e.g. for a malformed URL).
  void stream(HttpClientRequest request, CancelTokenPtr cancel, HttpStreamCallbacks callbacks);

  // Sends `request` and collects the whole answer (at most `max_body_bytes`,
  // else InvalidArgument). Any HTTP status is a success here; the caller
  // reads head.status. Same errors as stream().
  void fetch(HttpClientRequest request, CancelTokenPtr cancel,
             std::function<void(Result<HttpClientResponse>)> done, size_t max_body_bytes = 16 << 20);

  // Runs `fn` on an I/O thread after `delay` (timers for callers that have
  // no thread of their own). Dropped without running if the client stops.
  void post_after(std::chrono::milliseconds delay, std::function<void()> fn);

  // Idle pooled connections, over all hosts (for tests and stats).
  size_t idle_connections() const;
  // Requests in flight.
  int64_t active_requests() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The Status for an upstream's non-2xx answer: `http_status` picks the code
// (400/413/422 and other 4xx InvalidArgument, 401 Unauthenticated, 403
// PermissionDenied, 404 NotFound, 408 DeadlineExceeded, 429
// ResourceExhausted, 501 Unimplemented, other 5xx Unavailable) and the
// message, param and code come from the upstream's error JSON in any of the
// usual shapes ({"error":{"message","param","code"}} from OpenAI and
// llama-server, {"message",...} from older vLLM, {"error":"..."} from
// Ollama), or from the raw body (read with parse_json, so a hostile body
// costs no more than its size). Client errors keep the upstream's message
// as is; the others say who answered what: "<who> answered HTTP 502: ...",
// where `who` is a label such as "upstream for model 'x'" (never a URL in
// messages that reach clients).
Status upstream_error_status(int http_status, std::string_view body, const std::string& who);

}  // namespace llmpool::providers
