// FakeDirectory: a providers::ModelDirectory over scripted FakeProviders
// (tests/ensemble/fake_provider.h) for router-service and API tests. The
// listed ModelInfo (name, capabilities, context) comes from the test's
// config::ModelConfig, as the pool's does; acquire() answers at once.
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "ensemble/fake_provider.h"
#include "providers/directory.h"
#include "providers/factory.h"

namespace llmpool::router::testing {

using ensemble::testing::FakeProvider;
using ensemble::testing::Script;

class FakeDirectory : public providers::ModelDirectory {
 public:
  explicit FakeDirectory(qos::Timer& timer) : timer_(timer) {}

  // Adds (or replaces) a model answering with `scripts`.
  std::shared_ptr<FakeProvider> add(const config::ModelConfig& m, std::vector<Script> scripts) {
    std::lock_guard lock(mu_);
    auto p = std::make_shared<FakeProvider>(m.name, timer_, std::move(scripts));
    models_[m.name] = {providers::model_info(m), p};
    order_.push_back(m.name);
    return p;
  }

  void acquire(const std::string& name, std::function<void(Result<providers::ProviderPtr>)> done) override {
    std::shared_ptr<FakeProvider> p;
    {
      std::lock_guard lock(mu_);
      auto it = models_.find(name);
      if (it != models_.end()) p = it->second.provider;
      ++acquired_[name];
    }
    if (!p) return done(Status::not_found("model '" + name + "' not found", "model", "model_not_found"));
    done(providers::ProviderPtr(p));
  }

  std::vector<providers::ModelEntry> list() const override {
    std::lock_guard lock(mu_);
    std::vector<providers::ModelEntry> out;
    for (const auto& name : order_) {
      providers::ModelEntry e;
      e.info = models_.at(name).info;
      out.push_back(std::move(e));
    }
    return out;
  }

  int acquired(const std::string& name) const {
    std::lock_guard lock(mu_);
    auto it = acquired_.find(name);
    return it == acquired_.end() ? 0 : it->second;
  }

 private:
  struct Model {
    providers::ModelInfo info;
    std::shared_ptr<FakeProvider> provider;
  };
  qos::Timer& timer_;
  mutable std::mutex mu_;
  std::map<std::string, Model> models_;
  std::vector<std::string> order_;
  std::map<std::string, int> acquired_;
};

// A model config with a name, capabilities and (optionally) thinking.
inline config::ModelConfig model(std::string name, std::vector<std::string> caps, bool thinking = false) {
  config::ModelConfig m;
  m.name = std::move(name);
  m.path = "/" + m.name + ".gguf";
  m.capabilities = std::move(caps);
  m.context = 4096;
  m.thinking.supported = thinking;
  return m;
}

}  // namespace llmpool::router::testing
