#include "engine/local_model.h"

#include <gguf.h>
#include <llama.h>
// llama_get_memory_breakdown: the bundle's staging API (exported by libllama).
#include <llama-ext.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <filesystem>
#include <random>

#include "engine/llama_status.h"
#include "engine/prefix_cache.h"
#include "engine/saved_prompts.h"
#include "engine/sampling.h"
#include "engine/speculative.h"
#include "engine/text_stream.h"
#include "engine/weight_layouts.h"

namespace llmpool::engine {
namespace {

constexpr const char* kFallbackTemplate = "chatml";
// With one KV stream per sequence, sharing a prefix copies the donor's whole
// stream (a memcpy per layer, milliseconds at 2048 cells). The prefix cache
// counts a copy as worth the prompt tokens computed in the time it takes
// (stream_copy_tokens()): the stream's bytes at kStreamCopyBytesPerSecond (a
// single-threaded memcpy; 6-8 GB/s measured on the 2-core Xeon) over the
// measured cost of a prompt token, between 1 and kMaxStreamCopyTokens (also
// the figure before any prompt was timed). On bench-0.5b (24 MiB a stream at
// 2048 cells, ~4.7 ms a prompt token) a copy is worth 2 tokens, not 8, so a
// new request copies the 16-token system-and-template prefix of the last one
// instead of recomputing half of it.
constexpr size_t kMaxStreamCopyTokens = 8;
constexpr double kStreamCopyBytesPerSecond = 4e9;
// Host copies (saved_prompts.h): a sequence is saved when at least this many
// of its tokens would be dropped, and a copy restored when it gives at least
// this many more tokens than the KV cache's best (a copy costs about a
// prompt token's compute per few tokens; short gains are not worth it).
constexpr size_t kMinSavedTokens = 32;
constexpr size_t kMinRestoreGain = 32;
// The fewest prompt tokens a step carries while sequences generate.
constexpr int32_t kMinPrefillChunk = 32;
// While sequences generate, a step may carry as many prompt tokens as fit
// this long at the measured cost (prefill_chunk_for()).
constexpr double kPrefillStepTime = 0.050;
// Prompt tokens in the step that follows an aborted one.
constexpr int32_t kPrefillAfterAbort = 16;
// How long an idle engine waits for requests still being prepared before
// its first step (see run()).
constexpr auto kWaveGather = std::chrono::milliseconds(20);
// A prompt that shares at least this many tokens, not yet computed, with a
// prompt being prefilled waits for that prefill and copies them (admit()).
constexpr size_t kMinDeferShareTokens = 64;

using Clock = std::chrono::steady_clock;

// The ggml type of a `kv_type` value; nullopt for an unknown one.
std::optional<ggml_type> kv_ggml_type(const std::string& name) {
  if (name == "f16") return GGML_TYPE_F16;
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  return std::nullopt;
}

Status unknown_kv_type(const LocalModelSpec& spec) {
  return Status::invalid_argument("model '" + spec.name + "': kv_type must be f16 or q8_0", "kv_type");
}

// A non-negative integer metadata value (scalar, or the largest of a per-layer array).
std::optional<uint64_t> gguf_uint(const gguf_context* g, const std::string& key) {
  const int64_t id = gguf_find_key(g, key.c_str());
  if (id < 0) return std::nullopt;
  auto scalar = [](gguf_type t, const void* p) -> std::optional<uint64_t> {
    switch (t) {
      case GGUF_TYPE_UINT8: return *static_cast<const uint8_t*>(p);
      case GGUF_TYPE_UINT16: return *static_cast<const uint16_t*>(p);
      case GGUF_TYPE_UINT32: return *static_cast<const uint32_t*>(p);
      case GGUF_TYPE_UINT64: return *static_cast<const uint64_t*>(p);
      case GGUF_TYPE_INT32: {
        const int32_t v = *static_cast<const int32_t*>(p);
        return v < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(v));
      }
      default: return std::nullopt;
    }
  };
  const gguf_type t = gguf_get_kv_type(g, id);
  if (t != GGUF_TYPE_ARRAY) return scalar(t, gguf_get_val_data(g, id));
  const gguf_type et = gguf_get_arr_type(g, id);
  const size_t n = gguf_get_arr_n(g, id);
  const size_t width = et == GGUF_TYPE_UINT64 ? 8 : et == GGUF_TYPE_UINT16 ? 2 : et == GGUF_TYPE_UINT8 ? 1 : 4;
  const auto* data = static_cast<const unsigned char*>(gguf_get_arr_data(g, id));
  std::optional<uint64_t> best;
  for (size_t i = 0; i < n && data; ++i) {
    auto v = scalar(et, data + i * width);
    if (!v) return std::nullopt;
    best = std::max(best.value_or(0), *v);
  }
  return best;
}

}  // namespace

// One request: its prompt, its choices' results, and how to report back.
struct LocalModel::Job {
  GenerateRequest request;
  CancelTokenPtr cancel;
  GenerateCallbacks callbacks;
  std::vector<llama_token> prompt;
  GrammarSpec grammar;
  std::function<std::unique_ptr<OutputParser>()> make_parser;
  Clock::time_point deadline = Clock::time_point::max();
  Completion result;
  int32_t running = 0;  // choices not finished
  bool queued = false;  // handed to the engine thread (set under mu_)
  bool done = false;
};

// One sequence of the KV cache and what it is doing.
struct LocalModel::Slot {
  enum class State { kIdle, kPrefill, kWaitPrefill, kGenerate };
  int32_t id = 0;
  State state = State::kIdle;
  std::vector<llama_token> cache;  // tokens whose KV this sequence holds, positions 0..n-1
  std::shared_ptr<Job> job;
  int32_t choice = 0;
  size_t prefill_pos = 0;          // next prompt token to decode
  llama_token pending = -1;        // sampled, not yet decoded
  int32_t produced = 0;
  int32_t budget = 0;
  int32_t logits_index = -1;       // row of this step's logits, or -1
  size_t step_start = 0;           // cache size before this step's tokens
  std::vector<Slot*> followers;    // n > 1: choices waiting for this prefill
  SamplerPtr sampler;
  bool plain_greedy = false;       // the chain would only take the argmax: done directly
  std::unique_ptr<TextStream> text;
  std::unique_ptr<OutputParser> parser;  // tools / thinking: splits the raw output
  std::string raw;                       // raw output so far, when parsed
  std::vector<llama_token_data> candidates;  // the sampler's scratch
  uint64_t last_used = 0;
  // The source, or the destination, of a cross-stream copy that llama.cpp
  // makes at the next decode. Until then a source's cells must not change and
  // a destination's do not yet hold what its tokens say, so a host copy is
  // restored into neither (a restore writes cells at once) and a destination
  // is not saved (a save reads them at once).
  bool copy_from_pending = false;
  bool copy_to_pending = false;
  struct Speculation {
    bool on = false;                         // this request speculates
    std::vector<llama_token> draft;          // this step's drafts, decoded after `pending`
    std::vector<TokenDistribution> q;        // the distribution each draft was drawn from
    std::mt19937_64 rng;                     // acceptance and correction draws
    DraftLength length;
  } spec;
};

struct LocalModel::Batch {
  llama_batch b;
  explicit Batch(int32_t n) : b(llama_batch_init(n, 0, 1)) {}
  ~Batch() { llama_batch_free(b); }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
};

LocalModel::LocalModel(LocalModelSpec spec)
    : spec_(std::move(spec)), model_(nullptr, llama_model_free), ctx_(nullptr, llama_free) {}

Result<std::unique_ptr<LocalModel>> LocalModel::load(const LocalModelSpec& spec) {
  if (spec.context < 16 || spec.parallel < 1 || spec.parallel > 256 || spec.batch < 1)
    return Status::invalid_argument("model '" + spec.name + "': context, parallel or batch out of range");
  if (const SpeculativeSpec& sp = spec.speculative; sp.max_tokens < 1 || sp.max_tokens > 256 || sp.min_tokens < 0 ||
                                                    sp.min_tokens > sp.max_tokens || sp.ngram < 0 || sp.ngram > 64 ||
                                                    !(sp.p_min >= 0.0f && sp.p_min <= 1.0f))
    return Status::invalid_argument("model '" + spec.name + "': speculative decoding settings out of range");
  std::error_code ec;
  // Clients see the model's name and the reason; the path goes to the log.
  if (!std::filesystem::is_regular_file(spec.path, ec)) {
    spdlog::error("model '{}': no model file at {}", spec.name, spec.path);
    return Status::not_found("model '" + spec.name + "': its model file is missing");
  }
  const std::optional<ggml_type> kv_type = kv_ggml_type(spec.kv_type);
  if (!kv_type) return unknown_kv_type(spec);
  init_llama_backend();

  std::unique_ptr<LocalModel> m(new LocalModel(spec));
  llama_model_params mp = model_params(spec.repack);
  m->model_.reset(llama_model_load_from_file(spec.path.c_str(), mp));
  if (!m->model_) {
    spdlog::error("model '{}': llama.cpp cannot load {}", spec.name, spec.path);
    return Status::invalid_argument("model '" + spec.name + "': llama.cpp cannot load its model file (not a valid GGUF model?)");
  }

  int32_t threads = spec.threads > 0 ? spec.threads
                                     : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(spec.context) * static_cast<uint32_t>(spec.parallel);
  cp.n_batch = static_cast<uint32_t>(std::max(spec.batch, spec.parallel));
  cp.n_ubatch = std::min<uint32_t>(cp.n_batch, 512);
  cp.n_seq_max = static_cast<uint32_t>(spec.parallel);
  // Embedding batches pack whole inputs of several sequences into one
  // micro-batch, which needs the single stream.
  cp.kv_unified = spec.kv_unified || spec.embedding;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.type_k = cp.type_v = *kv_type;
  if (spec.embedding) {
    // A whole input must fit one micro-batch for pooling.
    cp.embeddings = true;
    cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(spec.context);
    cp.pooling_type = LLAMA_POOLING_TYPE_UNSPECIFIED;  // the model's own (mean, cls, last)
  }
  m->ctx_.reset(llama_init_from_model(m->model_.get(), cp));
  if (m->ctx_ && spec.embedding && llama_pooling_type(m->ctx_.get()) == LLAMA_POOLING_TYPE_NONE) {
    cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;  // a generative model used for embeddings
    m->ctx_.reset(llama_init_from_model(m->model_.get(), cp));
  }
  if (!m->ctx_) {
    spdlog::error("model '{}': llama.cpp cannot create a context for {}", spec.name, spec.path);
    return Status::invalid_argument("model '" + spec.name + "': llama.cpp cannot create its context (context " +
                                    std::to_string(spec.context) + " x " + std::to_string(spec.parallel) +
                                    " sequences, kv_type " + spec.kv_type + ")");
  }
  for (const auto& [buft, use] : llama_get_memory_breakdown(m->ctx_.get())) {
    m->memory_.weights += use.model;
    m->memory_.kv_cache += use.context;
    m->memory_.compute += use.compute;
  }
  // One sequence's stream (of the target; the draft keeps its own in step by recomputing).
  if (!cp.kv_unified) m->stream_bytes_ = m->memory_.kv_cache / static_cast<uint64_t>(spec.parallel);
  m->n_embd_ = llama_model_n_embd(m->model_.get());
  m->spec_.batch = static_cast<int32_t>(llama_n_batch(m->ctx_.get()));
  m->spec_.kv_unified = cp.kv_unified;
  llama_set_abort_callback(m->ctx_.get(), &LocalModel::should_abort, m.get());
  if (!spec.speculative.draft_path.empty() && !spec.embedding) {
    DraftModelParams dp{cp.n_ctx, cp.n_seq_max, cp.n_batch, threads, cp.kv_unified, spec.repack};
    auto draft = DraftModel::load(spec.name, spec.speculative.draft_path, m->model_.get(), dp);
    if (!draft) return draft.status();
    m->draft_ = std::move(draft).value();
  }
  if ((m->draft_ || spec.speculative.ngram > 0) && !spec.embedding)
    m->gate_ = std::make_unique<SpeculationGate>(spec.speculative.adaptive);
  m->batch_ = std::make_unique<Batch>(m->spec_.batch);
  m->memory_.prompt_cache = prompt_cache_budget(spec, m->memory_.kv_cache);
  if (m->memory_.prompt_cache > 0)
    m->saved_ = std::make_unique<SavedPrompts>(static_cast<size_t>(m->memory_.prompt_cache));

  const llama_vocab* vocab = llama_model_get_vocab(m->model_.get());
  m->n_vocab_ = llama_vocab_n_tokens(vocab);
  m->eog_tokens_ = end_of_generation_tokens(vocab);
  m->longest_token_bytes_ = longest_token_bytes(vocab);
  m->size_bytes_ = llama_model_size(m->model_.get());
  if (m->memory_.weights == 0) m->memory_.weights = m->size_bytes_;
  if (m->draft_) {
    // The draft's weights, KV cache and compute buffers count as the model's.
    MemoryUse draft;
    for (const auto& [buft, use] : llama_get_memory_breakdown(m->draft_->context())) {
      draft.weights += use.model;
      draft.kv_cache += use.context;
      draft.compute += use.compute;
    }
    if (draft.weights == 0) draft.weights = m->draft_->size_bytes();
    m->memory_.weights += draft.weights;
    m->memory_.kv_cache += draft.kv_cache;
    m->memory_.compute += draft.compute;
    m->size_bytes_ += m->draft_->size_bytes();
  }
  const char* tmpl = llama_model_chat_template(m->model_.get(), nullptr);
  m->chat_template_ = tmpl ? tmpl : kFallbackTemplate;
  auto jinja = ChatTemplate::create(m->model_.get());
  if (jinja) {
    m->jinja_ = std::move(jinja).value();
  } else {
    spdlog::warn("model '{}': {}; using built-in formatting without tool calls", spec.name,
                 jinja.status().message());
  }
  m->slots_.resize(static_cast<size_t>(spec.parallel));
  for (int32_t i = 0; i < spec.parallel; ++i) m->slots_[static_cast<size_t>(i)].id = i;
  m->thread_ = std::thread([raw = m.get()] { raw->run(); });
  for (auto& lane : m->lanes_) lane.thread = std::thread([raw = m.get(), &lane] { raw->prep_loop(lane); });
  spdlog::info("model '{}' loaded from {} (weights {:.1f} MiB, KV cache {:.1f} MiB {}, compute {:.1f} MiB, prompt "
               "cache {:.1f} MiB; context {} x {} sequences, {} KV cache, batch {}, {} threads)",
               spec.name, spec.path, m->memory_.weights / 1048576.0, m->memory_.kv_cache / 1048576.0, spec.kv_type,
               m->memory_.compute / 1048576.0, m->memory_.prompt_cache / 1048576.0, spec.context, spec.parallel,
               cp.kv_unified ? "unified" : "per-sequence", m->spec_.batch, threads);
  return m;
}

Result<MemoryUse> LocalModel::estimate_memory(const LocalModelSpec& spec) {
  const std::optional<ggml_type> kv_type = kv_ggml_type(spec.kv_type);
  if (!kv_type) return unknown_kv_type(spec);
  std::error_code ec;
  const uint64_t file = std::filesystem::file_size(spec.path, ec);
  if (ec) return Status::not_found("model '" + spec.name + "': its model file is missing");
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  std::unique_ptr<gguf_context, void (*)(gguf_context*)> g(gguf_init_from_file(spec.path.c_str(), params), gguf_free);
  if (!g) return Status::invalid_argument("model '" + spec.name + "': not a GGUF file");
  const int64_t arch_id = gguf_find_key(g.get(), "general.architecture");
  if (arch_id < 0 || gguf_get_kv_type(g.get(), arch_id) != GGUF_TYPE_STRING)
    return Status::invalid_argument("model '" + spec.name + "': its GGUF header names no architecture");
  const std::string arch = gguf_get_val_str(g.get(), arch_id);
  auto field = [&](const char* name) { return gguf_uint(g.get(), arch + "." + name); };
  const auto layers = field("block_count");
  const auto embd = field("embedding_length");
  const auto heads = field("attention.head_count");
  if (!layers || !embd || !heads || *heads == 0 || *layers > (1u << 16) || *embd > (1u << 20))
    return Status::invalid_argument("model '" + spec.name + "': its GGUF header lacks the attention sizes");
  const uint64_t heads_kv = field("attention.head_count_kv").value_or(*heads);
  const uint64_t head_k = field("attention.key_length").value_or(*embd / *heads);
  const uint64_t head_v = field("attention.value_length").value_or(*embd / *heads);
  if (heads_kv > (1u << 16) || head_k > (1u << 16) || head_v > (1u << 16))
    return Status::invalid_argument("model '" + spec.name + "': its GGUF header has out-of-range attention sizes");
  const uint64_t cells = static_cast<uint64_t>(std::max(spec.context, 0)) * static_cast<uint64_t>(std::max(spec.parallel, 0));
  const uint64_t per_cell = *layers * (ggml_row_size(*kv_type, static_cast<int64_t>(heads_kv * head_k)) +
                                       ggml_row_size(*kv_type, static_cast<int64_t>(heads_kv * head_v)));
  MemoryUse use;
  use.weights = file;
  use.kv_cache = cells * per_cell;
  use.prompt_cache = prompt_cache_budget(spec, use.kv_cache);
  return use;
}

uint64_t prompt_cache_budget(const LocalModelSpec& spec, uint64_t kv_cache) {
  if (spec.embedding || spec.prompt_cache_bytes == 0) return 0;
  if (spec.prompt_cache_bytes > 0) return static_cast<uint64_t>(spec.prompt_cache_bytes);
  return kv_cache;
}

LocalModel::~LocalModel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& lane : lanes_) lane.cv.notify_all();
  // The preparation threads first: once they are gone nothing new reaches
  // the engine's queue, which the engine thread then fails on its way out.
  for (auto& lane : lanes_)
    if (lane.thread.joinable()) lane.thread.join();
  if (thread_.joinable()) thread_.join();
}

namespace {
// The preparation lane the calling thread runs (null on other threads).
thread_local void* tl_prep_lane = nullptr;
}  // namespace

void LocalModel::release_prep_locked() {
  if (tl_prep_lane) static_cast<PrepLane*>(tl_prep_lane)->busy = false;
}

int64_t LocalModel::min_tokens(size_t bytes) const {
  if (longest_token_bytes_ <= 0) return 0;
  return static_cast<int64_t>((bytes + static_cast<size_t>(longest_token_bytes_) - 1) /
                              static_cast<size_t>(longest_token_bytes_));
}

int64_t LocalModel::preparing_locked() const {
  int64_t n = 0;
  for (const auto& lane : lanes_) n += static_cast<int64_t>(lane.queue.size()) + (lane.busy ? 1 : 0);
  return n;
}

int64_t LocalModel::waiting_locked() const { return static_cast<int64_t>(queue_.size()) + preparing_locked(); }

void LocalModel::push_prep_locked(PrepTask task, int64_t bytes) {
  PrepLane& lane = lanes_[bytes > spec_.prep_large_bytes ? 1 : 0];
  lane.queue.push_back(std::move(task));
  lane.cv.notify_one();
}

void LocalModel::prep_loop(PrepLane& lane) {
  tl_prep_lane = &lane;
  for (;;) {
    PrepTask task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      lane.cv.wait(lock, [&] { return stopping_ || !lane.queue.empty(); });
      if (stopping_) break;
      task = std::move(lane.queue.front());
      lane.queue.pop_front();
      lane.busy = true;
    }
    task.run();  // never throws: each task answers its own failures
    std::lock_guard<std::mutex> lock(mu_);
    lane.busy = false;
  }
  std::deque<PrepTask> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(lane.queue);
  }
  Status gone = Status::unavailable("model '" + spec_.name + "' is shutting down");
  for (auto& t : left) t.refuse(gone);
}

EngineStats LocalModel::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.queued = waiting_locked() + static_cast<int64_t>(embed_queue_.size());
  }
  s.active_sequences = stat_active_.load();
  s.requests_done = stat_done_.load();
  s.prompt_tokens = stat_prompt_.load();
  s.cached_prompt_tokens = stat_cached_.load();
  s.prompts_saved = stat_saved_.load();
  s.prompts_restored = stat_restored_.load();
  s.prompt_cache_used_bytes = stat_saved_bytes_.load();
  s.generated_tokens = stat_generated_.load();
  s.kv_cells_used = stat_kv_used_.load();
  s.kv_cells_total = static_cast<int64_t>(spec_.context) * spec_.parallel;
  s.aborted_steps = stat_aborted_.load();
  s.speculative_rounds = stat_spec_rounds_.load();
  s.speculative_drafted = stat_spec_drafted_.load();
  s.speculative_accepted = stat_spec_accepted_.load();
  s.speculative_steps_on = stat_spec_steps_on_.load();
  s.speculative_steps_off = stat_spec_steps_off_.load();
  s.speculative_speedup = stat_spec_speedup_.load();
  return s;
}

Result<std::string> LocalModel::format_chat(const std::vector<ChatMessage>& messages) const {
  std::vector<llama_chat_message> msgs;
  msgs.reserve(messages.size());
  size_t total = 0;
  for (const auto& m : messages) {
    msgs.push_back({m.role.c_str(), m.content.c_str()});
    total += m.role.size() + m.content.size();
  }
  std::string buf(total * 2 + 256, '\0');
  int32_t n = llama_chat_apply_template(chat_template_.c_str(), msgs.data(), msgs.size(), true,
                                        buf.data(), static_cast<int32_t>(buf.size()));
  if (n < 0) return Status::internal("model '" + spec_.name + "' has an unsupported chat template");
  if (static_cast<size_t>(n) > buf.size()) {
    buf.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(chat_template_.c_str(), msgs.data(), msgs.size(), true,
                                  buf.data(), static_cast<int32_t>(buf.size()));
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Result<std::vector<int32_t>> LocalModel::tokenize(const std::string& text, bool add_special,
                                                  bool parse_special) const {
  const llama_vocab* vocab = llama_model_get_vocab(model_.get());
  if (text.size() > static_cast<size_t>(INT32_MAX / 2)) return Status::invalid_argument("text too long");
  std::vector<llama_token> tokens(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_special, parse_special);
  if (n < 0) {
    if (n == INT32_MIN) return Status::invalid_argument("text too long");
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_special, parse_special);
  }
  tokens.resize(static_cast<size_t>(std::max(n, 0)));
  return tokens;
}

Result<std::string> LocalModel::detokenize(const std::vector<int32_t>& tokens) const {
  const llama_vocab* vocab = llama_model_get_vocab(model_.get());
  for (int32_t t : tokens)
    if (t < 0 || t >= n_vocab_)
      return Status::invalid_argument("token id " + std::to_string(t) + " is outside the vocabulary", "tokens");
  std::string out;
  for (int32_t t : tokens) out += token_piece(vocab, t);
  return out;
}

void LocalModel::embed(std::vector<std::string> inputs, EmbedCallback done) {
  if (!spec_.embedding)
    return done(Status::invalid_argument("model '" + spec_.name +
                                             "' does not produce embeddings (give it the capability 'embedding')",
                                         "model"));
  if (inputs.empty()) return done(Status::invalid_argument("'input' must not be empty", "input"));
  {
    std::unique_lock<std::mutex> lock(mu_);
    Status refused;
    if (stopping_) {
      refused = Status::unavailable("model '" + spec_.name + "' is shutting down");
    } else if (waiting_locked() + static_cast<int64_t>(embed_queue_.size()) >= spec_.max_queue) {
      refused = Status::resource_exhausted("model '" + spec_.name + "' queue is full; retry later");
    } else {
      int64_t bytes = 0;
      for (const auto& in : inputs) bytes += static_cast<int64_t>(in.size());
      auto shared_done = std::make_shared<EmbedCallback>(std::move(done));
      PrepTask task;
      task.run = [this, inputs = std::move(inputs), shared_done]() mutable {
        try {
          prepare_embedding(std::move(inputs), *shared_done);
        } catch (const std::exception& e) {
          if (*shared_done) (*shared_done)(Status::internal(std::string("preparing the input failed: ") + e.what()));
        } catch (...) {
          if (*shared_done) (*shared_done)(Status::internal("preparing the input failed"));
        }
      };
      task.refuse = [shared_done](const Status& st) { (*shared_done)(st); };
      push_prep_locked(std::move(task), bytes);
    }
    lock.unlock();
    if (!refused) return done(refused);
  }
}

void LocalModel::prepare_embedding(std::vector<std::string> inputs, EmbedCallback& done) {
  EmbedJob job;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (const int64_t at_least = min_tokens(inputs[i].size()); at_least > spec_.context)
      return done(Status::invalid_argument("input " + std::to_string(i) + " is at least " + std::to_string(at_least) +
                                               " tokens; this model's maximum context length is " +
                                               std::to_string(spec_.context),
                                           "input", "context_length_exceeded"));
    auto tokens = tokenize(inputs[i], true, false);
    if (!tokens) return done(tokens.status());
    if (tokens->empty())
      return done(Status::invalid_argument("input " + std::to_string(i) + " is empty", "input"));
    if (static_cast<int32_t>(tokens->size()) > spec_.context)
      return done(Status::invalid_argument("input " + std::to_string(i) + " is " + std::to_string(tokens->size()) +
                                               " tokens; this model's maximum context length is " +
                                               std::to_string(spec_.context),
                                           "input", "context_length_exceeded"));
    job.inputs.push_back(std::move(tokens).value());
  }
  job.done = std::move(done);
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      lock.unlock();
      return job.done(Status::unavailable("model '" + spec_.name + "' is shutting down"));
    }
    release_prep_locked();
    embed_queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void LocalModel::run_embedding(EmbedJob& job) {
  Embeddings out;
  out.vectors.resize(job.inputs.size());
  const int32_t max_seqs = spec_.parallel;
  llama_batch batch = llama_batch_init(spec_.context, 0, 1);
  size_t next = 0;
  Status failed;
  while (next < job.inputs.size() && failed) {
    // Pack whole inputs into one batch, one sequence each.
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    batch.n_tokens = 0;
    std::vector<size_t> packed;
    while (next < job.inputs.size() && static_cast<int32_t>(packed.size()) < max_seqs &&
           batch.n_tokens + static_cast<int32_t>(job.inputs[next].size()) <= spec_.context) {
      const auto& toks = job.inputs[next];
      const int32_t seq = static_cast<int32_t>(packed.size());
      for (size_t p = 0; p < toks.size(); ++p) {
        int32_t i = batch.n_tokens++;
        batch.token[i] = toks[p];
        batch.pos[i] = static_cast<llama_pos>(p);
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = seq;
        batch.logits[i] = true;
      }
      packed.push_back(next++);
      out.prompt_tokens += static_cast<int32_t>(toks.size());
    }
    int32_t rc = llama_model_has_encoder(model_.get()) && !llama_model_has_decoder(model_.get())
                     ? llama_encode(ctx_.get(), batch)
                     : llama_decode(ctx_.get(), batch);
    failed = decode_status(rc, "model '" + spec_.name + "' embeddings");
    if (!failed) break;
    for (size_t k = 0; k < packed.size(); ++k) {
      const float* e = llama_get_embeddings_seq(ctx_.get(), static_cast<llama_seq_id>(k));
      if (!e) {
        failed = Status::internal("llama.cpp returned no pooled embedding");
        break;
      }
      std::vector<float> v(e, e + n_embd_);
      double norm = 0.0;
      for (float x : v) norm += static_cast<double>(x) * x;
      norm = std::sqrt(norm);
      if (norm > 0.0)
        for (float& x : v) x = static_cast<float>(x / norm);
      out.vectors[packed[k]] = std::move(v);
    }
  }
  llama_batch_free(batch);
  stat_done_.fetch_add(1);
  if (!failed) return job.done(failed);
  job.done(std::move(out));
}

void LocalModel::submit(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) {
  auto job = std::make_shared<Job>();
  job->cancel = cancel ? std::move(cancel) : std::make_shared<CancelToken>();
  job->callbacks = std::move(callbacks);
  if (spec_.embedding)
    return job->callbacks.on_done(Status::invalid_argument(
        "model '" + spec_.name + "' is an embedding model; use /v1/embeddings", "model"));
  if (spec_.deadline_ms > 0) job->deadline = Clock::now() + std::chrono::milliseconds(spec_.deadline_ms);
  int64_t bytes = request.prompt ? static_cast<int64_t>(request.prompt->size()) : 0;
  for (const auto& m : request.messages) bytes += static_cast<int64_t>(m.content.size());
  Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = Status::unavailable("model '" + spec_.name + "' is shutting down");
    } else if (waiting_locked() >= spec_.max_queue) {
      refused = Status::resource_exhausted("model '" + spec_.name + "' has " + std::to_string(waiting_locked()) +
                                           " requests waiting; retry later");
    } else {
      PrepTask task;
      task.run = [this, job, request = std::move(request)]() mutable {
        try {
          prepare(job, std::move(request));
        } catch (const std::exception& e) {
          spdlog::error("model '{}': preparing a request failed: {}", spec_.name, e.what());
          if (!job->queued) job->callbacks.on_done(Status::internal(std::string("preparing the request failed: ") + e.what()));
        } catch (...) {
          if (!job->queued) job->callbacks.on_done(Status::internal("preparing the request failed"));
        }
      };
      task.refuse = [job](const Status& st) { job->callbacks.on_done(st); };
      push_prep_locked(std::move(task), bytes);
    }
  }
  if (!refused) return job->callbacks.on_done(refused);
}

void LocalModel::prepare(std::shared_ptr<Job> job, GenerateRequest request) {
  // What the request left unset takes the model's defaults, once, before
  // the sampler chain and the speculative verifier read them.
  if (request.sampling.top_k < 0) request.sampling.top_k = spec_.top_k;
  if (request.sampling.min_p < 0.0f) request.sampling.min_p = spec_.min_p;
  if (job->cancel->cancelled()) {  // the client left while the request waited: skip the work
    job->result.choices.resize(static_cast<size_t>(std::clamp(request.n, 1, spec_.parallel)));
    for (auto& c : job->result.choices) c.finish_reason = FinishReason::kCancelled;
    return job->callbacks.on_done(job->result);
  }

  Result<std::string> prompt = std::string();
  std::vector<std::string> extra_stops;
  if (request.prompt) {
    prompt = *request.prompt;
  } else if (jinja_) {
    auto formatted = jinja_->apply(request);
    if (!formatted) return job->callbacks.on_done(formatted.status());
    prompt = std::move(formatted->prompt);
    job->grammar = std::move(formatted->grammar);
    job->make_parser = std::move(formatted->make_parser);
    extra_stops = std::move(formatted->extra_stops);
  } else if (!request.tools.empty()) {
    // No Jinja template: the built-in formatting with the generic tool-call format.
    auto formatted = apply_generic_tool_format(request, [this](const auto& m) { return format_chat(m); });
    if (!formatted) return job->callbacks.on_done(formatted.status());
    prompt = std::move(formatted->prompt);
    job->grammar = std::move(formatted->grammar);
    job->make_parser = std::move(formatted->make_parser);
  } else {
    prompt = format_chat(request.messages);
  }
  if (!prompt) return job->callbacks.on_done(prompt.status());
  // Chat prompts carry the template's special tokens as text; raw
  // completion prompts are plain text.
  if (const int64_t at_least = min_tokens(prompt->size()); at_least >= spec_.context) {
    // Refused without tokenizing: megabytes of text take seconds of a core.
    return job->callbacks.on_done(Status::invalid_argument(
        "This model's maximum context length is " + std::to_string(spec_.context) +
            " tokens, but the prompt is at least " + std::to_string(at_least) + " tokens",
        request.prompt ? "prompt" : "messages", "context_length_exceeded"));
  }
  auto tokens = tokenize(*prompt, true, !request.prompt.has_value());
  if (!tokens) return job->callbacks.on_done(tokens.status());
  if (tokens->empty()) return job->callbacks.on_done(Status::invalid_argument("the prompt is empty", "messages"));
  if (static_cast<int32_t>(tokens->size()) >= spec_.context) {
    return job->callbacks.on_done(Status::invalid_argument(
        "This model's maximum context length is " + std::to_string(spec_.context) +
            " tokens, but the prompt is " + std::to_string(tokens->size()) + " tokens",
        request.prompt ? "prompt" : "messages", "context_length_exceeded"));
  }
  if (request.n < 1 || request.n > spec_.parallel) {
    return job->callbacks.on_done(Status::invalid_argument(
        "'n' must be between 1 and " + std::to_string(spec_.parallel) + " (the model's parallel sequences)", "n"));
  }
  if (job->grammar.grammar.empty()) {
    auto grammar = grammar_for(request.sampling);
    if (!grammar) return job->callbacks.on_done(grammar.status());
    job->grammar.grammar = std::move(grammar).value();
  }
  for (auto& s : extra_stops)
    if (std::find(request.sampling.stop.begin(), request.sampling.stop.end(), s) == request.sampling.stop.end())
      request.sampling.stop.push_back(std::move(s));
  job->prompt = std::move(tokens).value();
  if (!job->grammar.prefill_text.empty()) {
    // The prompt's last tokens that spell the generation prompt (tokenizing
    // it alone could split or merge differently at its start).
    const llama_vocab* vocab = llama_model_get_vocab(model_.get());
    std::string tail;
    size_t i = job->prompt.size();
    while (i > 0 && tail.size() < job->grammar.prefill_text.size())
      tail = token_piece(vocab, job->prompt[--i]) + tail;
    if (tail == job->grammar.prefill_text) {
      job->grammar.prefill_tokens.assign(job->prompt.begin() + static_cast<std::ptrdiff_t>(i), job->prompt.end());
    } else if (job->grammar.grammar_prefill) {
      return job->callbacks.on_done(Status::unimplemented(
          "model '" + spec_.name + "': its tokenizer splits the chat template's generation prompt, so tool calls "
          "cannot be constrained", "tools"));
    } else {
      // Only the thinking budget looks at it: its own tokens will do.
      auto own = tokenize(job->grammar.prefill_text, false, true);
      if (own) job->grammar.prefill_tokens = std::move(own).value();
    }
  }
  job->request = std::move(request);
  job->result.choices.resize(static_cast<size_t>(job->request.n));
  job->result.usage.prompt_tokens = static_cast<int32_t>(job->prompt.size());

  if (job->cancel->cancelled()) {  // the client left while the prompt was being prepared
    for (auto& c : job->result.choices) c.finish_reason = FinishReason::kCancelled;
    return job->callbacks.on_done(job->result);
  }
  {
    // Counted in waiting_locked() since submit(), so max_queue was checked
    // there; from here it counts as queued instead of preparing.
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      lock.unlock();
      return job->callbacks.on_done(Status::unavailable("model '" + spec_.name + "' is shutting down"));
    }
    release_prep_locked();
    job->queued = true;
    // Higher priority first, FIFO within a priority.
    auto pos = std::find_if(queue_.begin(), queue_.end(), [&](const std::shared_ptr<Job>& j) {
      return j->request.priority < job->request.priority;
    });
    queue_.insert(pos, job);
  }
  cv_.notify_one();
}

void LocalModel::run() {
  for (;;) {
    std::optional<EmbedJob> embed_job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stat_active_.load() == 0) {
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty() || !embed_queue_.empty(); });
        // An idle engine gathers the wave: requests that arrived together
        // but are still being prepared join the first step (at most
        // kWaveGather later), instead of each getting a prompt chunk beside
        // the first ones' streams, which would stretch every one of their
        // inter-token gaps and keep the wave's streams out of step.
        if (embed_queue_.empty()) {
          cv_.wait_until(lock, Clock::now() + kWaveGather, [this] {
            return stopping_ || preparing_locked() == 0 || queue_.size() >= slots_.size() || !embed_queue_.empty();
          });
        }
      }
      if (stopping_) break;
      if (!embed_queue_.empty()) {
        embed_job = std::move(embed_queue_.front());
        embed_queue_.pop_front();
      }
    }
    if (embed_job) {
      try {
        run_embedding(*embed_job);
      } catch (const std::exception& e) {
        embed_job->done(Status::internal(std::string("embedding failed: ") + e.what()));
      }
      continue;
    }
    try {
      step();
      if (spec_.check_invariants) check_invariants();
    } catch (const std::exception& e) {
      // The last resort: a request's own failures (admitting, sampling,
      // grammar, output) end that request inside the step. What reaches here
      // is the engine's (e.g. out of memory): fail everything the step
      // touched, so the engine is never wedged.
      spdlog::error("model '{}': engine step failed: {}", spec_.name, e.what());
      Status st = Status::internal(std::string("engine step failed: ") + e.what());
      for (auto& s : slots_)
        if (s.job) fail_job(s.job, st);
      std::shared_ptr<Job> head;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!queue_.empty()) {
          head = queue_.front();
          queue_.pop_front();
        }
      }
      if (head) fail_job(head, st);
    }
  }
  // Shutting down: nothing more runs.
  std::deque<std::shared_ptr<Job>> waiting;
  std::deque<EmbedJob> waiting_embeds;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(queue_);
    waiting_embeds.swap(embed_queue_);
  }
  Status gone = Status::unavailable("model '" + spec_.name + "' is shutting down");
  for (auto& e : waiting_embeds) e.done(gone);
  for (auto& s : slots_)
    if (s.job) fail_job(s.job, gone);
  for (auto& j : waiting) fail_job(j, gone);
}

void LocalModel::fail_job(std::shared_ptr<Job> job, const Status& status) {
  for (auto& s : slots_) {
    if (s.job != job) continue;
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), s.id, -1, -1);
    s.cache.clear();
    s.job.reset();
    s.followers.clear();
    s.state = Slot::State::kIdle;
    stat_active_.fetch_sub(1);
  }
  if (!job->done) {
    job->done = true;
    job->callbacks.on_done(status);
  }
}

bool LocalModel::admit(const std::shared_ptr<Job>& job) {
  const int32_t n = job->request.n;
  const auto idle = std::count_if(slots_.begin(), slots_.end(),
                                  [](const Slot& s) { return s.state == Slot::State::kIdle; });
  if (idle < n) return false;
  // A prompt that shares a long prefix with one still being prefilled (a
  // wave of requests with one system prompt, gathered into one step) waits
  // for that prefill, a step or a few, and then copies the prefix instead of
  // computing it alongside. It stays at the head of the queue meanwhile.
  for (const Slot& s : slots_) {
    if (s.state != Slot::State::kPrefill || !s.job) continue;
    if (common_prefix(s.job->prompt, job->prompt) >= s.cache.size() + kMinDeferShareTokens) return false;
  }

  llama_memory_t mem = llama_get_memory(ctx_.get());
  // The prefix cache (prefix_cache.h): the leader is the idle sequence
  // worth taking, with its own prefix or a longer one copied from any other
  // sequence (cells shared in the unified cache, a stream copy otherwise).
  std::vector<SequenceView> views(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i)
    views[i] = {&slots_[i].cache, slots_[i].last_used, slots_[i].state == Slot::State::kIdle};
  const bool unified = spec_.kv_unified;
  const PrefixPlan plan = plan_prefix(job->prompt, views, tick_, unified ? 0 : stream_copy_tokens());
  Slot* leader = &slots_[static_cast<size_t>(plan.target)];
  size_t reuse = plan.reuse;
  // A copy in host memory that shares clearly more than any sequence.
  SavedPrompts::Match saved;
  if (saved_) {
    saved = saved_->best(job->prompt);
    saved.common = std::min(saved.common, job->prompt.size() - 1);  // the last token is decoded for its logits
    if (saved.common < reuse + kMinRestoreGain || leader->copy_from_pending || leader->copy_to_pending)
      saved.entry = nullptr;
  }
  // What the leader holds beyond what stays of it goes to host memory first.
  if (saved_) save_to_host(*leader, saved.entry || plan.donor >= 0 ? 0 : reuse);
  if (saved.entry) {
    SavedPrompts::Entry e = saved_->take(saved.entry);
    stat_saved_bytes_.store(static_cast<int64_t>(saved_->bytes()));
    llama_memory_seq_rm(mem, leader->id, -1, -1);
    if (llama_state_seq_set_data(ctx_.get(), e.state.data(), e.state.size(), leader->id) == 0) {
      spdlog::warn("model '{}': a saved prompt ({} tokens) could not be restored; computing it", spec_.name,
                   e.tokens.size());
      llama_memory_seq_rm(mem, leader->id, -1, -1);
      leader->cache.clear();
      reuse = 0;
    } else {
      llama_memory_seq_rm(mem, leader->id, static_cast<llama_pos>(saved.common), -1);
      leader->cache.assign(job->prompt.begin(), job->prompt.begin() + static_cast<std::ptrdiff_t>(saved.common));
      reuse = saved.common;
      stat_restored_.fetch_add(1);
    }
  } else if (plan.donor >= 0) {
    Slot* donor = &slots_[static_cast<size_t>(plan.donor)];
    llama_memory_seq_rm(mem, leader->id, -1, -1);
    if (unified) {
      llama_memory_seq_cp(mem, donor->id, leader->id, 0, static_cast<llama_pos>(reuse));
    } else {
      // Across streams only whole streams copy (at the next decode, before
      // anything of this step is written); the tail is then dropped.
      llama_memory_seq_cp(mem, donor->id, leader->id, -1, -1);
      donor->copy_from_pending = leader->copy_to_pending = true;
      llama_memory_seq_rm(mem, leader->id, static_cast<llama_pos>(reuse), -1);
    }
    leader->cache.assign(job->prompt.begin(), job->prompt.begin() + static_cast<std::ptrdiff_t>(reuse));
  } else {
    llama_memory_seq_rm(mem, leader->id, static_cast<llama_pos>(reuse), -1);
    leader->cache.resize(reuse);
  }
  // The other choices wipe what they take (saved first): the least valuable first.
  std::vector<Slot*> extra;
  for (int32_t i : eviction_order(views, tick_, plan.target)) extra.push_back(&slots_[static_cast<size_t>(i)]);

  spdlog::debug("model '{}': admit {} prompt tokens ({} cached), grammar {} bytes{}", spec_.name,
                job->prompt.size(), reuse, job->grammar.grammar.size(), job->grammar.lazy ? " (lazy)" : "");
  job->result.usage.cached_prompt_tokens = static_cast<int32_t>(reuse);
  stat_prompt_.fetch_add(static_cast<int64_t>(job->prompt.size()));
  stat_cached_.fetch_add(static_cast<int64_t>(reuse));
  job->running = n;

  const SamplingParams& sp = job->request.sampling;
  uint32_t seed = sp.seed ? *sp.seed : std::random_device{}();
  int32_t budget = spec_.context - static_cast<int32_t>(job->prompt.size());
  if (sp.max_tokens) budget = std::min(budget, *sp.max_tokens);

  auto start = [&](Slot* s, int32_t choice) -> Status {
    Result<SamplerPtr> sampler = Status::internal("sampler not built");
    try {
      sampler = make_sampler(model_.get(), sp, job->grammar, seed + static_cast<uint32_t>(choice), eog_tokens_);
    } catch (const std::exception& e) {
      sampler = Status::internal(std::string("cannot build the sampler: ") + e.what());
    }
    if (!sampler) return sampler.status();
    s->sampler = std::move(sampler).value();
    s->plain_greedy = sp.temperature <= 0.0f && sp.logit_bias.empty() && sp.repeat_penalty == 1.0f &&
                      sp.frequency_penalty == 0.0f && sp.presence_penalty == 0.0f && job->grammar.grammar.empty() &&
                      job->grammar.thinking_budget < 0;
    s->job = job;
    s->choice = choice;
    s->produced = 0;
    s->budget = budget;
    s->pending = -1;
    s->logits_index = -1;
    s->followers.clear();
    s->text = std::make_unique<TextStream>(sp.stop);
    s->parser = job->make_parser ? job->make_parser() : nullptr;
    s->raw.clear();
    start_speculation(*s, seed + static_cast<uint32_t>(choice));
    s->last_used = ++tick_;
    stat_active_.fetch_add(1);
    return Status::ok();
  };
  Status st = start(leader, 0);
  if (st) {
    leader->state = Slot::State::kPrefill;
    leader->prefill_pos = reuse;
    int32_t choice = 1;
    for (Slot* s : extra) {
      if (choice == n) break;
      if (saved_) save_to_host(*s, 0);
      llama_memory_seq_rm(mem, s->id, -1, -1);
      s->cache.clear();
      if (!(st = start(s, choice))) break;
      s->state = Slot::State::kWaitPrefill;
      leader->followers.push_back(s);
      ++choice;
    }
  }
  if (!st) fail_job(job, st);
  return true;
}

void LocalModel::save_to_host(const Slot& s, size_t kept) {
  if (s.cache.size() < kept + kMinSavedTokens || s.copy_to_pending) return;
  const size_t size = llama_state_seq_get_size(ctx_.get(), s.id);
  if (size == 0 || size > saved_->budget()) return;
  std::vector<uint8_t> state(size);
  if (llama_state_seq_get_data(ctx_.get(), state.data(), size, s.id) != size) return;
  if (saved_->put(s.cache, std::move(state))) stat_saved_.fetch_add(1);
  stat_saved_bytes_.store(static_cast<int64_t>(saved_->bytes()));
}

void LocalModel::reap_cancelled_and_expired() {
  const auto now = Clock::now();
  for (auto& s : slots_) {
    if (!s.job || s.job->done) continue;
    if (s.job->cancel->cancelled()) {
      isolated(s, [&] { finish(s, FinishReason::kCancelled); return Status::ok(); });
    } else if (now >= s.job->deadline) {
      spdlog::warn("model '{}': request passed its {} ms deadline", spec_.name, spec_.deadline_ms);
      isolated(s, [&] { finish(s, FinishReason::kLength); return Status::ok(); });
    }
  }
  std::vector<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = queue_.begin(); it != queue_.end();) {
      if ((*it)->cancel->cancelled() || now >= (*it)->deadline) {
        dropped.push_back(*it);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& j : dropped) {
    if (j->cancel->cancelled()) {
      for (auto& c : j->result.choices) c.finish_reason = FinishReason::kCancelled;
      j->done = true;
      j->callbacks.on_done(j->result);
    } else {
      fail_job(j, Status::deadline_exceeded("the request waited past its deadline in the queue"));
    }
  }
}

void LocalModel::step() {
  // The step's wall time, from here to its last sampled token, and what it
  // emitted, for the speculation gate: every per-step cost counts, since
  // speculating is worth it only by taking fewer steps.
  const Clock::time_point started = Clock::now();
  const int64_t emitted_before = emitted_;
  reap_cancelled_and_expired();

  // Admit waiting requests while sequences are free, in queue order.
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) break;
      job = queue_.front();
    }
    bool admitted = true;
    try {
      admitted = admit(job);
    } catch (const std::exception& e) {
      // admit() answers its own failures; an exception ends this request only.
      spdlog::error("model '{}': admitting a request failed: {}", spec_.name, e.what());
      fail_job(job, Status::internal(std::string("admitting the request failed: ") + e.what()));
    }
    if (!admitted) break;
    std::lock_guard<std::mutex> lock(mu_);
    queue_.pop_front();
  }

  // Build one batch: every generating sequence's next token first, then
  // prompt chunks under what is left of the token budget.
  const int32_t budget = spec_.batch;
  llama_batch& batch = batch_->b;
  batch.n_tokens = 0;
  auto add = [&](Slot& s, llama_token tok, bool logits) {
    int32_t i = batch.n_tokens++;
    batch.token[i] = tok;
    batch.pos[i] = static_cast<llama_pos>(s.cache.size());
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = s.id;
    batch.logits[i] = logits;
    s.cache.push_back(tok);
    if (logits) s.logits_index = i;
  };
  const int32_t gated = draft_step(budget);
  for (auto& s : slots_) {
    s.logits_index = -1;
    s.step_start = s.cache.size();
    if (s.state == Slot::State::kGenerate && batch.n_tokens < budget) {
      add(s, s.pending, true);
      // Drafts follow the pending token, each with its row of logits: the
      // target verifies them all in this decode.
      const int32_t first = s.logits_index;
      s.spec.draft.resize(std::min<size_t>(s.spec.draft.size(), static_cast<size_t>(budget - batch.n_tokens)));
      for (llama_token d : s.spec.draft) add(s, d, true);
      s.logits_index = first;
    } else {
      s.spec.draft.clear();
    }
  }
  const int32_t decode_tokens = batch.n_tokens;
  // Prompt chunks. Shortest remaining prompt first, so short requests are
  // not stuck behind a long one (TTFT); the oldest prompt still gets a
  // quarter of the budget every step, so a long prompt is never starved.
  std::vector<Slot*> prefill;
  for (auto& s : slots_)
    if (s.state == Slot::State::kPrefill) prefill.push_back(&s);
  auto feed = [&](Slot* s, int32_t limit) {
    const auto& prompt = s->job->prompt;
    while (s->prefill_pos < prompt.size() && batch.n_tokens < limit) {
      bool last = s->prefill_pos + 1 == prompt.size();
      add(*s, prompt[s->prefill_pos++], last);
    }
  };
  if (!prefill.empty()) {
    // Decode first: while sequences generate, the step's length is every
    // generating stream's inter-token gap, so prompt tokens get a chunk that
    // shrinks as more streams generate (prefill_chunk_for()).
    int32_t limit = budget;
    if (batch.n_tokens > 0) limit = std::min(budget, batch.n_tokens + prefill_chunk_for(batch.n_tokens));
    // The step after an abort cannot be aborted: keep it short, so that a
    // cancellation arriving meanwhile still waits little.
    if (last_step_aborted_) limit = std::min(limit, batch.n_tokens + kPrefillAfterAbort);
    Slot* oldest = *std::min_element(prefill.begin(), prefill.end(),
                                     [](Slot* a, Slot* b) { return a->last_used < b->last_used; });
    feed(oldest, std::min(limit, batch.n_tokens + std::max(1, (limit - batch.n_tokens) / 4)));
    std::sort(prefill.begin(), prefill.end(), [](Slot* a, Slot* b) {
      return a->job->prompt.size() - a->prefill_pos < b->job->prompt.size() - b->prefill_pos;
    });
    for (Slot* s : prefill) feed(s, limit);
  }
  if (batch.n_tokens == 0) return;

  // Every request holding a sequence (and, in should_abort, every waiting
  // one): a cancelled one is freed and answered within abort_after_ms
  // instead of after the step.
  watch_.start = Clock::now();
  watch_.jobs.clear();
  // Never two aborts in a row: a stream of cancellations must not stop the
  // others' progress.
  if (!last_step_aborted_)
    for (auto& s : slots_)
      if (s.job) watch_.jobs.emplace_back(s.job->cancel, s.job->deadline);
  int32_t rc = llama_decode(ctx_.get(), batch);
  watch_.jobs.clear();
  if (rc == 0 && batch.n_tokens - decode_tokens >= kMinPrefillChunk) {
    // What a token of a step with a prompt chunk costs (prefill_chunk_for()).
    const double per_token = std::chrono::duration<double>(Clock::now() - watch_.start).count() / batch.n_tokens;
    prefill_token_s_ = prefill_token_s_ > 0 ? 0.7 * prefill_token_s_ + 0.3 * per_token : per_token;
  }
  if (rc == 0 || rc == 2)  // the copies are made
    for (auto& s : slots_) s.copy_from_pending = s.copy_to_pending = false;
  last_step_aborted_ = rc == 2;
  if (rc == 2) {
    // Aborted for a cancelled or expired request: undo the step; the next
    // one frees that request and redoes the others' work.
    roll_back_step();
    return;
  }
  if (rc != 0) {
    Status st = decode_status(rc, "model '" + spec_.name + "'");
    spdlog::error("{}", st.message());
    // The batch's tokens are not in the cache: every job in it fails.
    for (auto& s : slots_)
      if (s.job) fail_job(s.job, st);
    return;
  }

  int64_t used = 0;
  for (auto& s : slots_) {
    if (s.logits_index >= 0 && s.job) {
      const int32_t row = s.logits_index;
      if (s.state == Slot::State::kPrefill) {
        // The prompt is in: share it with the other choices, then everyone samples.
        s.state = Slot::State::kGenerate;
        std::vector<Slot*> followers = std::move(s.followers);
        s.followers.clear();
        for (Slot* f : followers) {
          if (!s.job) break;              // a choice failed: the request ended
          if (f->job != s.job) continue;  // this choice already ended
          llama_memory_seq_cp(llama_get_memory(ctx_.get()), s.id, f->id, -1, -1);
          s.copy_from_pending = f->copy_to_pending = true;
          f->cache = s.cache;
          f->state = Slot::State::kGenerate;
          isolated(*f, [&] { return sample(*f, row); });
        }
      }
      // A choice that failed above ended the whole request, this one too.
      if (s.job) isolated(s, [&] { return s.spec.draft.empty() ? sample(s, row) : verify(s, row); });
    }
    used += static_cast<int64_t>(s.cache.size());
  }
  stat_kv_used_.store(used);
  if (gated > 0) {
    gate_->record(batch.n_tokens > decode_tokens, std::chrono::duration<double>(Clock::now() - started).count(),
                  emitted_ - emitted_before);
    stat_spec_speedup_.store(gate_->speedup());
  }
}

size_t LocalModel::stream_copy_tokens() const {
  if (prefill_token_s_ <= 0 || stream_bytes_ == 0) return kMaxStreamCopyTokens;
  const double tokens = std::ceil(static_cast<double>(stream_bytes_) / kStreamCopyBytesPerSecond / prefill_token_s_);
  return static_cast<size_t>(std::clamp(tokens, 1.0, static_cast<double>(kMaxStreamCopyTokens)));
}

int32_t LocalModel::prefill_chunk_for(int32_t generating) const {
  if (generating <= 0) return spec_.batch;
  if (spec_.prefill_chunk > 0) return spec_.prefill_chunk;
  // A quarter of the budget shared by the generating streams: with one
  // stream a prompt still goes in quickly (TTFT), with many each stream's
  // step grows by a few tokens' worth only (ITL). Never below
  // kMinPrefillChunk, so arrivals are not starved; and at least what fits
  // kPrefillStepTime at the measured cost of a prompt-chunk step's token:
  // on a fast model (a small one, or a GPU) a whole prompt costs the streams
  // a few milliseconds, while splitting it costs a step's fixed overhead per
  // piece (on the 2.2 MB demo target, echo-heavy prompts: 387-427 tok/s
  // chunked, 933-970 whole).
  const int32_t chunk = std::max(kMinPrefillChunk, spec_.batch / (4 * generating));
  if (prefill_token_s_ <= 0) return chunk;
  return std::max(chunk, static_cast<int32_t>(std::min<double>(spec_.batch, kPrefillStepTime / prefill_token_s_)));
}

bool LocalModel::should_abort(void* self) {
  const auto* m = static_cast<const LocalModel*>(self);
  if (m->watch_.jobs.empty()) return false;  // not a generation step
  const auto now = Clock::now();
  if (now - m->watch_.start < std::chrono::milliseconds(m->spec_.abort_after_ms)) return false;
  for (const auto& [cancel, deadline] : m->watch_.jobs)
    if (cancel->cancelled() || now >= deadline) return true;
  // Requests queued before or during this step.
  std::lock_guard<std::mutex> lock(m->mu_);
  for (const auto& j : m->queue_)
    if (j->cancel->cancelled() || now >= j->deadline) return true;
  return false;
}

void LocalModel::check_invariants() const {
  llama_memory_t mem = llama_get_memory(ctx_.get());
  int64_t in_use = 0;
  std::string broken;
  for (const auto& s : slots_) {
    const bool busy = s.state != Slot::State::kIdle;
    if (busy != static_cast<bool>(s.job))
      broken += " slot " + std::to_string(s.id) + (busy ? " is busy without a request;" : " holds a request but is idle;");
    in_use += s.job ? 1 : 0;
    const llama_pos held = llama_memory_seq_pos_max(mem, s.id) + 1;
    if (held != static_cast<llama_pos>(s.cache.size()))
      broken += " slot " + std::to_string(s.id) + " lists " + std::to_string(s.cache.size()) +
                " tokens but its KV cache holds " + std::to_string(held) + ";";
  }
  if (stat_active_.load() != in_use)
    broken += " active count " + std::to_string(stat_active_.load()) + " but " + std::to_string(in_use) +
              " slots in use;";
  if (broken.empty()) return;
  spdlog::critical("model '{}': engine invariants broken after a step:{}", spec_.name, broken);
  std::abort();
}

void LocalModel::roll_back_step() {
  // llama.cpp kept the micro-batches that completed and dropped the aborted
  // one; drop everything this step added so every sequence is where it was.
  llama_memory_t mem = llama_get_memory(ctx_.get());
  for (auto& s : slots_) {
    s.logits_index = -1;
    if (s.cache.size() <= s.step_start) continue;
    llama_memory_seq_rm(mem, s.id, static_cast<llama_pos>(s.step_start), -1);
    s.cache.resize(s.step_start);
    if (s.state == Slot::State::kPrefill) s.prefill_pos = s.step_start;
  }
  stat_aborted_.fetch_add(1);
  spdlog::debug("model '{}': step aborted for a cancelled or expired request", spec_.name);
}

template <class Work>
void LocalModel::isolated(Slot& s, Work&& work) {
  std::shared_ptr<Job> job = s.job;  // work may finish the slot
  Status st;
  try {
    st = work();
  } catch (const std::exception& e) {
    st = Status::internal(std::string("generating the output failed: ") + e.what());
  } catch (...) {
    st = Status::internal("generating the output failed");
  }
  if (st || !job) return;
  spdlog::warn("model '{}': request ended by {}", spec_.name, st.to_string());
  fail_job(job, st);
}

Status LocalModel::sample(Slot& s, int32_t logits_index) {
  Job& job = *s.job;
  llama_token tok = -1;
  if (s.plain_greedy) {
    // Greedy without anything that reshapes the distribution: the argmax of
    // the raw logits (the chain would first copy the whole vocabulary into a
    // candidate array). With ignore_eos the end tokens are out of the running.
    float* logits = llama_get_logits_ith(ctx_.get(), logits_index);
    if (job.request.sampling.ignore_eos)
      for (int32_t t : eog_tokens_) logits[t] = -INFINITY;
    tok = static_cast<llama_token>(std::max_element(logits, logits + n_vocab_) - logits);
  } else {
    auto drawn = sample_token(s.sampler.get(), llama_get_logits_ith(ctx_.get(), logits_index), n_vocab_, s.candidates,
                              job.grammar.grammar.empty() ? "logit_bias"
                              : job.grammar.lazy          ? "tools"
                                                          : "response_format");
    if (!drawn) return drawn.status();
    tok = *drawn;
  }
  return emit(s, tok, logits_index);
}

Status LocalModel::emit(Slot& s, int32_t tok, int32_t logits_index) {
  Job& job = *s.job;
  const llama_vocab* vocab = llama_model_get_vocab(model_.get());
  ++emitted_;
  Delta delta;
  delta.index = s.choice;
  const int32_t top = job.request.sampling.top_logprobs;
  // With ignore_eos only a complete grammar lets one through (the sampler bans them otherwise).
  const bool eog = llama_vocab_is_eog(vocab, tok);
  if (top >= 0 && !eog) {
    delta.logprobs.push_back(
        token_logprob(vocab, llama_get_logits_ith(ctx_.get(), logits_index), n_vocab_, tok, top));
  }
  if (eog) {
    finish(s, FinishReason::kStop);
    return Status::ok();
  }
  ++s.produced;
  ++job.result.usage.completion_tokens;
  stat_generated_.fetch_add(1);
  delta.text = s.text->push(token_piece(vocab, tok));
  Choice& choice = job.result.choices[static_cast<size_t>(s.choice)];
  if (s.parser && !delta.text.empty()) {
    s.raw += delta.text;
    Delta parsed = s.parser->update(s.raw, false);
    delta.text = std::move(parsed.text);
    delta.reasoning_content = std::move(parsed.reasoning_content);
    delta.tool_calls = std::move(parsed.tool_calls);
  }
  choice.text += delta.text;
  choice.reasoning_content += delta.reasoning_content;
  for (const auto& lp : delta.logprobs) choice.logprobs.push_back(lp);
  if (job.callbacks.on_delta && (!delta.text.empty() || !delta.logprobs.empty() ||
                                 !delta.reasoning_content.empty() || !delta.tool_calls.empty()))
    job.callbacks.on_delta(std::move(delta));
  if (s.text->stopped()) {
    finish(s, FinishReason::kStop);
  } else if (s.produced >= s.budget || static_cast<int32_t>(s.cache.size()) >= spec_.context) {
    finish(s, FinishReason::kLength);
  } else {
    s.pending = tok;
    s.state = Slot::State::kGenerate;
  }
  return Status::ok();
}

void LocalModel::start_speculation(Slot& s, uint32_t seed) {
  const SpeculativeSpec& sp = spec_.speculative;
  s.spec.on = (draft_ || sp.ngram > 0) && s.job->request.sampling.speculative;
  s.spec.draft.clear();
  s.spec.q.clear();
  s.spec.rng.seed((static_cast<uint64_t>(seed) << 32) ^ 0x5bd1e995u);
  s.spec.length = DraftLength(sp.min_tokens, sp.max_tokens, spec_acceptance_);
}

int32_t LocalModel::draft_step(int32_t budget) {
  const SpeculativeSpec& sp = spec_.speculative;
  int32_t generating = 0;
  std::vector<Slot*> speculating;
  for (auto& s : slots_) {
    s.spec.draft.clear();
    s.spec.q.clear();
    if (s.state != Slot::State::kGenerate || !s.job) continue;
    ++generating;
    if (s.spec.on) speculating.push_back(&s);
  }
  if (speculating.empty() || !gate_) return 0;
  // The gate decides for the whole step: its cost is the step's, shared by
  // every generating sequence. A step it keeps from speculating samples
  // each sequence's next token as without a drafter (the same
  // distribution); the draft model catches up when speculation resumes.
  const bool on = gate_->decide(generating);
  stat_spec_steps_on_.store(gate_->steps(true));
  stat_spec_steps_off_.store(gate_->steps(false));
  if (!on) return generating;
  // Every generating sequence's pending token comes first; the drafts share
  // what is left of the batch.
  const int32_t room = (budget - generating) / generating;
  const int32_t shortest = std::max(1, sp.min_tokens);
  std::vector<DraftRequest> requests;
  std::vector<SamplerPtr> chains;  // the drafts' copies of the request chains
  std::vector<Slot*> drafted;
  requests.reserve(speculating.size());
  for (Slot* s : speculating) {
    const int32_t k = std::min({s->spec.length.next(), sp.max_tokens, room, s->budget - s->produced - 1,
                                spec_.context - static_cast<int32_t>(s->cache.size()) - 2});
    if (k < shortest) continue;
    if (!draft_) {
      // Prompt lookup: the context's own continuation of its latest suffix;
      // one-hot q (a deterministic drafter).
      s->cache.push_back(s->pending);
      s->spec.draft = ngram_draft(s->cache, 1, sp.ngram, k);
      s->cache.pop_back();
      if (static_cast<int32_t>(s->spec.draft.size()) < shortest) s->spec.draft.clear();
      for (llama_token d : s->spec.draft) s->spec.q.push_back({{d, 1.0f}});
      continue;
    }
    DraftRequest r;
    r.seq = s->id;
    r.context = s->cache;
    r.context.push_back(s->pending);
    r.max_tokens = k;
    if (!s->plain_greedy) {
      SamplerPtr copy(llama_sampler_clone(s->sampler.get()));
      if (!copy) continue;
      r.chain = copy.get();
      chains.push_back(std::move(copy));
    } else if (s->job->request.sampling.ignore_eos) {
      r.banned = eog_tokens_;
    }
    r.rng = &s->spec.rng;
    requests.push_back(std::move(r));
    drafted.push_back(s);
  }
  if (requests.empty()) return generating;
  std::vector<DraftRequest*> ptrs;
  for (auto& r : requests) ptrs.push_back(&r);
  draft_->draft(ptrs, sp.p_min, budget);
  for (size_t i = 0; i < requests.size(); ++i) {
    if (static_cast<int32_t>(requests[i].tokens.size()) < shortest) continue;
    drafted[i]->spec.draft = std::move(requests[i].tokens);
    drafted[i]->spec.q = std::move(requests[i].q);
  }
  return generating;
}

Status LocalModel::verify(Slot& s, int32_t first_row) {
  std::shared_ptr<Job> job = s.job;  // emit() may finish the slot
  const SamplingParams& sp = job->request.sampling;
  std::vector<llama_token> draft = std::move(s.spec.draft);
  std::vector<TokenDistribution> q = std::move(s.spec.q);
  s.spec.draft.clear();
  s.spec.q.clear();
  const std::string param = job->grammar.grammar.empty() ? "logit_bias" : job->grammar.lazy ? "tools" : "response_format";
  const std::span<const int32_t> banned =
      s.plain_greedy && sp.ignore_eos ? std::span<const int32_t>(eog_tokens_) : std::span<const int32_t>();
  // The cache lists what the target has seen when each token is drawn: the
  // pending token, then each accepted draft; the KV beyond is dropped below.
  s.cache.resize(s.step_start + 1);
  const int32_t n = static_cast<int32_t>(draft.size());
  int32_t accepted = 0;
  Status st;
  TokenDistribution p;
  float confidence = 0.0f;
  for (int32_t i = 0; i <= n && s.job == job; ++i) {
    if (i == n) {  // every draft accepted: the target's own next token, drawn as usual
      st = sample(s, first_row + i);
      break;
    }
    const float* logits = llama_get_logits_ith(ctx_.get(), first_row + i);
    st = chain_distribution(s.plain_greedy ? nullptr : s.sampler.get(), logits, n_vocab_, banned, s.candidates, p,
                            confidence, param);
    if (!st) break;
    const Verdict v = verify_draft(p, q[static_cast<size_t>(i)], draft[static_cast<size_t>(i)], s.spec.rng,
                                   verify_scratch_);
    if (!s.plain_greedy) {
      try {
        llama_sampler_accept(s.sampler.get(), v.token);
      } catch (const std::exception& e) {
        st = Status::invalid_argument(std::string("the output constraint failed: ") + e.what(), param);
        break;
      }
    }
    st = emit(s, v.token, first_row + i);
    if (!st || !v.accepted) break;
    ++accepted;
    s.cache.push_back(v.token);  // decoded in this step: its KV stays
  }
  llama_memory_seq_rm(llama_get_memory(ctx_.get()), s.id, static_cast<llama_pos>(s.cache.size()), -1);
  stat_spec_rounds_.fetch_add(1);
  stat_spec_drafted_.fetch_add(n);
  stat_spec_accepted_.fetch_add(accepted);
  s.spec.length.record(n, accepted);
  spec_acceptance_ = 0.9 * spec_acceptance_ + 0.1 * s.spec.length.acceptance();
  return st;
}

void LocalModel::finish(Slot& s, FinishReason reason) {
  // Once only per choice: a follower can be reached both on its own slot and
  // through its leader (the second time would count it down again).
  if (!s.job) return;
  std::shared_ptr<Job> job = std::move(s.job);
  std::vector<Slot*> followers = std::move(s.followers);
  std::unique_ptr<TextStream> text = std::move(s.text);
  std::unique_ptr<OutputParser> parser = std::move(s.parser);
  s.job.reset();
  s.followers.clear();
  s.state = Slot::State::kIdle;
  s.sampler.reset();
  s.last_used = ++tick_;
  stat_active_.fetch_sub(1);
  if (job && !job->done) {
    Choice& choice = job->result.choices[static_cast<size_t>(s.choice)];
    choice.index = s.choice;
    Delta last;
    last.index = s.choice;
    last.text = text ? text->flush() : std::string();
    if (parser) {
      s.raw += last.text;
      Delta parsed = parser->update(s.raw, true);
      last.text = std::move(parsed.text);
      last.reasoning_content = std::move(parsed.reasoning_content);
      last.tool_calls = std::move(parsed.tool_calls);
      choice.text = parser->content();
      choice.reasoning_content = parser->reasoning();
      choice.tool_calls = parser->tool_calls();
      if (reason == FinishReason::kStop && !choice.tool_calls.empty()) reason = FinishReason::kToolCalls;
    } else {
      choice.text += last.text;
    }
    choice.finish_reason = reason;
    last.finish_reason = reason;
    if (job->callbacks.on_delta && reason != FinishReason::kCancelled) job->callbacks.on_delta(std::move(last));
    if (--job->running == 0) {
      job->done = true;
      stat_done_.fetch_add(1);
      job->callbacks.on_done(std::move(job->result));
    }
  }
  // Choices still waiting for this prefill end with it.
  for (Slot* f : followers)
    if (f->job == job) finish(*f, reason);
}

}  // namespace llmpool::engine
