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

// Awaits the router's answer. The Responder may be called on any thread
// (an engine thread, typically); the coroutine resumes on its own executor.
template <typename Token>
auto async_dispatch(const HttpRouter& router, const HttpRequest& req, Token&& token) {
  return asio::async_initiate<Token, void(HttpResponse)>(
      [&router, &req](auto handler) {
        using H = decltype(handler);
        auto ex = asio::get_associated_executor(handler);
        auto slot = std::make_shared<std::optional<H>>(std::move(handler));
        auto once = std::make_shared<std::atomic<bool>>(false);
        router.dispatch(req, [slot, ex, once](HttpResponse res) {
          if (once->exchange(true)) return;
          asio::post(ex, [slot, res = std::move(res)]() mutable {
            H h = std::move(**slot);
            slot->reset();
            h(std::move(res));
          });
        });
      },
      token);
}

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
      asio::co_spawn(ioc, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> write(beast::tcp_stream& stream, HttpResponse res, unsigned version,
                              bool keep_alive, beast::error_code& ec) {
    auto out = to_beast(std::move(res), version, keep_alive);
    stream.expires_after(kWriteTimeout);
    co_await http::async_write(stream, out, asio::redirect_error(asio::use_awaitable, ec));
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
      bool keep_alive = req.keep_alive();
      unsigned version = req.version();
      HttpRequest request = to_request(req);
      stream.expires_never();
      in_flight.fetch_add(1);
      HttpResponse res = co_await async_dispatch(router, request, asio::use_awaitable);
      if (stopped.load()) keep_alive = false;
      co_await write(stream, std::move(res), version, keep_alive, ec);
      in_flight.fetch_sub(1);
      if (ec || !keep_alive) break;
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
