// The only translation unit that includes Beast (each costs ~15 s to build).
#include <utility>  // before Asio with g++ 12 (DESIGN.md)

#include "api/http_server.h"

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "api/errors.h"

namespace llmpool::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(60);
constexpr auto kWriteTimeout = std::chrono::seconds(60);

// Wakes a coroutine waiting on `timer` (used as a condition variable).
// Owned by the session coroutine; exchanges hold it weakly.
struct Waker {
  explicit Waker(asio::any_io_executor s) : strand(s), timer(s) {
    timer.expires_at(std::chrono::steady_clock::time_point::max());
  }
  asio::any_io_executor strand;  // the session's strand
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
    if (auto w = waker_.lock()) asio::post(w->strand, [w] { w->timer.cancel(); });
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

HttpRequest to_request(const http::request<http::string_body>& in) {
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
  r.body = in.body();
  return r;
}

http::response<http::string_body> to_beast(HttpResponse&& in, unsigned version, bool keep_alive) {
  http::response<http::string_body> out{static_cast<http::status>(in.status), version};
  out.set(http::field::server, "llmpool");
  out.set(http::field::content_type, in.content_type);
  for (auto& [k, v] : in.headers) out.set(k, v);
  out.body() = std::move(in.body);
  out.keep_alive(keep_alive);
  out.prepare_payload();
  return out;
}

}  // namespace

struct HttpServer::Impl {
  config::ServerConfig config;
  const HttpRouter& router;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::atomic<int64_t> in_flight{0};
  std::atomic<bool> stopped{false};
  uint16_t port = 0;

  Impl(config::ServerConfig c, const HttpRouter& r) : config(std::move(c)), router(r) {}

  asio::awaitable<void> listen() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        spdlog::warn("accept failed: {}", ec.message());
        continue;
      }
      // Each connection runs on its own strand: its coroutine, its disconnect
      // watcher and the wake-ups from handlers never run concurrently.
      auto strand = asio::make_strand(ioc);
      asio::co_spawn(strand, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> write(beast::tcp_stream& stream, HttpResponse res, unsigned version,
                              bool keep_alive, beast::error_code& ec) {
    auto out = to_beast(std::move(res), version, keep_alive);
    stream.expires_after(kWriteTimeout);
    co_await http::async_write(stream, out, asio::redirect_error(asio::use_awaitable, ec));
  }

  // Notices a client that goes away while its answer is being made: the
  // socket turns readable with nothing to read (EOF or reset).
  static asio::awaitable<void> watch_disconnect(tcp::socket& socket, std::shared_ptr<Exchange> ex,
                                                std::shared_ptr<bool> gone, std::shared_ptr<bool> answered) {
    beast::error_code ec;
    co_await socket.async_wait(tcp::socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    // Once the answer is complete the session may already have destroyed the
    // socket (a wait that completed just before it was cancelled): touch
    // nothing then.
    if (ec || *answered) co_return;
    beast::error_code aec;
    if (socket.available(aec) == 0 || aec) {
      *gone = true;
      ex->cancel_token()->cancel();
      ex->wake();
    }
  }

  // Runs the handler and writes what it produces. Returns false if the
  // connection must close (client gone, write failed, stream cut).
  asio::awaitable<bool> answer(beast::tcp_stream& stream, const HttpRequest& request, unsigned version,
                               bool keep_alive) {
    asio::any_io_executor strand = co_await asio::this_coro::executor;
    auto waker = std::make_shared<Waker>(strand);
    auto ex = std::make_shared<Exchange>(waker);
    auto gone = std::make_shared<bool>(false);
    auto answered = std::make_shared<bool>(false);
    asio::co_spawn(strand, watch_disconnect(stream.socket(), ex, gone, answered), asio::detached);
    router.dispatch(request, ex);

    beast::error_code ec;
    bool done = false;
    bool streaming = false;
    while (!done && !ec) {
      std::deque<Exchange::Event> events = ex->take();
      if (events.empty()) {
        if (*gone) break;
        beast::error_code wait_ec;
        waker->timer.expires_at(std::chrono::steady_clock::time_point::max());
        co_await waker->timer.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
        continue;
      }
      for (auto& e : events) {
        if (ec) break;
        switch (e.kind) {
          case Exchange::Kind::kWhole:
            if (stopped.load()) keep_alive = false;
            co_await write(stream, std::move(e.response), version, keep_alive, ec);
            done = true;
            break;
          case Exchange::Kind::kStreamStart: {
            http::response<http::empty_body> head{static_cast<http::status>(e.response.status), version};
            head.set(http::field::server, "llmpool");
            head.set(http::field::content_type, e.response.content_type);
            head.set(http::field::cache_control, "no-cache");
            for (auto& [k, v] : e.response.headers) head.set(k, v);
            head.chunked(true);
            head.keep_alive(keep_alive);
            http::response_serializer<http::empty_body> sr{head};
            stream.expires_after(kWriteTimeout);
            co_await http::async_write_header(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
            streaming = true;
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
      }
    }
    *answered = true;
    beast::error_code ignored;
    stream.socket().cancel(ignored);  // ends the disconnect watcher
    if (!done || ec) {
      ex->cancel_token()->cancel();
      co_return false;
    }
    co_return keep_alive && !(streaming && stopped.load());
  }

  asio::awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    beast::error_code ec;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(static_cast<uint64_t>(config.max_body_bytes));
      parser.header_limit(64 * 1024);
      stream.expires_after(kIdleTimeout);
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::body_limit) {
        co_await write(stream,
                       error_response(Status::invalid_argument(
                           "the request body is larger than " + std::to_string(config.max_body_bytes) +
                               " bytes", "", "request_too_large")),
                       11, false, ec);
        break;
      }
      if (ec == http::error::end_of_stream || ec == beast::error::timeout) break;
      if (ec) {
        if (ec != asio::error::operation_aborted && ec != asio::error::connection_reset &&
            ec != asio::error::eof) {
          beast::error_code ignored;
          co_await write(stream, error_response(Status::invalid_argument("malformed HTTP request: " + ec.message())),
                         11, false, ignored);
        }
        break;
      }
      http::request<http::string_body> req = parser.release();
      HttpRequest request = to_request(req);
      stream.expires_never();
      in_flight.fetch_add(1);
      bool keep = co_await answer(stream, request, req.version(), req.keep_alive());
      in_flight.fetch_sub(1);
      if (!keep) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
};

HttpServer::HttpServer(config::ServerConfig config, const HttpRouter& router)
    : impl_(std::make_unique<Impl>(std::move(config), router)) {}

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
  impl_->work.emplace(impl_->ioc.get_executor());
  asio::co_spawn(impl_->ioc, impl_->listen(), asio::detached);
  for (int i = 0; i < impl_->config.io_threads; ++i) {
    impl_->threads.emplace_back([this] {
      try {
        impl_->ioc.run();
      } catch (const std::exception& e) {
        spdlog::error("I/O thread stopped by an exception: {}", e.what());
      }
    });
  }
  return Status::ok();
}

uint16_t HttpServer::port() const { return impl_->port; }
int64_t HttpServer::in_flight() const { return impl_->in_flight.load(); }

void HttpServer::stop() {
  if (impl_->stopped.exchange(true)) return;
  if (impl_->threads.empty()) return;
  asio::post(impl_->ioc, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(impl_->config.shutdown_grace_ms);
  while (impl_->in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (impl_->in_flight.load() > 0)
    spdlog::warn("shutting down with {} requests still in flight", impl_->in_flight.load());
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace llmpool::api
