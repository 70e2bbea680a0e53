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
  // Bytes loading `config` will take before it is loaded: weights and KV
  // cache from the GGUF header (compute buffers are known once loaded); 0
  // when the file cannot be read.
  static uint64_t estimate_memory(const config::ModelConfig& config);

  const ModelInfo& info() const override { return info_; }
  void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) override;
  void embed(std::vector<std::string> inputs, EmbedCallback done) override;
  Result<std::vector<int32_t>> tokenize(const std::string& text, bool add_special) override;
  Result<std::string> detokenize(const std::vector<int32_t>& tokens) override;
  ProviderStats stats() const override;

 private:
  LocalProvider(ModelInfo info, std::unique_ptr<engine::LocalModel> model)
      : info_(std::move(info)), model_(std::move(model)) {}

  ModelInfo info_;
  std::unique_ptr<engine::LocalModel> model_;
};

}  // namespace llmpool::providers
