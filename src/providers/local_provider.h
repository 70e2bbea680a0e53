// LocalProvider: a Provider backed by an in-process engine::LocalModel.
// Thread-safe; owns its model (unloaded when the provider is destroyed).
#pragma once

#include <memory>

#include "config/config.h"
#include "engine/local_model.h"
#include "providers/provider.h"

namespace llmpool::providers {

class LocalProvider : public Provider {
 public:
  // Loads the model now. NotFound / InvalidArgument as engine::LocalModel::load.
  static Result<ProviderPtr> create(const config::ModelConfig& config);

  const ModelInfo& info() const override { return info_; }
  void chat(ChatRequest request, ChatCallback done) override;

 private:
  LocalProvider(ModelInfo info, std::unique_ptr<engine::LocalModel> model)
      : info_(std::move(info)), model_(std::move(model)) {}

  ModelInfo info_;
  std::unique_ptr<engine::LocalModel> model_;
};

}  // namespace llmpool::providers
