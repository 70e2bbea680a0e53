#include "providers/local_provider.h"

#include "providers/factory.h"

#include <algorithm>

namespace llmpool::providers {

namespace {

engine::LocalModelSpec spec_of(const config::ModelConfig& config) {
  engine::LocalModelSpec spec;
  spec.name = config.name;
  spec.path = config.path;
  spec.context = config.context;
  spec.parallel = config.parallel;
  spec.batch = config.batch;
  spec.prefill_chunk = config.prefill_chunk;
  spec.top_k = config.top_k;
  spec.min_p = static_cast<float>(config.min_p);
  spec.kv_unified = config.kv_unified;
  spec.repack = config.repack;
  spec.prompt_cache_bytes = config.prompt_cache_mb < 0 ? -1 : static_cast<int64_t>(config.prompt_cache_mb) << 20;
  spec.kv_type = config.kv_type;
  spec.threads = config.threads;
  spec.max_queue = config.max_queue;
  spec.deadline_ms = config.deadline_ms;
  spec.speculative.draft_path = config.draft.path;
  spec.speculative.ngram = config.draft.model.empty() ? config.draft.ngram : 0;
  spec.speculative.max_tokens = config.draft.max_tokens;
  spec.speculative.min_tokens = config.draft.min_tokens;
  spec.speculative.p_min = static_cast<float>(config.draft.p_min);
  spec.speculative.adaptive = config.draft.adaptive;
  // A model tagged `embedding` runs with pooling and serves /v1/embeddings.
  spec.embedding = std::find(config.capabilities.begin(), config.capabilities.end(), "embedding") !=
                   config.capabilities.end();
  return spec;
}

}  // namespace

uint64_t LocalProvider::estimate_memory(const config::ModelConfig& config) {
  auto use = engine::LocalModel::estimate_memory(spec_of(config));
  return use ? use->total() : 0;
}

Result<ProviderPtr> LocalProvider::create(const config::ModelConfig& config) {
  const engine::LocalModelSpec spec = spec_of(config);
  auto model = engine::LocalModel::load(spec);
  if (!model) return model.status();
  return ProviderPtr(new LocalProvider(model_info(config), std::move(model).value()));
}

void LocalProvider::generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) {
  model_->submit(std::move(request), std::move(cancel), std::move(callbacks));
}

void LocalProvider::embed(std::vector<std::string> inputs, EmbedCallback done) {
  model_->embed(std::move(inputs), std::move(done));
}

Result<std::vector<int32_t>> LocalProvider::tokenize(const std::string& text, bool add_special) {
  return model_->tokenize(text, add_special, true);
}

Result<std::string> LocalProvider::detokenize(const std::vector<int32_t>& tokens) {
  return model_->detokenize(tokens);
}

ProviderStats LocalProvider::stats() const {
  engine::EngineStats e = model_->stats();
  ProviderStats s;
  s.queued = e.queued;
  s.active_sequences = e.active_sequences;
  s.parallel = model_->spec().parallel;
  s.requests_done = e.requests_done;
  s.prompt_tokens = e.prompt_tokens;
  s.cached_prompt_tokens = e.cached_prompt_tokens;
  s.generated_tokens = e.generated_tokens;
  s.kv_cells_used = e.kv_cells_used;
  s.aborted_steps = e.aborted_steps;
  s.speculative_rounds = e.speculative_rounds;
  s.speculative_drafted = e.speculative_drafted;
  s.speculative_accepted = e.speculative_accepted;
  s.speculative_steps_on = e.speculative_steps_on;
  s.speculative_steps_off = e.speculative_steps_off;
  s.speculative_speedup = e.speculative_speedup;
  s.kv_cells_total = e.kv_cells_total;
  const engine::MemoryUse& mem = model_->memory();
  s.weights_bytes = mem.weights;
  s.kv_cache_bytes = mem.kv_cache;
  s.compute_bytes = mem.compute;
  s.prompt_cache_bytes = mem.prompt_cache;
  s.prompts_saved = e.prompts_saved;
  s.prompts_restored = e.prompts_restored;
  s.prompt_cache_used_bytes = e.prompt_cache_used_bytes;
  s.memory_bytes = mem.total();
  return s;
}

}  // namespace llmpool::providers
