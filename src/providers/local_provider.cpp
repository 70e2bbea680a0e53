#include "providers/local_provider.h"

namespace llmpool::providers {

Result<ProviderPtr> LocalProvider::create(const config::ModelConfig& config) {
  engine::LocalModelSpec spec;
  spec.name = config.name;
  spec.path = config.path;
  spec.context = config.context;
  spec.threads = config.threads;
  auto model = engine::LocalModel::load(spec);
  if (!model) return model.status();
  ModelInfo info{config.name, config.aliases, config.type, config.capabilities,
                 (*model)->context_size()};
  return ProviderPtr(new LocalProvider(std::move(info), std::move(model).value()));
}

void LocalProvider::chat(ChatRequest request, ChatCallback done) {
  engine::GenerationRequest g{std::move(request.messages), std::move(request.sampling)};
  model_->submit(std::move(g), std::move(done));
}

}  // namespace llmpool::providers
