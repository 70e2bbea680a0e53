// ModelRegistry: a fixed set of ready providers, by name and alias — the
// simplest ModelDirectory (every model loaded up front, nothing evicted).
// Built before serving; lookups are thread-safe afterwards.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "providers/directory.h"

namespace llmpool::providers {

class ModelRegistry : public ModelDirectory {
 public:
  // Returns InvalidArgument if the name or an alias is already taken.
  Status add(ProviderPtr provider);
  // The provider named `name` (or aliased so), or nullptr.
  ProviderPtr find(const std::string& name) const;
  // Every provider, in the order added.
  const std::vector<ProviderPtr>& all() const { return ordered_; }

  void acquire(const std::string& name, std::function<void(Result<ProviderPtr>)> done) override;
  std::vector<ModelEntry> list() const override;

 private:
  std::map<std::string, ProviderPtr> by_name_;
  std::vector<ProviderPtr> ordered_;
};

// The NotFound status every directory returns for an unknown model.
Status model_not_found(const std::string& name);

}  // namespace llmpool::providers
