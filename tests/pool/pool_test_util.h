// Test doubles for the model pool: a fake provider whose requests the test
// finishes by hand, a provider maker that counts, fails or blocks on
// demand, a manual clock and temporary model files.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unistd.h>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "pool/model_pool.h"

namespace llmpool::pool::testing {

class ManualClock {
 public:
  TimePoint now() const { return TimePoint(std::chrono::nanoseconds(ns_.load())); }
  void advance(std::chrono::milliseconds d) { ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); }
  std::function<TimePoint()> fn() {
    return [this] { return now(); };
  }

 private:
  std::atomic<int64_t> ns_{int64_t{1000} * 1000000000};
};

class FakeProvider : public providers::Provider {
 public:
  FakeProvider(const config::ModelConfig& c, uint64_t memory, std::atomic<int>* alive)
      : info_{c.name, c.aliases, c.type, c.capabilities, c.context}, memory_(memory), alive_(alive) {
    ++*alive_;
  }
  ~FakeProvider() override { --*alive_; }
  const providers::ModelInfo& info() const override { return info_; }
  void generate(GenerateRequest, CancelTokenPtr, GenerateCallbacks cb) override {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(cb));
  }
  providers::ProviderStats stats() const override {
    providers::ProviderStats s;
    s.memory_bytes = memory_;
    return s;
  }
  // Finishes every request in flight.
  void finish_all() {
    std::vector<GenerateCallbacks> p;
    {
      std::lock_guard<std::mutex> lock(mu_);
      p.swap(pending_);
    }
    for (auto& cb : p) cb.on_done(Completion{});
  }
  size_t pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_.size();
  }

 private:
  providers::ModelInfo info_;
  uint64_t memory_;
  std::atomic<int>* alive_;
  mutable std::mutex mu_;
  std::vector<GenerateCallbacks> pending_;
};

// Makes FakeProviders. Memory is the model file's size (so the pool's
// estimate and the measured figure agree). Loads block while `hold()` is on.
class FakeMaker {
 public:
  Result<providers::ProviderPtr> make(const config::ModelConfig& c) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++calls_[c.name];
      cv_.wait(lock, [&] { return !held_; });
      if (failing_.count(c.name)) return Status::invalid_argument("cannot load " + c.name + ": bad file");
    }
    std::error_code ec;
    uint64_t size = c.is_remote() ? 0 : std::filesystem::file_size(c.path, ec);
    auto p = std::make_shared<FakeProvider>(c, size, &alive_);
    std::lock_guard<std::mutex> lock(mu_);
    last_[c.name] = p;
    return providers::ProviderPtr(p);
  }
  ModelPool::ProviderMaker fn() {
    return [this](const config::ModelConfig& c) { return make(c); };
  }
  int calls(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[name];
  }
  void fail(const std::string& name, bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    if (on) failing_.insert(name);
    else failing_.erase(name);
  }
  void hold() {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // The last provider made for `name` (the test may outlive it: weak).
  std::shared_ptr<FakeProvider> last(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return last_[name].lock();
  }
  int alive() const { return alive_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> calls_;
  std::set<std::string> failing_;
  std::map<std::string, std::weak_ptr<FakeProvider>> last_;
  bool held_ = false;
  std::atomic<int> alive_{0};
};

// A temporary folder with model files of chosen sizes.
class ModelFiles {
 public:
  ModelFiles() {
    dir_ = std::filesystem::temp_directory_path() /
           ("llmpool-pool-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(dir_);
  }
  ~ModelFiles() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string make(const std::string& name, uint64_t size) {
    auto p = dir_ / (name + ".gguf");
    { std::ofstream(p.string()) << ""; }
    std::filesystem::resize_file(p, size);
    return p.string();
  }
  std::string dir() const { return dir_.string(); }

 private:
  static std::atomic<int>& counter() {
    static std::atomic<int> c{0};
    return c;
  }
  std::filesystem::path dir_;
};

// Waits for an acquire()'s answer (which may come from the loader thread).
class Answer {
 public:
  std::function<void(Result<providers::ProviderPtr>)> callback() {
    return [this](Result<providers::ProviderPtr> r) {
      std::lock_guard<std::mutex> lock(mu_);
      result_.emplace(std::move(r));
      cv_.notify_all();
    };
  }
  bool ready() const {
    std::lock_guard<std::mutex> lock(mu_);
    return result_.has_value();
  }
  // The answer, waiting up to 10 s for it.
  Result<providers::ProviderPtr> get() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return result_.has_value(); }))
      return Status::internal("no answer within 10 s");
    Result<providers::ProviderPtr> r = std::move(*result_);
    result_.reset();
    return r;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Result<providers::ProviderPtr>> result_;
};

inline Result<providers::ProviderPtr> acquire_now(ModelPool& pool, const std::string& name) {
  Answer a;
  pool.acquire(name, a.callback());
  return a.get();
}

inline std::string state_of(const ModelPool& pool, const std::string& name) {
  for (const auto& e : pool.list())
    if (e.info.name == name) return e.state;
  return "absent";
}

}  // namespace llmpool::pool::testing
