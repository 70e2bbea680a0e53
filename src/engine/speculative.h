// Speculative decoding: the verification math, the drafters' pure parts and
// the draft-length controller. Engine-internal; the engine thread owns every
// value here (nothing is shared between threads).
//
// Verification is rejection sampling (Leviathan et al. 2023, Chen et al.
// 2023): a drafted token x drawn from the draft's distribution q is accepted
// with probability min(1, p(x) / q(x)), where p is the target's distribution
// at the same position; on rejection the output is drawn from
// norm(max(0, p - q)). The accepted-or-corrected token is then distributed
// exactly as p, whatever q is, so speculation never changes what a request
// samples. p and q are both taken after the request's whole sampling chain
// (logit bias, penalties, grammar, top-k / top-p / min-p, temperature):
// chain_distribution() computes them. Greedy decoding is the special case
// where p and q are one-hot: a draft is accepted exactly when it equals the
// target's argmax, and the correction is that argmax.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

struct llama_context;
struct llama_model;
struct llama_sampler;
struct llama_token_data;
struct llama_vocab;

namespace llmpool::engine {

// One entry of a sparse distribution: token id and its probability.
struct TokenProb {
  int32_t id = 0;
  float p = 0.0f;
};
// Tokens with p > 0 (any order; ids unique). The probabilities sum to 1
// within float rounding.
using TokenDistribution = std::vector<TokenProb>;

// The probability of `id` under `d` (0 when absent). Linear in d's size.
float probability_of(const TokenDistribution& d, int32_t id);

// Draws one token from `d` with `rng`. `d` must not be empty.
int32_t draw_token(const TokenDistribution& d, std::mt19937_64& rng);

struct Verdict {
  int32_t token = -1;     // the drafted token when accepted, else the correction
  bool accepted = false;
};

// Verifies `drafted`, which was drawn from `q`, against the target's `p`:
// accepts with probability min(1, p(drafted) / q(drafted)), otherwise draws
// the correction from norm(max(0, p - q)). The returned token is distributed
// exactly as p. `scratch` is the caller's reusable buffer (indexed by
// token id, left all zero on return). `p` must not be empty.
Verdict verify_draft(const TokenDistribution& p, const TokenDistribution& q, int32_t drafted,
                     std::mt19937_64& rng, std::vector<float>& scratch);

// The distribution `chain` would draw its next token from, for `logits`
// (n_vocab values): every sampler of the chain but the last is applied to
// the candidates (the chain's state, e.g. penalties and grammar, is read,
// never advanced); the last one must be "dist" (the distribution is the
// softmax of what is left) or "greedy" (one-hot on the argmax). `confidence`
// receives the probability of the most likely token before a greedy pick
// (the probability floor's measure; p of the top token for dist). With
// `chain` null the distribution is the argmax of the raw logits, with
// `banned` tokens excluded. InvalidArgument (param `constraint_param`) when
// the output constraint fails or allows nothing. Never throws.
Status chain_distribution(llama_sampler* chain, const float* logits, int32_t n_vocab, std::span<const int32_t> banned,
                          std::vector<llama_token_data>& scratch, TokenDistribution& out, float& confidence,
                          const std::string& constraint_param);

// Prompt-lookup drafting: the longest suffix of `context` of between
// `n_min` and `n_max` tokens that occurred earlier in it, and up to
// `max_tokens` tokens that followed its latest earlier occurrence. Empty
// when no suffix of n_min tokens recurs. Linear in the context per n.
std::vector<int32_t> ngram_draft(std::span<const int32_t> context, int32_t n_min, int32_t n_max, int32_t max_tokens);

// The draft length for the next round, adapted to the measured acceptance:
// an exponential moving average `a` of the per-token acceptance chooses the
// longest length whose last token is still accepted with probability at
// least `kWorthDrafting` (a^k >= that), bounded to [min_tokens, max_tokens].
class DraftLength {
 public:
  static constexpr double kWorthDrafting = 0.15;
  DraftLength() : DraftLength(1, 8) {}
  DraftLength(int32_t min_tokens, int32_t max_tokens, double initial_acceptance = 0.6);
  int32_t next() const { return next_; }
  double acceptance() const { return acceptance_; }
  // After a round: `drafted` tokens verified, the first `accepted` accepted.
  void record(int32_t drafted, int32_t accepted);

 private:
  void choose();
  int32_t min_, max_;
  double acceptance_;
  int32_t next_ = 1;
};

// Whether an engine step speculates, from what speculating measurably
// yields on this model (docs/engine.md, "Speculation gate"). On a small
// model a step is dominated by fixed costs (the draft's decodes, the
// target's decode, sampling) that speculation does not shrink, so even a
// high acceptance can lose wall time; and what wins depends on how many
// sequences generate together. So the gate times decode steps both ways and
// lets a step speculate only where that measured faster, like vLLM's
// speculative_disable_by_batch_size but measured rather than configured.
//
// Throughput (tokens emitted / the step's wall seconds, both as moving
// averages) is kept per arm (speculating or not) and per bucket of the
// generating count: 1, 2, 3-4, 5-8, ... 129-256 (and above). Steps go in
// runs of kRunSteps with one arm (a run ends early when the bucket changes).
// The first bucket met explores both arms (a run of the arm with fewer
// samples, until each has kWarmSamples). Then the faster arm runs, and
// every so many runs one tries the other, so the estimate follows changes
// in load and acceptance: first after kExploreEvery runs, then at twice the
// interval each time the verdict stands, up to kExploreMax runs; back to
// kExploreEvery when it flips. A bucket that does not know both arms yet
// takes the verdict of the nearest one that does, and its own schedule of
// tries. Which arm a step takes never changes what is sampled:
// verification keeps every token distributed as the target's own (greedy:
// the same text).
//
// A speculating step right after one that did not is not recorded: the
// draft model then catches up on the tokens it missed, a cost of switching
// that the steady state does not pay. Steps that carried prompt tokens are
// not recorded either (their cost is the prompt's). Pure logic, fed the
// timings by the caller (the engine thread; nothing here is shared).
class SpeculationGate {
 public:
  static constexpr int32_t kRunSteps = 4;
  static constexpr int64_t kExploreEvery = 16;  // runs
  static constexpr int64_t kExploreMax = 128;   // runs
  static constexpr int32_t kWarmSamples = 3;
  static constexpr double kShare = 0.2;  // weight of the newest step in an arm's averages
  static constexpr size_t kBuckets = 9;

  // `adaptive` false: every step speculates (still timed, so the
  // speculating arm's throughput is known; the other one never is).
  explicit SpeculationGate(bool adaptive = true) : adaptive_(adaptive) {}

  // Before a step with `generating` (>= 1) sequences generating: whether
  // it speculates. Counts the step under its arm.
  bool decide(int32_t generating);
  // After the step decide() was last asked about: its wall seconds
  // (drafting, decode, verification and sampling) and the tokens it
  // emitted. `prefill`: the step also carried prompt tokens.
  void record(bool prefill, double seconds, int64_t tokens);

  // Measured tokens/s speculating over not: each bucket that knows both
  // arms, weighted by the steps decided there. NaN until one does.
  double speedup() const;
  // Steps decided speculating (true) or not.
  int64_t steps(bool speculating) const { return speculating ? steps_on_ : steps_off_; }
  // The measured tokens/s of one arm for `generating` sequences; 0 when not measured.
  double rate(int32_t generating, bool speculating) const;
  static size_t bucket_of(int32_t generating);

 private:
  struct Arm {
    double seconds = 0;  // moving averages per recorded step
    double tokens = 0;
    int32_t samples = 0;
    double rate() const { return seconds > 0 ? tokens / seconds : 0.0; }
    void add(double s, double t);
  };
  struct Bucket {
    Arm on, off;
    int64_t steps = 0;  // steps decided here
    // Once warm: the last verdict (speculation faster), the runs since the
    // slower arm was last tried, the interval, and whether the last run
    // here tried it.
    bool verdict = false;
    bool has_verdict = false;
    int64_t since_explore = 0;
    int64_t explore_every = kExploreEvery;
    bool explored = false;
    bool warm() const { return on.samples >= kWarmSamples && off.samples >= kWarmSamples; }
    bool faster_on() const { return on.rate() > off.rate(); }
  };
  bool start_run(size_t b);

  bool adaptive_;
  std::array<Bucket, kBuckets> buckets_{};
  size_t run_bucket_ = 0;
  int32_t run_left_ = 0;
  bool run_on_ = true;
  bool last_on_ = true;  // the arm of the previous decided step
  // The step decide() answered, until record() takes it.
  struct Pending {
    bool open = false;
    size_t bucket = 0;
    bool on = false;
    bool switched = false;  // speculating after a step that did not
  } pending_{};
  int64_t steps_on_ = 0;
  int64_t steps_off_ = 0;
};

// Checks that a draft model's vocabulary is the target's: the same size,
// type, special tokens (BOS, EOS, EOT) and the same text and attributes for
// every token id. InvalidArgument naming the first difference otherwise.
Status check_same_vocab(const llama_vocab* target, const llama_vocab* draft);

// What one sequence asks the draft model for in a round.
struct DraftRequest {
  int32_t seq = 0;                 // the target's sequence: the draft model keeps one KV sequence for each
  std::vector<int32_t> context;    // every token so far (the target's cache and its pending token)
  int32_t max_tokens = 0;
  // A copy of the request's sampler chain, advanced by each drafted token
  // (its grammar, penalties); null: plain greedy on the raw logits.
  llama_sampler* chain = nullptr;
  std::span<const int32_t> banned;  // with a null chain: tokens out of the running (ignore_eos)
  std::mt19937_64* rng = nullptr;
  // Out: the drafted tokens and the distribution each was drawn from.
  std::vector<int32_t> tokens;
  std::vector<TokenDistribution> q;
};

struct DraftModelParams {
  uint32_t n_ctx = 0;      // all sequences together (the target's)
  uint32_t n_seq = 1;
  uint32_t n_batch = 512;  // at least n_seq
  int32_t threads = 1;
  bool kv_unified = false;
  bool repack = true;  // the target's `repack` (engine/weight_layouts.h)
};

// A draft model with its own context and one KV sequence per target
// sequence, which it keeps in step with the target's tokens (the longest
// common prefix is kept, the rest recomputed). Owned and called only by the
// target's engine thread.
class DraftModel {
 public:
  // Loads the draft at `path` and checks that its vocabulary is `target`'s
  // (check_same_vocab). NotFound when the file is missing; InvalidArgument
  // when llama.cpp cannot load it, the vocabularies differ or no context can
  // be created. Each message names `name` (the target model).
  static Result<std::unique_ptr<DraftModel>> load(const std::string& name, const std::string& path,
                                                  const llama_model* target, const DraftModelParams& params);
  ~DraftModel();
  DraftModel(const DraftModel&) = delete;
  DraftModel& operator=(const DraftModel&) = delete;

  // Drafts for every request in batched decodes: first what each sequence's
  // KV lacks of its context (at most `catch_up_budget` tokens in all; a
  // sequence not caught up drafts nothing this round), then one token per
  // decode for all of them, each drawn from its chain's distribution, until
  // max_tokens or a token whose probability is under `p_min`. A failure
  // drafts nothing more (never an error: the target decodes on its own).
  void draft(std::span<DraftRequest* const> requests, float p_min, int32_t catch_up_budget);
  uint64_t size_bytes() const { return size_bytes_; }  // the draft's weights
  const llama_context* context() const;                // for its memory figures

 private:
  DraftModel();
  struct State;
  std::unique_ptr<State> state_;
  uint64_t size_bytes_ = 0;
};

}  // namespace llmpool::engine
