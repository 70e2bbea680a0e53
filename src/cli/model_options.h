// Command-line pieces shared by `mkmodel` and `train`: the shape overrides
// (--n-embd ... --ctx) and the folder of llama.cpp's vocab files.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "engine/model_writer.h"

// The directory holding llama.cpp's ggml-vocab-*.gguf files, set by the build.
#ifndef LLMPOOL_VOCAB_DIR
#define LLMPOOL_VOCAB_DIR ""
#endif

namespace llmpool::cli {

// $LLMPOOL_VOCAB_DIR, else the folder the build found.
inline std::string vocab_dir() {
  if (const char* env = std::getenv("LLMPOOL_VOCAB_DIR"); env != nullptr && *env != '\0') return env;
  return LLMPOOL_VOCAB_DIR;
}

// Each set option replaces that dimension of a preset's shape.
struct ShapeOverrides {
  std::optional<uint32_t> n_embd, n_layer, n_head, n_head_kv, n_ff, ctx;

  void add_options(CLI::App* cmd, const std::string& ctx_help = "Override the training context length") {
    cmd->add_option("--n-embd", n_embd, "Override the embedding width");
    cmd->add_option("--n-layer", n_layer, "Override the number of layers");
    cmd->add_option("--n-head", n_head, "Override the number of attention heads");
    cmd->add_option("--n-head-kv", n_head_kv, "Override the number of KV heads");
    cmd->add_option("--n-ff", n_ff, "Override the feed-forward width");
    cmd->add_option("--ctx", ctx, ctx_help);
  }

  void apply(engine::ModelShape& shape) const {
    if (n_embd) shape.n_embd = *n_embd;
    if (n_layer) shape.n_layer = *n_layer;
    if (n_head) shape.n_head = *n_head;
    if (n_head_kv) shape.n_head_kv = *n_head_kv;
    if (n_ff) shape.n_ff = *n_ff;
    if (ctx) shape.n_ctx_train = *ctx;
  }
};

}  // namespace llmpool::cli
