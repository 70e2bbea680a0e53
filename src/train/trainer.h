// Trains a small llama-architecture model on a text corpus with llama.cpp's
// own training API (llama_opt_init / llama_opt_epoch, AdamW), so that the
// demo models answer in words instead of random tokens (docs/train.md).
//
// The steps:
//   1. the vocabulary: `vocab_path` (any GGUF holding tokenizer.* keys: a
//      ggml-vocab file or another model, e.g. the target model for its
//      draft), or one learned from the corpus (vocab_builder.h);
//   2. a model with seeded random F32 weights (engine::write_model);
//   3. the corpus as ChatML turns: each document is an assistant answer to a
//      short user prompt picked from a fixed list by the seed, one in eight
//      after the default system prompt, each turn ended by <|im_end|>;
//      every 20th document is held out for the evaluation loss;
//   4. `steps` optimizer steps, each on one window of `seq_len` tokens
//      drawn (by the seed) from the training tokens, with a cosine learning
//      rate from `lr` down to `lr_min` after a short warm-up; then the
//      evaluation loss on held-out windows;
//   5. the trained weights with the metadata of step 2 (chat template,
//      context length `shape.n_ctx_train`), stored as `type` at
//      `output_path` (written to a temporary file and renamed).
//
// Deterministic: the same options (seed and thread count included) give
// the same loss curve and a byte-identical file. The CPU backend computes
// each output element on one thread in a fixed order, and the data order
// comes from the seed only.
//
// Not thread-safe across concurrent calls: llama.cpp's epoch callback has no
// user pointer, so one training runs at a time per process (a second
// concurrent call returns FailedPrecondition-like Unavailable).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/model_writer.h"

namespace llmpool::train {

// A named model shape with its training defaults.
struct TrainPreset {
  std::string_view name;
  std::string_view description;
  engine::ModelShape shape;
  uint32_t vocab_size;  // tokens of a vocabulary learned from the corpus
  uint32_t seq_len;     // tokens per training window
  int64_t steps;        // default optimizer steps
  float lr;             // peak learning rate
};

// demo (the target), demo-draft (its speculative draft: same vocabulary,
// a quarter of the compute) and test (seconds, for the test suite).
std::span<const TrainPreset> train_presets();
// NotFound with param "preset" and the known names.
Result<TrainPreset> find_train_preset(std::string_view name);

// What a progress callback sees after every step and once after evaluation.
struct TrainProgress {
  enum class Phase { kTrain, kEval };
  Phase phase = Phase::kTrain;
  int64_t step = 0;   // steps (or evaluation windows) done
  int64_t steps = 0;  // of this many
  double loss = 0;    // this step's loss (training) or the mean so far (evaluation)
  double lr = 0;      // learning rate of this step
  double tokens_per_second = 0;
  double elapsed_seconds = 0;
};

struct TrainOptions {
  std::vector<std::string> documents;  // from read_corpus
  engine::ModelShape shape;
  // A GGUF file with tokenizer.* keys; empty learns a vocabulary of
  // vocab_size tokens from the documents.
  std::string vocab_path;
  uint32_t vocab_size = 2048;
  uint32_t seq_len = 128;  // 16 to 4096, a multiple of 16
  uint64_t seed = 42;
  int64_t steps = 100;     // 1 to 10,000,000
  // When > 0 (at most 1000), replaces steps: this many passes over the
  // training tokens, ceil(epochs * tokens / seq_len) windows.
  double epochs = 0;
  float lr = 1e-3f;        // (0, 1]
  float lr_min_ratio = 0.1f;  // the last step's rate is lr * lr_min_ratio
  float weight_decay = 0.0f;  // [0, 1]
  unsigned threads = 1;       // 1 to 256
  // Keep the attention's Q, K and V projections at their random values.
  bool freeze_attention = false;
  engine::WeightType type = engine::WeightType::kQ8_0;
  std::string output_path;
  std::string name;           // general.name; empty: "llmpool-trained"
  // Called on the training thread; keep it short.
  std::function<void(const TrainProgress&)> on_progress;
};

struct TrainResult {
  std::vector<float> losses;  // one per step
  double eval_loss = 0;       // mean over the held-out windows; NaN if none
  int64_t eval_windows = 0;
  int64_t train_tokens = 0;   // tokens in the training split
  uint32_t n_vocab = 0;
  uint64_t n_params = 0;
  uint64_t file_size = 0;
  double seconds = 0;
};

// Trains a model (see above). Returns InvalidArgument with param naming the
// option for a bad value, or when the corpus has fewer tokens than two
// windows; NotFound for a missing vocab file or output folder; Internal
// when llama.cpp cannot load or save the model. On failure output_path is
// left as it was and no temporary file remains. Blocks for the whole run.
Result<TrainResult> train_model(const TrainOptions& options);

}  // namespace llmpool::train
