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
