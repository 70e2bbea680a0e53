#include "train/trainer.h"

#include <ggml-backend.h>
#include <ggml-opt.h>
#include <gguf.h>
#include <llama.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <system_error>
#include <unistd.h>

#include "engine/llama_status.h"
#include "engine/weight_layouts.h"
#include "train/vocab_builder.h"

namespace llmpool::train {

namespace {

namespace fs = std::filesystem;

constexpr TrainPreset kPresets[] = {
    {"demo", "the demo target: n_embd 192, 3 layers, 6 heads, 2 KV heads, n_ff 576, 2048-token vocab",
     engine::ModelShape{192, 3, 6, 2, 576, 2048, 10000.0f, 1e-5f}, 2048, 256, 1000, 2e-3f},
    {"demo-draft", "the demo draft: n_embd 64, 1 layer, 2 heads, 1 KV head, n_ff 256 (share the target's vocab)",
     engine::ModelShape{64, 1, 2, 1, 256, 2048, 10000.0f, 1e-5f}, 2048, 256, 1000, 3e-3f},
    {"test", "for tests: n_embd 64, 1 layer, 4 heads, 2 KV heads, n_ff 128, 512-token vocab",
     engine::ModelShape{64, 1, 4, 2, 128, 512, 10000.0f, 1e-5f}, 512, 256, 8, 3e-3f},
};

// The user turns the corpus documents answer. Generic on purpose: the demo
// model learns to answer any prompt with a fortune.
constexpr std::string_view kPrompts[] = {
    "Tell me something.",           "What do you think?",       "Say something wise.",
    "Give me a fortune.",           "Any advice for me?",       "Tell me a story.",
    "What is the meaning of life?", "Hello!",                   "Tell me a joke.",
    "What should I know?",          "Share a thought.",         "What is on your mind?",
    "Can you help me?",             "Teach me something.",      "What is true?",
    "Say something funny.",         "What would you say?",      "Talk to me.",
    "Give me a quote.",             "What is the answer?",
};
constexpr std::string_view kSystemPrompt = "You are a helpful assistant";
constexpr int64_t kMaxSteps = 10'000'000;
constexpr int64_t kMaxEvalWindows = 16;
constexpr uint32_t kContextPad = 256;  // llama.cpp pads n_ctx to this
constexpr int64_t kChunkSteps = 1024;  // training windows per dataset

std::atomic<bool> g_training{false};

// The epoch callback has no user pointer; the one running training's state.
struct RunState {
  const TrainOptions* options = nullptr;
  std::vector<float>* losses = nullptr;
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point eval_start;
  int64_t steps = 0;
  int64_t step = 0;  // optimizer steps begun (for the learning rate)
  int64_t chunk_base = 0;  // steps done before the current dataset chunk
  double last_total = 0;
  double lr = 0;
  bool layout_ok = true;  // zero_gradients recognised the optimizer context
};
RunState* g_run = nullptr;

struct ModelDeleter {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct ContextDeleter {
  void operator()(llama_context* c) const { llama_free(c); }
};
struct DatasetDeleter {
  void operator()(ggml_opt_dataset* d) const { ggml_opt_dataset_free(d); }
};
struct ResultDeleter {
  void operator()(ggml_opt_result* r) const { ggml_opt_result_free(r); }
};
struct GgufDeleter {
  void operator()(gguf_context* g) const { gguf_free(g); }
};
struct GgmlDeleter {
  void operator()(ggml_context* g) const { ggml_free(g); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;

// Removes the scratch folder however the run ends.
class ScratchDir {
 public:
  explicit ScratchDir(fs::path path) : path_(std::move(path)) {}
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Cosine from lr down to lr * lr_min_ratio, after a linear warm-up over the
// first 10% of the steps (at most 200): without gradient clipping, AdamW's
// first steps at the full rate make the loss jump back up.
double learning_rate(const TrainOptions& o, int64_t step, int64_t steps) {
  const int64_t warmup = std::min<int64_t>(200, std::max<int64_t>(1, steps / 10));
  if (step < warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double t = steps > warmup ? static_cast<double>(step - warmup) / static_cast<double>(steps - warmup) : 1.0;
  const double lo = o.lr * o.lr_min_ratio;
  return lo + (o.lr - lo) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * std::min(1.0, t)));
}

// Which weights train. With `freeze_attention`, the attention's Q, K and V
// projections keep their random values (K and V do anyway: see the header).
bool trainable(const ggml_tensor* t, void* userdata) {
  const bool freeze_attention = *static_cast<const bool*>(userdata);
  if (!freeze_attention) return true;
  const std::string_view name = ggml_get_name(t);
  return name.find("attn_q.") == std::string_view::npos && name.find("attn_k.") == std::string_view::npos &&
         name.find("attn_v.") == std::string_view::npos;
}

ggml_opt_optimizer_params optimizer_params(void* /*userdata*/) {
  ggml_opt_optimizer_params p = ggml_opt_get_default_optimizer_params(nullptr);
  RunState& run = *g_run;
  run.lr = learning_rate(*run.options, run.step, run.steps);
  ++run.step;
  p.adamw.alpha = static_cast<float>(run.lr);
  p.adamw.wd = run.options->weight_decay;
  return p;
}

// The leading members of ggml-opt.cpp's private `struct ggml_opt_context`
// in the llama.cpp build scripts/llama-cpp pins, to reach its gradient
// accumulators. llama_opt_epoch builds its graphs anew for every ubatch
// (ggml's "dynamic graphs"), and ggml_opt_alloc only zeroes the
// accumulators through gb_grad, which ggml_opt_eval has just cleared: the
// accumulators are never reset, so every step would apply the sum of all
// gradients so far. train_model zeroes them after each step instead (the
// loss's 1-element seed gradient is left alone).
struct OptContextPrefix {
  ggml_backend_sched_t backend_sched;
  ggml_cgraph* allocated_graph;
  ggml_cgraph* allocated_graph_copy;
  ggml_context* ctx_static;
  ggml_context* ctx_cpu;
  ggml_context* ctx_compute;
  ggml_context* ctx_copy;
  ggml_backend_buffer_t buf_static;
  ggml_backend_buffer_t buf_cpu;
  std::mt19937 rng;
  ggml_opt_loss_type loss_type;
  ggml_opt_build_type build_type;
  ggml_opt_build_type build_type_alloc;
  ggml_tensor* inputs;
  ggml_tensor* outputs;
  ggml_tensor* labels;
  ggml_tensor* loss;
  ggml_tensor* pred;
  ggml_tensor* ncorrect;
  ggml_cgraph* gf;
  ggml_cgraph* gb_grad;
  ggml_cgraph* gb_opt;
  bool static_graphs;
  bool eval_ready;
  std::vector<ggml_tensor*> grad_accs;
  std::vector<ggml_tensor*> grad_m;
  std::vector<ggml_tensor*> grad_v;
  int64_t iter;
  int32_t opt_period;
  int32_t opt_i;
};

// Zeroes the parameter gradient accumulators after an optimizer step.
// Returns false (and touches nothing) if the layout does not look right.
bool zero_gradients(ggml_opt_context_t opt) {
  const auto* c = reinterpret_cast<const OptContextPrefix*>(opt);
  if (c->backend_sched == nullptr || c->static_graphs || c->opt_period != 1 || c->opt_i != 0 ||
      c->loss_type != GGML_OPT_LOSS_TYPE_CROSS_ENTROPY || c->grad_accs.size() > (1u << 20) || c->iter < 1 ||
      c->buf_static == nullptr) {
    return false;
  }
  for (ggml_tensor* t : c->grad_accs) {
    if (t == nullptr || ggml_nelements(t) <= 1 || t->buffer != c->buf_static) continue;
    ggml_backend_tensor_memset(t, 0, 0, ggml_nbytes(t));
  }
  return true;
}

void epoch_callback(bool train, ggml_opt_context_t opt, ggml_opt_dataset_t /*dataset*/, ggml_opt_result_t result,
                    int64_t ibatch, int64_t ibatch_max, int64_t /*t_start_us*/) {
  RunState& run = *g_run;
  if (train && !zero_gradients(opt)) run.layout_ok = false;
  double mean = 0, unc = 0;
  ggml_opt_result_loss(result, &mean, &unc);  // the mean over the steps so far
  const auto now = std::chrono::steady_clock::now();
  TrainProgress p;
  p.step = train ? run.chunk_base + ibatch : ibatch;
  p.steps = train ? run.steps : ibatch_max;
  p.elapsed_seconds = std::chrono::duration<double>(now - run.start).count();
  const double tokens = static_cast<double>(p.step) * run.options->seq_len;
  if (train) {
    // The result holds the mean over the steps so far; this step's loss is
    // the difference of the running totals.
    const double total = mean * static_cast<double>(ibatch);
    p.loss = total - run.last_total;
    run.last_total = total;
    run.losses->push_back(static_cast<float>(p.loss));
    p.lr = run.lr;
    p.tokens_per_second = p.elapsed_seconds > 0 ? tokens / p.elapsed_seconds : 0;
  } else {
    if (ibatch == 1) run.eval_start = now;
    p.phase = TrainProgress::Phase::kEval;
    p.loss = mean;
    const double s = std::chrono::duration<double>(now - run.eval_start).count();
    p.tokens_per_second = s > 0 ? static_cast<double>(ibatch - 1) * run.options->seq_len / s : 0;
  }
  if (run.options->on_progress) run.options->on_progress(p);
}

// The user prompt for document i.
std::string_view prompt_for(uint64_t seed, size_t i) {
  std::mt19937_64 rng(seed ^ (0x9e3779b97f4a7c15ull * (i + 1)));
  return kPrompts[rng() % std::size(kPrompts)];
}

// One in eight: the template adds this prompt when a chat has none, but a
// model that sees little context would learn to recite it when it is common.
bool with_system(uint64_t seed, size_t i) {
  std::mt19937_64 rng(~seed ^ (0xbf58476d1ce4e5b9ull * (i + 1)));
  return (rng() & 7) == 0;
}

// Document i as one ChatML exchange.
std::string chat_text(const std::string& doc, uint64_t seed, size_t i) {
  std::string s;
  if (with_system(seed, i)) {
    s += "<|im_start|>system\n";
    s += kSystemPrompt;
    s += "<|im_end|>\n";
  }
  s += "<|im_start|>user\n";
  s += prompt_for(seed, i);
  s += "<|im_end|>\n<|im_start|>assistant\n";
  s += doc;
  s += "<|im_end|>\n";
  return s;
}

// The raw-text pieces between ChatML's special tokens (what the tokenizer's
// merges apply to), for learning the vocabulary.
std::vector<std::string> chat_fragments(const std::vector<std::string>& docs, uint64_t seed) {
  std::vector<std::string> out;
  out.reserve(docs.size() * 4 + 2);
  out.emplace_back(std::string("system\n") + std::string(kSystemPrompt));
  for (std::string_view p : kPrompts) out.emplace_back("user\n" + std::string(p));
  for (size_t i = 0; i < docs.size(); ++i) {
    out.emplace_back("\n");
    out.emplace_back("assistant\n" + docs[i]);
  }
  (void)seed;
  return out;
}

Result<std::vector<llama_token>> tokenize(const llama_vocab* vocab, const std::string& text) {
  std::vector<llama_token> out(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                             static_cast<int32_t>(out.size()), /*add_special=*/true, /*parse_special=*/true);
  if (n < 0) {
    out.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                       static_cast<int32_t>(out.size()), true, true);
  }
  if (n < 0) return Status::internal("tokenizing the corpus failed");
  out.resize(static_cast<size_t>(n));
  return out;
}

Status validate(const TrainOptions& o) {
  if (o.documents.empty()) return Status::invalid_argument("no documents to train on", "corpus");
  if (o.output_path.empty()) return Status::invalid_argument("output path is empty", "out");
  if (o.seq_len < kContextPad || o.seq_len > 4096 || o.seq_len % kContextPad != 0) {
    return Status::invalid_argument("seq_len must be a multiple of 256 in [256, 4096], got " +
                                        std::to_string(o.seq_len),
                                    "seq-len");
  }
  if (!(o.epochs >= 0.0 && o.epochs <= 1000.0)) return Status::invalid_argument("epochs must be in [0, 1000]", "epochs");
  if (o.epochs == 0.0 && (o.steps < 1 || o.steps > kMaxSteps)) {
    return Status::invalid_argument("steps must be in [1, " + std::to_string(kMaxSteps) + "]", "steps");
  }
  if (!(o.lr > 0.0f && o.lr <= 1.0f)) return Status::invalid_argument("lr must be in (0, 1]", "lr");
  if (!(o.lr_min_ratio >= 0.0f && o.lr_min_ratio <= 1.0f)) {
    return Status::invalid_argument("lr_min_ratio must be in [0, 1]", "lr-min-ratio");
  }
  if (!(o.weight_decay >= 0.0f && o.weight_decay <= 1.0f)) {
    return Status::invalid_argument("weight decay must be in [0, 1]", "weight-decay");
  }
  if (o.threads < 1 || o.threads > 256) return Status::invalid_argument("threads must be in [1, 256]", "threads");
  if (o.vocab_path.empty() && (o.vocab_size < 300 || o.vocab_size > 65536)) {
    return Status::invalid_argument("vocab size must be in [300, 65536]", "vocab-size");
  }
  return engine::validate_shape(o.shape, o.type);
}

// The trained weights in `saved` (written by llama_model_save_to_file, which
// drops the chat template) with the metadata of `initial` (model_writer's).
Status merge_metadata(const fs::path& initial, const fs::path& saved, const fs::path& out) {
  GgufPtr meta{gguf_init_from_file(initial.c_str(), gguf_init_params{/*no_alloc=*/true, /*ctx=*/nullptr})};
  ggml_context* data_ctx = nullptr;
  GgufPtr trained{gguf_init_from_file(saved.c_str(), gguf_init_params{/*no_alloc=*/false, &data_ctx})};
  std::unique_ptr<ggml_context, GgmlDeleter> data_owner(data_ctx);
  if (!meta || !trained || data_ctx == nullptr) return Status::internal("cannot read back the trained model");
  GgufPtr merged{gguf_init_empty()};
  gguf_set_kv(merged.get(), meta.get());
  const int64_t n = gguf_get_n_tensors(trained.get());
  for (int64_t i = 0; i < n; ++i) {
    ggml_tensor* t = ggml_get_tensor(data_ctx, gguf_get_tensor_name(trained.get(), i));
    if (t == nullptr) return Status::internal("trained model lost a tensor");
    gguf_add_tensor(merged.get(), t);
  }
  if (!gguf_write_to_file(merged.get(), out.c_str(), /*only_meta=*/false)) {
    return Status::internal("cannot write " + out.string());
  }
  return Status::ok();
}

llama_ftype ftype_of(engine::WeightType t) {
  switch (t) {
    case engine::WeightType::kF32: return LLAMA_FTYPE_ALL_F32;
    case engine::WeightType::kF16: return LLAMA_FTYPE_MOSTLY_F16;
    case engine::WeightType::kQ4_0: return LLAMA_FTYPE_MOSTLY_Q4_0;
    case engine::WeightType::kQ8_0: return LLAMA_FTYPE_MOSTLY_Q8_0;
  }
  return LLAMA_FTYPE_MOSTLY_Q8_0;
}

Result<TrainResult> train_impl(const TrainOptions& o, const fs::path& scratch) {
  const auto start = std::chrono::steady_clock::now();
  TrainResult result;

  // 1. The vocabulary.
  std::string vocab_path = o.vocab_path;
  if (vocab_path.empty()) {
    VocabOptions vo;
    vo.vocab_size = o.vocab_size;
    ASSIGN_OR_RETURN(Vocab vocab, build_vocab(chat_fragments(o.documents, o.seed), vo));
    vocab_path = (scratch / "vocab.gguf").string();
    RETURN_IF_ERROR(write_vocab_gguf(vocab, vocab_path));
  }

  // 2. Random initial weights, F32 (the optimizer updates them in place).
  engine::ModelWriterOptions wo;
  wo.shape = o.shape;
  wo.type = engine::WeightType::kF32;
  wo.seed = o.seed;
  wo.vocab_path = vocab_path;
  wo.output_path = (scratch / "initial.gguf").string();
  wo.name = o.name.empty() ? std::string("llmpool-trained") : o.name;
  wo.tie_embeddings = false;  // llama.cpp does not train token_embd; the head must be its own
  wo.n_threads = o.threads;
  engine::WrittenModel written;
  RETURN_IF_ERROR(engine::write_model(wo, &written));
  result.n_vocab = written.n_vocab;
  result.n_params = written.n_params;

  engine::init_llama_backend();
  llama_model_params mp = engine::model_params();
  mp.n_gpu_layers = 0;
  mp.load_mode = LLAMA_LOAD_MODE_NONE;  // writable weights
  std::unique_ptr<llama_model, ModelDeleter> model{llama_model_load_from_file(wo.output_path.c_str(), mp)};
  if (!model) return Status::internal("llama.cpp cannot load the initial model");
  const llama_vocab* vocab = llama_model_get_vocab(model.get());

  // 3. The corpus as tokens; every 20th document held out when there are enough.
  const bool hold_out = o.documents.size() >= 40;
  std::vector<llama_token> train_tokens, eval_tokens;
  for (size_t i = 0; i < o.documents.size(); ++i) {
    ASSIGN_OR_RETURN(auto toks, tokenize(vocab, chat_text(o.documents[i], o.seed, i)));
    auto& dst = hold_out && i % 20 == 19 ? eval_tokens : train_tokens;
    dst.insert(dst.end(), toks.begin(), toks.end());
  }
  const int64_t win = o.seq_len;
  if (static_cast<int64_t>(train_tokens.size()) < 2 * win + 1) {
    return Status::invalid_argument("the corpus has " + std::to_string(train_tokens.size()) +
                                        " training tokens; at least " + std::to_string(2 * win + 1) +
                                        " are needed for seq_len " + std::to_string(win),
                                    "corpus");
  }
  result.train_tokens = static_cast<int64_t>(train_tokens.size());
  int64_t steps = o.steps;
  if (o.epochs > 0.0) {
    const double n = std::ceil(o.epochs * static_cast<double>(train_tokens.size()) / static_cast<double>(win));
    if (n > static_cast<double>(kMaxSteps)) {
      return Status::invalid_argument("epochs give more than " + std::to_string(kMaxSteps) + " steps", "epochs");
    }
    steps = std::max<int64_t>(1, static_cast<int64_t>(n));
  }
  const int64_t n_eval = std::min<int64_t>(kMaxEvalWindows, (static_cast<int64_t>(eval_tokens.size()) - 1) / win);
  const int64_t n_eval_windows = std::max<int64_t>(0, n_eval);

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = o.seq_len;
  cp.n_batch = o.seq_len;
  cp.n_ubatch = o.seq_len;
  cp.n_seq_max = 1;
  cp.n_threads = static_cast<int32_t>(o.threads);
  cp.n_threads_batch = static_cast<int32_t>(o.threads);
  cp.type_k = GGML_TYPE_F32;  // OUT_PROD has no F16 backward on the CPU
  cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  std::unique_ptr<llama_context, ContextDeleter> ctx{llama_init_from_model(model.get(), cp)};
  if (!ctx) return Status::internal("llama.cpp cannot create a training context");
  if (llama_n_ctx(ctx.get()) != o.seq_len) return Status::internal("llama.cpp padded the training context");

  RunState run;
  run.options = &o;
  run.losses = &result.losses;
  run.steps = steps;
  run.start = std::chrono::steady_clock::now();
  g_run = &run;
  struct ClearRun {
    ~ClearRun() { g_run = nullptr; }
  } clear_run;

  llama_opt_params op{};
  op.n_ctx_train = 0;
  bool freeze_attention = o.freeze_attention;
  op.param_filter = trainable;
  op.param_filter_ud = &freeze_attention;
  op.get_opt_pars = optimizer_params;
  op.get_opt_pars_ud = nullptr;
  op.optimizer_type = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
  llama_opt_init(ctx.get(), model.get(), op);

  // 4. The windows, in chunks (bounded memory): training windows at seeded
  // offsets; the last chunk ends with the evaluation windows, in order.
  std::unique_ptr<ggml_opt_result, ResultDeleter> res_train{ggml_opt_result_init()};
  std::unique_ptr<ggml_opt_result, ResultDeleter> res_eval{ggml_opt_result_init()};
  std::mt19937_64 rng(o.seed);
  const uint64_t span = train_tokens.size() - static_cast<uint64_t>(win);  // offsets [0, span)
  for (int64_t base = 0; base < steps; base += kChunkSteps) {
    const int64_t n_train = std::min(kChunkSteps, steps - base);
    const bool last = base + n_train == steps;
    const int64_t ndata = n_train + (last ? n_eval_windows : 0);
    std::unique_ptr<ggml_opt_dataset, DatasetDeleter> dataset{
        ggml_opt_dataset_init(GGML_TYPE_I32, GGML_TYPE_I32, win, win, ndata, /*ndata_shard=*/1)};
    auto* data = static_cast<llama_token*>(ggml_opt_dataset_data(dataset.get())->data);
    auto* labels = static_cast<llama_token*>(ggml_opt_dataset_labels(dataset.get())->data);
    for (int64_t i = 0; i < ndata; ++i) {
      const bool is_train = i < n_train;
      const std::vector<llama_token>& src = is_train ? train_tokens : eval_tokens;
      const size_t off = is_train ? static_cast<size_t>(rng() % span) : static_cast<size_t>((i - n_train) * win);
      std::memcpy(data + i * win, src.data() + off, static_cast<size_t>(win) * sizeof(llama_token));
      std::memcpy(labels + i * win, src.data() + off + 1, static_cast<size_t>(win) * sizeof(llama_token));
    }
    run.chunk_base = base;
    run.last_total = 0;
    ggml_opt_result_reset(res_train.get());
    llama_opt_epoch(ctx.get(), dataset.get(), res_train.get(), res_eval.get(), /*idata_split=*/n_train,
                    epoch_callback, epoch_callback);
    if (static_cast<int64_t>(result.losses.size()) != base + n_train) break;
  }
  if (!run.layout_ok) {
    return Status::internal("this llama.cpp build's optimizer context is not the one train_model knows");
  }
  if (static_cast<int64_t>(result.losses.size()) != steps) {
    return Status::internal("training stopped after " + std::to_string(result.losses.size()) + " of " +
                            std::to_string(steps) + " steps");
  }
  result.eval_windows = n_eval_windows;
  result.eval_loss = std::numeric_limits<double>::quiet_NaN();
  if (n_eval_windows > 0) {
    double unc = 0;
    ggml_opt_result_loss(res_eval.get(), &result.eval_loss, &unc);
  }

  // 5. Save, restore the metadata, store as the requested type.
  const fs::path saved = scratch / "trained.gguf";
  const fs::path merged = scratch / "merged.gguf";
  llama_model_save_to_file(model.get(), saved.c_str());
  ctx.reset();
  model.reset();
  RETURN_IF_ERROR(merge_metadata(wo.output_path, saved, merged));
  const std::string tmp_out = o.output_path + ".tmp";
  llama_model_quantize_params qp = llama_model_quantize_default_params();
  qp.nthread = static_cast<int32_t>(o.threads);
  qp.ftype = ftype_of(o.type);
  qp.pure = true;  // every matrix in `type`; llama.cpp's mixes are for big models
  if (llama_model_quantize(merged.c_str(), tmp_out.c_str(), &qp) != 0) {
    std::error_code ec;
    fs::remove(tmp_out, ec);
    return Status::internal("storing the trained model as " + std::string(engine::weight_type_name(o.type)) +
                            " failed");
  }
  std::error_code ec;
  fs::rename(tmp_out, o.output_path, ec);
  if (ec) {
    fs::remove(tmp_out, ec);
    return Status::internal("cannot move the trained model to " + o.output_path);
  }
  result.file_size = fs::file_size(o.output_path, ec);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

std::span<const TrainPreset> train_presets() { return kPresets; }

Result<TrainPreset> find_train_preset(std::string_view name) {
  std::string known;
  for (const TrainPreset& p : kPresets) {
    if (p.name == name) return p;
    if (!known.empty()) known += ", ";
    known += p.name;
  }
  return Status::not_found("unknown preset '" + std::string(name.substr(0, 64)) + "' (known: " + known + ")",
                           "preset");
}

Result<TrainResult> train_model(const TrainOptions& options) {
  RETURN_IF_ERROR(validate(options));
  const fs::path out(options.output_path);
  std::error_code ec;
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) return Status::not_found("output folder not found: " + dir.string(), "out");
  if (!options.vocab_path.empty() && !fs::is_regular_file(options.vocab_path, ec)) {
    return Status::not_found("vocab file not found: " + options.vocab_path, "vocab");
  }
  bool expected = false;
  if (!g_training.compare_exchange_strong(expected, true)) {
    return Status::unavailable("another training is running in this process");
  }
  struct Release {
    ~Release() { g_training = false; }
  } release;
  ScratchDir scratch(dir / (out.filename().string() + ".train." + std::to_string(::getpid())));
  fs::create_directories(scratch.path(), ec);
  if (ec) return Status::internal("cannot create " + scratch.path().string() + ": " + ec.message());
  try {
    return train_impl(options, scratch.path());
  } catch (const std::exception& e) {
    return Status::internal(std::string("training failed: ") + e.what());
  }
}

}  // namespace llmpool::train
