// ProviderFactory: one per provider type, keyed by the config's `type:`
// string (Envoy style), so adding a provider never grows a chain of ifs.
// The table is built once (static) and read-only afterwards: thread-safe.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "providers/provider.h"

namespace llmpool::providers {

class ProviderFactory {
 public:
  virtual ~ProviderFactory() = default;
  virtual std::string_view type() const = 0;  // the config's `type:` value
  // Creates (and for local models, loads) the provider. Blocks while loading.
  virtual Result<ProviderPtr> create(const config::ModelConfig& config) = 0;
};

// The ModelInfo a provider reports for `config` (name, aliases, type,
// capabilities, context).
ModelInfo model_info(const config::ModelConfig& config);

// Every built-in factory: local, and the remote types as they land.
const std::vector<std::unique_ptr<ProviderFactory>>& provider_factories();

// Creates the provider for `config` with the factory of its type.
// InvalidArgument for an unknown type.
Result<ProviderPtr> create_provider(const config::ModelConfig& config);

}  // namespace llmpool::providers
