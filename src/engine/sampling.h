// Sampler chains and log-probabilities for the engine. Engine-internal:
// called only on a model's engine thread (sampler state is per sequence).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/chat.h"
#include "common/status.h"
#include "engine/chat_template.h"

struct llama_model;
struct llama_sampler;
struct llama_token_data;
struct llama_vocab;

namespace llmpool::engine {

struct SamplerDeleter {
  void operator()(llama_sampler* s) const;
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// The GBNF grammar that response_format asks for: from `json_schema`
// (converted by llama.cpp's converter), any JSON object for `json_object`,
// or "" when unconstrained. InvalidArgument (param response_format) when
// the schema cannot be converted.
Result<std::string> grammar_for(const SamplingParams& params);

// Builds the sampler chain: logit bias (with end-of-generation tokens banned
// under ignore_eos), penalties, the thinking budget, grammar, then greedy or
// top-k / top-p / min-p / temperature / seeded draw. With a grammar,
// ignore_eos bans end-of-generation only while the grammar allows another
// token: a grammar that is complete ends the output (finish "stop"). `seed` is the seed to
// use for this choice. InvalidArgument when the grammar does not parse or a
// logit_bias token id is outside the vocabulary.
// `eog_tokens` are the model's end-of-generation tokens
// (end_of_generation_tokens()), banned under ignore_eos.
Result<SamplerPtr> make_sampler(const llama_model* model, const SamplingParams& params,
                                const GrammarSpec& grammar, uint32_t seed, const std::vector<int32_t>& eog_tokens);

// Draws the next token from `logits` (n_vocab values) through `chain` and
// feeds it back to the chain's state (what llama_sampler_sample does, with
// its failures turned into values). `scratch` is the caller's reusable
// candidate buffer. InvalidArgument (param `constraint_param`) when the
// output constraint fails: the grammar throws, or it allows no token at all
// here (accepting one would abort the process). Never throws.
Result<int32_t> sample_token(llama_sampler* chain, const float* logits, int32_t n_vocab,
                             std::vector<llama_token_data>& scratch, const std::string& constraint_param);

// Every end-of-generation token of the vocabulary (one pass over it: compute
// once per model).
std::vector<int32_t> end_of_generation_tokens(const llama_vocab* vocab);

// The longest text one token stands for (special tokens included), for
// vocabularies whose tokenizer never drops or shortens text (SPM, BPE
// without whitespace-stripping special tokens): a text of B bytes then takes
// at least B / that many tokens. 0 for the others, where no such bound holds.
int32_t longest_token_bytes(const llama_vocab* vocab);

// The log-probability of `token` under the raw distribution `logits`
// (n_vocab values), with the `top_n` most likely alternatives.
TokenLogprob token_logprob(const llama_vocab* vocab, const float* logits, int32_t n_vocab,
                           int32_t token, int32_t top_n);

// The token's text (raw bytes; may be part of a UTF-8 character).
std::string token_piece(const llama_vocab* vocab, int32_t token);

}  // namespace llmpool::engine
