#include "engine/sampling.h"

#include <llama.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/grammar.h"
#include "reasoning-budget.h"  // llama.cpp common: the thinking budget sampler

namespace llmpool::engine {

void SamplerDeleter::operator()(llama_sampler* s) const { llama_sampler_free(s); }

namespace {

// ignore_eos under a grammar: end-of-generation is banned while the grammar
// lets any other token through, and left to the grammar once it allows
// nothing else (it is complete). Runs after the grammar in the chain.
struct EogUnlessComplete {
  std::vector<int32_t> eog;  // sorted
};

const char* eog_unless_complete_name(const llama_sampler*) { return "llmpool-eog-unless-complete"; }

void eog_unless_complete_apply(llama_sampler* smpl, llama_token_data_array* cur) {
  const auto* self = static_cast<const EogUnlessComplete*>(smpl->ctx);
  auto is_eog = [&](llama_token t) { return std::binary_search(self->eog.begin(), self->eog.end(), t); };
  bool other = false;
  for (size_t i = 0; i < cur->size && !other; ++i)
    other = cur->data[i].logit != -INFINITY && !is_eog(cur->data[i].id);
  if (!other) return;
  for (size_t i = 0; i < cur->size; ++i)
    if (is_eog(cur->data[i].id)) cur->data[i].logit = -INFINITY;
}

llama_sampler* eog_unless_complete_clone(const llama_sampler* smpl);

void eog_unless_complete_free(llama_sampler* smpl) { delete static_cast<EogUnlessComplete*>(smpl->ctx); }

llama_sampler_i* eog_unless_complete_iface() {
  static llama_sampler_i iface = [] {
    llama_sampler_i i{};  // the backend hooks stay null: a CPU-only sampler
    i.name = eog_unless_complete_name;
    i.apply = eog_unless_complete_apply;
    i.clone = eog_unless_complete_clone;
    i.free = eog_unless_complete_free;
    return i;
  }();
  return &iface;
}

llama_sampler* eog_unless_complete_init(std::vector<int32_t> eog) {
  std::sort(eog.begin(), eog.end());
  return llama_sampler_init(eog_unless_complete_iface(), new EogUnlessComplete{std::move(eog)});
}

llama_sampler* eog_unless_complete_clone(const llama_sampler* smpl) {
  return eog_unless_complete_init(static_cast<const EogUnlessComplete*>(smpl->ctx)->eog);
}

}  // namespace

Result<int32_t> sample_token(llama_sampler* chain, const float* logits, int32_t n_vocab,
                             std::vector<llama_token_data>& cur, const std::string& constraint_param) {
  try {
    cur.resize(static_cast<size_t>(n_vocab));
    for (llama_token t = 0; t < n_vocab; ++t) cur[static_cast<size_t>(t)] = llama_token_data{t, logits[t], 0.0f};
    llama_token_data_array arr{cur.data(), cur.size(), -1, false};
    llama_sampler_apply(chain, &arr);
    if (arr.selected < 0 || arr.selected >= static_cast<int64_t>(arr.size))
      return Status::internal("the sampler selected no token");
    const llama_token_data& pick = arr.data[arr.selected];
    // Only a constraint (grammar, logit bias) leaves every candidate at
    // -inf; accepting the pick anyway would make the grammar abort.
    if (pick.logit == -INFINITY)
      return Status::invalid_argument("the output constraint allows no next token: the output cannot continue",
                                      constraint_param);
    llama_sampler_accept(chain, pick.id);
    return static_cast<int32_t>(pick.id);
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("the output constraint failed: ") + e.what(), constraint_param);
  } catch (...) {
    return Status::invalid_argument("the output constraint failed", constraint_param);
  }
}

Result<std::string> grammar_for(const SamplingParams& p) {
  if (!p.json_schema.empty()) return json_schema_grammar(p.json_schema);
  if (p.json_object) return json_schema_grammar(R"({"type":"object"})");
  return std::string();
}

std::vector<int32_t> end_of_generation_tokens(const llama_vocab* vocab) {
  std::vector<int32_t> out;
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  for (llama_token t = 0; t < n_vocab; ++t)
    if (llama_vocab_is_eog(vocab, t)) out.push_back(t);
  return out;
}

Result<SamplerPtr> make_sampler(const llama_model* model, const SamplingParams& p,
                                const GrammarSpec& grammar, uint32_t seed, const std::vector<int32_t>& eog_tokens) {
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  SamplerPtr chain(llama_sampler_chain_init(llama_sampler_chain_default_params()));
  auto add = [&](llama_sampler* s) { llama_sampler_chain_add(chain.get(), s); };

  if (!p.logit_bias.empty()) {
    std::vector<llama_logit_bias> bias;
    for (const auto& [tok, b] : p.logit_bias) {
      if (tok < 0 || tok >= n_vocab)
        return Status::invalid_argument("logit_bias token id " + std::to_string(tok) +
                                            " is outside the vocabulary (0-" + std::to_string(n_vocab - 1) + ")",
                                        "logit_bias");
      bias.push_back({tok, b});
    }
    add(llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(bias.size()), bias.data()));
  }
  const bool has_grammar = !grammar.grammar.empty();
  if (p.ignore_eos && !has_grammar) {
    // Generation must run to max_tokens: end-of-generation tokens are banned.
    std::vector<llama_logit_bias> ban;
    for (int32_t t : eog_tokens) ban.push_back({t, -INFINITY});
    if (!ban.empty()) add(llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(ban.size()), ban.data()));
  }
  if (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f)
    add(llama_sampler_init_penalties(n_vocab, p.penalty_last_n, p.repeat_penalty, p.frequency_penalty,
                                     p.presence_penalty));
  if (grammar.thinking_budget >= 0 && !grammar.thinking_end.empty()) {
    auto toks = [&](const std::string& text) {
      std::vector<llama_token> out(text.size() + 8);
      int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                                 static_cast<int32_t>(out.size()), false, true);
      out.resize(static_cast<size_t>(std::max(n, 0)));
      return out;
    };
    std::vector<std::vector<llama_token>> starts, ends;
    if (!grammar.thinking_start.empty()) starts.push_back(toks(grammar.thinking_start));
    for (const auto& e : grammar.thinking_end)
      if (auto t = toks(e); !t.empty()) ends.push_back(std::move(t));
    if (!ends.empty()) {
      // Without a start tag the template opens the thinking block itself:
      // count from the first token.
      llama_sampler* b = common_reasoning_budget_init(
          vocab, starts, ends, ends.front(), grammar.thinking_budget,
          starts.empty() ? REASONING_BUDGET_COUNTING : REASONING_BUDGET_IDLE);
      if (!b) return Status::internal("cannot build the thinking budget sampler");
      for (int32_t tok : grammar.prefill_tokens) llama_sampler_accept(b, tok);
      add(b);
    }
  }
  if (!grammar.grammar.empty()) {
    llama_sampler* g = nullptr;
    if (grammar.lazy) {
      std::vector<const char*> patterns;
      for (const auto& t : grammar.trigger_patterns) patterns.push_back(t.c_str());
      g = llama_sampler_init_grammar_lazy_patterns(vocab, grammar.grammar.c_str(), "root", patterns.data(),
                                                   patterns.size(), grammar.trigger_tokens.data(),
                                                   grammar.trigger_tokens.size());
    } else {
      g = llama_sampler_init_grammar(vocab, grammar.grammar.c_str(), "root");
    }
    if (!g) return Status::invalid_argument("the output grammar could not be parsed", "response_format");
    try {
      if (grammar.grammar_prefill)
        for (int32_t tok : grammar.prefill_tokens) llama_sampler_accept(g, tok);
    } catch (const std::exception& e) {
      llama_sampler_free(g);
      return Status::internal(std::string("the tool-call grammar rejects the template's generation prompt: ") + e.what());
    }
    add(g);
    if (p.ignore_eos && !eog_tokens.empty()) add(eog_unless_complete_init(eog_tokens));
  }
  if (p.temperature <= 0.0f) {
    add(llama_sampler_init_greedy());
    return chain;
  }
  if (p.top_k > 0) add(llama_sampler_init_top_k(p.top_k));
  if (p.top_p < 1.0f) add(llama_sampler_init_top_p(p.top_p, 1));
  if (p.min_p > 0.0f) add(llama_sampler_init_min_p(p.min_p, 1));
  add(llama_sampler_init_temp(p.temperature));
  add(llama_sampler_init_dist(seed));
  return chain;
}

int32_t longest_token_bytes(const llama_vocab* vocab) {
  const auto type = llama_vocab_type(vocab);
  if (type != LLAMA_VOCAB_TYPE_SPM && type != LLAMA_VOCAB_TYPE_BPE) return 0;
  int32_t longest = 0;
  char buf[256];
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  for (llama_token t = 0; t < n_vocab; ++t) {
    // A special token that strips the whitespace beside it swallows text.
    if (llama_vocab_get_attr(vocab, t) & (LLAMA_TOKEN_ATTR_LSTRIP | LLAMA_TOKEN_ATTR_RSTRIP)) return 0;
    int32_t n = llama_token_to_piece(vocab, t, buf, sizeof(buf), 0, true);
    if (n < 0) return 0;  // a piece over 256 bytes: no useful bound
    longest = std::max(longest, n);
  }
  return longest;
}

TokenLogprob token_logprob(const llama_vocab* vocab, const float* logits, int32_t n_vocab,
                           int32_t token, int32_t top_n) {
  float max = *std::max_element(logits, logits + n_vocab);
  double sum = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  const float log_z = max + static_cast<float>(std::log(sum));
  TokenLogprob out;
  out.token = token_piece(vocab, token);
  out.logprob = logits[token] - log_z;
  if (top_n > 0) {
    top_n = std::min(top_n, n_vocab);
    std::vector<int32_t> idx(static_cast<size_t>(n_vocab));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + top_n, idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    for (int32_t i = 0; i < top_n; ++i)
      out.top.push_back({token_piece(vocab, idx[static_cast<size_t>(i)]), logits[idx[static_cast<size_t>(i)]] - log_z});
  }
  return out;
}

std::string token_piece(const llama_vocab* vocab, int32_t token) {
  char buf[256];
  int32_t n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, false);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, false);
  big.resize(static_cast<size_t>(std::max(n, 0)));
  return big;
}

}  // namespace llmpool::engine
