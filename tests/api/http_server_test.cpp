// HttpServer on loopback, driven with raw sockets: limits, timeouts,
// Expect: 100-continue, pipelining, half-closed and vanished clients, the
// connection cap, accept errors, and the drain. No timing assertions: the
// bounds below are generous timeouts that only stop a broken server from
// hanging the test.
#include "api/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace llmpool::api {
namespace {

using namespace std::chrono_literals;
constexpr auto kPatience = 10s;  // how long a test waits for anything before failing

struct Response {
  int status = 0;  // 0: the connection ended (or timed out) before a response
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A blocking loopback client whose reads give up after kPatience.
class Client {
 public:
  explicit Client(uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    timeval tv{static_cast<time_t>(std::chrono::seconds(kPatience).count()), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with a reset instead of a FIN.
  void reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close();
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // One response (an interim 1xx counts as one), or status 0 if the
  // connection ended first.
  Response read_response() {
    Response r;
    size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return r;
    std::string head = buf_.substr(0, head_end);
    buf_.erase(0, head_end + 4);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12) return r;
    r.status = std::stoi(status_line.substr(9, 3));
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string line = head.substr(pos, e - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        r.headers[lower(line.substr(0, colon))] = value;
      }
      pos = e + 2;
    }
    if (r.status < 200) return r;
    if (lower(r.header("transfer-encoding")) == "chunked") {
      for (;;) {
        size_t e;
        while ((e = buf_.find("\r\n")) == std::string::npos)
          if (!fill()) return Response{};
        size_t size = std::stoul(buf_.substr(0, e), nullptr, 16);
        while (buf_.size() < e + 2 + size + 2)
          if (!fill()) return Response{};
        r.body += buf_.substr(e + 2, size);
        buf_.erase(0, e + 2 + size + 2);
        if (size == 0) return r;
      }
    }
    size_t length = r.headers.count("content-length") ? std::stoul(r.header("content-length")) : 0;
    while (buf_.size() < length)
      if (!fill()) return Response{};
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return r;
  }

  // True when the server ends the connection (FIN or reset) before
  // kPatience, dropping whatever else arrives.
  bool wait_closed() {
    char c[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, c, sizeof(c), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

  // True when the server has ended the connection by now (no wait).
  bool closed_now() {
    char c[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, c, sizeof(c), MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
      received_ += static_cast<size_t>(n);
    }
  }
  size_t received() const { return received_ + buf_.size(); }

 private:
  bool fill() {
    char c[4096];
    ssize_t n = ::recv(fd_, c, sizeof(c), 0);
    if (n <= 0) return false;
    buf_.append(c, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  bool connected_ = false;
  std::string buf_;
  size_t received_ = 0;
};

// Polls `done` until it holds or kPatience passes.
template <typename F>
bool eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Sends `piece` every 50 ms until the server cuts the connection (true) or
// kPatience passes (false).
bool cut_while_trickling(Client& c, const std::string& piece) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    if (c.closed_now() || !c.send(piece)) return true;
  }
  return false;
}

std::string get(const std::string& path, const std::string& extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: t\r\n" + extra + "\r\n";
}
std::string post(const std::string& path, const std::string& body, const std::string& extra = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra +
         "\r\n" + body;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_.add("GET", "/hello", [](const HttpRequest&, ResponseWriterPtr w) {
      w->respond(HttpResponse{200, "text/plain", "hello", {}});
    });
    router_.add("POST", "/echo", [](const HttpRequest& req, ResponseWriterPtr w) {
      w->respond(HttpResponse{200, "text/plain", req.body, {}});
    });
    // Parked until the test answers it.
    auto park = [this](const HttpRequest&, ResponseWriterPtr w) {
      std::lock_guard lock(mu_);
      parked_.push_back(std::move(w));
      cv_.notify_all();
    };
    router_.add("GET", "/park", park);
    router_.add("POST", "/park", park);
    // Answered a little later from another thread, as a model would.
    router_.add("POST", "/later", [this](const HttpRequest& req, ResponseWriterPtr w) {
      std::lock_guard lock(mu_);
      helpers_.emplace_back([w, body = req.body] {
        std::this_thread::sleep_for(20ms);
        w->start_stream(200, "text/event-stream");
        w->write("data: " + body + "\n\n");
        w->end();
      });
    });
  }
  void TearDown() override {
    if (server_) server_->stop();
    for (auto& t : helpers_) t.join();
  }

  void start(config::ServerConfig config = {}) {
    config.host = "127.0.0.1";
    config.port = 0;
    server_ = std::make_unique<HttpServer>(config, router_);
    ASSERT_TRUE(server_->start().ok());
  }
  uint16_t port() const { return server_->port(); }

  // The n-th parked request (1-based), once it has arrived.
  ResponseWriterPtr parked(size_t n) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, kPatience, [&] { return parked_.size() >= n; })) return nullptr;
    return parked_[n - 1];
  }

  // Sends GET /park on `c` and starts a stream as its answer. The count is
  // read before sending: a server that parks the request before the count
  // was read would otherwise leave this waiting for one more (a flake).
  ResponseWriterPtr open_stream(Client& c) {
    const size_t before = parked_count();
    if (!c.send(get("/park"))) return nullptr;
    auto w = parked(before + 1);
    if (w) w->start_stream(200, "text/event-stream");
    return w;
  }
  size_t parked_count() {
    std::lock_guard lock(mu_);
    return parked_.size();
  }

  HttpRouter router_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ResponseWriterPtr> parked_;
  std::vector<std::thread> helpers_;
};

TEST_F(HttpServerTest, AnswersPipelinedRequestsInOrder) {
  start();
  Client c(port());
  ASSERT_TRUE(c.send(get("/park") + post("/echo", "second") + get("/hello")));
  auto first = parked(1);
  ASSERT_TRUE(first);
  first->respond(HttpResponse{200, "text/plain", "first", {}});
  Response r1 = c.read_response(), r2 = c.read_response(), r3 = c.read_response();
  EXPECT_EQ(r1.status, 200);
  EXPECT_EQ(r1.body, "first");
  EXPECT_EQ(r2.body, "second");
  EXPECT_EQ(r3.body, "hello");
  // The pipelined bytes waiting in the socket did not pass for a disconnect.
  EXPECT_FALSE(first->cancel_token()->cancelled());
}

// The response head is written by the server itself: what a handler sets
// cannot split the response or override its framing.
TEST_F(HttpServerTest, HandlerHeadersCannotSplitTheResponseOrChangeItsFraming) {
  const std::map<std::string, std::string> hostile = {{"x-reason", "a\r\nx-evil: 1\r\n\r\nHTTP/1.1 200 OK"},
                                                      {"Content-Length", "999"},
                                                      {"Transfer-Encoding", "chunked"},
                                                      {"Connection", "close"},
                                                      {"bad name", "v"},
                                                      {"X-Ok", "yes\tand tab"}};
  router_.add("GET", "/hostile", [&](const HttpRequest&, ResponseWriterPtr w) {
    w->respond(HttpResponse{200, "text/plain", "body", hostile});
  });
  router_.add("GET", "/hostile-stream", [&](const HttpRequest&, ResponseWriterPtr w) {
    w->start_stream(200, "text/event-stream", hostile);
    w->write("data: x\n\n");
    w->end();
  });
  router_.add("GET", "/empty", [](const HttpRequest&, ResponseWriterPtr w) {
    w->respond(HttpResponse{204, "text/plain", "", {}});
  });
  start();
  Client c(port());
  for (const char* path : {"/hostile", "/hostile-stream", "/empty", "/hostile"}) {
    ASSERT_TRUE(c.send(get(path)));
    Response r = c.read_response();
    const bool empty = std::string_view(path) == "/empty";
    EXPECT_EQ(r.status, empty ? 204 : 200) << path;
    EXPECT_EQ(r.headers.count("x-evil"), 0u) << path;
    EXPECT_EQ(r.headers.count("bad name"), 0u) << path;
    EXPECT_EQ(r.headers.count("connection"), 0u) << path;  // HTTP/1.1 keep-alive: none sent
    EXPECT_EQ(r.header("server"), "llmpool") << path;
    if (empty) {
      EXPECT_EQ(r.headers.count("content-length"), 0u);
      EXPECT_EQ(r.body, "");
      continue;
    }
    EXPECT_EQ(r.header("x-ok"), "yes\tand tab") << path;
    EXPECT_EQ(r.header("x-reason"), "a  x-evil: 1    HTTP/1.1 200 OK") << path;
    if (std::string_view(path) == "/hostile") {
      EXPECT_EQ(r.header("content-length"), "4");
      EXPECT_EQ(r.header("content-type"), "text/plain");
      EXPECT_EQ(r.body, "body");
    } else {
      EXPECT_EQ(r.header("transfer-encoding"), "chunked");
      EXPECT_EQ(r.header("cache-control"), "no-cache");
      EXPECT_EQ(r.body, "data: x\n\n");
    }
  }
  EXPECT_EQ(server_->stats().connections, 1);

  Client old(port());  // HTTP/1.0 keeps the connection only when asked, and says so
  ASSERT_TRUE(old.send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  Response r = old.read_response();
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(lower(r.header("connection")), "keep-alive");
  Client closing(port());
  ASSERT_TRUE(closing.send(get("/hello", "Connection: close\r\n")));
  r = closing.read_response();
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(lower(r.header("connection")), "close");
}

TEST_F(HttpServerTest, KeepsAConnectionAliveAcrossRequests) {
  start();
  Client c(port());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send(post("/echo", "n" + std::to_string(i))));
    EXPECT_EQ(c.read_response().body, "n" + std::to_string(i));
  }
  EXPECT_EQ(server_->stats().connections, 1);
}

// Without TCP_NODELAY, a response written in two segments (head, body)
// waits for the client's delayed ACK: ~40 ms per request on a keep-alive
// connection (the gateway benchmark's llmpool -> fake upstream hop).
TEST_F(HttpServerTest, AcceptedConnectionsSendWithoutNagleDelay) {
  start();
  Client c(port());
  ASSERT_TRUE(c.send(post("/echo", "x")));
  ASSERT_EQ(c.read_response().status, 200);
  sockaddr_in mine{}, peer{};
  socklen_t len = sizeof mine;
  ASSERT_EQ(::getsockname(c.fd(), reinterpret_cast<sockaddr*>(&mine), &len), 0);
  len = sizeof peer;
  ASSERT_EQ(::getpeername(c.fd(), reinterpret_cast<sockaddr*>(&peer), &len), 0);
  int found = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(entry.path().filename().c_str());
    sockaddr_in local{}, remote{};
    socklen_t l1 = sizeof local, l2 = sizeof remote;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &l1) != 0 || local.sin_family != AF_INET) continue;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &l2) != 0) continue;
    if (local.sin_port != peer.sin_port || remote.sin_port != mine.sin_port) continue;
    int nodelay = 0;
    socklen_t ol = sizeof nodelay;
    ASSERT_EQ(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &ol), 0);
    EXPECT_NE(nodelay, 0) << "the server's end of the connection has Nagle on";
    ++found;
  }
  EXPECT_EQ(found, 1);
}

TEST_F(HttpServerTest, HalfClosedClientStillGetsItsAnswer) {
  start();
  Client c(port());
  ASSERT_TRUE(c.send(get("/park")));
  auto w = parked(1);
  ASSERT_TRUE(w);
  c.shutdown_write();
  // The server saw the FIN (it sends an interim 100 to tell a half-close
  // from a close) and goes on with the request.
  Response interim = c.read_response();
  EXPECT_EQ(interim.status, 100);
  w->respond(HttpResponse{200, "text/plain", "still here", {}});
  Response r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "still here");
  EXPECT_FALSE(w->cancel_token()->cancelled());
  EXPECT_TRUE(c.wait_closed());
}

TEST_F(HttpServerTest, ClientThatClosesOrResetsCancelsItsRequest) {
  start();
  for (bool reset : {false, true}) {
    Client c(port());
    ASSERT_TRUE(c.send(get("/park")));
    auto w = parked(reset ? 2 : 1);
    ASSERT_TRUE(w);
    if (reset)
      c.reset();
    else
      c.close();
    EXPECT_TRUE(eventually([&] { return w->cancel_token()->cancelled(); })) << (reset ? "reset" : "close");
  }
}

// A FIN in the middle of an event stream that has nothing to send for now:
// the server probes with an SSE comment and the closed client's reset says
// it is gone.
TEST_F(HttpServerTest, ClientThatClosesDuringAPausedStreamCancelsIt) {
  start();
  Client c(port());
  auto w = open_stream(c);
  ASSERT_TRUE(w);
  w->write("data: 1\n\n");
  c.close();
  EXPECT_TRUE(eventually([&] { return w->cancel_token()->cancelled(); }));
}

// The connection closed without a response under 8 streaming clients: the
// disconnect watcher took any readiness report on a socket with nothing to
// read for a vanished client. Such reports come when epoll reports the bytes
// of a request that the session read meanwhile: a body sent in its own
// segment after the head (Python's http.client does that), or a connection
// whose request was waiting in the backlog. Many fresh connections each
// hit that window at some point; every one must be answered.
TEST_F(HttpServerTest, AnswersEveryRequestWhoseBodyCameInALaterSegment) {
  config::ServerConfig config;
  config.io_threads = 4;  // more threads, more chances for one to report what another has read
  start(config);
  // Busy threads make the I/O threads lose their cores at random moments,
  // which widens the window between a report and its handling.
  std::atomic<bool> busy{true};
  std::vector<std::thread> burners;
  for (int i = 0; i < 2; ++i)
    burners.emplace_back([&] {
      while (busy.load(std::memory_order_relaxed)) {
      }
    });
  std::atomic<int> unanswered{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        Client c(port());
        std::string body = "{\"client\":" + std::to_string(t) + "}";
        std::string head = "POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n";
        if (!c.send(head) || !c.send(body)) {
          ++unanswered;
          continue;
        }
        Response r = c.read_response();
        if (r.status != 200 || r.body != "data: " + body + "\n\n") ++unanswered;
      }
    });
  }
  for (auto& t : clients) t.join();
  busy.store(false);
  for (auto& t : burners) t.join();
  EXPECT_EQ(unanswered.load(), 0);
  EXPECT_EQ(server_->stats().closed_without_response, 0);
}

TEST_F(HttpServerTest, CutsAClientThatTricklesItsHeaders) {
  config::ServerConfig config;
  config.header_timeout_ms = 300;
  start(config);
  Client c(port());
  ASSERT_TRUE(c.send("GET /hello HTTP/1.1\r\n"));
  EXPECT_TRUE(cut_while_trickling(c, "X-Slow: y\r\n"));
  EXPECT_EQ(c.received(), 0u);  // cut, not answered
  EXPECT_TRUE(eventually([&] { return server_->stats().closed_without_response == 1; }));
}

TEST_F(HttpServerTest, ClosesAConnectionThatSendsNothing) {
  config::ServerConfig config;
  config.header_timeout_ms = 200;
  start(config);
  Client c(port());
  EXPECT_TRUE(c.wait_closed());
}

TEST_F(HttpServerTest, ClosesAKeepAliveConnectionAfterItsIdleTimeout) {
  config::ServerConfig config;
  config.idle_timeout_ms = 200;
  start(config);
  Client c(port());
  ASSERT_TRUE(c.send(get("/hello")));
  EXPECT_EQ(c.read_response().status, 200);
  EXPECT_TRUE(c.wait_closed());
}

TEST_F(HttpServerTest, CutsABodySentTooSlowly) {
  config::ServerConfig config;
  config.body_timeout_ms = 300;
  config.body_min_rate = 100;  // bytes/s; the client sends 20
  start(config);
  Client c(port());
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"));
  EXPECT_TRUE(cut_while_trickling(c, "x"));
  EXPECT_EQ(c.received(), 0u);
}

// 431 and 413 as OpenAI error JSON, then a close; a body over the limit
// is refused before it is read when Content-Length (or Expect) says so.
TEST_F(HttpServerTest, AnswersRequestsOverTheLimitsWith431Or413) {
  config::ServerConfig config;
  config.max_header_bytes = 2048;
  config.max_body_bytes = 1024;
  start(config);
  const std::string chunk(800, 'b');
  struct Case {
    const char* what;
    std::string request;
    int status;
    const char* code;
  };
  const Case cases[] = {
      {"headers", get("/hello", "X-Big: " + std::string(4000, 'a') + "\r\n"), 431, "request_header_too_large"},
      {"content-length", post("/echo", std::string(5000, 'a')), 413, "request_too_large"},
      {"chunked", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n" + chunk +
                      "\r\n320\r\n" + chunk + "\r\n0\r\n\r\n",
       413, "request_too_large"},
      {"expect", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", 413,
       "request_too_large"},  // answered at once: the body is never sent
  };
  for (const Case& k : cases) {
    Client c(port());
    ASSERT_TRUE(c.send(k.request)) << k.what;
    Response r = c.read_response();
    EXPECT_EQ(r.status, k.status) << k.what;
    EXPECT_NE(r.body.find("\"code\":\"" + std::string(k.code) + "\""), std::string::npos) << k.what << ": " << r.body;
    EXPECT_NE(r.body.find("\"type\":\"invalid_request_error\""), std::string::npos) << k.what << ": " << r.body;
    EXPECT_TRUE(c.wait_closed()) << k.what;
  }
}

TEST_F(HttpServerTest, SendsContinueBeforeReadingAnExpectedBody) {
  start();
  Client c(port());
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  Response interim = c.read_response();
  EXPECT_EQ(interim.status, 100);
  ASSERT_TRUE(c.send("hello"));
  Response r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
}

TEST_F(HttpServerTest, RefusesConnectionsOverTheCapWith503) {
  config::ServerConfig config;
  config.max_connections = 2;
  start(config);
  Client a(port()), b(port());
  ASSERT_TRUE(eventually([&] { return server_->stats().connections == 2; }));
  Client c(port());
  ASSERT_TRUE(c.send(get("/hello")));
  Response r = c.read_response();
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_NE(r.body.find("\"code\":\"too_many_connections\""), std::string::npos) << r.body;
  EXPECT_TRUE(c.wait_closed());
  EXPECT_EQ(server_->stats().connections_refused, 1);
  // Room again once one closes.
  a.close();
  ASSERT_TRUE(eventually([&] { return server_->stats().connections == 1; }));
  Client d(port());
  ASSERT_TRUE(d.send(get("/hello")));
  EXPECT_EQ(d.read_response().status, 200);
}

// EMFILE: the listener stays readable while accept() fails; the server must
// back off instead of spinning, and accept again once descriptors are free.
TEST_F(HttpServerTest, BacksOffAcceptErrorsAndRecovers) {
#ifdef __SANITIZE_ADDRESS__
  // The ASan build carries UBSan, whose vptr check opens a pipe the first
  // time a call meets a type: with every descriptor taken it cannot, and it
  // reports the server's next virtual call as a bad object. The normal and
  // TSan builds run this test.
  GTEST_SKIP() << "needs free file descriptors under UBSan";
#endif
  start();
  int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  int highest = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(highest + 1);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> filler;  // every descriptor below the limit in use
  for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) filler.push_back(fd);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);  // done by the kernel
  const bool failed = eventually([&] { return server_->stats().accept_errors >= 3; });
  std::this_thread::sleep_for(300ms);
  const int64_t errors = server_->stats().accept_errors;

  for (int fd : filler) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_TRUE(failed);
  // A backoff from 10 ms doubling allows a handful in this time; a spinning
  // loop makes hundreds of thousands.
  EXPECT_LT(errors, 50);

  std::string req = get("/hello", "Connection: close\r\n");
  ASSERT_EQ(::send(client, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  timeval tv{10, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[256];
  ssize_t n = ::recv(client, buf, sizeof(buf), 0);
  ::close(client);
  ASSERT_GT(n, 12);
  EXPECT_EQ(std::string(buf, 12), "HTTP/1.1 200");
}

TEST_F(HttpServerTest, DrainFinishesStreamsInFlightAndRefusesNewRequests) {
  config::ServerConfig config;
  config.shutdown_grace_ms = 30000;
  start(config);
  Client streaming(port());
  auto w = open_stream(streaming);
  ASSERT_TRUE(w);
  w->write("data: 1\n\n");
  Client idle(port());
  ASSERT_TRUE(idle.send(get("/hello")));
  ASSERT_EQ(idle.read_response().status, 200);

  auto stopped = std::async(std::launch::async, [&] { return server_->stop(); });
  // The listener closes...
  EXPECT_TRUE(eventually([&] { return !Client(port()).connected(); }));
  // ...a new request on a connection already open gets 503 and a close...
  ASSERT_TRUE(idle.send(get("/hello")));
  Response refused = idle.read_response();
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.header("retry-after"), "1");
  EXPECT_EQ(lower(refused.header("connection")), "close");
  EXPECT_NE(refused.body.find("shutting_down"), std::string::npos) << refused.body;
  EXPECT_TRUE(idle.wait_closed());
  // ...and the stream in flight goes on to its end, which stop() waits for.
  EXPECT_EQ(stopped.wait_for(50ms), std::future_status::timeout);
  w->write("data: 2\n\n");
  w->end();
  Response r = streaming.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "data: 1\n\ndata: 2\n\n");
  EXPECT_TRUE(stopped.get());
  EXPECT_FALSE(w->cancel_token()->cancelled());
}

TEST_F(HttpServerTest, StopCutsWhatIsStillRunningAfterTheGrace) {
  config::ServerConfig config;
  config.shutdown_grace_ms = 200;
  start(config);
  Client c(port());
  auto w = open_stream(c);
  ASSERT_TRUE(w);
  EXPECT_FALSE(server_->stop());
  EXPECT_TRUE(c.wait_closed());
  EXPECT_TRUE(w->cancel_token()->cancelled());
}

// The watcher's decision on real sockets: a readiness report proves nothing
// until the socket's state says what it is.
class PeerStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::listen(listener_, 4), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    client_ = std::make_unique<Client>(ntohs(addr.sin_port));
    server_fd_ = ::accept(listener_, nullptr, nullptr);
    ASSERT_GE(server_fd_, 0);
  }
  void TearDown() override {
    ::close(server_fd_);
    ::close(listener_);
  }
  // Waits until the server side has something to report (or kPatience).
  void wait_readable() {
    pollfd p{server_fd_, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kPatience).count()));
  }
  int listener_ = -1;
  int server_fd_ = -1;
  std::unique_ptr<Client> client_;
};

TEST_F(PeerStateTest, AConnectedPeerWithNothingToReadIsConnected) {
  EXPECT_EQ(detail::peer_state(server_fd_), detail::PeerState::kConnected);
}

TEST_F(PeerStateTest, WaitingBytesAreData) {
  ASSERT_TRUE(client_->send("GET"));
  wait_readable();
  EXPECT_EQ(detail::peer_state(server_fd_), detail::PeerState::kData);
}

TEST_F(PeerStateTest, AFinIsHalfClosed) {
  client_->shutdown_write();
  wait_readable();
  EXPECT_EQ(detail::peer_state(server_fd_), detail::PeerState::kHalfClosed);
}

TEST_F(PeerStateTest, AResetIsGone) {
  client_->reset();
  wait_readable();
  EXPECT_EQ(detail::peer_state(server_fd_), detail::PeerState::kGone);
}

TEST_F(PeerStateTest, AResetAfterAFinIsGone) {
  client_->shutdown_write();
  wait_readable();
  client_->reset();
  EXPECT_TRUE(eventually([&] { return detail::peer_state(server_fd_) == detail::PeerState::kGone; }));
}

}  // namespace
}  // namespace llmpool::api
