#include "router/scorer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace llmpool::router {
namespace {

using namespace std::chrono_literals;

Candidate candidate(std::string id, std::vector<std::string> tags = {"general"}, int32_t context = 8192) {
  Candidate c;
  c.id = id;
  c.model = id + "-model";
  c.tags = std::move(tags);
  c.context = context;
  c.stats.id = id;
  c.stats.ewma_ms = 1000;
  c.stats.p95_ms = 1000;
  c.stats.samples = 10;
  c.stats.success_rate = 1.0;
  c.stats.quality = 0.5;
  return c;
}

const ScoredCandidate& by_id(const std::vector<ScoredCandidate>& v, const std::string& id) {
  for (const auto& s : v)
    if (s.id == id) return s;
  throw std::runtime_error("no candidate " + id);
}

class ScorerTest : public ::testing::Test {
 protected:
  Requirements req_;
  ScoreWeights weights_;
  ScoreOptions options_;
};

TEST_F(ScorerTest, ComputesTheCompositeScoreOfSeed001) {
  Candidate c = candidate("a");
  c.stats.ewma_ms = 1000;
  c.stats.p95_ms = 3000;          // blended latency 2000 -> latency term 0.5
  c.load.queued = 1;
  c.load.active_sequences = 1;    // depth 2 over 1 slot -> 1/3
  c.stats.success_rate = 0.8;
  c.stats.quality = 0.6;
  req_.preferred = {"general", "code"};  // half of the preferred tags
  auto out = score_candidates(req_, {c}, weights_, options_);
  ASSERT_EQ(out.size(), 1u);
  const auto& s = out[0];
  EXPECT_DOUBLE_EQ(s.latency_ms, 2000.0);
  EXPECT_DOUBLE_EQ(s.terms.latency, 0.5);
  EXPECT_DOUBLE_EQ(s.terms.queue, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.terms.fit, 0.5);
  EXPECT_DOUBLE_EQ(s.terms.health, 0.8);
  EXPECT_DOUBLE_EQ(s.terms.feedback, 0.6);
  EXPECT_NEAR(s.score, 0.35 * 0.5 + 0.25 / 3.0 + 0.15 * 0.5 + 0.15 * 0.8 + 0.10 * 0.6, 1e-12);
  EXPECT_EQ(s.queue_depth, 2);
}

TEST_F(ScorerTest, SortsBestFirstAndKeepsInputOrderOnTies) {
  Candidate slow = candidate("slow"), fast = candidate("fast"), twin = candidate("twin");
  slow.stats.p95_ms = slow.stats.ewma_ms = 8000;
  fast.stats.p95_ms = fast.stats.ewma_ms = 200;
  twin.stats.p95_ms = twin.stats.ewma_ms = 200;
  auto out = score_candidates(req_, {slow, fast, twin}, weights_, options_);
  EXPECT_EQ(out[0].id, "fast");
  EXPECT_EQ(out[1].id, "twin");
  EXPECT_EQ(out[2].id, "slow");
  EXPECT_EQ(out[2].index, 0u);
}

TEST_F(ScorerTest, QueueDepthUsesSlotsAndRouterInFlight) {
  Candidate local = candidate("local"), remote = candidate("remote");
  local.load.parallel = 8;
  local.load.active_sequences = 4;   // half the slots busy: 1 / 1.5
  remote.stats.in_flight = 3;        // remote reports nothing; the router counts 3
  auto out = score_candidates(req_, {local, remote}, weights_, options_);
  EXPECT_DOUBLE_EQ(by_id(out, "local").terms.queue, 1.0 / 1.5);
  EXPECT_DOUBLE_EQ(by_id(out, "remote").terms.queue, 0.25);
  EXPECT_EQ(by_id(out, "remote").queue_depth, 3);
}

TEST_F(ScorerTest, UnknownLatencyIsAssumedNeutral) {
  Candidate fresh = candidate("fresh");
  fresh.stats.samples = 0;
  fresh.stats.ewma_ms = 0;
  fresh.stats.p95_ms = 0;
  auto out = score_candidates(req_, {fresh}, weights_, options_);
  EXPECT_DOUBLE_EQ(out[0].latency_ms, 2000.0);
  EXPECT_DOUBLE_EQ(out[0].terms.latency, 0.5);
}

TEST_F(ScorerTest, AgedOutWindowFallsBackToTheEwma) {
  Candidate c = candidate("c");
  c.stats.samples = 0;
  c.stats.p95_ms = 0;
  c.stats.ewma_ms = 500;
  EXPECT_DOUBLE_EQ(score_candidates(req_, {c})[0].latency_ms, 500.0);
}

TEST_F(ScorerTest, ExcludesWhenRequiredTagsAreMissing) {
  req_.required = {"code", "reasoning"};
  auto out = score_candidates(req_, {candidate("gen"), candidate("coder", {"general", "code", "reasoning"})});
  EXPECT_EQ(out[0].id, "coder");
  EXPECT_FALSE(out[0].excluded);
  EXPECT_TRUE(out[1].excluded);
  EXPECT_EQ(out[1].reason, "missing required tags: code,reasoning");
  EXPECT_EQ(out[1].score, 0.0);
}

TEST_F(ScorerTest, ExcludesWhenThePromptDoesNotFitTheContext) {
  req_.prompt_tokens = 3000;
  req_.reserve_tokens = 1200;
  auto out = score_candidates(req_, {candidate("small", {"general"}, 4096), candidate("big", {"general"}, 32768),
                                     candidate("unknown", {"general"}, 0)});
  EXPECT_EQ(by_id(out, "small").reason, "prompt needs ~4200 tokens, context is 4096");
  EXPECT_FALSE(by_id(out, "big").excluded);
  EXPECT_FALSE(by_id(out, "unknown").excluded);
}

TEST_F(ScorerTest, ExcludesOpenBreakersAndTakenProbes) {
  Candidate open = candidate("open"), probing = candidate("probing"), half = candidate("half");
  open.stats.breaker = qos::BreakerState::kOpen;
  open.stats.breaker_allows = false;
  probing.stats.breaker = qos::BreakerState::kHalfOpen;
  probing.stats.breaker_allows = false;
  half.stats.breaker = qos::BreakerState::kHalfOpen;
  half.stats.breaker_allows = true;
  auto out = score_candidates(req_, {open, probing, half});
  EXPECT_EQ(by_id(out, "open").reason, "breaker open");
  EXPECT_EQ(by_id(out, "probing").reason, "breaker half_open, probe in flight");
  EXPECT_FALSE(by_id(out, "half").excluded);
  EXPECT_DOUBLE_EQ(by_id(out, "half").terms.health, 0.5);
}

TEST_F(ScorerTest, ExcludesSlowInstancesAndJoinsReasons) {
  Candidate c = candidate("c", {"general"}, 100);
  c.stats.slow_excluded = true;
  c.stats.p95_ms = 4321;
  req_.prompt_tokens = 500;
  auto out = score_candidates(req_, {c});
  EXPECT_EQ(out[0].reason, "prompt needs ~500 tokens, context is 100; p95 latency 4321 ms over threshold");
}

TEST_F(ScorerTest, ExcludedCandidatesComeLastInInputOrder) {
  Candidate x1 = candidate("x1"), ok = candidate("ok"), x2 = candidate("x2");
  x1.stats.slow_excluded = x2.stats.slow_excluded = true;
  auto out = score_candidates(req_, {x1, ok, x2});
  EXPECT_EQ(out[0].id, "ok");
  EXPECT_EQ(out[1].id, "x1");
  EXPECT_EQ(out[2].id, "x2");
}

TEST_F(ScorerTest, FeedbackWeightCanDecide) {
  Candidate liked = candidate("liked"), disliked = candidate("disliked");
  liked.stats.quality = 0.9;
  disliked.stats.quality = 0.1;
  auto out = score_candidates(req_, {disliked, liked});
  EXPECT_EQ(out[0].id, "liked");
  ScoreWeights no_feedback = weights_;
  no_feedback.feedback = 0;
  out = score_candidates(req_, {disliked, liked}, no_feedback);
  EXPECT_EQ(out[0].id, "disliked");  // a tie without feedback: input order
}

TEST_F(ScorerTest, RequirementsComeFromTheClassification) {
  Classification c;
  c.required = {"code"};
  c.preferred = {"fast"};
  c.features.estimated_tokens = 77;
  auto r = requirements_from(c, 100);
  EXPECT_EQ(r.required, std::vector<std::string>{"code"});
  EXPECT_EQ(r.preferred, std::vector<std::string>{"fast"});
  EXPECT_EQ(r.prompt_tokens, 77);
  EXPECT_EQ(r.reserve_tokens, 100);
}

TEST_F(ScorerTest, SerialisesForTheDecisionLog) {
  Candidate c = candidate("a");
  c.stats.slow_excluded = true;
  auto out = score_candidates(req_, {candidate("b"), c});
  nlohmann::json j = out;
  ASSERT_TRUE(j.is_array());
  EXPECT_EQ(j[0]["id"], "b");
  EXPECT_FALSE(j[0].contains("reason"));
  EXPECT_EQ(j[1]["excluded"], true);
  EXPECT_EQ(j[1]["reason"], "p95 latency 1000 ms over threshold");
  EXPECT_TRUE(j[0]["terms"].contains("feedback"));
}

}  // namespace
}  // namespace llmpool::router

namespace llmpool::router {
namespace {

class StaticProvider : public providers::Provider {
 public:
  StaticProvider() {
    info_.name = "coder-7b";
    info_.capabilities = {"general", "code"};
    info_.context = 4096;
  }
  const providers::ModelInfo& info() const override { return info_; }
  void generate(GenerateRequest, CancelTokenPtr, GenerateCallbacks cb) override {
    cb.on_done(Status::unimplemented("static"));
  }
  providers::ProviderStats stats() const override {
    providers::ProviderStats s;
    s.queued = 2;
    s.active_sequences = 1;
    s.parallel = 4;
    return s;
  }

 private:
  providers::ModelInfo info_;
};

TEST(ScorerCandidateTest, MakeCandidateReadsProviderAndStats) {
  qos::ManualClock clock;
  StaticProvider p;
  InstanceStats stats("coder-7b#0", {}, clock);
  stats.on_start();
  stats.on_success(120);
  Candidate c = make_candidate(p, stats);
  EXPECT_EQ(c.id, "coder-7b#0");
  EXPECT_EQ(c.model, "coder-7b");
  EXPECT_EQ(c.tags, (std::vector<std::string>{"general", "code"}));
  EXPECT_EQ(c.context, 4096);
  EXPECT_EQ(c.load.queued, 2);
  EXPECT_EQ(c.load.parallel, 4);
  EXPECT_DOUBLE_EQ(c.stats.p95_ms, 120.0);
}

}  // namespace
}  // namespace llmpool::router
