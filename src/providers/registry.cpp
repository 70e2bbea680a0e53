#include "providers/registry.h"

namespace llmpool::providers {

Status ModelRegistry::add(ProviderPtr provider) {
  const ModelInfo& info = provider->info();
  std::vector<std::string> names{info.name};
  names.insert(names.end(), info.aliases.begin(), info.aliases.end());
  for (const auto& n : names)
    if (by_name_.count(n)) return Status::invalid_argument("model name '" + n + "' is used twice");
  for (const auto& n : names) by_name_[n] = provider;
  ordered_.push_back(std::move(provider));
  return Status::ok();
}

ProviderPtr ModelRegistry::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace llmpool::providers
