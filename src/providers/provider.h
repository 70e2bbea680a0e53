// Provider: anything that can answer a generation request — a local GGUF
// model run by the engine, or (later) a remote OpenAI-compatible or Ollama
// server. The router and the API know models only through this interface.
//
// Implementations are thread-safe: every method may be called from any
// thread at any time, and generate() never blocks on the model. Callbacks
// run on a thread the provider chooses (see GenerateCallbacks).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/chat.h"
#include "common/status.h"

namespace llmpool::providers {

struct ModelInfo {
  std::string name;
  std::vector<std::string> aliases;
  std::string type;                       // the config's provider `type:`
  std::vector<std::string> capabilities;
  int32_t context = 0;                    // tokens per request
};

// Load and activity figures, for metrics and capacity reports.
struct ProviderStats {
  int64_t queued = 0;
  int64_t active_sequences = 0;
  int64_t parallel = 0;                   // sequence capacity
  int64_t requests_done = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;       // prompt tokens served from the prefix cache
  int64_t generated_tokens = 0;
  int64_t kv_cells_used = 0;
  int64_t kv_cells_total = 0;
  int64_t aborted_steps = 0;              // engine steps aborted for a cancelled or expired request
  // Speculative decoding: verification rounds, drafted and accepted tokens.
  int64_t speculative_rounds = 0;
  int64_t speculative_drafted = 0;
  int64_t speculative_accepted = 0;
  // local: steps the speculation gate let speculate and kept from it, and
  // its measured throughput ratio of the two (NaN: not measured)
  int64_t speculative_steps_on = 0;
  int64_t speculative_steps_off = 0;
  double speculative_speedup = std::numeric_limits<double>::quiet_NaN();
  uint64_t memory_bytes = 0;              // what the pool counts: local models, all four below
  uint64_t weights_bytes = 0;             // local: model weights
  uint64_t kv_cache_bytes = 0;            // local: KV cache of all sequences
  uint64_t compute_bytes = 0;             // local: compute buffers
  uint64_t prompt_cache_bytes = 0;        // local: the host prompt cache's budget (counted whole)
  // local: sequences saved to the host prompt cache, restored from it, and the bytes it holds now
  int64_t prompts_saved = 0;
  int64_t prompts_restored = 0;
  int64_t prompt_cache_used_bytes = 0;
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual const ModelInfo& info() const = 0;

  // Starts a generation. `callbacks.on_done` is called exactly once; deltas
  // come before it if `callbacks.on_delta` is set. Cancelling `cancel`
  // ends the generation early and frees what it held.
  virtual void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) = 0;

  // Embeddings of `inputs`; `done` is called exactly once (Unimplemented
  // where the provider has none).
  virtual void embed(std::vector<std::string> inputs, EmbedCallback done) {
    (void)inputs;
    done(Status::unimplemented("model '" + info().name + "' does not produce embeddings"));
  }

  // Token ids for `text` (Unimplemented where the provider cannot tell).
  virtual Result<std::vector<int32_t>> tokenize(const std::string& text, bool add_special) {
    (void)text;
    (void)add_special;
    return Status::unimplemented("model '" + info().name + "' cannot tokenize");
  }
  virtual Result<std::string> detokenize(const std::vector<int32_t>& tokens) {
    (void)tokens;
    return Status::unimplemented("model '" + info().name + "' cannot detokenize");
  }
  virtual ProviderStats stats() const { return {}; }
};

using ProviderPtr = std::shared_ptr<Provider>;

}  // namespace llmpool::providers
