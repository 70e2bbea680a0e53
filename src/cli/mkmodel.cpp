// `llmpool mkmodel`: writes a test model with seeded random weights and a
// real tokenizer (engine/model_writer.h).
#include <CLI/CLI.hpp>

#include <fstream>
#include <sstream>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "cli/progress.h"
#include "engine/model_writer.h"

namespace llmpool::cli {
namespace {

struct MkmodelArgs {
  std::string preset = "tiny";
  std::string type = "q8_0";
  uint64_t seed = 42;
  std::string out;
  std::string vocab;
  std::string vocab_name;
  std::string name;
  std::string chat_template;       // a template name from llama.cpp's models/templates
  std::string chat_template_file;  // or any Jinja file
  bool tie_embeddings = false;
  unsigned threads = 0;
  ShapeOverrides shape;
};

// Builds the writer options from the command line: the preset's shape, then
// each dimension override; the vocab from --vocab, --vocab-name or the preset.
Result<engine::ModelWriterOptions> make_options(const MkmodelArgs& args) {
  auto preset = engine::find_model_preset(args.preset);
  if (!preset) return preset.status();
  auto type = engine::parse_weight_type(args.type);
  if (!type) return type.status();

  engine::ModelWriterOptions options;
  options.shape = preset->shape;
  args.shape.apply(options.shape);
  options.type = *type;
  options.seed = args.seed;
  options.output_path = args.out;
  options.tie_embeddings = args.tie_embeddings;
  options.n_threads = args.threads;
  options.name = !args.name.empty()
                     ? args.name
                     : "llmpool-" + std::string(preset->name) + "-" + std::string(engine::weight_type_name(*type));

  if (!args.vocab.empty()) {
    options.vocab_path = args.vocab;
  } else {
    const std::string dir = vocab_dir();
    if (dir.empty()) {
      return Status::invalid_argument(
          "no vocab directory: set LLMPOOL_VOCAB_DIR or pass --vocab PATH", "vocab");
    }
    const std::string vocab_name = !args.vocab_name.empty() ? args.vocab_name : std::string(preset->vocab_name);
    options.vocab_path = engine::vocab_file_path(dir, vocab_name);
  }

  std::string template_path = args.chat_template_file;
  if (!args.chat_template.empty()) {
    const std::string dir = vocab_dir();
    if (dir.empty()) return Status::invalid_argument("no vocab directory to find templates in", "chat-template");
    template_path = dir + "/templates/" + args.chat_template + ".jinja";
  }
  if (!template_path.empty()) {
    std::ifstream in(template_path, std::ios::binary);
    if (!in) return Status::not_found("cannot read chat template " + template_path, "chat-template");
    std::stringstream ss;
    ss << in.rdbuf();
    options.chat_template = ss.str();
  }
  return options;
}

int run_mkmodel(const MkmodelArgs& args) {
  auto options = make_options(args);
  if (!options) {
    std::fprintf(stderr, "mkmodel: %s\n", options.status().message().c_str());
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar("mkmodel");
  options->on_progress = [&](uint64_t done, uint64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double mib = static_cast<double>(done) / (1024.0 * 1024.0);
    char detail[96];
    std::snprintf(detail, sizeof detail, "%.1f/%.1f MiB %.0f MiB/s", mib,
                  static_cast<double>(total) / (1024.0 * 1024.0), s > 0 ? mib / s : 0.0);
    const double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    if (done >= total) {
      bar.finish(fraction, detail);
    } else {
      bar.update(fraction, detail);
    }
  };
  engine::WrittenModel written;
  if (Status s = engine::write_model(*options, &written); !s) {
    std::fprintf(stderr, "mkmodel: %s\n", s.message().c_str());
    return 2;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const engine::ModelShape& sh = options->shape;
  std::printf("%s\n", options->output_path.c_str());
  std::printf("  size:       %llu bytes (%.1f MiB)\n", static_cast<unsigned long long>(written.file_size),
              static_cast<double>(written.file_size) / (1024.0 * 1024.0));
  std::printf("  parameters: %llu (%.1f M)\n", static_cast<unsigned long long>(written.n_params),
              static_cast<double>(written.n_params) / 1e6);
  std::printf("  type:       %s, seed %llu, %llu tensors, written in %.2f s\n",
              std::string(engine::weight_type_name(options->type)).c_str(),
              static_cast<unsigned long long>(options->seed), static_cast<unsigned long long>(written.n_tensors),
              seconds);
  std::printf("  shape:      n_vocab %u, n_embd %u, n_layer %u, n_head %u, n_head_kv %u, n_ff %u, ctx %u\n",
              written.n_vocab, sh.n_embd, sh.n_layer, sh.n_head, sh.n_head_kv, sh.n_ff, sh.n_ctx_train);
  std::printf("  vocab:      %s\n", options->vocab_path.c_str());
  return 0;
}

}  // namespace

void add_mkmodel_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MkmodelArgs>();
  std::string presets;
  for (const engine::ModelPreset& p : engine::model_presets()) {
    presets += "\n  " + std::string(p.name) + ": " + std::string(p.description);
  }
  CLI::App* cmd = app.add_subcommand(
      "mkmodel", "Write a llama-architecture GGUF test model with seeded random weights and a real tokenizer");
  cmd->add_option("--preset", args->preset, "Model shape preset (tiny|bench-0.5b):" + presets)
      ->capture_default_str();
  cmd->add_option("--type", args->type, "Weight type: f16|q8_0|q4_0|f32")->capture_default_str();
  cmd->add_option("--seed", args->seed, "PRNG seed; the same seed and options give the same bytes")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output GGUF path")->required();
  auto* vocab = cmd->add_option("--vocab", args->vocab, "Vocab GGUF file (tokenizer metadata)");
  cmd->add_option("--vocab-name", args->vocab_name,
                  "Vocab by name, e.g. qwen2 for ggml-vocab-qwen2.gguf in $LLMPOOL_VOCAB_DIR "
                  "(default: the preset's)")
      ->excludes(vocab);
  cmd->add_option("--name", args->name, "general.name (default: llmpool-<preset>-<type>)");
  auto* tmpl = cmd->add_option("--chat-template", args->chat_template,
                                "Chat template by name from llama.cpp's models/templates (e.g. Qwen-Qwen3-0.6B: tools "
                                "and thinking); default ChatML");
  cmd->add_option("--chat-template-file", args->chat_template_file, "Chat template from a Jinja file")
      ->excludes(tmpl);
  cmd->add_flag("--tie-embeddings", args->tie_embeddings, "Omit output.weight (reuse token_embd)");
  cmd->add_option("--threads", args->threads, "Worker threads (default: all hardware threads)");
  args->shape.add_options(cmd);
  cmd->callback([args, exit_code] { *exit_code = run_mkmodel(*args); });
}

}  // namespace llmpool::cli
