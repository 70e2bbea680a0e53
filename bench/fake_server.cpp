#include "fake_server.h"

#include "config/config.h"

namespace llmpool::fake {

using Clock = std::chrono::steady_clock;

std::string sse(const nlohmann::json& j) { return "data: " + j.dump() + "\n\n"; }

nlohmann::json chat_chunk(int index, const std::string& text, const char* finish) {
  nlohmann::json choice = {{"index", index}, {"delta", {{"content", text}}},
                           {"finish_reason", finish ? nlohmann::json(finish) : nlohmann::json()}};
  return {{"object", "chat.completion.chunk"}, {"choices", nlohmann::json::array({choice})}};
}

Status FakeServer::start(const std::string& host, uint16_t port, int io_threads) {
  config::ServerConfig c;
  c.host = host;
  c.port = port;
  c.io_threads = io_threads;
  c.shutdown_grace_ms = 500;
  host_ = host;
  server_ = std::make_unique<api::HttpServer>(c, router_);
  return server_->start();
}

void FakeServer::stop() {
  release();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  if (server_) server_->stop();
}

std::string FakeServer::url(const std::string& path) const {
  return "http://" + host_ + ":" + std::to_string(port()) + path;
}

void FakeServer::spawn(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  threads_.emplace_back(std::move(fn));
}

bool FakeServer::hold(const CancelTokenPtr& cancel) {
  std::unique_lock<std::mutex> lock(mu_);
  holding_++;
  cv_.notify_all();
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!released_ && !(cancel && cancel->cancelled()) && Clock::now() < deadline)
    cv_.wait_for(lock, std::chrono::milliseconds(10));
  holding_--;
  if (cancel && cancel->cancelled()) client_gone_++;
  cv_.notify_all();
  return released_;
}

void FakeServer::release() {
  std::lock_guard<std::mutex> lock(mu_);
  released_ = true;
  cv_.notify_all();
}

bool FakeServer::wait_holding(int n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return holding_ >= n; });
}

bool FakeServer::wait_client_gone(int n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return client_gone_ >= n; });
}

void FakeServer::record(const api::HttpRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  last_body_ = req.body;
  last_headers_ = req.headers;
  requests_++;
}

nlohmann::json FakeServer::last_body() {
  std::lock_guard<std::mutex> lock(mu_);
  return nlohmann::json::parse(last_body_, nullptr, false);
}

std::string FakeServer::last_header(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = last_headers_.find(name);
  return it == last_headers_.end() ? std::string() : it->second;
}

int FakeServer::requests() {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

}  // namespace llmpool::fake
