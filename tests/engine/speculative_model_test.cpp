// Speculative decoding in the engine, on the tiny test model: a draft model
// (the target itself, where every draft is accepted, and a second model of
// the same vocabulary and other weights, where most are rejected) and
// prompt lookup. The output must be what the target alone produces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <array>
#include <cmath>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "engine/local_model.h"
#include "engine/model_writer.h"

namespace llmpool::engine {
namespace {

namespace fs = std::filesystem;

const std::string kTiny = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";

struct Collector {
  std::promise<Result<Completion>> done;
  std::future<Result<Completion>> future = done.get_future();
  std::vector<Delta> deltas;
  std::function<void(const Delta&)> on_delta;
  GenerateCallbacks callbacks() {
    GenerateCallbacks cb;
    cb.on_delta = [this](Delta d) {
      if (on_delta) on_delta(d);
      deltas.push_back(std::move(d));
    };
    cb.on_done = [this](Result<Completion> r) { done.set_value(std::move(r)); };
    return cb;
  }
};

GenerateRequest request(std::string text, int32_t max_tokens, bool speculative) {
  GenerateRequest r;
  r.messages = {{"user", std::move(text)}};
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  r.sampling.speculative = speculative;
  return r;
}

// Writes a tiny model into `dir` with `seed` and the vocab `vocab_name`.
std::string write_tiny(const fs::path& dir, uint64_t seed, std::string_view vocab_name) {
  auto preset = find_model_preset("tiny");
  EXPECT_TRUE(preset.is_ok());
  ModelWriterOptions o;
  o.shape = preset->shape;
  o.type = WeightType::kQ8_0;
  o.seed = seed;
  o.vocab_path = vocab_file_path(LLMPOOL_VOCAB_DIR, vocab_name);
  o.output_path = (dir / ("tiny-" + std::string(vocab_name) + "-" + std::to_string(seed) + ".gguf")).string();
  o.n_threads = 1;
  WrittenModel written;
  const Status s = write_model(o, &written);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  return o.output_path;
}

class SpeculativeModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("llmpool-spec-" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    other_draft_ = new std::string(write_tiny(*dir_, 777, "llama-spm"));
    other_vocab_ = new std::string(write_tiny(*dir_, 42, "gpt-2"));
    plain_ = load({}).release();
    // These speculate on every step (the gate off): what they test is the
    // drafting and the verification, every round.
    SpeculativeSpec same;
    same.draft_path = kTiny;
    same.max_tokens = 6;
    same.p_min = 0.0f;
    same.adaptive = false;
    self_draft_ = load(same).release();
    SpeculativeSpec other = same;
    other.draft_path = *other_draft_;
    other_ = load(other).release();
    SpeculativeSpec ngram;
    ngram.ngram = 3;
    ngram.adaptive = false;
    ngram_ = load(ngram).release();
    // The gate on (the default): steps speculate or not by what it measured,
    // and both ways while it explores.
    SpeculativeSpec gated = other;
    gated.adaptive = true;
    gated_ = load(gated).release();
  }
  static void TearDownTestSuite() {
    for (LocalModel* m : {plain_, self_draft_, other_, ngram_, gated_}) delete m;
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    delete other_draft_;
    delete other_vocab_;
  }

  static std::unique_ptr<LocalModel> load(const SpeculativeSpec& sp, bool kv_unified = false) {
    LocalModelSpec spec;
    spec.name = "tiny";
    spec.path = kTiny;
    spec.context = 256;
    spec.parallel = 4;
    spec.batch = 64;
    spec.threads = 1;
    // After every step: each sequence's token list matches its KV cache
    // (the rejected drafts' cells are gone), or the process aborts.
    spec.check_invariants = true;
    spec.speculative = sp;
    spec.kv_unified = kv_unified;
    auto m = LocalModel::load(spec);
    EXPECT_TRUE(m.is_ok()) << m.status().to_string();
    return m ? std::move(m).value() : nullptr;
  }

  static Result<Completion> run(LocalModel* m, GenerateRequest req) {
    Collector c;
    m->submit(std::move(req), nullptr, c.callbacks());
    return c.future.get();
  }
  static std::string text(LocalModel* m, GenerateRequest req) {
    auto r = run(m, std::move(req));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r ? r->choices[0].text : std::string();
  }

  static fs::path* dir_;
  static std::string* other_draft_;
  static std::string* other_vocab_;
  static LocalModel* plain_;
  static LocalModel* self_draft_;
  static LocalModel* other_;
  static LocalModel* ngram_;
  static LocalModel* gated_;
};
fs::path* SpeculativeModelTest::dir_ = nullptr;
std::string* SpeculativeModelTest::other_draft_ = nullptr;
std::string* SpeculativeModelTest::other_vocab_ = nullptr;
LocalModel* SpeculativeModelTest::plain_ = nullptr;
LocalModel* SpeculativeModelTest::self_draft_ = nullptr;
LocalModel* SpeculativeModelTest::other_ = nullptr;
LocalModel* SpeculativeModelTest::ngram_ = nullptr;
LocalModel* SpeculativeModelTest::gated_ = nullptr;

const std::vector<std::string> kPrompts = {"Hello there", "Count: one two three one two three one two",
                                           "The quick brown fox"};

// Submits a greedy request of `max_tokens` for every prompt at once: their
// sequences share the steps.
std::vector<std::unique_ptr<Collector>> submit_all(LocalModel* m, int32_t max_tokens) {
  std::vector<std::unique_ptr<Collector>> cs;
  for (const auto& prompt : kPrompts) {
    cs.push_back(std::make_unique<Collector>());
    m->submit(request(prompt, max_tokens, true), nullptr, cs.back()->callbacks());
  }
  return cs;
}

TEST_F(SpeculativeModelTest, GreedyOutputIsTheTargetsOwnWithEveryDrafter) {
  ASSERT_TRUE(plain_ && self_draft_ && other_ && ngram_);
  for (const auto& prompt : kPrompts) {
    const std::string want = text(plain_, request(prompt, 48, false));
    ASSERT_FALSE(want.empty());
    EXPECT_EQ(text(self_draft_, request(prompt, 48, true)), want) << "self draft: " << prompt;
    EXPECT_EQ(text(other_, request(prompt, 48, true)), want) << "other draft: " << prompt;
    EXPECT_EQ(text(ngram_, request(prompt, 48, true)), want) << "n-gram: " << prompt;
    EXPECT_EQ(text(self_draft_, request(prompt, 48, false)), want) << "switched off: " << prompt;
  }
  const EngineStats self = self_draft_->stats();
  EXPECT_GT(self.speculative_rounds, 0);
  EXPECT_GT(self.speculative_drafted, 0);
  // The target drafting for itself: its drafts are accepted (all but the
  // rare near-tie a different batch shape rounds the other way).
  EXPECT_GE(self.speculative_accepted * 10, self.speculative_drafted * 9);
  const EngineStats other = other_->stats();
  EXPECT_GT(other.speculative_drafted, 0);
  EXPECT_LT(other.speculative_accepted, other.speculative_drafted);
  EXPECT_EQ(plain_->stats().speculative_rounds, 0);
}

// The gate decides per step whether the sequences speculate; either way the
// greedy output is the target's own. A new gate's first steps go both ways
// whatever they measure (SpeculationGate), so both kinds of step run here,
// alone and then four sequences at once; and with the gate off (every step
// speculates) and speculation switched off per request the same text.
TEST_F(SpeculativeModelTest, GreedyOutputIsTheSameWhetherTheGateSpeculatesOrNot) {
  ASSERT_TRUE(plain_ && other_);
  // Models of its own: fresh gates, whose first steps are sure to go both
  // ways, one for sequences alone and one for three at once.
  SpeculativeSpec sp;
  sp.draft_path = *other_draft_;
  sp.max_tokens = 6;
  sp.p_min = 0.0f;
  auto gated = load(sp);
  auto together_gated = load(sp);
  ASSERT_TRUE(gated && together_gated);
  std::vector<std::string> want;
  for (const auto& prompt : kPrompts) {
    want.push_back(text(plain_, request(prompt, 48, false)));
    ASSERT_FALSE(want.back().empty());
  }
  const EngineStats before = gated->stats();
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    EXPECT_EQ(text(gated.get(), request(kPrompts[i], 48, true)), want[i]) << "gate on: " << kPrompts[i];
    EXPECT_EQ(text(other_, request(kPrompts[i], 48, true)), want[i]) << "gate off: " << kPrompts[i];
  }
  const EngineStats alone = gated->stats();
  EXPECT_GT(alone.speculative_steps_on, before.speculative_steps_on);
  EXPECT_GT(alone.speculative_steps_off, before.speculative_steps_off);
  EXPECT_GT(alone.speculative_rounds, before.speculative_rounds);
  // A speculating step and one that was not were both timed alone.
  EXPECT_FALSE(std::isnan(alone.speculative_speedup));
  EXPECT_GT(alone.speculative_speedup, 0.0);

  for (int wave = 0; wave < 3; ++wave) {
    std::vector<std::unique_ptr<Collector>> cs = submit_all(together_gated.get(), 48);
    for (size_t i = 0; i < cs.size(); ++i) {
      auto r = cs[i]->future.get();
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      EXPECT_EQ(r->choices[0].text, want[i]) << "wave " << wave << ": " << kPrompts[i];
    }
  }
  const EngineStats together = together_gated->stats();
  EXPECT_GT(together.speculative_steps_on, 0);
  EXPECT_GT(together.speculative_steps_off, 0);

  // "speculative": false wins over the gate: no step of it is the gate's.
  for (size_t i = 0; i < kPrompts.size(); ++i)
    EXPECT_EQ(text(gated.get(), request(kPrompts[i], 48, false)), want[i]) << "switched off: " << kPrompts[i];
  const EngineStats off = gated->stats();
  EXPECT_EQ(off.speculative_steps_on, alone.speculative_steps_on);
  EXPECT_EQ(off.speculative_steps_off, alone.speculative_steps_off);
  EXPECT_EQ(off.speculative_rounds, alone.speculative_rounds);
  // Without the gate every step of a speculating sequence speculates.
  EXPECT_GT(other_->stats().speculative_steps_on, 0);
  EXPECT_EQ(other_->stats().speculative_steps_off, 0);
  EXPECT_EQ(plain_->stats().speculative_steps_on + plain_->stats().speculative_steps_off, 0);
}

TEST_F(SpeculativeModelTest, ManySequencesSpeculateInOneStepWithTheSameOutput) {
  // Four requests at once (and one with n = 2): their drafts share the steps.
  std::vector<std::string> want;
  for (const auto& prompt : kPrompts) want.push_back(text(plain_, request(prompt, 40, false)));
  for (LocalModel* m : {self_draft_, other_, ngram_, gated_}) {
    std::vector<std::unique_ptr<Collector>> cs = submit_all(m, 40);
    for (size_t i = 0; i < cs.size(); ++i) {
      auto r = cs[i]->future.get();
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      EXPECT_EQ(r->choices[0].text, want[i]);
      // The streamed pieces add up to the same text.
      std::string streamed;
      for (const auto& d : cs[i]->deltas) streamed += d.text;
      EXPECT_EQ(streamed, want[i]);
    }
    GenerateRequest two = request(kPrompts[0], 40, true);
    two.n = 2;
    auto r = run(m, two);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    ASSERT_EQ(r->choices.size(), 2u);
    EXPECT_EQ(r->choices[0].text, want[0]);
    EXPECT_EQ(r->choices[1].text, want[0]);
  }
}

TEST_F(SpeculativeModelTest, OneSharedKvCacheSpeculatesWithTheSameOutput) {
  // kv_unified: the draft and the target each keep all sequences in one
  // cache; removing a sequence's rejected cells must leave the others alone.
  SpeculativeSpec sp;
  sp.draft_path = *other_draft_;
  sp.p_min = 0.0f;
  auto unified = load(sp, true);
  ASSERT_TRUE(unified);
  std::vector<std::unique_ptr<Collector>> cs;
  for (const auto& prompt : kPrompts) {
    cs.push_back(std::make_unique<Collector>());
    GenerateRequest q = request(prompt, 32, true);
    q.sampling.top_logprobs = 0;  // the tokens, one by one
    unified->submit(q, nullptr, cs.back()->callbacks());
  }
  for (size_t i = 0; i < cs.size(); ++i) {
    auto r = cs[i]->future.get();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    GenerateRequest q = request(kPrompts[i], 32, false);
    q.sampling.top_logprobs = 2;
    auto want = run(plain_, q);
    ASSERT_TRUE(want.is_ok()) << want.status().to_string();
    // Token by token the same, up to a place where the target's two best
    // tokens tie within float noise (then the rest may differ): a verify
    // batch's rows go through other kernels than a one-token decode, and
    // random weights tie often (gaps of 5e-5 and 1.6e-3 seen; which rows
    // share a step, and so which kernels they meet, depends on when the
    // prompts arrived and on the step's measured cost). A cache whose cells
    // were removed from the wrong sequence diverges where nothing ties.
    const auto& got_tokens = r->choices[0].logprobs;
    const auto& want_tokens = want->choices[0].logprobs;
    ASSERT_EQ(got_tokens.size(), want_tokens.size());
    for (size_t t = 0; t < got_tokens.size(); ++t) {
      if (got_tokens[t].token == want_tokens[t].token) continue;
      const auto& top = want_tokens[t].top;
      auto other = std::find_if(top.begin(), top.end(), [&](const TopLogprob& a) { return a.token == got_tokens[t].token; });
      ASSERT_NE(other, top.end()) << "prompt " << i << ", token " << t << ": '" << got_tokens[t].token
                                  << "' is not among the target's two best";
      EXPECT_LT(std::abs(want_tokens[t].logprob - other->logprob), 1e-2)
          << "prompt " << i << ", token " << t << ": no tie between '" << want_tokens[t].token << "' and '"
          << other->token << "'";
      break;
    }
  }
  EXPECT_GT(unified->stats().speculative_drafted, 0);
}

TEST_F(SpeculativeModelTest, GrammarAndStopStringsGiveTheSameOutput) {
  GenerateRequest json = request("Give me JSON", 40, true);
  json.sampling.json_object = true;
  json.sampling.ignore_eos = false;
  GenerateRequest json_plain = json;
  json_plain.sampling.speculative = false;
  auto want = run(plain_, json_plain);
  ASSERT_TRUE(want.is_ok()) << want.status().to_string();
  ASSERT_FALSE(want->choices[0].text.empty());
  EXPECT_EQ(want->choices[0].text.front(), '{');
  for (LocalModel* m : {self_draft_, other_, ngram_}) {
    auto got = run(m, json);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    EXPECT_EQ(got->choices[0].text, want->choices[0].text);
    EXPECT_EQ(got->choices[0].finish_reason, want->choices[0].finish_reason);
    EXPECT_EQ(got->usage.completion_tokens, want->usage.completion_tokens);
  }

  const std::string full = text(plain_, request(kPrompts[1], 48, false));
  ASSERT_GE(full.size(), 8u);
  GenerateRequest cut = request(kPrompts[1], 48, true);
  cut.sampling.stop = {full.substr(full.size() / 2, 3)};
  const std::string expected = full.substr(0, full.find(cut.sampling.stop[0]));
  for (LocalModel* m : {self_draft_, other_, ngram_}) {
    auto got = run(m, cut);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    EXPECT_EQ(got->choices[0].text, expected);
    EXPECT_EQ(got->choices[0].finish_reason, FinishReason::kStop);
  }
}

// At temperature > 0 the tokens speculation produces follow the target's
// distribution. With top_k 3 the target's distribution at each position is
// the softmax of its three most likely raw logits over the temperature, and
// top_logprobs reports exactly those: so each sampled token's rank among
// them is tallied against the probabilities the target gave the ranks
// (Pearson's chi-square), at the positions drafts are verified for.
TEST_F(SpeculativeModelTest, SampledTokensFollowTheTargetsDistribution) {
  constexpr int kRuns = 200;
  constexpr float kTemperature = 1.5f;
  for (LocalModel* m : {plain_, self_draft_, other_, gated_}) {
    std::array<double, 3> seen{}, expected{};
    int samples = 0;
    for (int i = 0; i < kRuns; ++i) {
      GenerateRequest r = request("Pick a word", 4, m != plain_);
      r.sampling.temperature = kTemperature;
      r.sampling.top_k = 3;
      r.sampling.min_p = 0.0f;  // not the model's default: the ranks' probabilities are then exactly these
      r.sampling.seed = static_cast<uint32_t>(1000 + i);
      r.sampling.top_logprobs = 3;
      auto c = run(m, r);
      ASSERT_TRUE(c.is_ok()) << c.status().to_string();
      const auto& lps = c->choices[0].logprobs;
      ASSERT_EQ(lps.size(), 4u);
      for (size_t pos = 1; pos < lps.size(); ++pos) {  // the first token is the prompt's, never drafted
        const auto& lp = lps[pos];
        ASSERT_EQ(lp.top.size(), 3u);
        std::array<double, 3> w{};
        double total = 0;
        int rank = -1;
        for (int j = 0; j < 3; ++j) {
          w[j] = std::exp(lp.top[j].logprob / kTemperature);
          total += w[j];
          if (lp.top[j].token == lp.token && rank < 0) rank = j;
        }
        ASSERT_GE(rank, 0) << "a token outside the top 3 was sampled";
        seen[rank] += 1;
        for (int j = 0; j < 3; ++j) expected[j] += w[j] / total;
        ++samples;
      }
    }
    double chi = 0;
    for (int j = 0; j < 3; ++j) chi += (seen[j] - expected[j]) * (seen[j] - expected[j]) / expected[j];
    // 2 degrees of freedom: the 0.999 quantile is 13.82.
    EXPECT_LT(chi, 13.82) << "seen " << seen[0] << "/" << seen[1] << "/" << seen[2] << ", expected " << expected[0]
                          << "/" << expected[1] << "/" << expected[2] << " of " << samples;
  }
  // Both the accepting and the correcting paths ran.
  EXPECT_GT(self_draft_->stats().speculative_accepted, 0);
  EXPECT_GT(other_->stats().speculative_drafted, other_->stats().speculative_accepted);
}

TEST_F(SpeculativeModelTest, CancellingWhileSpeculatingEndsTheRequest) {
  auto cancel = std::make_shared<CancelToken>();
  Collector c;
  int seen = 0;
  c.on_delta = [&](const Delta&) {
    if (++seen == 3) cancel->cancel();
  };
  self_draft_->submit(request(kPrompts[0], 200, true), cancel, c.callbacks());
  auto r = c.future.get();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kCancelled);
  // The engine goes on serving.
  EXPECT_FALSE(text(self_draft_, request(kPrompts[2], 8, true)).empty());
}

TEST_F(SpeculativeModelTest, DraftOfAnotherVocabularyIsRefusedAtLoad) {
  LocalModelSpec spec;
  spec.name = "tiny";
  spec.path = kTiny;
  spec.context = 64;
  spec.parallel = 1;
  spec.threads = 1;
  spec.speculative.draft_path = *other_vocab_;
  auto m = LocalModel::load(spec);
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("vocabulary"), std::string::npos) << m.status().message();

  spec.speculative.draft_path = (*dir_ / "missing.gguf").string();
  auto missing = LocalModel::load(spec);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  spec.speculative.draft_path.clear();
  spec.speculative.max_tokens = 0;
  EXPECT_EQ(LocalModel::load(spec).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmpool::engine
