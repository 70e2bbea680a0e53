#include "router/effort.h"

#include <gtest/gtest.h>

namespace llmpool::router {
namespace {

class EffortTest : public ::testing::Test {
 protected:
  ThinkingProfile plain_;
  ThinkingProfile thinker_{true, 1000, 11000, 0};
  EffortOptions options_;
};

TEST_F(EffortTest, ParsesOpenAIReasoningEffortValues) {
  EXPECT_EQ(*parse_reasoning_effort("minimal"), ReasoningEffort::kMinimal);
  EXPECT_EQ(*parse_reasoning_effort("low"), ReasoningEffort::kLow);
  EXPECT_EQ(*parse_reasoning_effort("medium"), ReasoningEffort::kMedium);
  EXPECT_EQ(*parse_reasoning_effort("high"), ReasoningEffort::kHigh);
  auto bad = parse_reasoning_effort("extreme");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().param(), "reasoning_effort");
  EXPECT_STREQ(reasoning_effort_name(ReasoningEffort::kHigh), "high");
}

TEST_F(EffortTest, WithoutAHintEffortIsTheComplexity) {
  EXPECT_DOUBLE_EQ(effort_score(0.42, std::nullopt), 0.42);
  EXPECT_DOUBLE_EQ(effort_score(-3, std::nullopt), 0.0);
  EXPECT_DOUBLE_EQ(effort_score(7, std::nullopt), 1.0);
}

TEST_F(EffortTest, HintDominatesButComplexityStillCounts) {
  EXPECT_NEAR(effort_score(0.0, ReasoningEffort::kHigh), 0.63, 1e-12);   // 0.7 * 0.9
  EXPECT_NEAR(effort_score(1.0, ReasoningEffort::kHigh), 0.93, 1e-12);
  EXPECT_NEAR(effort_score(1.0, ReasoningEffort::kLow), 0.44, 1e-12);    // 0.7 * 0.2 + 0.3
  EXPECT_NEAR(effort_score(0.5, ReasoningEffort::kMinimal), 0.185, 1e-12);
}

TEST_F(EffortTest, MapsEffortToMaxTokensTiers) {
  EXPECT_EQ(regulate_effort(0.1, std::nullopt, plain_).max_tokens, 2048);
  EXPECT_STREQ(regulate_effort(0.1, std::nullopt, plain_).tier, "low");
  EXPECT_EQ(regulate_effort(0.3, std::nullopt, plain_).max_tokens, 4096);
  EXPECT_STREQ(regulate_effort(0.3, std::nullopt, plain_).tier, "medium");
  EXPECT_EQ(regulate_effort(0.6, std::nullopt, plain_).max_tokens, 8192);
  EXPECT_STREQ(regulate_effort(0.99, std::nullopt, plain_).tier, "high");
}

TEST_F(EffortTest, TemperatureRisesLinearlyWithEffort) {
  EXPECT_FLOAT_EQ(regulate_effort(0.0, std::nullopt, plain_).temperature, 0.3f);
  EXPECT_FLOAT_EQ(regulate_effort(0.5, std::nullopt, plain_).temperature, 0.6f);
  EXPECT_FLOAT_EQ(regulate_effort(1.0, std::nullopt, plain_).temperature, 0.9f);
}

TEST_F(EffortTest, PlainModelsNeverThink) {
  auto p = regulate_effort(1.0, ReasoningEffort::kHigh, plain_);
  EXPECT_FALSE(p.thinking);
  EXPECT_EQ(p.thinking_budget, 0);
}

TEST_F(EffortTest, ThinkingModelsThinkAboveTheThresholdWithAScaledBudget) {
  auto low = regulate_effort(0.4, std::nullopt, thinker_);
  EXPECT_FALSE(low.thinking);
  EXPECT_EQ(low.max_tokens, 4096);
  auto mid = regulate_effort(0.5, std::nullopt, thinker_);
  EXPECT_TRUE(mid.thinking);
  EXPECT_EQ(mid.thinking_budget, 6000);          // 1000 + 10000 * 0.5
  EXPECT_EQ(mid.max_tokens, 4096 + 6000);        // the answer keeps its tier
  auto high = regulate_effort(1.0, std::nullopt, thinker_);
  EXPECT_EQ(high.thinking_budget, 11000);
}

TEST_F(EffortTest, ContextWindowCapsMaxTokensAndThinking) {
  ThinkingProfile small = thinker_;
  small.context = 8192;
  auto p = regulate_effort(1.0, std::nullopt, small, 4192);
  EXPECT_EQ(p.max_tokens, 4000);
  EXPECT_EQ(p.thinking_budget, 2000);
  EXPECT_TRUE(p.thinking);
  auto full = regulate_effort(1.0, std::nullopt, small, 9000);  // prompt already too long
  EXPECT_EQ(full.max_tokens, 1);
  EXPECT_EQ(full.thinking_budget, 0);
  EXPECT_FALSE(full.thinking);
}

TEST_F(EffortTest, OptionsChangeTheMapping) {
  EffortOptions o;
  o.low_tier_tokens = 256;
  o.temperature_min = 0.0f;
  o.temperature_max = 0.0f;
  o.hint_weight = 1.0;
  auto p = regulate_effort(1.0, ReasoningEffort::kMinimal, plain_, 0, o);
  EXPECT_DOUBLE_EQ(p.effort, 0.05);
  EXPECT_EQ(p.max_tokens, 256);
  EXPECT_FLOAT_EQ(p.temperature, 0.0f);
}

TEST_F(EffortTest, ApplyKeepsWhatTheClientSet) {
  EffortParams p;
  p.max_tokens = 4096;
  p.temperature = 0.6f;
  GenerateRequest r;
  apply_effort(p, r, false);
  EXPECT_EQ(r.sampling.max_tokens, 4096);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.6f);
  GenerateRequest client;
  client.sampling.max_tokens = 100;
  client.sampling.temperature = 0.0f;
  apply_effort(p, client, true);
  EXPECT_EQ(client.sampling.max_tokens, 100);
  EXPECT_FLOAT_EQ(client.sampling.temperature, 0.0f);
}

}  // namespace
}  // namespace llmpool::router
