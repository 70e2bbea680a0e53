#include "providers/registry.h"

namespace llmpool::providers {

Status model_not_found(const std::string& name) {
  return Status::not_found("The model '" + name + "' does not exist", "model", "model_not_found");
}

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

void ModelRegistry::acquire(const std::string& name, std::function<void(Result<ProviderPtr>)> done) {
  ProviderPtr p = find(name);
  if (!p) return done(model_not_found(name));
  done(std::move(p));
}

std::vector<ModelEntry> ModelRegistry::list() const {
  std::vector<ModelEntry> out;
  for (const auto& p : ordered_) out.push_back({p->info(), "ready", p->stats(), ""});
  return out;
}

}  // namespace llmpool::providers
