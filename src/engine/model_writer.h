// Writes llama-architecture GGUF models with seeded random weights, so that
// tests and benchmarks get real models without downloading any
// (docs/architecture.md, "Dependencies").
//
// A written model has:
//   - the tokenizer of a vocab file: every `tokenizer.*` key of `vocab_path`
//     (normally one of llama.cpp's `models/ggml-vocab-*.gguf`, which hold
//     tokenizer metadata and no tensors) copied unchanged, arrays included,
//     except `tokenizer.chat_template`, which is set to `chat_template`
//     (ChatML by default, so llama.cpp detects the "chatml" template);
//   - `general.architecture = llama`, `general.name`, `general.file_type`
//     and the `llama.*` hyperparameters of `shape`; n_vocab is the length of
//     the vocab's `tokenizer.ggml.tokens`;
//   - the llama tensors (token_embd, per layer attn_norm/attn_q/attn_k/
//     attn_v/attn_output/ffn_norm/ffn_gate/ffn_up/ffn_down, output_norm and,
//     unless tie_embeddings, output). Norm weights are 1.0 in F32; every other
//     weight is drawn from an approximately normal distribution with mean 0
//     and standard deviation 0.02, then stored in `type`.
//
// Output is deterministic: the same options (seed included) give a
// byte-identical file on every run, whatever the thread count. Random values
// come from a per-row seeded integer PRNG and plain float arithmetic (no
// <random> distributions, no libm), so files also match across machines that
// share the ggml build.
//
// Random weights give real speed and memory figures but meaningless text.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace llmpool::engine {

// The storage type of the 2-D weight matrices. Norm vectors are always F32.
enum class WeightType { kF16, kQ8_0, kQ4_0, kF32 };

// "f16", "q8_0", "q4_0" or "f32".
std::string_view weight_type_name(WeightType type);

// Parses a name printed by weight_type_name (case-sensitive). Returns
// InvalidArgument with param "type" for anything else.
Result<WeightType> parse_weight_type(std::string_view name);

// The dimensions of a llama-architecture model. n_vocab is not here: it comes
// from the vocab file. head_dim = n_embd / n_head; the KV width is
// head_dim * n_head_kv.
struct ModelShape {
  uint32_t n_embd = 64;
  uint32_t n_layer = 2;
  uint32_t n_head = 4;
  uint32_t n_head_kv = 2;
  uint32_t n_ff = 128;
  uint32_t n_ctx_train = 4096;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
};

// Checks `shape` for `type` without touching any file: every field positive
// and bounded, n_embd divisible by n_head, head_dim even (RoPE rotates pairs),
// n_head divisible by n_head_kv, and for quantized types n_embd and n_ff
// multiples of the 32-element block (each weight row is n_embd or n_ff long).
// Returns InvalidArgument whose param() names the offending field
// ("n_embd", "n_head", "head_dim", "n_head_kv", "n_ff", ...).
Status validate_shape(const ModelShape& shape, WeightType type);

// The ChatML chat template: Qwen2-Instruct's Jinja text, byte for byte as in
// ggml-vocab-qwen2.gguf. llama.cpp's template detection maps any template
// containing <|im_start|> (and neither <|im_sep|> nor <end_of_utterance>) to
// its built-in "chatml".
inline constexpr std::string_view kChatMlTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

// A named shape together with the vocab it is meant for.
struct ModelPreset {
  std::string_view name;         // "tiny", "bench-0.5b"
  std::string_view vocab_name;   // file ggml-vocab-<vocab_name>.gguf
  std::string_view description;  // one line for --help
  ModelShape shape;
};

// All presets, in a stable order:
//   tiny        llama-spm vocab (32,000): n_embd 64, 2 layers, 4 heads, 2 KV
//               heads, n_ff 128, ctx 4096 — a few MB, for tests;
//   bench-0.5b  qwen2 vocab (151,936): n_embd 896, 24 layers, 14 heads, 2 KV
//               heads, n_ff 4864, ctx 32768, rope base 1e6, eps 1e-6 — the
//               shape of Qwen2.5-0.5B; q8_0 is about 640 MiB.
std::span<const ModelPreset> model_presets();

// Looks a preset up by name. Returns NotFound with param "preset" and the
// known names in the message if there is none.
Result<ModelPreset> find_model_preset(std::string_view name);

// `vocab_dir`/ggml-vocab-`vocab_name`.gguf (no file-system access).
std::string vocab_file_path(std::string_view vocab_dir, std::string_view vocab_name);

struct ModelWriterOptions {
  ModelShape shape;
  WeightType type = WeightType::kQ8_0;
  uint64_t seed = 42;
  // A GGUF file with the tokenizer.* keys (a ggml-vocab-*.gguf).
  std::string vocab_path;
  // Where the model goes. It is written to `output_path + ".tmp"` first and
  // renamed into place only when complete; an existing file is replaced.
  std::string output_path;
  // general.name; empty means "llmpool-random".
  std::string name;
  // tokenizer.chat_template; empty keeps the vocab file's own (if any).
  std::string chat_template = std::string(kChatMlTemplate);
  // Omit output.weight so llama.cpp reuses token_embd for the output
  // projection (as Qwen2.5-0.5B does); false writes a separate output.weight.
  bool tie_embeddings = false;
  // Worker threads for generating and quantizing; 0 means one per hardware
  // thread. Does not affect the bytes written.
  unsigned n_threads = 0;
  // If set, called on the calling thread after each generated segment and
  // once at the end with the bytes done and the bytes in all (`mkmodel`'s
  // progress bar). Does not affect the bytes written.
  std::function<void(uint64_t done, uint64_t total)> on_progress;
};

// What write_model produced.
struct WrittenModel {
  uint32_t n_vocab = 0;
  uint64_t n_params = 0;    // elements in all tensors
  uint64_t n_tensors = 0;
  uint64_t file_size = 0;   // bytes
};

// Writes the model described by `options` (see the top of this file).
// Memory use does not grow with the model: two 32 MiB segment buffers, a
// small scratch buffer per thread, and the vocab metadata (~100 MiB resident
// for bench-0.5b). Uses `n_threads` threads plus one for file writes. Returns:
//   InvalidArgument (param names the field) for a bad shape, an empty
//     output_path or vocab_path, or a vocab file that is not a GGUF file or
//     has no tokenizer.ggml.tokens;
//   NotFound naming the path if the vocab file or the output directory does
//     not exist;
//   PermissionDenied or Internal for other I/O failures.
// On failure `output_path` is left as it was (absent, or the previous file)
// and no `output_path + ".tmp"` remains.
// If `written` is not null it receives the figures on success.
// Thread-safe (no shared state); blocks while writing.
Status write_model(const ModelWriterOptions& options, WrittenModel* written = nullptr);

}  // namespace llmpool::engine
