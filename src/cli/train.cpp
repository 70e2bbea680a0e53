// `llmpool train`: trains a small llama-architecture model on a text corpus
// (train/trainer.h) with a progress bar on stderr and a summary on stdout.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "cli/progress.h"
#include "train/corpus.h"
#include "train/trainer.h"

namespace llmpool::cli {
namespace {

struct TrainArgs {
  std::string preset = "demo";
  std::vector<std::string> corpus;
  std::string out;
  std::string vocab;
  std::string vocab_name;
  std::optional<uint32_t> vocab_size;
  uint64_t seed = 42;
  std::optional<int64_t> steps;
  double epochs = 0;
  std::optional<uint32_t> seq_len;
  std::optional<float> lr;
  float lr_min_ratio = 0.1f;
  float weight_decay = 0.0f;
  unsigned threads = 0;
  std::string type = "q8_0";
  std::string name;
  bool verbose = false;
  bool freeze_attention = false;
  ShapeOverrides shape;
};

Result<train::TrainOptions> make_options(const TrainArgs& a) {
  ASSIGN_OR_RETURN(train::TrainPreset preset, train::find_train_preset(a.preset));
  ASSIGN_OR_RETURN(engine::WeightType type, engine::parse_weight_type(a.type));
  train::TrainOptions o;
  o.shape = preset.shape;
  a.shape.apply(o.shape);
  o.vocab_size = a.vocab_size.value_or(preset.vocab_size);
  if (!a.vocab.empty()) {
    o.vocab_path = a.vocab;
  } else if (!a.vocab_name.empty()) {
    const std::string dir = vocab_dir();
    if (dir.empty()) return Status::invalid_argument("no vocab directory: set LLMPOOL_VOCAB_DIR", "vocab-name");
    o.vocab_path = engine::vocab_file_path(dir, a.vocab_name);
  }
  o.seq_len = a.seq_len.value_or(preset.seq_len);
  o.seed = a.seed;
  o.steps = a.steps.value_or(preset.steps);
  o.epochs = a.epochs;
  o.lr = a.lr.value_or(preset.lr);
  o.lr_min_ratio = a.lr_min_ratio;
  o.weight_decay = a.weight_decay;
  o.threads = a.threads != 0 ? a.threads : std::max(1u, std::thread::hardware_concurrency());
  o.type = type;
  o.freeze_attention = a.freeze_attention;
  o.output_path = a.out;
  o.name = !a.name.empty() ? a.name : "llmpool-" + std::string(preset.name);
  return o;
}

int run_train(const TrainArgs& args) {
  if (!args.verbose) spdlog::set_level(spdlog::level::warn);
  auto options = make_options(args);
  if (!options) {
    std::fprintf(stderr, "train: %s\n", options.status().message().c_str());
    return 2;
  }
  auto corpus = train::read_corpus(args.corpus);
  if (!corpus) {
    std::fprintf(stderr, "train: %s\n", corpus.status().message().c_str());
    return 2;
  }
  options->documents = std::move(corpus->documents);
  std::fprintf(stderr, "train: %zu documents from %zu files (%.1f MiB)\n", options->documents.size(),
               corpus->files.size(), static_cast<double>(corpus->bytes_read) / (1024.0 * 1024.0));

  ProgressBar bar("train");
  ProgressBar eval_bar("eval ");
  std::deque<double> recent;  // the last losses, for a steadier figure
  double recent_sum = 0;
  options->on_progress = [&](const train::TrainProgress& p) {
    char detail[160];
    const double fraction = p.steps > 0 ? static_cast<double>(p.step) / static_cast<double>(p.steps) : 0;
    if (p.phase == train::TrainProgress::Phase::kTrain) {
      recent.push_back(p.loss);
      recent_sum += p.loss;
      if (recent.size() > 20) {
        recent_sum -= recent.front();
        recent.pop_front();
      }
      const double eta = p.step > 0 ? p.elapsed_seconds * static_cast<double>(p.steps - p.step) / p.step : 0;
      std::snprintf(detail, sizeof detail, "step %lld/%lld loss %.3f lr %.1e %.0f tok/s eta %s",
                    static_cast<long long>(p.step), static_cast<long long>(p.steps),
                    recent_sum / static_cast<double>(recent.size()), p.lr, p.tokens_per_second,
                    format_duration(eta).c_str());
      if (p.step == p.steps) {
        bar.finish(fraction, detail);
      } else {
        bar.update(fraction, detail);
      }
    } else {
      std::snprintf(detail, sizeof detail, "window %lld/%lld loss %.3f", static_cast<long long>(p.step),
                    static_cast<long long>(p.steps), p.loss);
      if (p.step == p.steps) {
        eval_bar.finish(fraction, detail);
      } else {
        eval_bar.update(fraction, detail);
      }
    }
  };

  auto result = train::train_model(*options);
  if (!result) {
    std::fprintf(stderr, "train: %s\n", result.status().message().c_str());
    return 2;
  }
  const engine::ModelShape& sh = options->shape;
  std::printf("%s\n", options->output_path.c_str());
  std::printf("  size:       %llu bytes (%.1f MiB), %s\n", static_cast<unsigned long long>(result->file_size),
              static_cast<double>(result->file_size) / (1024.0 * 1024.0),
              std::string(engine::weight_type_name(options->type)).c_str());
  std::printf("  parameters: %llu (%.2f M)\n", static_cast<unsigned long long>(result->n_params),
              static_cast<double>(result->n_params) / 1e6);
  std::printf("  shape:      n_vocab %u, n_embd %u, n_layer %u, n_head %u, n_head_kv %u, n_ff %u, ctx %u\n",
              result->n_vocab, sh.n_embd, sh.n_layer, sh.n_head, sh.n_head_kv, sh.n_ff, sh.n_ctx_train);
  std::printf("  training:   %zu steps x %u tokens, seed %llu, %u threads, %.1f s (corpus %lld tokens)\n",
              result->losses.size(), options->seq_len, static_cast<unsigned long long>(options->seed),
              options->threads, result->seconds, static_cast<long long>(result->train_tokens));
  std::printf("  loss:       first %.4f, last %.4f", result->losses.front(), result->losses.back());
  if (std::isfinite(result->eval_loss)) {
    std::printf(", held-out %.4f (%lld windows)", result->eval_loss, static_cast<long long>(result->eval_windows));
  }
  std::printf("\n");
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<TrainArgs>();
  std::string presets;
  for (const train::TrainPreset& p : train::train_presets()) {
    presets += "\n  " + std::string(p.name) + ": " + std::string(p.description);
  }
  CLI::App* cmd = app.add_subcommand(
      "train", "Train a small llama-architecture GGUF model on a text corpus (llama.cpp's training API, AdamW)");
  cmd->add_option("--preset", args->preset, "Model shape and training defaults:" + presets)->capture_default_str();
  cmd->add_option("--corpus", args->corpus,
                  "Text file or folder (its files; fortune-style % separators split documents); repeatable")
      ->required();
  cmd->add_option("--out", args->out, "Output GGUF path")->required();
  auto* vocab = cmd->add_option("--vocab", args->vocab,
                                "GGUF file whose tokenizer to use (a ggml-vocab file, or the target model for a draft)");
  auto* vocab_name = cmd->add_option("--vocab-name", args->vocab_name,
                                     "A bundled vocab by name, e.g. llama-spm for ggml-vocab-llama-spm.gguf")
                         ->excludes(vocab);
  cmd->add_option("--vocab-size", args->vocab_size, "Learn a vocabulary of this many tokens from the corpus")
      ->excludes(vocab)
      ->excludes(vocab_name);
  cmd->add_option("--seed", args->seed, "Seed of the weights and the data order")->capture_default_str();
  auto* steps = cmd->add_option("--steps", args->steps, "Optimizer steps (one window of --seq-len tokens each)");
  cmd->add_option("--epochs", args->epochs, "Passes over the corpus instead of --steps")->excludes(steps);
  cmd->add_option("--seq-len", args->seq_len, "Tokens per training window (a multiple of 256)");
  cmd->add_option("--lr", args->lr, "Peak learning rate (AdamW)");
  cmd->add_option("--lr-min-ratio", args->lr_min_ratio, "Final learning rate as a fraction of the peak")
      ->capture_default_str();
  cmd->add_option("--weight-decay", args->weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--threads", args->threads,
                  "Threads (default: all hardware threads; the result is deterministic for a seed and thread count)");
  cmd->add_option("--type", args->type, "Stored weight type: q8_0|f16|q4_0|f32")->capture_default_str();
  cmd->add_option("--name", args->name, "general.name (default: llmpool-<preset>)");
  args->shape.add_options(cmd, "The context length the file advertises");
  cmd->add_flag("--freeze-attention", args->freeze_attention,
                "Keep the attention's Q, K and V projections random (see docs/train.md)");
  cmd->add_flag("--verbose", args->verbose, "Show llama.cpp's log");
  cmd->callback([args, exit_code] { *exit_code = run_train(*args); });
}

}  // namespace llmpool::cli
