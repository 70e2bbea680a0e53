// The providers' only translation unit that includes Beast (each costs ~15 s
// to build).
#include <utility>  // before Asio with g++ 12 (DESIGN.md)

#include "providers/http_client.h"
#include "common/text.h"

#include <poll.h>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/json.h"
#include "providers/io_loop.h"

namespace llmpool::providers {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using TlsStream = beast::ssl_stream<tcp::socket>;

namespace {

// How often a request checks its cancel token, its deadline and shutdown.
constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr size_t kReadChunk = 16 * 1024;
constexpr uint32_t kHeaderLimit = 64 * 1024;
// How long the destructor waits for requests to wind down before it stops
// the I/O threads the hard way.
constexpr auto kStopGrace = std::chrono::seconds(5);

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

uint16_t default_port(const std::string& scheme) { return scheme == "https" ? 443 : 80; }

std::string host_for_url(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

std::string HttpUrl::origin() const {
  std::string s = scheme + "://" + host_for_url(host);
  if (port != default_port(scheme)) s += ":" + std::to_string(port);
  return s;
}

std::string HttpUrl::to_string() const { return origin() + path; }

Result<HttpUrl> parse_http_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return Status::invalid_argument("'" + std::string(url) + "' is not a usable URL: " + why);
  };
  auto sep = url.find("://");
  if (sep == std::string_view::npos) return bad("it must start with http:// or https://");
  HttpUrl out;
  out.scheme = lower(std::string(url.substr(0, sep)));
  if (out.scheme != "http" && out.scheme != "https") return bad("the scheme must be http or https");
  out.port = default_port(out.scheme);
  std::string_view rest = url.substr(sep + 3);
  if (rest.find('#') != std::string_view::npos) return bad("fragments (#) are not allowed");
  for (char c : rest)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return bad("it contains spaces or control characters");
  size_t end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  std::string_view path = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (authority.find('@') != std::string_view::npos) return bad("user names and passwords in URLs are not supported");
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 address");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("garbage after the IPv6 address");
      port = after.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
  }
  if (out.host.empty()) return bad("the host is missing");
  if (!port.empty()) {
    uint32_t p = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || p > 65535) return bad("the port must be a number between 1 and 65535");
      p = p * 10 + static_cast<uint32_t>(c - '0');
    }
    if (p == 0 || p > 65535) return bad("the port must be a number between 1 and 65535");
    out.port = static_cast<uint16_t>(p);
  }
  out.path = path.empty() ? "/" : std::string(path);
  if (out.path.front() == '?') out.path = "/" + out.path;
  return out;
}

// ---------------------------------------------------------------------------

namespace {

enum class Abort { kNone, kCancelled, kTimeout, kShutdown };
enum class Phase { kConnect, kHandshake, kWrite, kReadHead, kReadBody };

const char* phase_text(Phase p) {
  switch (p) {
    case Phase::kConnect: return "connecting";
    case Phase::kHandshake: return "setting up TLS";
    case Phase::kWrite: return "sending the request";
    case Phase::kReadHead: return "waiting for the answer";
    case Phase::kReadBody: return "reading the answer";
  }
  return "";
}

// A connection: a plain socket, or a TLS stream over one. Pooled
// connections keep their kind; the pool key has the scheme, so a TLS
// connection is never handed to a plain request or the other way round.
struct Connection {
  std::optional<tcp::socket> plain;
  std::unique_ptr<TlsStream> tls;
  // What the body is read into, kept with the connection (pooled with it):
  // not a large allocation per request.
  std::unique_ptr<char[]> chunk;

  char* read_chunk() {
    if (!chunk) chunk = std::make_unique<char[]>(kReadChunk);
    return chunk.get();
  }

  bool empty() const { return !plain && !tls; }
  tcp::socket* lowest() {
    if (tls) return &tls->next_layer();
    return plain ? &*plain : nullptr;
  }
  void close() {
    beast::error_code ignored;
    if (tcp::socket* s = lowest()) {
      s->cancel(ignored);
      s->close(ignored);
    }
  }
};

// One request in flight. Everything but construction happens on `executor`:
// the request coroutine and its watcher never run at the same time. It runs
// on the client's own I/O context (through a strand: it may have several
// threads), or on a borrowed loop (`loop`, see HttpClient::stream), whose one
// thread needs no strand. It keeps the client's state (`owner`) alive.
struct Exchange {
  Exchange(std::shared_ptr<void> o, std::atomic<int64_t>& a, std::shared_ptr<IoLoop> l, asio::io_context& ctx,
           HttpClientRequest r, HttpUrl u, CancelTokenPtr c, HttpStreamCallbacks cb)
      : owner(std::move(o)),
        active(a),
        loop(std::move(l)),
        ioc(ctx),
        executor(loop ? asio::any_io_executor(ioc.get_executor()) : asio::any_io_executor(asio::make_strand(ioc))),
        timer(executor),
        resolver(executor),
        req(std::move(r)),
        url(std::move(u)),
        pool_key(url.scheme + "://" + url.host + ":" + std::to_string(url.port) +
                 (loop ? "@" + std::to_string(reinterpret_cast<uintptr_t>(loop.get())) : "")),
        who(req.label.empty() ? url.to_string() : req.label),
        cancel(std::move(c)),
        callbacks(std::move(cb)) {
    active.fetch_add(1);
  }

  // on_done is owed exactly once, also when the I/O context is torn down
  // with this request's coroutine still suspended.
  ~Exchange() {
    if (!done_called) finish(Status::unavailable("the HTTP client stopped before " + who + " answered"));
    release();
  }

  // No longer in flight (HttpClient::active_requests).
  void release() {
    if (counted) active.fetch_sub(1);
    counted = false;
  }

  // Borrowed loops are closed by their owner before it stops running them.
  bool loop_closed() const { return loop && !loop->open(); }

  void finish(Status st) {
    if (done_called) return;
    done_called = true;
    auto on_done = std::move(callbacks.on_done);
    callbacks = {};
    if (!on_done) return;
    try {
      on_done(std::move(st));
    } catch (const std::exception& e) {
      spdlog::error("HTTP client: on_done threw: {}", e.what());
    } catch (...) {
      spdlog::error("HTTP client: on_done threw");
    }
  }

  void arm(int32_t timeout_ms, Phase p) {
    phase = p;
    deadline = timeout_ms > 0 ? Clock::now() + std::chrono::milliseconds(timeout_ms) : Clock::time_point::max();
  }

  void close_now() {
    resolver.cancel();
    conn.close();
  }

  std::shared_ptr<void> owner;     // the client's Impl
  std::atomic<int64_t>& active;    // its count of requests in flight
  bool counted = true;
  std::shared_ptr<IoLoop> loop;    // declared before what is bound to it: destroyed after
  asio::io_context& ioc;           // the loop's, or the client's own
  asio::any_io_executor executor;
  asio::steady_timer timer;
  tcp::resolver resolver;
  Connection conn;
  HttpClientRequest req;
  HttpUrl url;
  std::string pool_key;  // scheme://host:port, and the loop the connection is bound to
  std::string who;  // what messages call the server
  CancelTokenPtr cancel;
  HttpStreamCallbacks callbacks;
  Clock::time_point deadline = Clock::time_point::max();
  Phase phase = Phase::kConnect;
  Abort abort = Abort::kNone;
  bool finished = false;
  bool done_called = false;
  std::string tls_failure;  // why the certificate was refused, when it was
};

bool is_closed_error(const beast::error_code& ec) {
  return ec == asio::error::eof || ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted ||
         ec == ssl::error::stream_truncated;
}

// An idle keep-alive connection has nothing to say: if it is readable, the
// server closed it (or sent garbage, or a TLS alert) and it must not be
// reused.
bool idle_socket_usable(Connection& c) {
  tcp::socket* s = c.lowest();
  if (s == nullptr || !s->is_open()) return false;
  if (c.tls && SSL_pending(c.tls->native_handle()) > 0) return false;
  pollfd p{};
  p.fd = s->native_handle();
  p.events = POLLIN | POLLRDHUP;
  return ::poll(&p, 1, 0) == 0;
}

// The client's TLS settings as an OpenSSL context. Throws what Asio throws
// on a bad CA file; callers catch.
std::unique_ptr<ssl::context> make_tls_context(const TlsOptions& o) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  if (o.insecure_skip_verify) {
    ctx->set_verify_mode(ssl::verify_none);
    return ctx;
  }
  if (o.ca_file.empty())
    ctx->set_default_verify_paths();
  else
    ctx->load_verify_file(o.ca_file);
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

}  // namespace

Status check_tls_options(const TlsOptions& tls) {
  if (tls.ca_file.empty() || tls.insecure_skip_verify) return Status::ok();
  try {
    (void)make_tls_context(tls);
  } catch (const std::exception& e) {
    return Status::invalid_argument("ca_file '" + tls.ca_file + "' cannot be used: " + e.what(), "ca_file");
  }
  return Status::ok();
}

struct HttpClient::Impl {
  explicit Impl(HttpClientOptions o) : options(o), work(asio::make_work_guard(ioc)) {
    try {
      tls_context = make_tls_context(options.tls);
    } catch (const std::exception& e) {
      tls_error = std::string("the TLS settings cannot be used: ") + e.what();
    }
    if (options.tls.insecure_skip_verify)
      spdlog::warn("HTTP client: tls_insecure_skip_verify is set: upstream TLS certificates are not checked");
  }

  HttpClientOptions options;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::unique_ptr<ssl::context> tls_context;  // null when tls_error says why
  std::string tls_error;
  std::vector<std::thread> threads;
  std::vector<std::thread::id> thread_ids;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> active{0};

  struct IdleConnection {
    std::shared_ptr<IoLoop> loop;  // a borrowed loop the socket is bound to (kept alive); before conn
    Connection conn;
    Clock::time_point since;
  };
  mutable std::mutex pool_mu;
  std::map<std::string, std::deque<IdleConnection>> pool;  // guarded by pool_mu

  // The most recently used idle connection that is still usable. The check
  // (a poll) and the closing of dead ones happen outside the pool's lock,
  // which every I/O thread takes once per request.
  std::optional<Connection> take_idle(const std::string& key) {
    const auto too_old = Clock::now() - std::chrono::milliseconds(options.idle_timeout_ms);
    for (;;) {
      std::optional<IdleConnection> c;
      {
        std::lock_guard<std::mutex> lock(pool_mu);
        auto it = pool.find(key);
        if (it == pool.end() || it->second.empty()) return std::nullopt;
        c.emplace(std::move(it->second.back()));  // the most recently used is the likeliest alive
        it->second.pop_back();
      }
      if (c->since >= too_old && idle_socket_usable(c->conn)) return std::move(c->conn);
      c->conn.close();
    }
  }

  void put_idle(Exchange& ex) {
    if (stopping.load() || options.max_idle_per_host <= 0 || ex.loop_closed()) {
      ex.conn.close();
      return;
    }
    IdleConnection c{ex.loop, std::move(ex.conn), Clock::now()};
    std::optional<IdleConnection> extra;  // closed after the lock
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      auto& q = pool[ex.pool_key];
      q.push_back(std::move(c));
      if (q.size() > static_cast<size_t>(options.max_idle_per_host)) {
        extra.emplace(std::move(q.front()));
        q.pop_front();
      }
    }
    if (extra) extra->conn.close();
  }

  void clear_pool() {
    std::lock_guard<std::mutex> lock(pool_mu);
    for (auto& [key, q] : pool)
      for (auto& c : q) c.conn.close();
    pool.clear();
  }

  Status error_status(const Exchange& ex, const beast::error_code& ec) const {
    const std::string& who = ex.who;
    switch (ex.abort) {
      case Abort::kCancelled:
        return Status::unavailable("the request to " + who + " was cancelled");
      case Abort::kShutdown:
        return Status::unavailable("the HTTP client is shutting down; the request to " + who + " was abandoned");
      case Abort::kTimeout:
        if (ex.phase == Phase::kConnect || ex.phase == Phase::kHandshake)
          return Status::deadline_exceeded("cannot connect to " + who + " within " +
                                           std::to_string(ex.req.connect_timeout_ms) + " ms (" +
                                           phase_text(ex.phase) + ")");
        return Status::deadline_exceeded("no data from " + who + " for " + std::to_string(ex.req.read_timeout_ms) +
                                         " ms while " + phase_text(ex.phase));
      case Abort::kNone:
        break;
    }
    if (ex.phase == Phase::kConnect) return Status::unavailable("cannot connect to " + who + ": " + ec.message());
    if (ex.phase == Phase::kHandshake) {
      if (!ex.tls_failure.empty())
        return Status::unavailable("the TLS certificate of " + who + " was refused: " + ex.tls_failure);
      return Status::unavailable("the TLS handshake with " + who + " failed: " + ec.message());
    }
    if (is_closed_error(ec) || ec == http::error::partial_message)
      return Status::unavailable("the connection to " + who + " closed while " + phase_text(ex.phase) + " (" +
                                 ec.message() + ")");
    if (ec.category() == http::make_error_code(http::error::bad_version).category())
      return Status::unavailable("malformed HTTP answer from " + who + ": " + ec.message());
    return Status::unavailable("HTTP request to " + who + " failed while " + phase_text(ex.phase) + ": " +
                               ec.message());
  }

  // Closes the connection when the request is cancelled, passes its
  // deadline or the client stops: a check every kPollInterval (or at the
  // deadline), on the exchange's executor, until the request is finished
  // (run() cancels the timer). A timer callback, not a coroutine: nothing
  // to spawn per request.
  void watch(std::shared_ptr<Exchange> ex) {
    Exchange& e = *ex;
    e.timer.expires_at(std::min(Clock::now() + kPollInterval, e.deadline));
    e.timer.async_wait([this, ex = std::move(ex)](const beast::error_code&) mutable {
      if (ex->finished) return;
      if (ex->abort == Abort::kNone) {
        if (ex->cancel && ex->cancel->cancelled())
          ex->abort = Abort::kCancelled;
        else if (stopping.load() || ex->loop_closed())
          ex->abort = Abort::kShutdown;
        else if (Clock::now() >= ex->deadline)
          ex->abort = Abort::kTimeout;
      }
      if (ex->abort != Abort::kNone) {
        ex->deadline = Clock::time_point::max();
        ex->close_now();  // again on every tick: a range connect reopens the socket
      }
      watch(std::move(ex));
    });
  }

  // A fresh connection of the URL's kind, connected (and for https with the
  // TLS handshake done and the certificate checked).
  asio::awaitable<Status> connect(Exchange& ex) {
    ex.conn.close();
    ex.conn = Connection();
    if (ex.url.tls()) {
      if (!tls_context) co_return Status::unavailable("cannot connect to " + ex.who + ": " + tls_error);
      ex.conn.tls = std::make_unique<TlsStream>(ex.ioc, *tls_context);
    } else {
      ex.conn.plain.emplace(ex.ioc);
    }
    ex.arm(ex.req.connect_timeout_ms, Phase::kConnect);
    beast::error_code ec;
    auto endpoints = co_await ex.resolver.async_resolve(ex.url.host, std::to_string(ex.url.port),
                                                         asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ex.abort != Abort::kNone) co_return error_status(ex, ec);
      co_return Status::unavailable("cannot resolve the host of " + ex.who + ": " + ec.message());
    }
    Exchange* exp = &ex;
    tcp::socket& socket = *ex.conn.lowest();
    co_await asio::async_connect(
        socket, endpoints, [exp](const beast::error_code&, const tcp::endpoint&) { return exp->abort == Abort::kNone; },
        asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && ex.abort != Abort::kNone) ec = asio::error::operation_aborted;
    if (ec) co_return error_status(ex, ec);
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (ex.conn.tls) co_return co_await handshake(ex);
    co_return Status::ok();
  }

  asio::awaitable<Status> handshake(Exchange& ex) {
    ex.phase = Phase::kHandshake;  // still under the connect timeout
    SSL* ssl_handle = ex.conn.tls->native_handle();
    beast::error_code not_ip;
    (void)asio::ip::make_address(ex.url.host, not_ip);
    // SNI carries host names only (RFC 6066).
    if (not_ip && SSL_set_tlsext_host_name(ssl_handle, ex.url.host.c_str()) != 1)
      co_return Status::unavailable("cannot set up TLS for " + ex.who + ": the host name is not usable for SNI");
    if (!options.tls.insecure_skip_verify) {
      // OpenSSL checks the name while it verifies the chain, so a
      // certificate for another host fails the handshake itself.
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      int set = not_ip ? X509_VERIFY_PARAM_set1_host(param, ex.url.host.c_str(), ex.url.host.size())
                       : X509_VERIFY_PARAM_set1_ip_asc(param, ex.url.host.c_str());
      if (set != 1) co_return Status::unavailable("cannot set up TLS for " + ex.who + ": bad host name");
    }
    beast::error_code ec;
    co_await ex.conn.tls->async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && ex.abort != Abort::kNone) ec = asio::error::operation_aborted;
    if (ec) {
      long verify = SSL_get_verify_result(ssl_handle);
      if (verify != X509_V_OK) ex.tls_failure = X509_verify_cert_error_string(verify);
      co_return error_status(ex, ec);
    }
    co_return Status::ok();
  }

  // A request as it goes on the wire: its head, written here (not by
  // Beast's serializer: no fields container, one gathered write of head and
  // body), and its body.
  struct Outgoing {
    std::string head;
    std::string body;
  };

  // "METHOD path HTTP/1.1", Host, User-Agent and Content-Type (a caller's
  // header of the same name replaces ours), the caller's headers, and the
  // framing, which is ours alone (a caller's Content-Length,
  // Transfer-Encoding or Connection is not sent): Content-Length when there
  // is a body or the method expects one (as Beast's prepare_payload), never
  // chunked, keep-alive (HTTP/1.1's default, so no Connection header).
  static Status request_head(const Exchange& ex, http::verb verb, std::string* out) {
    bool own_host = false, own_agent = false, own_type = false;
    for (const auto& [name, value] : ex.req.headers) {
      if (name.empty() || name.find_first_of("\r\n: \t") != std::string::npos ||
          value.find_first_of("\r\n") != std::string::npos || name.find('\0') != std::string::npos ||
          value.find('\0') != std::string::npos)
        return Status::invalid_argument("HTTP header '" + name + "' has a forbidden character");
      own_host = own_host || iequals(name, "host");
      own_agent = own_agent || iequals(name, "user-agent");
      own_type = own_type || iequals(name, "content-type");
    }
    if (ex.url.path.find_first_of("\r\n \t") != std::string::npos || ex.url.path.find('\0') != std::string::npos)
      return Status::invalid_argument("the URL path has a forbidden character");
    std::string& h = *out;
    h.reserve(128 + ex.url.path.size());
    const auto method = http::to_string(verb);
    h.append(method.data(), method.size());
    h += ' ';
    h += ex.url.path;
    h += " HTTP/1.1\r\n";
    auto line = [&](std::string_view name, std::string_view value) {
      h += name;
      h += ": ";
      h += value;
      h += "\r\n";
    };
    if (!own_host)
      line("Host", ex.url.port == default_port(ex.url.scheme)
                       ? host_for_url(ex.url.host)
                       : host_for_url(ex.url.host) + ":" + std::to_string(ex.url.port));
    if (!own_agent) line("User-Agent", "llmpool");
    const bool body_expected = verb == http::verb::post || verb == http::verb::put || verb == http::verb::options;
    if (!own_type && (!ex.req.body.empty() || verb == http::verb::post)) line("Content-Type", ex.req.content_type);
    for (const auto& [name, value] : ex.req.headers)
      if (!is_framing_header(name)) line(name, value);
    if (!ex.req.body.empty() || body_expected) line("Content-Length", std::to_string(ex.req.body.size()));
    h += "\r\n";
    return Status::ok();
  }

  struct Sent {
    Status status;
    bool retry = false;  // a reused connection was found closed before any answer
  };

  // Writes `req` on `stream` and relays the answer.
  template <class Stream>
  asio::awaitable<Sent> transfer(Exchange& ex, Stream& stream, const Outgoing& req, bool reused, int attempt) {
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    // Streams are as long as they are; silence is what is bounded. (Not
    // boost::none: Beast 1.74 then rejects every Content-Length body.)
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    parser.header_limit(kHeaderLimit);
    beast::error_code ec;
    ex.arm(ex.req.read_timeout_ms, Phase::kWrite);
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(req.head), asio::buffer(req.body)};
    co_await asio::async_write(stream, buffers, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      ex.arm(ex.req.read_timeout_ms, Phase::kReadHead);
      co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
      // The server may close an idle connection just as we reuse it; the
      // request never reached it, so one retry on a new connection is safe.
      if (reused && attempt == 0 && ex.abort == Abort::kNone && !parser.got_some() && is_closed_error(ec)) {
        ex.conn.close();
        co_return Sent{Status::ok(), true};
      }
      co_return Sent{error_status(ex, ec)};
    }

    HttpResponseHead head;
    head.status = static_cast<int>(parser.get().result_int());
    for (const auto& f : parser.get()) head.headers[lower(std::string(f.name_string()))] = std::string(f.value());
    if (ex.callbacks.on_head) ex.callbacks.on_head(head);

    bool stopped = false;
    char* chunk = ex.conn.read_chunk();
    // Not eager: an eager parser that ends a chunk goes on into the next
    // chunk's header, and with that still missing async_read_some waits
    // for the socket instead of handing over the chunk it has.
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = kReadChunk;
      ex.arm(ex.req.read_timeout_ms, Phase::kReadBody);
      co_await http::async_read_some(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      // A TLS server that ends a close-delimited body without close_notify.
      if (ec == ssl::error::stream_truncated && ex.abort == Abort::kNone) {
        beast::error_code eof_ec;
        parser.put_eof(eof_ec);
        if (!eof_ec) ec = {};
      }
      size_t n = kReadChunk - parser.get().body().size;
      // Bytes that arrived before a cut are still delivered.
      if (n > 0 && ex.callbacks.on_body && !ex.callbacks.on_body(std::string_view(chunk, n))) {
        stopped = true;
        break;
      }
      if (ec) co_return Sent{error_status(ex, ec)};
    }
    ex.arm(0, Phase::kReadBody);
    bool reusable =
        !stopped && parser.is_done() && parser.keep_alive() && buffer.size() == 0 && ex.abort == Abort::kNone;
    if (reusable)
      put_idle(ex);
    else
      ex.conn.close();
    ex.conn = Connection();
    co_return Sent{Status::ok()};
  }

  asio::awaitable<Status> exchange(Exchange& ex) {
    http::verb verb = http::string_to_verb(ex.req.method);
    if (verb == http::verb::unknown) co_return Status::invalid_argument("unknown HTTP method '" + ex.req.method + "'");
    Outgoing req;
    if (Status st = request_head(ex, verb, &req.head); !st) co_return st;
    req.body = std::move(ex.req.body);  // sent from req on every attempt

    for (int attempt = 0;; ++attempt) {
      bool reused = false;
      if (auto idle = take_idle(ex.pool_key)) {
        ex.conn = std::move(*idle);
        reused = true;
      } else {
        Status st = co_await connect(ex);
        if (!st) co_return st;
      }
      // Not a ?: of two co_awaits: g++ 12 destroys such a temporary twice.
      Sent sent;
      if (ex.conn.tls)
        sent = co_await transfer(ex, *ex.conn.tls, req, reused, attempt);
      else
        sent = co_await transfer(ex, *ex.conn.plain, req, reused, attempt);
      if (sent.retry) continue;
      co_return sent.status;
    }
  }
  asio::awaitable<void> run(std::shared_ptr<Exchange> ex) {
    watch(ex);
    Status st;
    try {
      st = co_await exchange(*ex);
    } catch (const std::exception& e) {
      st = Status::internal(std::string("HTTP client failure: ") + e.what());
    } catch (...) {
      st = Status::internal("HTTP client failure");
    }
    ex->finished = true;
    ex->timer.cancel();
    ex->conn.close();
    ex->finish(std::move(st));
    ex->release();
  }

  asio::awaitable<void> delayed(std::chrono::milliseconds delay, std::function<void()> fn) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto due = Clock::now() + delay;
    // In slices, so that a stopping client is never held up by a timer.
    while (Clock::now() < due) {
      if (stopping.load()) co_return;
      timer.expires_at(std::min(due, Clock::now() + kPollInterval));
      beast::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (stopping.load()) co_return;
    try {
      fn();
    } catch (const std::exception& e) {
      spdlog::error("HTTP client: timer task threw: {}", e.what());
    } catch (...) {
      spdlog::error("HTTP client: timer task threw");
    }
  }
};

HttpClient::HttpClient(HttpClientOptions options) : impl_(std::make_shared<Impl>(options)) {
  int n = std::max(1, options.io_threads);
  for (int i = 0; i < n; ++i) {
    // Each thread keeps the Impl alive, so that a client destroyed on one of
    // its own threads can let them finish instead of joining itself.
    impl_->threads.emplace_back([impl = impl_] {
      for (;;) {
        try {
          impl->ioc.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("HTTP client I/O thread: {}", e.what());
        } catch (...) {
          spdlog::error("HTTP client I/O thread: unknown exception");
        }
      }
    });
    impl_->thread_ids.push_back(impl_->threads.back().get_id());
  }
}

HttpClient::~HttpClient() {
  std::shared_ptr<Impl> impl = impl_;
  impl->stopping.store(true);
  impl->clear_pool();
  impl->work.reset();
  const auto self = std::this_thread::get_id();
  if (std::find(impl->thread_ids.begin(), impl->thread_ids.end(), self) != impl->thread_ids.end()) {
    for (auto& t : impl->threads) t.detach();
    return;
  }
  // Requests notice `stopping` within a poll interval and end with
  // Unavailable; then the I/O context runs out of work and its threads return.
  // Requests on borrowed loops are waited for too, except on a thread that
  // runs a loop (one of them may be on it): they keep the state they use
  // alive and end on their own.
  const std::shared_ptr<IoLoop>& here = current_io_loop();
  const bool on_a_loop = here && here->context().get_executor().running_in_this_thread();
  const auto deadline = Clock::now() + kStopGrace;
  while ((!impl->ioc.stopped() || (!on_a_loop && impl->active.load() > 0)) && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!impl->ioc.stopped()) {
    spdlog::warn("HTTP client: {} requests did not end in time; stopping anyway", impl->active.load());
    impl->ioc.stop();
  }
  for (auto& t : impl->threads) t.join();
}

void HttpClient::stream(HttpClientRequest request, CancelTokenPtr cancel, HttpStreamCallbacks callbacks) {
  // A provider sends every request to one or two URLs: the last one parsed
  // on this thread is kept (a parse is ~2k instructions a request).
  thread_local std::string last_text;
  thread_local HttpUrl last_url;
  if (request.url != last_text || last_text.empty()) {
    Result<HttpUrl> parsed = parse_http_url(request.url);
    if (!parsed) {
      if (callbacks.on_done) callbacks.on_done(parsed.status());
      return;
    }
    last_url = std::move(parsed).value();
    last_text = request.url;
  }
  Result<HttpUrl> url = last_url;
  if (impl_->stopping.load()) {
    if (callbacks.on_done) callbacks.on_done(Status::unavailable("the HTTP client is shutting down"));
    return;
  }
  // On the caller's loop when it has one (the HTTP server's I/O thread the
  // request came in on, providers/io_loop.h): the exchange then needs no thread
  // of its own, and its answer is handled where the client's response is
  // written.
  std::shared_ptr<IoLoop> loop = current_io_loop();
  if (loop && !loop->open()) loop.reset();
  asio::io_context& ioc = loop ? loop->context() : impl_->ioc;
  auto ex = std::make_shared<Exchange>(impl_, impl_->active, std::move(loop), ioc, std::move(request),
                                       std::move(url).value(), std::move(cancel), std::move(callbacks));
  auto executor = ex->executor;
  asio::co_spawn(executor, impl_->run(std::move(ex)), asio::detached);
}

void HttpClient::fetch(HttpClientRequest request, CancelTokenPtr cancel,
                       std::function<void(Result<HttpClientResponse>)> done, size_t max_body_bytes) {
  struct State {
    HttpClientResponse response;
    bool too_big = false;
  };
  auto state = std::make_shared<State>();
  std::string url = request.label.empty() ? request.url : request.label;
  HttpStreamCallbacks cb;
  cb.on_head = [state](const HttpResponseHead& head) { state->response.head = head; };
  cb.on_body = [state, max_body_bytes](std::string_view bytes) {
    if (state->response.body.size() + bytes.size() > max_body_bytes) {
      state->too_big = true;
      return false;
    }
    state->response.body.append(bytes);
    return true;
  };
  cb.on_done = [state, done = std::move(done), url, max_body_bytes](Status st) {
    if (!st) return done(std::move(st));
    if (state->too_big)
      return done(Status::invalid_argument("the answer from " + url + " is larger than " +
                                           std::to_string(max_body_bytes) + " bytes"));
    done(std::move(state->response));
  };
  stream(std::move(request), std::move(cancel), std::move(cb));
}

void HttpClient::post_after(std::chrono::milliseconds delay, std::function<void()> fn) {
  if (impl_->stopping.load()) return;
  asio::co_spawn(impl_->ioc, impl_->delayed(delay, std::move(fn)), asio::detached);
}

size_t HttpClient::idle_connections() const {
  std::lock_guard<std::mutex> lock(impl_->pool_mu);
  size_t n = 0;
  for (const auto& [key, q] : impl_->pool) n += q.size();
  return n;
}

int64_t HttpClient::active_requests() const { return impl_->active.load(); }

// ---------------------------------------------------------------------------

Status upstream_error_status(int http_status, std::string_view body, const std::string& who) {
  using nlohmann::json;
  std::string message, param, code;
  auto str = [](const json& o, const char* key) -> std::string {
    auto it = o.find(key);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  Result<json> parsed = parse_json(body, kDefaultJsonLimits, "the upstream's error answer");
  const json j = parsed ? std::move(parsed).value() : json();
  if (j.is_object()) {
    const json* e = &j;
    auto it = j.find("error");
    if (it != j.end() && it->is_string()) message = it->get<std::string>();
    if (it != j.end() && it->is_object()) e = &*it;
    if (message.empty()) {
      message = str(*e, "message");
      param = str(*e, "param");
      code = str(*e, "code");  // numeric codes only echo the HTTP status
    }
    if (message.empty()) message = str(j, "detail");  // FastAPI-style servers
  }
  if (message.empty()) {
    std::string raw(body.substr(0, 1024));
    while (!raw.empty() && std::isspace(static_cast<unsigned char>(raw.back()))) raw.pop_back();
    message = raw.empty() ? "no details given" : raw;
  }
  // An upstream's message is quoted, never more than a short piece of it
  // (whole UTF-8 characters), whatever size its answer had.
  constexpr size_t kMaxMessage = 512;
  message = cut_utf8(message, kMaxMessage);
  if (param.size() > 128) param.clear();
  if (code.size() > 128) code.clear();
  const std::string prefix = who + " answered HTTP " + std::to_string(http_status) + ": ";
  switch (http_status) {
    case 401: return Status::unauthenticated(prefix + message);
    case 403: return Status::permission_denied(prefix + message);
    case 404: return Status::not_found(message, param, code);
    case 408: return Status::deadline_exceeded(prefix + message);
    case 429: return Status::resource_exhausted(prefix + message);
    case 501: return Status::unimplemented(message, param);
    default: break;
  }
  if (http_status >= 400 && http_status < 500) return Status::invalid_argument(message, param, code);
  if (http_status >= 500) return Status::unavailable(prefix + message);
  return Status::unavailable(prefix + "unexpected status");
}

}  // namespace llmpool::providers
