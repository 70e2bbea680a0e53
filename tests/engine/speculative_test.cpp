// The speculative decoding math on synthetic distributions (no model):
// rejection sampling keeps the target's distribution exactly, the chain's
// distribution is the one it samples from, prompt lookup, draft length.
#include "engine/speculative.h"

#include <gtest/gtest.h>
#include <llama.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

namespace llmpool::engine {
namespace {

TokenDistribution normalized(std::vector<std::pair<int32_t, double>> w) {
  double total = 0;
  for (auto& [id, x] : w) total += x;
  TokenDistribution d;
  for (auto& [id, x] : w) d.push_back({id, static_cast<float>(x / total)});
  return d;
}

// Total variation distance between an empirical count and a distribution.
double total_variation(const std::map<int32_t, int64_t>& counts, int64_t n, const TokenDistribution& p) {
  std::map<int32_t, double> diff;
  for (const auto& e : p) diff[e.id] += e.p;
  for (const auto& [id, c] : counts) diff[id] -= static_cast<double>(c) / n;
  double tv = 0;
  for (const auto& [id, x] : diff) tv += std::abs(x);
  return tv / 2;
}

// Pearson's chi-square statistic of `counts` against `p` (every p > 0).
double chi_square(const std::map<int32_t, int64_t>& counts, int64_t n, const TokenDistribution& p) {
  double chi = 0;
  for (const auto& e : p) {
    const double expected = e.p * static_cast<double>(n);
    const auto it = counts.find(e.id);
    const double seen = it == counts.end() ? 0.0 : static_cast<double>(it->second);
    chi += (seen - expected) * (seen - expected) / expected;
  }
  return chi;
}

class SpeculativeTest : public ::testing::Test {
 protected:
  // Draws a draft from q, verifies it against p, n times; counts the output.
  std::map<int32_t, int64_t> run(const TokenDistribution& p, const TokenDistribution& q, int64_t n,
                                 int64_t* accepted = nullptr) {
    std::mt19937_64 rng(1234);
    std::vector<float> scratch;
    std::map<int32_t, int64_t> counts;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t drafted = draw_token(q, rng);
      const Verdict v = verify_draft(p, q, drafted, rng, scratch);
      ++counts[v.token];
      if (v.accepted && accepted) ++*accepted;
      if (v.accepted) {
        EXPECT_EQ(v.token, drafted);
      }
    }
    for (float x : scratch) EXPECT_EQ(x, 0.0f);  // left clean for the next call
    return counts;
  }
};

TEST_F(SpeculativeTest, AcceptedOrCorrectedTokensFollowTheTargetDistribution) {
  // p and q disagree strongly, with tokens only one of them can produce.
  const TokenDistribution p = normalized({{0, 0.5}, {1, 0.2}, {2, 0.15}, {3, 0.1}, {7, 0.05}});
  const TokenDistribution q = normalized({{0, 0.1}, {1, 0.4}, {2, 0.1}, {4, 0.3}, {5, 0.1}});
  constexpr int64_t kN = 200000;
  int64_t accepted = 0;
  auto counts = run(p, q, kN, &accepted);
  // Tokens outside p never come out.
  EXPECT_EQ(counts.count(4), 0u);
  EXPECT_EQ(counts.count(5), 0u);
  EXPECT_LT(total_variation(counts, kN, p), 0.005);
  // 4 degrees of freedom: the 0.999 quantile is 18.47.
  EXPECT_LT(chi_square(counts, kN, p), 18.47);
  // The acceptance rate is sum(min(p, q)) = 0.1 + 0.2 + 0.1 = 0.4.
  EXPECT_NEAR(static_cast<double>(accepted) / kN, 0.4, 0.01);
}

TEST_F(SpeculativeTest, OneHotDraftsAsFromPromptLookupKeepTheDistribution) {
  // A deterministic drafter: q is one-hot on its guess.
  const TokenDistribution p = normalized({{10, 0.6}, {11, 0.3}, {12, 0.1}});
  for (int32_t guess : {10, 11, 12, 13}) {
    constexpr int64_t kN = 100000;
    int64_t accepted = 0;
    auto counts = run(p, {{guess, 1.0f}}, kN, &accepted);
    EXPECT_LT(total_variation(counts, kN, p), 0.006) << "guess " << guess;
    EXPECT_LT(chi_square(counts, kN, p), 13.82) << "guess " << guess;  // 2 d.f., 0.999
    EXPECT_NEAR(static_cast<double>(accepted) / kN, probability_of(p, guess), 0.01);
  }
}

TEST_F(SpeculativeTest, IdenticalDistributionsAreAlwaysAccepted) {
  const TokenDistribution p = normalized({{1, 0.25}, {2, 0.25}, {3, 0.5}});
  int64_t accepted = 0;
  run(p, p, 10000, &accepted);
  EXPECT_EQ(accepted, 10000);
}

TEST_F(SpeculativeTest, GreedyAcceptsExactlyTheTargetsArgmax) {
  std::mt19937_64 rng(7);
  std::vector<float> scratch;
  const TokenDistribution p = {{5, 1.0f}};
  EXPECT_EQ(verify_draft(p, {{5, 1.0f}}, 5, rng, scratch).accepted, true);
  const Verdict v = verify_draft(p, {{6, 1.0f}}, 6, rng, scratch);
  EXPECT_FALSE(v.accepted);
  EXPECT_EQ(v.token, 5);
}

// A chain like the engine's sampled one: chain_distribution() must be the
// distribution the chain itself draws from.
TEST_F(SpeculativeTest, ChainDistributionIsWhatTheChainSamples) {
  constexpr int32_t kVocab = 12;
  std::vector<float> logits(kVocab);
  for (int32_t i = 0; i < kVocab; ++i) logits[i] = std::sin(1.7f * i) * 3.0f;
  llama_sampler* chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(chain, llama_sampler_init_top_k(8));
  llama_sampler_chain_add(chain, llama_sampler_init_top_p(0.9f, 1));
  llama_sampler_chain_add(chain, llama_sampler_init_min_p(0.02f, 1));
  llama_sampler_chain_add(chain, llama_sampler_init_temp(0.8f));
  llama_sampler_chain_add(chain, llama_sampler_init_dist(99));

  std::vector<llama_token_data> cur;
  TokenDistribution p;
  float confidence = 0;
  ASSERT_TRUE(chain_distribution(chain, logits.data(), kVocab, {}, cur, p, confidence, "x").is_ok());
  ASSERT_FALSE(p.empty());
  EXPECT_LT(p.size(), static_cast<size_t>(kVocab));  // top-k / top-p cut some
  double sum = 0;
  for (const auto& e : p) sum += e.p;
  EXPECT_NEAR(sum, 1.0, 1e-5);

  constexpr int64_t kN = 60000;
  std::map<int32_t, int64_t> counts;
  for (int64_t i = 0; i < kN; ++i) {
    std::vector<llama_token_data> c(kVocab);
    for (int32_t t = 0; t < kVocab; ++t) c[t] = {t, logits[t], 0.0f};
    llama_token_data_array arr{c.data(), c.size(), -1, false};
    llama_sampler_apply(chain, &arr);
    ++counts[arr.data[arr.selected].id];
  }
  EXPECT_LT(total_variation(counts, kN, p), 0.01);
  llama_sampler_free(chain);
}

TEST_F(SpeculativeTest, GreedyChainDistributionIsOneHotWithItsConfidence) {
  std::vector<float> logits = {0.0f, 2.0f, 1.0f, 2.0f};
  llama_sampler* chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(chain, llama_sampler_init_greedy());
  std::vector<llama_token_data> cur;
  TokenDistribution p;
  float confidence = 0;
  ASSERT_TRUE(chain_distribution(chain, logits.data(), 4, {}, cur, p, confidence, "x").is_ok());
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].id, 1);  // the first of equal maxima, as the greedy sampler picks
  const double z = 1 + 2 * std::exp(2.0) + std::exp(1.0);
  EXPECT_NEAR(confidence, std::exp(2.0) / z, 1e-5);
  // Banned tokens are out of the running (ignore_eos).
  const int32_t banned[] = {1, 3};
  ASSERT_TRUE(chain_distribution(nullptr, logits.data(), 4, banned, cur, p, confidence, "x").is_ok());
  EXPECT_EQ(p[0].id, 2);
  llama_sampler_free(chain);
}

TEST_F(SpeculativeTest, ChainDistributionRefusesWhenNothingIsAllowed) {
  std::vector<float> logits(3, -INFINITY);
  std::vector<llama_token_data> cur;
  TokenDistribution p;
  float confidence = 0;
  Status st = chain_distribution(nullptr, logits.data(), 3, {}, cur, p, confidence, "response_format");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.param(), "response_format");
}

TEST_F(SpeculativeTest, PromptLookupContinuesTheLatestLongestMatch) {
  //                              0  1  2  3  4  5  6  7  8  9
  const std::vector<int32_t> ctx = {1, 2, 3, 9, 1, 2, 3, 4, 5, 1, 2, 3};
  // Suffix "1 2 3" last occurred at 4..6, followed by 4 5 1 2 3.
  EXPECT_EQ(ngram_draft(ctx, 1, 3, 3), (std::vector<int32_t>{4, 5, 1}));
  EXPECT_EQ(ngram_draft(ctx, 1, 3, 100), (std::vector<int32_t>{4, 5, 1, 2, 3}));
  // No recurring suffix: nothing.
  EXPECT_TRUE(ngram_draft(std::vector<int32_t>{1, 2, 3, 4}, 1, 3, 4).empty());
  // A suffix that recurs only shorter than n_min: nothing.
  EXPECT_TRUE(ngram_draft(std::vector<int32_t>{7, 8, 5, 8}, 2, 3, 4).empty());
  EXPECT_EQ(ngram_draft(std::vector<int32_t>{7, 8, 5, 8}, 1, 3, 4), (std::vector<int32_t>{5, 8}));
  EXPECT_TRUE(ngram_draft(std::vector<int32_t>{}, 1, 3, 4).empty());
  EXPECT_TRUE(ngram_draft(ctx, 1, 3, 0).empty());
}

TEST_F(SpeculativeTest, DraftLengthGrowsWithAcceptanceAndStaysBounded) {
  DraftLength len(2, 10, 0.6);
  const int32_t start = len.next();
  EXPECT_GE(start, 2);
  EXPECT_LE(start, 10);
  for (int i = 0; i < 30; ++i) len.record(len.next(), len.next());  // everything accepted
  EXPECT_EQ(len.next(), 10);
  for (int i = 0; i < 30; ++i) len.record(len.next(), 0);  // nothing accepted
  EXPECT_EQ(len.next(), 2);
  DraftLength odd(0, -5);  // bounds out of order are made sane
  EXPECT_EQ(odd.next(), 1);
}


// The speculation gate, fed timings of a fake engine: each decode step with
// `generating` sequences takes `on_s` seconds and emits `on_tokens` when it
// speculates, `off_s` and `off_tokens` when not. Returns the steps that
// speculated.
struct FakeSteps {
  double on_s = 0.010, off_s = 0.004;
  int64_t on_tokens = 8, off_tokens = 4;  // 800 tok/s speculating, 1000 not: speculation loses
};
int64_t run_gate(SpeculationGate& gate, int steps, int32_t generating, const FakeSteps& f) {
  int64_t on = 0;
  for (int i = 0; i < steps; ++i) {
    const bool spec = gate.decide(generating);
    on += spec ? 1 : 0;
    gate.record(false, spec ? f.on_s : f.off_s, spec ? f.on_tokens : f.off_tokens);
  }
  return on;
}

TEST(SpeculationGateTest, ExploresBothArmsFirstThenPicksTheFasterOne) {
  SpeculationGate gate;
  // The first runs go both ways, whatever they measure.
  bool seen_on = false, seen_off = false;
  for (int i = 0; i < 2 * SpeculationGate::kRunSteps * (SpeculationGate::kWarmSamples + 1); ++i) {
    const bool spec = gate.decide(4);
    (spec ? seen_on : seen_off) = true;
    gate.record(false, spec ? 0.010 : 0.004, spec ? 8 : 4);
  }
  EXPECT_TRUE(seen_on);
  EXPECT_TRUE(seen_off);
  EXPECT_NEAR(gate.rate(4, true), 800.0, 1e-6);
  EXPECT_NEAR(gate.rate(4, false), 1000.0, 1e-6);
  EXPECT_NEAR(gate.speedup(), 0.8, 1e-9);
  // Speculation loses: it runs only on the exploring share of the steps.
  const int kSteps = 64 * 16;
  const int64_t on = run_gate(gate, kSteps, 4, {});
  EXPECT_GT(on, 0);                               // it keeps exploring
  EXPECT_LE(on, kSteps / SpeculationGate::kExploreEvery + SpeculationGate::kRunSteps);
  EXPECT_EQ(gate.steps(true) + gate.steps(false),
            kSteps + 2 * SpeculationGate::kRunSteps * (SpeculationGate::kWarmSamples + 1));
  // While the verdict stands the tries grow rarer: one run in kExploreMax.
  const int kLater = 8 * SpeculationGate::kExploreMax * SpeculationGate::kRunSteps;
  const int64_t later = run_gate(gate, kLater, 4, {});
  EXPECT_GE(later, 4 * SpeculationGate::kRunSteps);
  EXPECT_LE(later, kLater / SpeculationGate::kExploreMax + SpeculationGate::kRunSteps);

  // Where speculation wins, it runs on all but the exploring share.
  SpeculationGate wins;
  FakeSteps fast;
  fast.on_s = 0.005;  // 1600 tok/s against 1000
  run_gate(wins, 64, 4, fast);
  const int64_t won = run_gate(wins, kSteps, 4, fast);
  EXPECT_GE(won, kSteps - kSteps / SpeculationGate::kExploreEvery - SpeculationGate::kRunSteps);
  EXPECT_LT(won, kSteps);                         // the other arm is still tried
  EXPECT_NEAR(wins.speedup(), 1.6, 1e-9);
}

TEST(SpeculationGateTest, SwitchesWhenTheArmsSpeedsSwap) {
  // Long enough for the slower arm to be tried at the longest interval.
  const int kLong = 2 * SpeculationGate::kExploreMax * SpeculationGate::kRunSteps;
  SpeculationGate gate;
  FakeSteps f;
  f.on_s = 0.005;  // speculation wins
  run_gate(gate, kLong, 2, f);
  EXPECT_GT(gate.speedup(), 1.0);
  EXPECT_GT(run_gate(gate, 256, 2, f), 240);
  // Acceptance drops (or the load changes): speculating now yields less.
  f.on_s = 0.010;
  f.on_tokens = 5;  // 500 tok/s against 1000
  run_gate(gate, kLong, 2, f);
  EXPECT_LT(gate.speedup(), 1.0);
  EXPECT_LT(run_gate(gate, 256, 2, f), 20);
  // And back.
  f.on_s = 0.002;
  f.on_tokens = 8;  // 4000 tok/s
  run_gate(gate, kLong, 2, f);
  EXPECT_GT(gate.speedup(), 1.0);
  EXPECT_GT(run_gate(gate, 256, 2, f), 240);
}

TEST(SpeculationGateTest, IgnoresPrefillStepsAndTheStepThatSwitchesOn) {
  SpeculationGate gate;
  int off_steps = 0;
  for (int i = 0; i < 64; ++i) {
    const bool spec = gate.decide(3);
    // Prompt chunks ride along on every other step, at any cost: not recorded.
    if (i % 2 == 1) {
      gate.record(true, spec ? 1.0 : 1e-6, spec ? 1 : 1000);
      continue;
    }
    off_steps += spec ? 0 : 1;
    gate.record(false, spec ? 0.010 : 0.004, spec ? 8 : 4);
  }
  ASSERT_GT(off_steps, 0);
  EXPECT_NEAR(gate.rate(3, true), 800.0, 1e-6);
  EXPECT_NEAR(gate.rate(3, false), 1000.0, 1e-6);

  // A speculating step right after one that was not pays the draft's
  // catch-up: not recorded, so the steady state is what is compared.
  SpeculationGate g2;
  std::vector<bool> arms;
  for (int i = 0; i < 64; ++i) {
    const bool spec = g2.decide(1);
    const bool switched = spec && !arms.empty() && !arms.back();
    arms.push_back(spec);
    g2.record(false, switched ? 1.0 : (spec ? 0.010 : 0.004), spec ? 8 : 4);
  }
  ASSERT_NE(std::count(arms.begin(), arms.end(), true), 0);
  ASSERT_NE(std::count(arms.begin(), arms.end(), false), 0);
  EXPECT_NEAR(g2.rate(1, true), 800.0, 1e-6);
  // A record() without its decide() (an aborted step's) changes nothing.
  g2.record(false, 100.0, 1);
  EXPECT_NEAR(g2.rate(1, true), 800.0, 1e-6);
  EXPECT_NEAR(g2.rate(1, false), 1000.0, 1e-6);
}

TEST(SpeculationGateTest, DecidesPerGeneratingCount) {
  // One sequence: a verify batch costs about what one token does, so
  // speculation wins; eight: the drafts' cost grows with them, it loses.
  SpeculationGate gate;
  auto step = [&](int32_t generating) {
    const bool spec = gate.decide(generating);
    const double s = generating == 1 ? (spec ? 0.002 : 0.001) : (spec ? 0.040 : 0.008);
    const int64_t tokens = spec ? 4 * generating : generating;
    gate.record(false, s, tokens);
    return spec;
  };
  for (int i = 0; i < 200; ++i) {
    for (int j = 0; j < 8; ++j) step(1);
    for (int j = 0; j < 8; ++j) step(8);
  }
  int on1 = 0, on8 = 0;
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < 8; ++j) on1 += step(1) ? 1 : 0;
    for (int j = 0; j < 8; ++j) on8 += step(8) ? 1 : 0;
  }
  EXPECT_GT(on1, 64 * 8 * 3 / 4);
  EXPECT_LT(on8, 64 * 8 / 4);
  EXPECT_NEAR(gate.rate(1, true), 2000.0, 1e-6);
  EXPECT_NEAR(gate.rate(8, false), 1000.0, 1e-6);
  // Counts share buckets of powers of two: 1, 2, 3-4, 5-8, ...
  EXPECT_EQ(SpeculationGate::bucket_of(0), 0u);
  EXPECT_EQ(SpeculationGate::bucket_of(1), 0u);
  EXPECT_EQ(SpeculationGate::bucket_of(2), 1u);
  EXPECT_EQ(SpeculationGate::bucket_of(3), 2u);
  EXPECT_EQ(SpeculationGate::bucket_of(4), 2u);
  EXPECT_EQ(SpeculationGate::bucket_of(5), 3u);
  EXPECT_EQ(SpeculationGate::bucket_of(8), 3u);
  EXPECT_EQ(SpeculationGate::bucket_of(9), 4u);
  EXPECT_EQ(SpeculationGate::bucket_of(129), SpeculationGate::kBuckets - 1);
  EXPECT_EQ(SpeculationGate::bucket_of(256), SpeculationGate::kBuckets - 1);
  EXPECT_EQ(SpeculationGate::bucket_of(100000), SpeculationGate::kBuckets - 1);
  // The speedup weighs each count's ratio by its steps: 2.0 at one, 0.8 at eight.
  EXPECT_NEAR(gate.speedup(), 1.4, 1e-9);
}

TEST(SpeculationGateTest, ANewCountStartsFromTheNearestKnownOne) {
  SpeculationGate gate;
  FakeSteps f;
  f.on_s = 0.005;
  run_gate(gate, 256, 2, f);  // speculation wins at two sequences
  // Three sequences, never seen: it speculates as two sequences found, and
  // tries the other arm on its own schedule, then goes by its own verdict.
  std::vector<bool> arms;
  const size_t run = SpeculationGate::kRunSteps;
  const size_t first_try = SpeculationGate::kExploreEvery - 1;  // runs before it
  for (size_t i = 0; i < (first_try + 2) * run; ++i) {
    const bool spec = gate.decide(3);
    arms.push_back(spec);
    gate.record(false, spec ? f.on_s : f.off_s, spec ? f.on_tokens : f.off_tokens);
  }
  const auto at = [&](size_t r) { return arms.begin() + static_cast<std::ptrdiff_t>(r * run); };
  EXPECT_EQ(std::count(at(0), at(first_try), true), static_cast<std::ptrdiff_t>(first_try * run));
  EXPECT_EQ(std::count(at(first_try), at(first_try + 1), false), static_cast<std::ptrdiff_t>(run));
  EXPECT_EQ(std::count(at(first_try + 1), arms.end(), true), static_cast<std::ptrdiff_t>(run));
  EXPECT_NEAR(gate.rate(3, false), 1000.0, 1e-6);
  EXPECT_NEAR(gate.rate(3, true), 1600.0, 1e-6);
}

TEST(SpeculationGateTest, NotAdaptiveSpeculatesOnEveryStep) {
  SpeculationGate gate(false);
  EXPECT_EQ(run_gate(gate, 300, 4, {}), 300);
  EXPECT_EQ(gate.steps(false), 0);
  EXPECT_EQ(gate.steps(true), 300);
  EXPECT_NEAR(gate.rate(4, true), 800.0, 1e-6);
  EXPECT_TRUE(std::isnan(gate.speedup()));  // never measured without it
  EXPECT_TRUE(std::isnan(SpeculationGate().speedup()));
}

}  // namespace
}  // namespace llmpool::engine
