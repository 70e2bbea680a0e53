// LocalModel: a GGUF model loaded in-process through llama.cpp, with the one
// engine thread that owns its llama_context and runs continuous batching.
//
// Up to `parallel` sequences run at once. Each engine step decodes one batch
// holding every generating sequence's next token plus chunks of waiting
// prompts, under a per-step token budget (`batch`), so a long prompt never
// stalls the others for long. Requests wait in a bounded queue, ordered by
// priority and FIFO within a priority. Each sequence has its own KV stream
// by default (`kv_unified` shares one cache): a new request starts from the
// longest cached prefix of any sequence (same system prompt, same
// conversation), copied across streams when it is long enough, and n > 1
// choices share one prefill of the prompt.
//
// Threading: submit(), embed(), tokenize(), detokenize(), format_chat() and
// stats() are thread-safe and never wait for the model. submit() and embed()
// do no heavy work on the caller's thread (an HTTP I/O thread): one of the
// model's two preparation threads formats the chat, tokenizes and builds the
// grammar, then hands the request to the engine thread. Requests of more
// than `prep_large_bytes` go to one of them and the rest to the other, so a
// huge prompt never holds up the preparation of short ones. Callbacks run on
// those threads (or, for a refusal known at once, before submit() returns):
// keep them quick and never call back into this model from them.
//
// Isolation: a failure while preparing, sampling, applying a grammar,
// detokenizing or parsing the output ends that request alone (its on_done
// gets the error); the other sequences go on in the same step.
//
// Ownership: the caller owns the LocalModel. Destroying it closes the queue,
// fails waiting, preparing and running requests with Unavailable and joins
// the threads.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/chat.h"
#include "common/status.h"
#include "engine/chat_template.h"

struct llama_model;
struct llama_context;
struct llama_token_data;

namespace llmpool::engine {

class DraftModel;
class SpeculationGate;
class SavedPrompts;

// Debug and sanitizer builds check the engine's slot invariants after every
// step (and abort, with a log line, when one breaks).
#if !defined(NDEBUG) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kCheckEngineInvariants = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kCheckEngineInvariants = true;
#else
inline constexpr bool kCheckEngineInvariants = false;
#endif
#else
inline constexpr bool kCheckEngineInvariants = false;
#endif

// Speculative decoding for a local model (docs/architecture.md,
// "Speculative decoding"): a draft model of the same vocabulary, or
// prompt lookup (n-gram) drafting without one. Off when neither is set.
struct SpeculativeSpec {
  std::string draft_path;   // the draft model's GGUF file; "" for none
  int32_t ngram = 0;        // > 0 without a draft model: prompt lookup matching up to this many tokens
  int32_t max_tokens = 16;  // drafted tokens per round, at most (the length adapts below it)
  int32_t min_tokens = 0;   // a shorter draft is not verified
  float p_min = 0.75f;      // draft-model drafting stops at a token it is less sure of
  // Speculate only on the steps where it measured faster (SpeculationGate,
  // speculative.h); false: on every step.
  bool adaptive = true;
  bool enabled() const { return !draft_path.empty() || ngram > 0; }
};

struct LocalModelSpec {
  std::string name;
  std::string path;         // GGUF file
  int32_t context = 4096;   // tokens per sequence (prompt + output)
  int32_t parallel = 4;     // sequences decoded together
  int32_t batch = 512;      // per-step token budget (generation + prompt chunks)
  // Prompt tokens one step may add while other sequences are generating; 0:
  // adaptive, max(32, batch / (4 x generating streams), what fits 50 ms at
  // the measured cost per token). Smaller keeps
  // inter-token latency low under arrivals; with nothing generating a step
  // takes prompt tokens up to the whole budget.
  int32_t prefill_chunk = 0;
  // Sampling defaults for requests that leave top_k / min_p unset (< 0):
  // llama-server's. They cut the candidates before top_p and temperature,
  // which also keeps sampling cheap over a large vocabulary.
  int32_t top_k = 40;
  float min_p = 0.05f;
  // One KV cache shared by all sequences (prefix copies are free, but every
  // token attends over the cells of all sequences) or one per sequence
  // (attention only over its own cells; a prefix copy moves the stream's data).
  bool kv_unified = false;
  // Weights may go to the CPU's extra layouts (AMX, repacked blocks), as
  // llama-server's --repack; never where those fail here (weight_layouts.h).
  bool repack = true;
  // Host memory for copies of sequences the prefix cache overwrites
  // (saved_prompts.h; llama-server's --cache-ram), in bytes; 0: none; < 0:
  // as much as the KV cache (twice the prefixes kept, at twice its memory).
  int64_t prompt_cache_bytes = -1;
  // Element type of the KV cache: "f16" or "q8_0" (about half the memory;
  // llama.cpp then turns on flash attention, which quantized V needs).
  std::string kv_type = "f16";
  // A step running this long is aborted (and undone) when a request holding
  // or waiting for a sequence is cancelled or passes its deadline, so it is
  // freed and answered at once; shorter steps finish.
  int32_t abort_after_ms = 50;
  int32_t threads = 0;      // 0: hardware concurrency
  int32_t max_queue = 64;   // waiting requests before ResourceExhausted
  int32_t deadline_ms = 0;  // > 0: a request ends (finish "length") this long after submit
  bool embedding = false;   // run with pooling for /v1/embeddings; no text generation
  // After every step, check that the active-sequence count equals the slots
  // in use and that each slot's tokens match its KV cache; abort if not.
  bool check_invariants = kCheckEngineInvariants;
  // Requests whose text is longer are prepared on the second preparation
  // thread, apart from the short ones.
  int64_t prep_large_bytes = 32 * 1024;
  SpeculativeSpec speculative{};
};

// The host prompt cache's budget for `spec` with a KV cache of `kv_cache` bytes.
uint64_t prompt_cache_budget(const LocalModelSpec& spec, uint64_t kv_cache);

// What a model holds in memory, in bytes, from llama.cpp's own accounting
// (llama_get_memory_breakdown): the weights, the KV cache of all sequences
// and the compute buffers of one micro-batch.
struct MemoryUse {
  uint64_t weights = 0;
  uint64_t kv_cache = 0;
  uint64_t compute = 0;
  uint64_t prompt_cache = 0;  // the host copies' budget (prompt_cache_bytes), counted whole
  uint64_t total() const { return weights + kv_cache + compute + prompt_cache; }
};

// A point-in-time view of the engine, for metrics and capacity reports.
struct EngineStats {
  int64_t queued = 0;             // requests waiting (being prepared or for a sequence)
  int64_t active_sequences = 0;   // sequences generating or prefilling
  int64_t requests_done = 0;
  int64_t prompt_tokens = 0;      // prompt tokens of admitted requests
  int64_t cached_prompt_tokens = 0;  // of which taken from the prefix cache
  int64_t prompts_saved = 0;         // sequences copied to host memory before being overwritten
  int64_t prompts_restored = 0;      // copies restored into a sequence for a request
  int64_t prompt_cache_used_bytes = 0;  // host memory the copies hold now
  int64_t generated_tokens = 0;
  int64_t kv_cells_used = 0;      // tokens held in the KV cache (all sequences)
  int64_t kv_cells_total = 0;
  int64_t aborted_steps = 0;      // decodes aborted for a cancelled or expired request
  // Speculative decoding: verification rounds (one sequence's drafts checked
  // in one step), tokens drafted and verified, and of those accepted. Each
  // round also yields one token of the target's own (correction or bonus).
  int64_t speculative_rounds = 0;
  int64_t speculative_drafted = 0;
  int64_t speculative_accepted = 0;
  // The speculation gate (speculative.h): steps it let speculate and steps
  // it did not, and the measured throughput ratio of the two (NaN until
  // both were measured).
  int64_t speculative_steps_on = 0;
  int64_t speculative_steps_off = 0;
  double speculative_speedup = std::numeric_limits<double>::quiet_NaN();
};

class LocalModel {
 public:
  // Loads the model and creates its context. NotFound if the file is
  // missing, InvalidArgument if llama.cpp cannot load it or the spec is out
  // of range. Blocks while reading the file. Starts the engine thread.
  static Result<std::unique_ptr<LocalModel>> load(const LocalModelSpec& spec);

  ~LocalModel();
  LocalModel(const LocalModel&) = delete;
  LocalModel& operator=(const LocalModel&) = delete;

  // Queues a request for preparation and returns at once. ResourceExhausted
  // when max_queue requests are already waiting (being prepared or for a
  // sequence) and Unavailable when shutting down are reported before this
  // returns. Formatting, tokenizing and checks then run on the preparation
  // thread, which reports: InvalidArgument with code
  // "context_length_exceeded" when the prompt does not fit, InvalidArgument
  // (param response_format) for a bad schema. Otherwise deltas and the
  // completion follow from the engine thread; a failure of the output
  // constraint while generating is InvalidArgument (param response_format,
  // or tools). on_done is called exactly once. Cancelling `cancel` ends the
  // request at the next step (finish reason kCancelled) and frees its
  // sequences. With ignore_eos and a grammar, the grammar's end still ends
  // the output (finish reason kStop).
  void submit(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks);

  // Embeds `inputs` (embedding models only). `done` is called once, on the
  // preparation or engine thread or before this returns: InvalidArgument
  // (param "input") for an empty input or one longer than the context, or
  // when this is not an embedding model; ResourceExhausted when the queue is
  // full.
  void embed(std::vector<std::string> inputs, EmbedCallback done);
  int32_t embedding_size() const { return n_embd_; }

  // Thread-safe: the vocabulary is read-only after loading.
  Result<std::vector<int32_t>> tokenize(const std::string& text, bool add_special,
                                        bool parse_special) const;
  Result<std::string> detokenize(const std::vector<int32_t>& tokens) const;
  // Formats `messages` with the model's chat template (ChatML when the model
  // has none), ending with the assistant's turn. Thread-safe.
  Result<std::string> format_chat(const std::vector<ChatMessage>& messages) const;

  const std::string& name() const { return spec_.name; }
  const LocalModelSpec& spec() const { return spec_; }
  int32_t context_size() const { return spec_.context; }
  uint64_t size_bytes() const { return size_bytes_; }
  // Measured once the context exists; fixed for the model's life.
  const MemoryUse& memory() const { return memory_; }
  // What loading `spec` will take, before loading it: the weights (the
  // file's size) and the KV cache for context x parallel tokens, from the
  // GGUF header (compute buffers are known only once loaded: 0 here).
  // NotFound for a missing file, InvalidArgument for one that is not GGUF or
  // lacks the attention sizes, or for an unknown kv_type.
  static Result<MemoryUse> estimate_memory(const LocalModelSpec& spec);
  EngineStats stats() const;

 private:
  struct Job;
  struct Slot;
  struct EmbedJob {
    std::vector<std::vector<int32_t>> inputs;
    EmbedCallback done;
  };

  // Work for the preparation thread: `run` prepares and queues; `refuse`
  // answers it instead when the model shuts down first.
  struct PrepTask {
    std::function<void()> run;
    std::function<void(const Status&)> refuse;
  };

  explicit LocalModel(LocalModelSpec spec);
  void run();
  struct PrepLane {
    std::deque<PrepTask> queue;  // guarded by mu_
    bool busy = false;           // its running task still counts as waiting; mu_
    std::condition_variable cv;
    std::thread thread;
  };
  void prep_loop(PrepLane& lane);
  // Queues `task` (of `bytes` of text) on its lane; mu_ held.
  void push_prep_locked(PrepTask task, int64_t bytes);
  // Formats, tokenizes and checks one request, then queues it for the engine
  // (or answers it). Runs on the preparation thread.
  void prepare(std::shared_ptr<Job> job, GenerateRequest request);
  // Answers through `done` (left in place until the input is queued).
  void prepare_embedding(std::vector<std::string> inputs, EmbedCallback& done);
  // The fewest tokens `bytes` of text can take (0 when the vocabulary gives no bound).
  int64_t min_tokens(size_t bytes) const;
  // Waiting requests (preparing, queued for the engine); mu_ held.
  int64_t waiting_locked() const;
  // Requests being prepared (in a preparation lane); mu_ held.
  int64_t preparing_locked() const;
  // The calling preparation thread's task no longer counts as waiting; mu_ held.
  void release_prep_locked();
  void step();
  // Prompt tokens a step may carry besides `generating` streams' next tokens.
  int32_t prefill_chunk_for(int32_t generating) const;
  // What copying one sequence's KV stream into another costs, in prompt
  // tokens' compute (the prefix cache's copy_cost).
  size_t stream_copy_tokens() const;
  bool admit(const std::shared_ptr<Job>& job);
  // Copies `s`'s KV state to saved_ when it holds at least kMinSavedTokens
  // more than the `kept` tokens about to stay.
  void save_to_host(const Slot& s, size_t kept);
  Status sample(Slot& slot, int32_t logits_index);
  // Reports `token`, drawn from the logits row `logits_index`, as the
  // slot's next output token (or its end); the token becomes pending.
  Status emit(Slot& slot, int32_t token, int32_t logits_index);
  // Speculative decoding (speculative.h). draft_step() drafts for the
  // generating sequences, before the step's batch is built, under `budget`
  // batch tokens in all, when the gate lets the step speculate; it returns
  // how many sequences generate in a step the gate decided (0: none
  // speculates, nothing to decide). verify() checks a slot's drafts against the
  // target's rows from `first_row` on, reports the accepted tokens and the
  // correction (or bonus), and drops the rejected ones from the KV cache.
  int32_t draft_step(int32_t budget);
  Status verify(Slot& slot, int32_t first_row);
  void start_speculation(Slot& slot, uint32_t seed);
  // Runs `work` for the request on `slot`; a failure or exception ends that
  // request alone.
  template <class Work>
  void isolated(Slot& slot, Work&& work);
  void check_invariants() const;
  void finish(Slot& slot, FinishReason reason);
  void fail_job(std::shared_ptr<Job> job, const Status& status);  // by value: callers pass slot.job, which it resets
  void reap_cancelled_and_expired();
  void run_embedding(EmbedJob& job);

  LocalModelSpec spec_;
  std::unique_ptr<llama_model, void (*)(llama_model*)> model_;
  std::unique_ptr<llama_context, void (*)(llama_context*)> ctx_;
  std::string chat_template_;                 // builtin formatting (fallback)
  std::unique_ptr<ChatTemplate> jinja_;      // the model's Jinja template, when it parses
  int32_t n_vocab_ = 0;
  std::vector<int32_t> eog_tokens_;           // end-of-generation tokens of the vocabulary
  int32_t longest_token_bytes_ = 0;           // 0: no bound (see longest_token_bytes())
  int32_t n_embd_ = 0;
  uint64_t size_bytes_ = 0;
  MemoryUse memory_;

  // Owned by the engine thread.
  std::vector<Slot> slots_;
  uint64_t tick_ = 0;
  struct Batch;                     // the step's llama_batch, allocated once
  std::unique_ptr<Batch> batch_;
  // What the running decode may be aborted for: set by the engine thread
  // before llama_decode, read by llama.cpp's compute threads through
  // should_abort() between graph nodes.
  struct StepWatch {
    std::chrono::steady_clock::time_point start;
    std::vector<std::pair<CancelTokenPtr, std::chrono::steady_clock::time_point>> jobs;  // token, deadline
  };
  StepWatch watch_;
  bool last_step_aborted_ = false;  // the step after an abort always finishes: no livelock
  double prefill_token_s_ = 0;      // seconds per token of steps with a prompt chunk (moving average); 0: none yet
  uint64_t stream_bytes_ = 0;       // one sequence's KV stream (0 with the unified cache)
  static bool should_abort(void* self);
  void roll_back_step();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;  // guarded by mu_
  std::deque<EmbedJob> embed_queue_;        // guarded by mu_
  std::array<PrepLane, 2> lanes_;           // short requests, long ones
  bool stopping_ = false;                   // guarded by mu_
  std::thread thread_;

  std::atomic<int64_t> stat_active_{0};
  std::atomic<int64_t> stat_done_{0};
  std::atomic<int64_t> stat_prompt_{0};
  std::atomic<int64_t> stat_cached_{0};
  std::atomic<int64_t> stat_saved_{0};
  std::atomic<int64_t> stat_restored_{0};
  std::atomic<int64_t> stat_saved_bytes_{0};
  std::atomic<int64_t> stat_generated_{0};
  std::atomic<int64_t> stat_kv_used_{0};
  std::atomic<int64_t> stat_aborted_{0};

  // Speculative decoding; the engine thread owns them.
  std::unique_ptr<DraftModel> draft_;   // null without a draft model
  std::unique_ptr<SavedPrompts> saved_;  // null: no host prompt cache
  double spec_acceptance_ = 0.6;       // running per-token acceptance: new requests start from it
  std::unique_ptr<SpeculationGate> gate_;  // null when the model does not speculate
  int64_t emitted_ = 0;                 // tokens emit() reported (the gate's count per step)
  std::vector<float> verify_scratch_;
  std::atomic<int64_t> stat_spec_rounds_{0};
  std::atomic<int64_t> stat_spec_drafted_{0};
  std::atomic<int64_t> stat_spec_accepted_{0};
  std::atomic<int64_t> stat_spec_steps_on_{0};
  std::atomic<int64_t> stat_spec_steps_off_{0};
  std::atomic<double> stat_spec_speedup_{std::numeric_limits<double>::quiet_NaN()};
};

}  // namespace llmpool::engine
