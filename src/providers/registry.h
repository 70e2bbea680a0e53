// ModelRegistry: the models this server offers, by name and alias.
// Built once at start-up and then read-only, so concurrent lookups are safe.
// (The model pool with lazy loading and hot reload replaces it later.)
#pragma once

#include <map>
#include <string>
#include <vector>

#include "providers/provider.h"

namespace llmpool::providers {

class ModelRegistry {
 public:
  // Returns InvalidArgument if the name or an alias is already taken.
  Status add(ProviderPtr provider);
  // The provider named `name` (or aliased so), or nullptr.
  ProviderPtr find(const std::string& name) const;
  // Every provider, in the order added.
  const std::vector<ProviderPtr>& all() const { return ordered_; }

 private:
  std::map<std::string, ProviderPtr> by_name_;
  std::vector<ProviderPtr> ordered_;
};

}  // namespace llmpool::providers
