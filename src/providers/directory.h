// ModelDirectory: how the API and the router find models. It resolves a
// name or alias to a ready Provider, loading the model first if the
// implementation loads lazily (the model pool), and lists every model with
// its state. Implementations are thread-safe.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "providers/provider.h"

namespace llmpool::providers {

struct ModelEntry {
  ModelInfo info;
  std::string state = "ready";  // unloaded, loading, ready, failed
  ProviderStats stats;          // zero when not loaded
  std::string error;            // why it failed, when state is "failed"
};

class ModelDirectory {
 public:
  virtual ~ModelDirectory() = default;

  // Resolves `name` to a ready provider and calls `done` exactly once,
  // possibly on another thread and possibly before returning. Errors:
  // NotFound (code "model_not_found", param "model") for an unknown name;
  // Unavailable when the model cannot be loaded; DeadlineExceeded when it
  // did not load in time. The provider stays usable while the caller holds
  // the pointer; a pool never evicts a model with requests in flight.
  virtual void acquire(const std::string& name, std::function<void(Result<ProviderPtr>)> done) = 0;

  // Every configured model, in configuration order.
  virtual std::vector<ModelEntry> list() const = 0;
};

}  // namespace llmpool::providers
