// Helpers for the remote provider tests: a collector for generate()'s
// callbacks, the fake upstream built on llmpool's own HttpServer (shared
// with llmpool-fake-upstream, bench/fake_server.h), and a raw TCP server for
// answers no well-behaved HTTP server would give.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/chat.h"
#include "config/config.h"
#include "fake_server.h"

namespace llmpool::providers::testing {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Collects the deltas and the one on_done of a generate() call.
class Collector {
 public:
  GenerateCallbacks callbacks() {
    GenerateCallbacks cb;
    cb.on_delta = [this](Delta d) {
      std::lock_guard<std::mutex> lock(mu_);
      deltas_.push_back(std::move(d));
      cv_.notify_all();
    };
    cb.on_done = [this](Result<Completion> r) {
      std::lock_guard<std::mutex> lock(mu_);
      if (++done_calls_ == 1) result_ = std::make_unique<Result<Completion>>(std::move(r));
      cv_.notify_all();
    };
    return cb;
  }
  // The callbacks of a caller that takes no deltas (a client that does not stream).
  GenerateCallbacks callbacks_without_deltas() {
    GenerateCallbacks cb = callbacks();
    cb.on_delta = nullptr;
    return cb;
  }

  // The result, or Internal if on_done did not come within `timeout`.
  Result<Completion> wait(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return result_ != nullptr; }))
      return Status::internal("on_done was not called in time");
    return *result_;
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return result_ != nullptr;
  }
  bool wait_for_deltas(size_t n, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return deltas_.size() >= n || result_ != nullptr; }) &&
           deltas_.size() >= n;
  }
  std::vector<Delta> deltas() {
    std::lock_guard<std::mutex> lock(mu_);
    return deltas_;
  }
  std::string text(int32_t index = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string s;
    for (const auto& d : deltas_)
      if (d.index == index) s += d.text;
    return s;
  }
  int done_calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Delta> deltas_;
  std::unique_ptr<Result<Completion>> result_;
  int done_calls_ = 0;
};

using fake::chat_chunk;
using fake::sse;

// The shared fake upstream (bench/fake_server.h): start() fails the test
// when the server cannot bind.
class FakeUpstream : public fake::FakeServer {
 public:
  void start() {
    Status st = FakeServer::start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
};

// A TCP server on loopback that reads one request per connection, writes
// a scripted answer byte for byte and closes the connection.
class RawServer {
 public:
  explicit RawServer(std::string answer) : answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~RawServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::string url(const std::string& path = "") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  int connections() const { return connections_.load(); }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      connections_++;
      read_request(c);
      size_t off = 0;
      while (off < answer_.size()) {
        ssize_t n = ::send(c, answer_.data() + off, answer_.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::close(c);
    }
  }
  // Reads the head and a Content-Length body (2 s at most).
  static void read_request(int c) {
    std::string in;
    auto deadline = Clock::now() + 2s;
    size_t need = std::string::npos;
    while (Clock::now() < deadline) {
      size_t head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos && need == std::string::npos) {
        need = head_end + 4;
        std::string lower = in.substr(0, head_end);
        for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        size_t cl = lower.find("content-length:");
        if (cl != std::string::npos) need += std::stoul(lower.substr(cl + 15));
      }
      if (need != std::string::npos && in.size() >= need) return;
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
  }

  std::string answer_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

// A loopback port with nothing listening on it.
inline uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline config::ModelConfig remote_config(const std::string& type, const std::string& base_url) {
  config::ModelConfig c;
  c.name = "remote";
  c.type = type;
  c.base_url = base_url;
  c.upstream_model = "upstream-name";
  c.connect_timeout_ms = 2000;
  c.read_timeout_ms = 5000;
  c.context = 2048;
  return c;
}

inline ChatMessage message(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

inline GenerateRequest chat_request(const std::string& text, int32_t max_tokens = 8) {
  GenerateRequest r;
  r.model = "remote";
  r.messages = {message("user", text)};
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  return r;
}

}  // namespace llmpool::providers::testing
