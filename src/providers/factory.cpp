#include "providers/factory.h"

#include "providers/local_provider.h"
#include "providers/ollama_provider.h"
#include "providers/openai_provider.h"
#include "providers/queue_provider.h"

namespace llmpool::providers {
namespace {

class LocalFactory : public ProviderFactory {
 public:
  std::string_view type() const override { return "local"; }
  Result<ProviderPtr> create(const config::ModelConfig& config) override { return LocalProvider::create(config); }
};

class OpenAiFactory : public ProviderFactory {
 public:
  std::string_view type() const override { return "openai"; }
  Result<ProviderPtr> create(const config::ModelConfig& config) override { return OpenAiProvider::create(config); }
};

class OllamaFactory : public ProviderFactory {
 public:
  std::string_view type() const override { return "ollama"; }
  Result<ProviderPtr> create(const config::ModelConfig& config) override { return OllamaProvider::create(config); }
};

class QueueFactory : public ProviderFactory {
 public:
  std::string_view type() const override { return "queue"; }
  Result<ProviderPtr> create(const config::ModelConfig& config) override { return QueueProvider::create(config); }
};

}  // namespace

ModelInfo model_info(const config::ModelConfig& config) {
  return ModelInfo{config.name, config.aliases, config.type, config.capabilities, config.context};
}

const std::vector<std::unique_ptr<ProviderFactory>>& provider_factories() {
  static const auto* factories = [] {
    auto* v = new std::vector<std::unique_ptr<ProviderFactory>>();
    v->push_back(std::make_unique<LocalFactory>());
    v->push_back(std::make_unique<OpenAiFactory>());
    v->push_back(std::make_unique<OllamaFactory>());
    v->push_back(std::make_unique<QueueFactory>());
    return v;
  }();
  return *factories;
}

Result<ProviderPtr> create_provider(const config::ModelConfig& config) {
  for (const auto& f : provider_factories())
    if (f->type() == config.type) return f->create(config);
  return Status::invalid_argument("unknown provider type '" + config.type + "'", "type");
}

}  // namespace llmpool::providers
