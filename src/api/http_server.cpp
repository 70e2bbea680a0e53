// The only translation unit that includes Beast (each costs ~15 s to build).
#include <utility>  // before Asio with g++ 12 (DESIGN.md)

#include "api/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/errors.h"
#include "common/json.h"
#include "common/text.h"
#include "providers/io_loop.h"
#include "obs/metrics.h"
#include "qos/admission.h"

namespace llmpool::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace detail {

PeerState peer_state(int fd) {
  // The state first: after a FIN, recv() reports 0 even once a reset came.
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_state == TCP_CLOSE)
    return PeerState::kGone;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return PeerState::kData;
  if (n == 0) return PeerState::kHalfClosed;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return PeerState::kConnected;
  return PeerState::kGone;
}

}  // namespace detail

namespace {

constexpr auto kWriteTimeout = std::chrono::seconds(60);
// How long a connection closed after an error response is still read from
// (and the bytes dropped), so that a request body the server did not read
// does not turn the close into a reset that destroys the response in flight.
constexpr auto kLingerTime = std::chrono::seconds(1);
constexpr size_t kLingerBytes = 1 << 20;
constexpr auto kAcceptBackoffMin = std::chrono::milliseconds(10);
constexpr auto kAcceptBackoffMax = std::chrono::milliseconds(1000);
// Refusals (503 over max_connections) in progress at once; past this a
// connection over the cap is closed without an answer.
constexpr int64_t kMaxRefusing = 64;
constexpr auto kRefuseHeaderTimeout = std::chrono::seconds(2);
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr std::string_view kSseProbe = ":\n\n";  // an SSE comment: every client skips it

// Wakes a coroutine waiting on `timer` (used as a condition variable).
// Owned by the session coroutine; exchanges hold it weakly.
struct Waker {
  explicit Waker(asio::any_io_executor e) : executor(e), timer(e) {
    timer.expires_at(Clock::time_point::max());
  }
  asio::any_io_executor executor;  // the session's: its loop's, run by one thread
  asio::steady_timer timer;
};

// The ResponseWriter of one request: handlers (on any thread) queue
// events; the session coroutine takes them and writes them in order.
class Exchange : public ResponseWriter {
 public:
  enum class Kind { kWhole, kStreamStart, kChunk, kEnd };
  struct Event {
    Kind kind;
    HttpResponse response;  // kWhole, kStreamStart (status, type, headers)
    std::string data;       // kChunk
  };

  explicit Exchange(std::weak_ptr<Waker> waker) : waker_(std::move(waker)) {}

  void respond(HttpResponse response) override {
    push([&] {
      if (started_) return false;
      started_ = finished_ = true;
      events_.push_back({Kind::kWhole, std::move(response), {}});
      return true;
    });
  }
  void start_stream(int status, std::string content_type, std::map<std::string, std::string> headers) override {
    push([&] {
      if (started_) return false;
      started_ = true;
      HttpResponse r;
      r.status = status;
      r.content_type = std::move(content_type);
      r.headers = std::move(headers);
      events_.push_back({Kind::kStreamStart, std::move(r), {}});
      return true;
    });
  }
  void write(std::string data) override {
    push([&] {
      if (!started_ || finished_ || data.empty()) return false;
      events_.push_back({Kind::kChunk, {}, std::move(data)});
      return true;
    });
  }
  void end() override {
    push([&] {
      if (!started_ || finished_) return false;
      finished_ = true;
      events_.push_back({Kind::kEnd, {}, {}});
      return true;
    });
  }
  const CancelTokenPtr& cancel_token() const override { return cancel_; }

  std::deque<Event> take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::deque<Event> out;
    out.swap(events_);
    return out;
  }

  // Wakes the session coroutine (from any thread).
  void wake() {
    if (auto w = waker_.lock()) asio::post(w->executor, [w] { w->timer.cancel(); });
  }

 private:
  template <typename F>
  void push(F&& f) {
    bool queued;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queued = f();
    }
    if (queued) wake();
  }

  std::mutex mu_;
  std::deque<Event> events_;  // guarded by mu_
  bool started_ = false;      // guarded by mu_
  bool finished_ = false;     // guarded by mu_
  std::weak_ptr<Waker> waker_;
  CancelTokenPtr cancel_ = std::make_shared<CancelToken>();
};

// What the disconnect watcher of one exchange has learnt. Touched only on
// the connection's loop.
struct Watch {
  bool done = false;         // the exchange is over: the socket may be gone
  bool gone = false;         // the client went away
  bool half_closed = false;  // the client sent FIN
  bool probe_due = false;    // the session should send an interim 100 to tell the two apart
};

// One open client connection, as the server sees it from outside its
// coroutine (to close it at the end of a drain). Touched only on its loop,
// except `executor` itself.
struct Conn {
  asio::any_io_executor executor;
  beast::tcp_stream* stream = nullptr;  // null once the session has ended
  std::shared_ptr<Waker> waker;         // the exchange's, while one is being answered
  bool closing = false;
};

HttpRequest to_request(http::request<http::string_body>&& in) {
  HttpRequest r;
  r.method = std::string(in.method_string());
  r.target = std::string(in.target());
  auto q = r.target.find('?');
  r.path = q == std::string::npos ? r.target : r.target.substr(0, q);
  for (const auto& f : in) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = std::string(f.value());
  }
  r.body = std::move(in.body());
  return r;
}

// 1xx, 204 and 304 answers carry no body and no Content-Length.
bool bodiless(int status) { return status < 200 || status == 204 || status == 304; }

// A header name we write: an RFC 9110 token.
bool header_name_ok(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (c <= 0x20 || c >= 0x7f || std::string_view("\"(),/:;<=>?@[\\]{}").find(static_cast<char>(c)) !=
                                      std::string_view::npos)
      return false;
  return true;
}

// One "Name: value" line. A value's CR, LF and other controls but tab
// become spaces: no header a handler sets (a route reason can quote what a
// client sent) can split the response.
void append_header(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += ": ";
  const size_t at = out.size();
  out += value;
  for (size_t i = at; i < out.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(out[i]);
    if ((c < 0x20 && c != '\t') || c == 0x7f) out[i] = ' ';
  }
  out += "\r\n";
}

// The status line and headers of a response, as Beast's serializer wrote
// them for the message we used to build: Server, Content-Type and a
// stream's Cache-Control (unless a handler set its own), the handler's headers, then the framing, which is
// ours alone (a handler's Content-Length, Transfer-Encoding or Connection
// is dropped). `body_size`: the Content-Length, or nullopt for a chunked
// stream. 1xx, 204 and 304 carry neither (nor a body).
std::string response_head(const HttpResponse& in, unsigned version, bool keep_alive,
                          std::optional<size_t> body_size, bool no_cache) {
  std::string out;
  out.reserve(160 + in.headers.size() * 64);
  out += version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  char code[8];
  auto [end, ec] = std::to_chars(code, code + sizeof(code), in.status);
  out.append(code, end);
  out += ' ';
  const auto reason = http::obsolete_reason(static_cast<http::status>(in.status));
  out.append(reason.data(), reason.size());
  out += "\r\n";
  bool own_server = false, own_type = false, own_cache = false;
  for (const auto& [k, v] : in.headers) {
    own_server = own_server || iequals(k, "server");
    own_type = own_type || iequals(k, "content-type");
    own_cache = own_cache || iequals(k, "cache-control");
  }
  if (!own_server) append_header(out, "Server", "llmpool");
  if (!own_type) append_header(out, "Content-Type", in.content_type);
  if (no_cache && !own_cache) append_header(out, "Cache-Control", "no-cache");
  for (const auto& [k, v] : in.headers) {
    if (!header_name_ok(k) || is_framing_header(k)) {
      spdlog::warn("http: a handler's response header {} was not sent", json_excerpt(nlohmann::json(k)));
      continue;
    }
    append_header(out, k, v);
  }
  if (version == 10 && keep_alive) out += "Connection: keep-alive\r\n";
  if (version != 10 && !keep_alive) out += "Connection: close\r\n";
  if (!body_size) {
    out += "Transfer-Encoding: chunked\r\n";
  } else if (!bodiless(in.status)) {
    char length[24];
    auto [e2, ec2] = std::to_chars(length, length + sizeof(length), *body_size);
    out += "Content-Length: ";
    out.append(length, e2);
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

// An OpenAI error response with an HTTP status of its own (413, 431), or a
// 503 (with Retry-After, as every 503) that carries a code of its own.
HttpResponse limit_response(int http_status, std::string message, const char* code) {
  HttpResponse r = error_response(Status::invalid_argument(std::move(message), "", code));
  r.status = http_status;
  return r;
}
HttpResponse unavailable_response(std::string message, const char* code) {
  const Status status = Status::unavailable(std::move(message));
  HttpResponse r = error_response(status);
  nlohmann::json body = error_json(status);
  body["error"]["code"] = code;
  r.body = dump_json(body);
  return r;
}

bool is_client_close(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
         ec == asio::error::broken_pipe;
}

// Decrements a counter when it goes out of scope.
struct CountGuard {
  explicit CountGuard(std::atomic<int64_t>& c) : count(c) { count.fetch_add(1); }
  ~CountGuard() { count.fetch_sub(1); }
  std::atomic<int64_t>& count;
};

std::vector<std::shared_ptr<IoLoop>> make_loops(int n) {
  std::vector<std::shared_ptr<IoLoop>> loops;
  for (int i = 0; i < std::max(1, n); ++i) loops.push_back(std::make_shared<IoLoop>());
  return loops;
}

}  // namespace

struct HttpServer::Impl {
  config::ServerConfig config;
  const HttpRouter& router;

  // Declared before the io_context: coroutine frames that the io_context
  // destroys last still release holds and unregister themselves.
  qos::AdmissionGate requests{qos::AdmissionOptions{0, 1}};     // requests being answered
  qos::AdmissionGate connections{qos::AdmissionOptions{0, 1}};  // open client connections
  std::mutex mu;
  std::unordered_map<uint64_t, std::shared_ptr<Conn>> conns;  // guarded by mu
  uint64_t next_conn = 0;                                     // guarded by mu
  std::optional<Clock::time_point> drain_deadline;            // guarded by mu
  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};
  bool drained_in_time = true;
  std::atomic<int64_t> refusing{0};
  std::atomic<bool> cap_logged{false};

  std::atomic<int64_t> accept_errors{0};
  std::atomic<int64_t> refused{0};
  std::atomic<int64_t> closed_without_response{0};
  obs::Counter* accept_errors_metric = nullptr;
  obs::Counter* refused_metric = nullptr;
  obs::Counter* closed_metric = nullptr;
  obs::Gauge* connections_metric = nullptr;

  // One loop per I/O thread (nginx's workers): a connection lives on one
  // loop, and so does the upstream I/O its handlers start there (the HTTP
  // client borrows the loop; providers/io_loop.h). The listener is on the first.
  std::vector<std::shared_ptr<IoLoop>> loops = make_loops(config.io_threads);
  size_t next_loop = 0;  // the loop of the next connection (the listener's coroutine only)
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{loops.front()->context()};
  asio::steady_timer accept_backoff{loops.front()->context()};
  std::vector<std::thread> threads;
  uint16_t port = 0;

  Impl(config::ServerConfig c, const HttpRouter& r, obs::MetricsRegistry* metrics)
      : config(std::move(c)), router(r) {
    if (metrics) {
      accept_errors_metric = &metrics->counter(
          "llmpool_http_accept_errors_total", "accept() calls that failed (EMFILE, ENFILE, ...); each is backed off.");
      refused_metric = &metrics->counter("llmpool_http_connections_refused_total",
                                         "Connections over server.max_connections: answered 503 and closed.");
      closed_metric = &metrics->counter("llmpool_http_closed_without_response_total",
                                        "Connections closed while a request had no response (timeouts, "
                                        "clients gone, failed writes).");
      connections_metric = &metrics->gauge("llmpool_http_connections", "Client connections open.");
    }
  }

  void count_closed_without_response(std::string_view reason, const beast::error_code& ec) {
    closed_without_response.fetch_add(1);
    if (closed_metric) closed_metric->inc();
    spdlog::debug("http: connection closed without a response: {}{}{}", reason, ec ? ": " : "",
                  ec ? ec.message() : "");
  }

  Clock::duration header_timeout() const { return std::chrono::milliseconds(config.header_timeout_ms); }

  // --- accepting ---------------------------------------------------------

  asio::awaitable<void> listen() {
    auto backoff = std::chrono::milliseconds(kAcceptBackoffMin);
    int64_t burst = 0;
    Clock::time_point burst_start;
    for (;;) {
      beast::error_code ec;
      asio::io_context& loop = loops[next_loop % loops.size()]->context();
      tcp::socket socket = co_await acceptor.async_accept(loop, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        accept_errors.fetch_add(1);
        if (accept_errors_metric) accept_errors_metric->inc();
        if (burst++ == 0) {
          burst_start = Clock::now();
          spdlog::warn("http: accept failed: {}; retrying with a backoff of {}..{} ms", ec.message(),
                       kAcceptBackoffMin.count(), kAcceptBackoffMax.count());
        }
        // Waiting is what keeps this from spinning: the failed connection
        // stays in the backlog and the listener stays readable.
        accept_backoff.expires_after(backoff);
        beast::error_code wait_ec;
        co_await accept_backoff.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
        if (!acceptor.is_open()) co_return;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(kAcceptBackoffMax));
        continue;
      }
      if (burst > 0) {
        spdlog::info("http: accepting again after {} failed accept(s) over {} ms", burst,
                     std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - burst_start).count());
        burst = 0;
        backoff = kAcceptBackoffMin;
      }
      // Responses go out as soon as they are written (a head and a body, or
      // SSE chunks, must not wait for the client's delayed ACK: Nagle).
      beast::error_code nodelay_ec;
      socket.set_option(tcp::no_delay(true), nodelay_ec);
      ++next_loop;
      // No strand: a loop is run by one thread (providers/io_loop.h), so a
      // connection's coroutine, its disconnect watcher and the wake-ups from
      // handlers never run concurrently, and a strand would only add a queue
      // and a lock to every completion.
      auto executor = loop.get_executor();
      if (connections.active() >= config.max_connections) {
        refuse(executor, std::move(socket));
        continue;
      }
      cap_logged.store(false);
      asio::co_spawn(executor, session(std::move(socket), connections.try_enter()), asio::detached);
    }
  }

  void refuse(asio::io_context::executor_type executor, tcp::socket socket) {
    refused.fetch_add(1);
    if (refused_metric) refused_metric->inc();
    if (!cap_logged.exchange(true))
      spdlog::warn("http: {} connections open (server.max_connections); refusing new ones with 503",
                   config.max_connections);
    if (refusing.load() >= kMaxRefusing) {
      beast::error_code ignored;
      socket.close(ignored);
      spdlog::debug("http: connection over the limit closed without a response: {} refusals in progress",
                    kMaxRefusing);
      return;
    }
    asio::co_spawn(executor, refuse_session(std::move(socket)), asio::detached);
  }

  // Over max_connections: the request head is read (so the answer is not
  // lost to a reset), answered 503, and the connection closed.
  asio::awaitable<void> refuse_session(tcp::socket socket) {
    CountGuard guard(refusing);
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<uint32_t>(config.max_header_bytes));
    beast::error_code ec;
    stream.expires_after(std::min<Clock::duration>(header_timeout(), kRefuseHeaderTimeout));
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec && ec != http::error::header_limit && ec != http::error::body_limit) {
      spdlog::debug("http: refused connection closed before its request head arrived: {}", ec.message());
      co_return;
    }
    co_await write(stream,
                   unavailable_response("the server has " + std::to_string(config.max_connections) +
                                            " connections open, its limit; retry later",
                                        "too_many_connections"),
                   11, false, ec);
    co_await linger(stream);
  }

  // --- writing -----------------------------------------------------------

  asio::awaitable<void> write(beast::tcp_stream& stream, HttpResponse res, unsigned version, bool keep_alive,
                              beast::error_code& ec) {
    // The head is written here, not by Beast's serializer: one buffer for
    // the head and one for the body in a single gathered write, with no
    // fields container built (a third of a proxied request's Beast work).
    const std::string head = response_head(res, version, keep_alive, res.body.size(), /*no_cache=*/false);
    const std::array<asio::const_buffer, 2> buffers{
        asio::buffer(head), bodiless(res.status) ? asio::const_buffer() : asio::buffer(res.body)};
    stream.expires_after(kWriteTimeout);
    co_await asio::async_write(stream, buffers, asio::redirect_error(asio::use_awaitable, ec));
  }

  asio::awaitable<void> write_continue(beast::tcp_stream& stream, beast::error_code& ec) {
    stream.expires_after(kWriteTimeout);
    co_await asio::async_write(stream, asio::buffer(kContinue.data(), kContinue.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
  }

  // Ends a connection after a response that may have left request bytes
  // unread: our side is shut, and what the client still sends is read and
  // dropped for a moment, so its kernel sees our FIN before any reset.
  static asio::awaitable<void> linger(beast::tcp_stream& stream) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) co_return;
    stream.expires_after(kLingerTime);
    char scratch[4096];
    size_t total = 0;
    while (total < kLingerBytes) {
      size_t n = co_await stream.async_read_some(asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      total += n;
    }
  }

  // --- one exchange ------------------------------------------------------

  // Notices a client that goes away while its answer is being made. A
  // readiness report alone proves nothing (epoll can report a socket whose
  // bytes the session has read meanwhile): the socket's state decides.
  // A socket-wait callback, not a coroutine: nothing to spawn per request.
  static void watch_peer(tcp::socket& socket, std::shared_ptr<Exchange> ex, std::shared_ptr<Watch> watch,
                         tcp::socket::wait_type what = tcp::socket::wait_read) {
    socket.async_wait(what, [&socket, ex = std::move(ex), watch = std::move(watch), what](
                                const beast::error_code& ec) mutable {
      // Once the exchange is over the session may have destroyed the socket
      // (a wait that completed just before it was cancelled): touch nothing.
      if (watch->done || ec) return;
      tcp::socket::wait_type next = what;
      switch (detail::peer_state(socket.native_handle())) {
        case detail::PeerState::kConnected:
          break;  // a stale readiness report
        case detail::PeerState::kData:
          // The next request (pipelining): only a reset can tell more now.
          next = tcp::socket::wait_error;
          break;
        case detail::PeerState::kHalfClosed:
          if (!watch->half_closed) {
            watch->half_closed = true;
            watch->probe_due = true;
            ex->wake();
          }
          next = tcp::socket::wait_error;
          break;
        case detail::PeerState::kGone:
          watch->gone = true;
          ex->cancel_token()->cancel();
          ex->wake();
          return;
      }
      watch_peer(socket, std::move(ex), std::move(watch), next);
    });
  }

  // Runs the handler and writes what it produces. Returns false if the
  // connection must close (client gone, write failed, stream cut, draining).
  asio::awaitable<bool> answer(beast::tcp_stream& stream, Conn& conn, const HttpRequest& request,
                               unsigned version, bool keep_alive) {
    asio::any_io_executor executor = co_await asio::this_coro::executor;
    auto waker = std::make_shared<Waker>(executor);
    conn.waker = waker;
    auto ex = std::make_shared<Exchange>(waker);
    auto watch = std::make_shared<Watch>();
    watch_peer(stream.socket(), ex, watch);
    router.dispatch(request, ex);

    beast::error_code ec;
    bool done = false;
    bool wrote = false;  // a byte of the response has gone out
    bool streaming = false;
    bool sse = false;  // the stream is text/event-stream
    while (!done && !ec && !conn.closing) {
      if (watch->probe_due) {
        watch->probe_due = false;
        // A client that closed answers these bytes with a reset, which the
        // watcher sees; one that only half-closed skips them: an interim
        // response before the answer, an SSE comment inside an event stream.
        // Where nothing harmless can be sent, the FIN counts as a close.
        if (!wrote && version >= 11) {
          co_await write_continue(stream, ec);
        } else if (streaming && sse) {
          stream.expires_after(kWriteTimeout);
          co_await asio::async_write(stream, http::make_chunk(asio::buffer(kSseProbe.data(), kSseProbe.size())),
                                     asio::redirect_error(asio::use_awaitable, ec));
        } else {
          watch->gone = true;
          ex->cancel_token()->cancel();
        }
        continue;
      }
      std::deque<Exchange::Event> events = ex->take();
      if (events.empty()) {
        if (watch->gone) break;
        beast::error_code wait_ec;
        waker->timer.expires_at(Clock::time_point::max());
        co_await waker->timer.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
        continue;
      }
      for (auto& e : events) {
        if (ec) break;
        switch (e.kind) {
          case Exchange::Kind::kWhole:
            if (draining.load()) keep_alive = false;
            co_await write(stream, std::move(e.response), version, keep_alive, ec);
            done = true;
            break;
          case Exchange::Kind::kStreamStart: {
            if (draining.load()) keep_alive = false;
            const std::string head = response_head(e.response, version, keep_alive, std::nullopt, /*no_cache=*/true);
            stream.expires_after(kWriteTimeout);
            co_await asio::async_write(stream, asio::buffer(head), asio::redirect_error(asio::use_awaitable, ec));
            streaming = true;
            sse = e.response.content_type.rfind("text/event-stream", 0) == 0;
            break;
          }
          case Exchange::Kind::kChunk:
            stream.expires_after(kWriteTimeout);
            co_await asio::async_write(stream, http::make_chunk(asio::buffer(e.data)),
                                       asio::redirect_error(asio::use_awaitable, ec));
            break;
          case Exchange::Kind::kEnd:
            stream.expires_after(kWriteTimeout);
            co_await asio::async_write(stream, http::make_chunk_last(),
                                       asio::redirect_error(asio::use_awaitable, ec));
            done = true;
            break;
        }
        wrote = true;
      }
    }
    watch->done = true;
    conn.waker.reset();
    beast::error_code ignored;
    if (stream.socket().is_open()) stream.socket().cancel(ignored);  // ends the watcher
    if (!done || ec) {
      ex->cancel_token()->cancel();
      const char* why = watch->gone      ? "the client went away before its answer was complete"
                        : conn.closing   ? "the server closed the connection at the end of its drain"
                        : streaming      ? "writing the stream failed"
                                         : "writing the answer failed";
      if (!wrote || streaming) count_closed_without_response(why, ec);
      co_return false;
    }
    // What the response said (draining turns it off before the write),
    // so that a client is never told keep-alive and then closed on.
    co_return keep_alive && !watch->half_closed;
  }

  // --- one connection ----------------------------------------------------

  asio::awaitable<void> session(tcp::socket socket, qos::AdmissionGate::Hold hold) {
    if (connections_metric) connections_metric->add(1);
    beast::tcp_stream stream(std::move(socket));
    auto conn = std::make_shared<Conn>();
    conn->executor = co_await asio::this_coro::executor;
    conn->stream = &stream;
    uint64_t id;
    {
      std::lock_guard lock(mu);
      id = next_conn++;
      conns[id] = conn;
    }
    co_await serve_connection(stream, *conn);
    beast::error_code ignored;
    if (stream.socket().is_open()) stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    conn->stream = nullptr;
    {
      std::lock_guard lock(mu);
      conns.erase(id);
    }
    if (connections_metric) connections_metric->add(-1);
    hold.release();
  }

  asio::awaitable<void> serve_connection(beast::tcp_stream& stream, Conn& conn) {
    beast::flat_buffer buffer;
    beast::error_code ec;
    for (bool first = true;; first = false) {
      // Waiting for the next request: a new connection gets header_timeout
      // to start, an open one idle_timeout.
      if (buffer.size() == 0) {
        stream.expires_after(first ? header_timeout() : std::chrono::milliseconds(config.idle_timeout_ms));
        size_t n = co_await stream.async_read_some(buffer.prepare(4096), asio::redirect_error(asio::use_awaitable, ec));
        buffer.commit(n);
        if (ec) {
          spdlog::debug("http: connection closed between requests: {}",
                        ec == beast::error::timeout ? (first ? "no request within server.header_timeout_ms"
                                                             : "idle for server.idle_timeout_ms")
                                                    : ec.message());
          co_return;
        }
      }

      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<uint32_t>(config.max_header_bytes));
      parser.body_limit(static_cast<uint64_t>(config.max_body_bytes));
      stream.expires_after(header_timeout());
      co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        co_await end_on_read_error(stream, ec, "head");
        co_return;
      }
      const unsigned version = parser.get().version();
      const bool keep_alive = parser.get().keep_alive();
      auto hold = requests.try_enter();
      if (!hold) {
        co_await refuse_request(stream, unavailable_response("the server is shutting down; retry later",
                                                             "shutting_down"));
        co_return;
      }
      if (!parser.is_done() && version >= 11 && beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        co_await write_continue(stream, ec);
        if (ec) {
          count_closed_without_response("writing 100 Continue failed", ec);
          co_return;
        }
      }
      // The body: body_timeout_ms, and one more second per body_min_rate
      // bytes received, so a slow body gets time in proportion but a trickle
      // cannot hold the connection for ever.
      const auto body_start = Clock::now();
      uint64_t received = 0;
      while (!parser.is_done()) {
        auto allowance = std::chrono::milliseconds(config.body_timeout_ms);
        if (config.body_min_rate > 0)
          allowance += std::chrono::milliseconds(received * 1000 / static_cast<uint64_t>(config.body_min_rate));
        stream.expires_at(body_start + allowance);
        received += co_await http::async_read_some(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
      }
      if (ec) {
        co_await end_on_read_error(stream, ec, "body");
        co_return;
      }
      stream.expires_never();
      HttpRequest request = to_request(parser.release());
      const bool keep = co_await answer(stream, conn, request, version, keep_alive);
      hold.release();
      if (!keep) co_return;
    }
  }

  // Ends the connection after reading a request's `part` ("head" or "body")
  // failed: a limit is answered (431, 413), malformed input gets 400, a
  // timeout or a client gone is logged.
  asio::awaitable<void> end_on_read_error(beast::tcp_stream& stream, const beast::error_code& ec,
                                          std::string_view part) {
    const std::string what = "the request " + std::string(part);
    if (ec == http::error::header_limit) {
      co_await refuse_request(stream, limit_response(431,
                                                     "the request line and headers are larger than " +
                                                         std::to_string(config.max_header_bytes) + " bytes",
                                                     "request_header_too_large"));
    } else if (ec == http::error::body_limit) {  // also a Content-Length over it: the body stays unread
      co_await refuse_request(stream, limit_response(413,
                                                     "the request body is larger than " +
                                                         std::to_string(config.max_body_bytes) + " bytes",
                                                     "request_too_large"));
    } else if (ec == beast::error::timeout) {
      count_closed_without_response(what + (part == "head" ? " did not arrive within server.header_timeout_ms"
                                                           : " did not arrive within server.body_timeout_ms "
                                                             "(extended at server.body_min_rate)"),
                                    {});
    } else if (is_client_close(ec)) {
      count_closed_without_response("the client closed the connection in the middle of " + what, ec);
    } else {
      co_await refuse_request(stream, error_response(Status::invalid_argument(
                                          "malformed HTTP request " + std::string(part) + ": " + ec.message(), "",
                                          "malformed_request")));
    }
  }

  // Answers a request that is not handed to the router, and ends the connection.
  asio::awaitable<void> refuse_request(beast::tcp_stream& stream, HttpResponse response) {
    beast::error_code ec;
    co_await write(stream, std::move(response), 11, false, ec);
    if (ec) {
      count_closed_without_response("writing an error response failed", ec);
      co_return;
    }
    co_await linger(stream);
  }

  // --- shutdown ----------------------------------------------------------

  void close_connections() {
    std::vector<std::shared_ptr<Conn>> open;
    {
      std::lock_guard lock(mu);
      for (auto& [id, c] : conns) open.push_back(c);
    }
    for (auto& c : open) {
      asio::post(c->executor, [c] {
        c->closing = true;
        if (c->stream) c->stream->close();
        if (c->waker) c->waker->timer.cancel();
      });
    }
  }
};

HttpServer::HttpServer(config::ServerConfig config, const HttpRouter& router, obs::MetricsRegistry* metrics)
    : impl_(std::make_unique<Impl>(std::move(config), router, metrics)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->config.host, ec);
  if (ec) return Status::invalid_argument("server.host '" + impl_->config.host + "' is not an IP address");
  tcp::endpoint endpoint(address, impl_->config.port);
  auto& acc = impl_->acceptor;
  acc.open(endpoint.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(endpoint, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::unavailable("cannot listen on " + impl_->config.host + ":" +
                               std::to_string(impl_->config.port) + ": " + ec.message());
  }
  impl_->port = acc.local_endpoint().port();
  for (auto& loop : impl_->loops) impl_->work.push_back(asio::make_work_guard(loop->context()));
  asio::co_spawn(impl_->loops.front()->context(), impl_->listen(), asio::detached);
  for (auto& loop : impl_->loops) {
    impl_->threads.emplace_back([loop] {
      ScopedIoLoop mark(loop);
      try {
        loop->context().run();
      } catch (const std::exception& e) {
        spdlog::error("I/O thread stopped by an exception: {}", e.what());
      }
    });
  }
  return Status::ok();
}

uint16_t HttpServer::port() const { return impl_->port; }
int64_t HttpServer::in_flight() const { return impl_->requests.active(); }

HttpServerStats HttpServer::stats() const {
  HttpServerStats s;
  s.connections = impl_->connections.active();
  s.accept_errors = impl_->accept_errors.load();
  s.connections_refused = impl_->refused.load();
  s.closed_without_response = impl_->closed_without_response.load();
  return s;
}

void HttpServer::begin_drain() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->drain_deadline) return;
    impl_->drain_deadline = Clock::now() + std::chrono::milliseconds(impl_->config.shutdown_grace_ms);
  }
  impl_->draining.store(true);
  impl_->requests.close();
  if (impl_->threads.empty()) return;
  asio::post(impl_->loops.front()->context(), [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->accept_backoff.cancel();
  });
}

bool HttpServer::stop() {
  if (impl_->stopped.exchange(true)) return impl_->drained_in_time;
  begin_drain();
  if (impl_->threads.empty()) return true;
  Clock::time_point deadline;
  {
    std::lock_guard lock(impl_->mu);
    deadline = *impl_->drain_deadline;
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  impl_->drained_in_time = impl_->requests.wait_drained(std::max(left, std::chrono::milliseconds(0)));
  if (!impl_->drained_in_time)
    spdlog::warn("http: shutting down with {} request(s) still in flight after server.shutdown_grace_ms",
                 impl_->requests.active());
  impl_->close_connections();
  // Closed sockets end their sessions at once; this bounds a straggler.
  if (!impl_->connections.wait_drained(std::chrono::seconds(2)))
    spdlog::warn("http: {} connection(s) still open at shutdown", impl_->connections.active());
  // Borrowers (upstream exchanges still going for requests that outlived
  // the grace) see the loops closed and end within their poll interval; the
  // loops then run out of work. A straggler past that is cut off.
  for (auto& loop : impl_->loops) loop->close();
  impl_->work.clear();
  const auto cutoff = Clock::now() + std::chrono::seconds(2);
  auto all_stopped = [&] {
    for (auto& loop : impl_->loops)
      if (!loop->context().stopped()) return false;
    return true;
  };
  while (!all_stopped() && Clock::now() < cutoff) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (auto& loop : impl_->loops) loop->context().stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  // What is still pending on the loops (a coroutine cut off above) is
  // destroyed now, while this server's state it refers to is alive; a
  // borrower may keep a loop (its idle sockets) for longer.
  for (auto& loop : impl_->loops) loop->shutdown();
  return impl_->drained_in_time;
}

}  // namespace llmpool::api
