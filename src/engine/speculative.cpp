#include "engine/speculative.h"

#include <llama.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/sampling.h"
#include "engine/weight_layouts.h"

namespace llmpool::engine {

float probability_of(const TokenDistribution& d, int32_t id) {
  for (const auto& e : d)
    if (e.id == id) return e.p;
  return 0.0f;
}

namespace {

// Draws from weights `w` (entries of `d`, not normalized, sum `total`).
template <class Weight>
int32_t draw_weighted(const TokenDistribution& d, double total, Weight weight, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, total);
  const double r = u(rng);
  double acc = 0.0;
  int32_t last = -1;
  for (const auto& e : d) {
    const double w = weight(e);
    if (w <= 0.0) continue;
    acc += w;
    last = e.id;
    if (r < acc) return e.id;
  }
  return last;  // rounding left r at the very top: the last token with weight
}

}  // namespace

int32_t draw_token(const TokenDistribution& d, std::mt19937_64& rng) {
  double total = 0.0;
  for (const auto& e : d) total += e.p;
  if (total <= 0.0) return d.front().id;
  return draw_weighted(d, total, [](const TokenProb& e) { return static_cast<double>(e.p); }, rng);
}

Verdict verify_draft(const TokenDistribution& p, const TokenDistribution& q, int32_t drafted,
                     std::mt19937_64& rng, std::vector<float>& scratch) {
  const double pd = probability_of(p, drafted);
  const double qd = probability_of(q, drafted);
  if (qd > 0.0 && pd > 0.0) {
    if (pd >= qd) return {drafted, true};
    std::uniform_real_distribution<double> u(0.0, 1.0);
    if (u(rng) < pd / qd) return {drafted, true};
  }
  // The correction: norm(max(0, p - q)). q is spread into the scratch array
  // so that each p entry finds its q in O(1).
  int32_t max_id = 0;
  for (const auto& e : q) max_id = std::max(max_id, e.id);
  for (const auto& e : p) max_id = std::max(max_id, e.id);
  if (scratch.size() <= static_cast<size_t>(max_id)) scratch.resize(static_cast<size_t>(max_id) + 1, 0.0f);
  for (const auto& e : q) scratch[static_cast<size_t>(e.id)] = e.p;
  double total = 0.0;
  for (const auto& e : p) total += std::max(0.0, static_cast<double>(e.p) - scratch[static_cast<size_t>(e.id)]);
  int32_t token;
  if (total <= 1e-12) {
    // p == q up to rounding: a rejection had (almost) no probability; p itself is right.
    token = draw_token(p, rng);
  } else {
    token = draw_weighted(
        p, total,
        [&](const TokenProb& e) { return std::max(0.0, static_cast<double>(e.p) - scratch[static_cast<size_t>(e.id)]); },
        rng);
  }
  for (const auto& e : q) scratch[static_cast<size_t>(e.id)] = 0.0f;
  return {token, false};
}

Status chain_distribution(llama_sampler* chain, const float* logits, int32_t n_vocab, std::span<const int32_t> banned,
                          std::vector<llama_token_data>& cur, TokenDistribution& out, float& confidence,
                          const std::string& constraint_param) {
  out.clear();
  confidence = 0.0f;
  try {
    cur.resize(static_cast<size_t>(n_vocab));
    for (llama_token t = 0; t < n_vocab; ++t) cur[static_cast<size_t>(t)] = llama_token_data{t, logits[t], 0.0f};
    for (int32_t t : banned)
      if (t >= 0 && t < n_vocab) cur[static_cast<size_t>(t)].logit = -INFINITY;
    llama_token_data_array arr{cur.data(), cur.size(), -1, false};
    bool greedy = true;
    if (chain) {
      const int32_t n = llama_sampler_chain_n(chain);
      if (n < 1) return Status::internal("the sampler chain is empty");
      for (int32_t i = 0; i + 1 < n; ++i) llama_sampler_apply(llama_sampler_chain_get(chain, i), &arr);
      const char* last = llama_sampler_name(llama_sampler_chain_get(chain, n - 1));
      greedy = std::strcmp(last, "greedy") == 0;
      if (!greedy && std::strcmp(last, "dist") != 0)
        return Status::internal(std::string("speculation cannot verify a chain ending in '") + last + "'");
    }
    float max_l = -INFINITY;
    size_t max_i = 0;
    for (size_t i = 0; i < arr.size; ++i)
      if (arr.data[i].logit > max_l) {
        max_l = arr.data[i].logit;
        max_i = i;
      }
    if (arr.size == 0 || max_l == -INFINITY)
      return Status::invalid_argument("the output constraint allows no next token: the output cannot continue",
                                      constraint_param);
    double sum = 0.0;
    for (size_t i = 0; i < arr.size; ++i) sum += std::exp(static_cast<double>(arr.data[i].logit - max_l));
    confidence = static_cast<float>(1.0 / sum);
    if (greedy) {
      out.push_back({arr.data[max_i].id, 1.0f});
      return Status::ok();
    }
    out.reserve(arr.size);
    for (size_t i = 0; i < arr.size; ++i) {
      const double e = std::exp(static_cast<double>(arr.data[i].logit - max_l));
      if (e > 0.0) out.push_back({arr.data[i].id, static_cast<float>(e / sum)});
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("the output constraint failed: ") + e.what(), constraint_param);
  } catch (...) {
    return Status::invalid_argument("the output constraint failed", constraint_param);
  }
}

std::vector<int32_t> ngram_draft(std::span<const int32_t> ctx, int32_t n_min, int32_t n_max, int32_t max_tokens) {
  std::vector<int32_t> out;
  const int64_t size = static_cast<int64_t>(ctx.size());
  if (max_tokens <= 0 || n_min < 1) return out;
  for (int64_t n = std::min<int64_t>(n_max, size - 1); n >= n_min; --n) {
    const int32_t* suffix = ctx.data() + (size - n);
    // Latest earlier occurrence first: recent text predicts best.
    for (int64_t start = size - n - 1; start >= 0; --start) {
      if (!std::equal(suffix, suffix + n, ctx.data() + start)) continue;
      const int64_t from = start + n;
      const int64_t to = std::min<int64_t>(size, from + max_tokens);
      out.assign(ctx.begin() + from, ctx.begin() + to);
      return out;
    }
  }
  return out;
}

DraftLength::DraftLength(int32_t min_tokens, int32_t max_tokens, double initial_acceptance)
    : min_(std::max(1, min_tokens)), max_(std::max(std::max(1, min_tokens), max_tokens)),
      acceptance_(std::clamp(initial_acceptance, 0.0, 1.0)) {
  choose();
}

void DraftLength::record(int32_t drafted, int32_t accepted) {
  if (drafted <= 0) return;
  // Per-token acceptance of this round: accepted of the positions reached
  // (a rejection ends the round, so the rest were never tried).
  const int32_t tried = std::min(drafted, accepted + 1);
  const double rate = static_cast<double>(accepted) / tried;
  constexpr double kShare = 0.3;  // weight of the newest round
  acceptance_ = (1.0 - kShare) * acceptance_ + kShare * rate;
  choose();
}

void DraftLength::choose() {
  if (acceptance_ >= 0.999) {
    next_ = max_;
    return;
  }
  if (acceptance_ <= 0.0) {
    next_ = min_;
    return;
  }
  const double k = std::floor(std::log(kWorthDrafting) / std::log(acceptance_));
  next_ = static_cast<int32_t>(std::clamp<double>(k, min_, max_));
}

void SpeculationGate::Arm::add(double s, double t) {
  if (samples++ == 0) {
    seconds = s;
    tokens = t;
    return;
  }
  // Averages of seconds and of tokens, not of their ratio: a long step
  // weighs as much as its length, as in the wall time it stands for.
  seconds = (1.0 - kShare) * seconds + kShare * s;
  tokens = (1.0 - kShare) * tokens + kShare * t;
}

size_t SpeculationGate::bucket_of(int32_t generating) {
  size_t b = 0;  // 1, 2, 3-4, 5-8, ...
  for (int32_t top = 1; generating > top && b + 1 < kBuckets; top *= 2) ++b;
  return b;
}

bool SpeculationGate::start_run(size_t b) {
  Bucket& bucket = buckets_[b];
  // The verdict: this bucket's own once it knows both arms, else that of the
  // nearest bucket that does (a load seen at another concurrency is the best
  // guess there is, and measuring both arms again costs a slow arm's runs).
  const Bucket* known = bucket.warm() ? &bucket : nullptr;
  for (size_t d = 1; !known && d < kBuckets; ++d) {
    if (b >= d && buckets_[b - d].warm()) known = &buckets_[b - d];
    else if (b + d < kBuckets && buckets_[b + d].warm()) known = &buckets_[b + d];
  }
  // Nothing known anywhere yet: both arms, the one with fewer samples first
  // (speculation on a tie).
  if (!known) return bucket.on.samples <= bucket.off.samples;
  const bool faster = known->faster_on();
  if (bucket.has_verdict && faster != bucket.verdict) {
    bucket.explore_every = kExploreEvery;  // things changed: look again soon
  } else if (bucket.explored) {
    bucket.explore_every = std::min(2 * bucket.explore_every, kExploreMax);  // the verdict stood
  }
  bucket.verdict = faster;
  bucket.has_verdict = true;
  bucket.explored = ++bucket.since_explore >= bucket.explore_every;
  if (bucket.explored) bucket.since_explore = 0;
  return bucket.explored ? !faster : faster;
}

bool SpeculationGate::decide(int32_t generating) {
  const size_t b = bucket_of(generating);
  bool on = true;
  if (adaptive_) {
    if (run_left_ <= 0 || b != run_bucket_) {
      run_bucket_ = b;
      run_on_ = start_run(b);
      run_left_ = kRunSteps;
    }
    --run_left_;
    on = run_on_;
  }
  ++buckets_[b].steps;
  ++(on ? steps_on_ : steps_off_);
  pending_ = {true, b, on, on && !last_on_};
  last_on_ = on;
  return on;
}

void SpeculationGate::record(bool prefill, double seconds, int64_t tokens) {
  const Pending p = pending_;
  pending_.open = false;
  if (!p.open || prefill || p.switched || seconds <= 0 || tokens < 0) return;
  Bucket& b = buckets_[p.bucket];
  (p.on ? b.on : b.off).add(seconds, static_cast<double>(tokens));
}

double SpeculationGate::rate(int32_t generating, bool speculating) const {
  const Bucket& b = buckets_[bucket_of(generating)];
  return (speculating ? b.on : b.off).rate();
}

double SpeculationGate::speedup() const {
  double weighted = 0, steps = 0;
  for (const Bucket& b : buckets_) {
    if (b.on.samples == 0 || b.off.samples == 0 || b.off.rate() <= 0) continue;
    weighted += static_cast<double>(b.steps) * b.on.rate() / b.off.rate();
    steps += static_cast<double>(b.steps);
  }
  return steps > 0 ? weighted / steps : std::nan("");
}

Status check_same_vocab(const llama_vocab* target, const llama_vocab* draft) {
  const int32_t n = llama_vocab_n_tokens(target);
  if (llama_vocab_n_tokens(draft) != n)
    return Status::invalid_argument("the draft model's vocabulary has " + std::to_string(llama_vocab_n_tokens(draft)) +
                                    " tokens, the target's " + std::to_string(n));
  if (llama_vocab_type(draft) != llama_vocab_type(target))
    return Status::invalid_argument("the draft model's tokenizer type differs from the target's");
  auto special = [&](const char* what, llama_token a, llama_token b) -> Status {
    if (a == b) return Status::ok();
    return Status::invalid_argument(std::string("the draft model's ") + what + " token is " + std::to_string(b) +
                                    ", the target's " + std::to_string(a));
  };
  RETURN_IF_ERROR(special("BOS", llama_vocab_bos(target), llama_vocab_bos(draft)));
  RETURN_IF_ERROR(special("EOS", llama_vocab_eos(target), llama_vocab_eos(draft)));
  RETURN_IF_ERROR(special("EOT", llama_vocab_eot(target), llama_vocab_eot(draft)));
  for (llama_token t = 0; t < n; ++t) {
    const char* a = llama_vocab_get_text(target, t);
    const char* b = llama_vocab_get_text(draft, t);
    if (std::strcmp(a ? a : "", b ? b : "") != 0 || llama_vocab_get_attr(target, t) != llama_vocab_get_attr(draft, t))
      return Status::invalid_argument("the draft model's token " + std::to_string(t) +
                                      " differs from the target's (the vocabularies must be the same)");
  }
  return Status::ok();
}

struct DraftModel::State {
  std::unique_ptr<llama_model, void (*)(llama_model*)> model{nullptr, llama_model_free};
  std::unique_ptr<llama_context, void (*)(llama_context*)> ctx{nullptr, llama_free};
  llama_batch batch{};
  int32_t n_batch = 0;
  int32_t n_vocab = 0;
  std::vector<std::vector<int32_t>> caches;  // per sequence: the tokens its KV holds, positions 0..n-1
  std::vector<llama_token_data> scratch;
  ~State() {
    if (batch.token) llama_batch_free(batch);
  }
};

DraftModel::DraftModel() : state_(std::make_unique<State>()) {}
const llama_context* DraftModel::context() const { return state_->ctx.get(); }
DraftModel::~DraftModel() = default;

Result<std::unique_ptr<DraftModel>> DraftModel::load(const std::string& name, const std::string& path,
                                                     const llama_model* target, const DraftModelParams& params) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    spdlog::error("model '{}': no draft model file at {}", name, path);
    return Status::not_found("model '" + name + "': its draft model file is missing");
  }
  std::unique_ptr<DraftModel> d(new DraftModel());
  State& st = *d->state_;
  st.model.reset(llama_model_load_from_file(path.c_str(), model_params(params.repack)));
  if (!st.model) {
    spdlog::error("model '{}': llama.cpp cannot load the draft model {}", name, path);
    return Status::invalid_argument("model '" + name + "': llama.cpp cannot load its draft model (not a valid GGUF model?)");
  }
  if (Status same = check_same_vocab(llama_model_get_vocab(target), llama_model_get_vocab(st.model.get())); !same) {
    spdlog::error("model '{}': draft model {} refused: {}", name, path, same.message());
    return Status::invalid_argument("model '" + name + "': " + same.message());
  }
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = params.n_ctx;
  cp.n_batch = std::max(params.n_batch, params.n_seq);
  cp.n_ubatch = std::min<uint32_t>(cp.n_batch, 512);
  cp.n_seq_max = params.n_seq;
  cp.kv_unified = params.kv_unified;
  cp.n_threads = cp.n_threads_batch = std::max(1, params.threads);
  st.ctx.reset(llama_init_from_model(st.model.get(), cp));
  if (!st.ctx) return Status::invalid_argument("model '" + name + "': llama.cpp cannot create its draft model's context");
  st.n_batch = static_cast<int32_t>(llama_n_batch(st.ctx.get()));
  st.batch = llama_batch_init(st.n_batch, 0, 1);
  st.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(st.model.get()));
  st.caches.resize(params.n_seq);
  d->size_bytes_ = llama_model_size(st.model.get());
  return d;
}

void DraftModel::draft(std::span<DraftRequest* const> requests, float p_min, int32_t catch_up_budget) {
  State& st = *state_;
  llama_memory_t mem = llama_get_memory(st.ctx.get());
  llama_batch& batch = st.batch;
  struct Work {
    DraftRequest* r;
    size_t next = 0;     // next context token to decode
    int32_t row = -1;    // this decode's logits row
    bool going = true;
  };
  std::vector<Work> work;
  for (DraftRequest* r : requests) {
    r->tokens.clear();
    r->q.clear();
    if (r->context.empty() || r->max_tokens <= 0 || r->seq < 0 || r->seq >= static_cast<int32_t>(st.caches.size()))
      continue;
    auto& cache = st.caches[static_cast<size_t>(r->seq)];
    size_t keep = 0;
    while (keep < cache.size() && keep < r->context.size() && cache[keep] == r->context[keep]) ++keep;
    keep = std::min(keep, r->context.size() - 1);  // the last token is decoded again for its logits
    llama_memory_seq_rm(mem, r->seq, static_cast<llama_pos>(keep), -1);
    cache.resize(keep);
    work.push_back({r, keep});
  }
  auto add = [&](Work& w, int32_t tok, bool logits) {
    auto& cache = st.caches[static_cast<size_t>(w.r->seq)];
    const int32_t i = batch.n_tokens++;
    batch.token[i] = tok;
    batch.pos[i] = static_cast<llama_pos>(cache.size());
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = w.r->seq;
    batch.logits[i] = logits;
    cache.push_back(tok);
    if (logits) w.row = i;
  };
  auto decode = [&]() {
    const int32_t rc = llama_decode(st.ctx.get(), batch);
    if (rc == 0) return true;
    spdlog::warn("draft model decode failed ({}); drafting stops this round", rc);
    // What the batch added may be partly in the KV: drop it everywhere.
    for (auto& w : work) {
      auto& cache = st.caches[static_cast<size_t>(w.r->seq)];
      llama_pos first = static_cast<llama_pos>(cache.size());
      for (int32_t i = 0; i < batch.n_tokens; ++i)
        if (batch.seq_id[i][0] == w.r->seq) first = std::min(first, batch.pos[i]);
      llama_memory_seq_rm(mem, w.r->seq, first, -1);
      cache.resize(static_cast<size_t>(first));
      w.going = false;
    }
    return false;
  };
  // Draws the next draft token of `w` from this decode's logits.
  auto draw = [&](Work& w) {
    DraftRequest& r = *w.r;
    TokenDistribution q;
    float confidence = 0.0f;
    const float* logits = llama_get_logits_ith(st.ctx.get(), w.row);
    w.row = -1;
    if (!logits || !chain_distribution(r.chain, logits, st.n_vocab, r.banned, st.scratch, q, confidence, "draft") ||
        confidence < p_min) {
      w.going = false;
      return;
    }
    const int32_t tok = q.size() == 1 ? q.front().id : draw_token(q, *r.rng);
    if (r.chain) {
      try {
        llama_sampler_accept(r.chain, tok);
      } catch (...) {
        w.going = false;
        return;
      }
    }
    r.tokens.push_back(tok);
    r.q.push_back(std::move(q));
    if (static_cast<int32_t>(r.tokens.size()) >= r.max_tokens) w.going = false;
  };

  // Catch up: every sequence's KV gets its context, chunked by the batch.
  int32_t spent = 0;
  for (;;) {
    batch.n_tokens = 0;
    for (auto& w : work) {
      const auto& ctx = w.r->context;
      while (w.next < ctx.size() && batch.n_tokens < st.n_batch && spent < catch_up_budget) {
        add(w, ctx[w.next], w.next + 1 == ctx.size());
        ++w.next;
        ++spent;
      }
    }
    if (batch.n_tokens == 0) break;
    if (!decode()) return;
    for (auto& w : work)
      if (w.row >= 0) draw(w);
  }
  // Then one token a decode for every sequence still drafting.
  for (auto& w : work)
    if (w.next < w.r->context.size() || w.r->tokens.empty()) w.going = false;  // not caught up this round
  for (;;) {
    batch.n_tokens = 0;
    for (auto& w : work)
      if (w.going) add(w, w.r->tokens.back(), true);
    if (batch.n_tokens == 0) break;
    if (!decode()) return;
    for (auto& w : work)
      if (w.going) draw(w);
  }
}

}  // namespace llmpool::engine
