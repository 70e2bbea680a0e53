#include "router/classifier.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "qos/clock.h"
#include "test_prompts.h"

namespace llmpool::router {
namespace {

using testing::chat;

bool has(const std::vector<std::string>& tags, const std::string& tag) {
  return std::find(tags.begin(), tags.end(), tag) != tags.end();
}

class ClassifierTest : public ::testing::Test {
 protected:
  Classifier classifier_;
};

TEST_F(ClassifierTest, GreetingIsSimpleAndPrefersFast) {
  auto c = classifier_.classify(chat("hi there!"));
  EXPECT_LT(c.complexity, 0.05);
  EXPECT_TRUE(c.required.empty());
  EXPECT_TRUE(has(c.preferred, "fast"));
}

TEST_F(ClassifierTest, FencedCodeRequiresCode) {
  auto c = classifier_.classify(chat("What does this print?\n```\nprint(1 + 1)\n```"));
  EXPECT_EQ(c.features.fence_blocks, 1);
  EXPECT_DOUBLE_EQ(c.features.code, 1.0);
  EXPECT_TRUE(has(c.required, "code"));
  EXPECT_FALSE(has(c.preferred, "fast"));
}

TEST_F(ClassifierTest, UnclosedFenceStillCountsAsABlock) {
  auto c = classifier_.classify(chat("fix this:\n```js\nlet x = 1"));
  EXPECT_EQ(c.features.fence_blocks, 1);
}

TEST_F(ClassifierTest, CodeKeywordsWithoutFencePreferCode) {
  auto c = classifier_.classify(chat("Write a python function that reverses a list."));
  EXPECT_EQ(c.features.code_keywords, 2);  // python, function
  EXPECT_TRUE(has(c.preferred, "code"));
  EXPECT_FALSE(has(c.required, "code"));
}

TEST_F(ClassifierTest, InlineCodeWithoutFenceRequiresCode) {
  auto c = classifier_.classify(chat("why does my_list.append(x) return None; in for (int i = 0; i < n; ++i) {"));
  EXPECT_GE(c.features.code_tokens, 2);  // my_list, append(
  EXPECT_GT(c.features.symbol_density, 0.05);
  EXPECT_TRUE(has(c.required, "code"));
}

TEST_F(ClassifierTest, ProseHasLowSymbolDensity) {
  auto c = classifier_.classify(chat("The weather today is lovely (really), and tomorrow it will rain."));
  EXPECT_LT(c.features.symbol_density, 0.05);
  EXPECT_LT(c.features.code, 0.25);
  EXPECT_FALSE(has(c.preferred, "code"));
}

TEST_F(ClassifierTest, StepByStepProofPrefersReasoning) {
  auto c = classifier_.classify(chat("Prove that there are infinitely many primes, step by step."));
  EXPECT_EQ(c.features.reasoning_markers, 3);  // prove + "step by step" (2)
  EXPECT_DOUBLE_EQ(c.features.reasoning, 1.0);
  EXPECT_TRUE(has(c.preferred, "reasoning"));
  EXPECT_FALSE(has(c.required, "reasoning"));
}

TEST_F(ClassifierTest, ComplexReasoningRequestRequiresReasoning) {
  auto c = classifier_.classify(chat(
      "First, explain why the algorithm's complexity is O(n log n). Then prove the bound on its latency, "
      "compare it with a distributed consensus protocol, and finally analyze the tradeoffs step by step:\n"
      "1. memory\n2. throughput\n3. replication"));
  EXPECT_GE(c.complexity, 0.5);
  EXPECT_TRUE(has(c.required, "reasoning"));
}

TEST_F(ClassifierTest, NumberedListsAndFirstThenRaiseMultiStep) {
  auto c = classifier_.classify(chat("Do this:\n1. open the file\n2. read it\n3) close it\nFirst copy, then paste."));
  EXPECT_EQ(c.features.list_items, 3);
  EXPECT_EQ(c.features.sequence_markers, 1);
  EXPECT_DOUBLE_EQ(c.features.multi_step, 1.0);  // 0.75 + 0.34, clamped
}

TEST_F(ClassifierTest, SingleListItemIsNotAList) {
  auto c = classifier_.classify(chat("1. hello"));
  EXPECT_EQ(c.features.list_items, 1);
  EXPECT_DOUBLE_EQ(c.features.multi_step, 0.0);
}

TEST_F(ClassifierTest, StepNumbersAreSequenceMarkers) {
  auto c = classifier_.classify(chat("step 1 unpack, step 2 build"));
  EXPECT_EQ(c.features.sequence_markers, 2);
}

TEST_F(ClassifierTest, TechnicalTermsAreCounted) {
  auto c = classifier_.classify(chat("How do latency, throughput and a mutex interact in a kernel?"));
  EXPECT_EQ(c.features.technical_terms, 4);
  EXPECT_DOUBLE_EQ(c.features.technical, 0.8);
}

TEST_F(ClassifierTest, MathOperatorsNextToNumbersCountTowardReasoning) {
  auto c = classifier_.classify(chat("what is 12 * 7 + 3, and is 5 ≤ 6 and ∑ i = 15?"));
  EXPECT_EQ(c.features.math_ops, 4);  // *, +, ≤, ∑
  EXPECT_NEAR(c.features.reasoning, 0.4, 1e-9);
}

TEST_F(ClassifierTest, EstimatesTokensFromCharactersAndMessages) {
  GenerateRequest r = chat(std::string(400, 'a'));       // 100 tokens + 4 for the message
  EXPECT_EQ(classifier_.classify(r).features.estimated_tokens, 104);
  EXPECT_EQ(estimate_prompt_tokens(r), 104);
  GenerateRequest cjk = chat("\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c");  // 4 CJK characters
  auto c = classifier_.classify(cjk);
  EXPECT_EQ(c.features.chars, 4);
  EXPECT_EQ(c.features.estimated_tokens, 3 + 4);  // ceil(4 * 0.75) + 4
  GenerateRequest raw;
  raw.prompt = std::string(9, 'x');
  EXPECT_EQ(estimate_prompt_tokens(raw), 3);  // completions: no message overhead
}

TEST_F(ClassifierTest, LengthFeatureSaturates) {
  auto shortr = classifier_.classify(chat(std::string(4096, 'a')));  // ~1028 tokens
  EXPECT_NEAR(shortr.features.length, 1028.0 / 2048.0, 1e-9);
  auto longr = classifier_.classify(chat(std::string(40000, 'a')));
  EXPECT_DOUBLE_EQ(longr.features.length, 1.0);
}

TEST_F(ClassifierTest, SystemMessagesCountForLengthButNotForMarkers) {
  auto c = classifier_.classify(chat("hello", "You are a python code assistant. Explain why, step by step."));
  EXPECT_EQ(c.features.code_keywords, 0);
  EXPECT_EQ(c.features.reasoning_markers, 0);
  EXPECT_GT(c.features.estimated_tokens, 10);
  EXPECT_EQ(c.features.messages, 2);
}

TEST_F(ClassifierTest, ScanBudgetKeepsTheNewestText) {
  ClassifierOptions o;
  o.max_scan_bytes = 20;
  Classifier small(o);
  GenerateRequest r;
  r.messages.push_back(testing::message("user", "explain why and prove it"));
  r.messages.push_back(testing::message("assistant", "ok"));
  r.messages.push_back(testing::message("user", std::string(100, ' ') + "why"));
  auto c = small.classify(r);
  EXPECT_EQ(c.features.reasoning_markers, 1);  // only the tail of the last message
}

TEST_F(ClassifierTest, NeverProducesEmbeddingOrGeneral) {
  for (const char* text : {"embed this sentence", "embedding vectors for search", "general question"}) {
    auto c = classifier_.classify(chat(text));
    EXPECT_FALSE(has(c.required, "embedding")) << text;
    EXPECT_FALSE(has(c.preferred, "embedding")) << text;
    EXPECT_FALSE(has(c.required, "general")) << text;
  }
}

TEST_F(ClassifierTest, SameRequestSameAnswer) {
  auto r = chat(testing::prompt_2kb());
  auto a = classifier_.classify(r);
  auto b = classifier_.classify(r);
  EXPECT_EQ(a.complexity, b.complexity);
  EXPECT_EQ(a.required, b.required);
  EXPECT_EQ(a.preferred, b.preferred);
}

TEST_F(ClassifierTest, MixedTwoKilobytePromptIsComplexCodeAndReasoning) {
  auto c = classifier_.classify(chat(testing::prompt_2kb()));
  EXPECT_TRUE(has(c.required, "code"));
  EXPECT_TRUE(has(c.required, "reasoning") || has(c.preferred, "reasoning"));
  EXPECT_GT(c.complexity, 0.5);
  EXPECT_LE(c.complexity, 1.0);
}

TEST_F(ClassifierTest, WeightsSteerComplexity) {
  ClassifierOptions o;
  o.weights = {0, 1, 0, 0, 0};  // only code counts
  Classifier code_only(o);
  EXPECT_DOUBLE_EQ(code_only.classify(chat("```\nx\n```")).complexity, 1.0);
  EXPECT_DOUBLE_EQ(code_only.classify(chat("why? prove it step by step")).complexity, 0.0);
  o.weights = {0, 0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(Classifier(o).classify(chat("```\nx\n```")).complexity, 0.0);
}

TEST_F(ClassifierTest, ComplexityStaysInUnitIntervalForArbitraryBytes) {
  qos::SeededRandom rnd(99);
  for (int i = 0; i < 200; ++i) {
    std::string junk(static_cast<size_t>(rnd.below(3000)), '\0');
    for (auto& ch : junk) ch = static_cast<char>(rnd.below(256));
    auto c = classifier_.classify(chat(junk));
    ASSERT_GE(c.complexity, 0.0);
    ASSERT_LE(c.complexity, 1.0);
    for (double f : {c.features.length, c.features.code, c.features.reasoning, c.features.multi_step,
                     c.features.technical}) {
      ASSERT_GE(f, 0.0);
      ASSERT_LE(f, 1.0);
    }
  }
}

TEST_F(ClassifierTest, EmptyRequestIsZero) {
  GenerateRequest r;
  auto c = classifier_.classify(r);
  EXPECT_EQ(c.features.estimated_tokens, 0);
  EXPECT_DOUBLE_EQ(c.complexity, 0.0);
}

}  // namespace
}  // namespace llmpool::router

namespace llmpool::router {
namespace {

TEST(ClassifierToolsTest, ToolsArePreferredAndCountTowardTokens) {
  Classifier classifier;
  GenerateRequest r = testing::chat("what's the weather in Paris?");
  const int64_t without = classifier.classify(r).features.estimated_tokens;
  ToolSpec t;
  t.name = "get_weather";
  t.description = "Current weather for a city";
  t.parameters = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  r.tools.push_back(t);
  auto c = classifier.classify(r);
  EXPECT_GT(c.features.estimated_tokens, without);
  EXPECT_NE(std::find(c.preferred.begin(), c.preferred.end(), "tools"), c.preferred.end());
  EXPECT_TRUE(c.required.empty());

  r.tool_choice = "none";
  c = classifier.classify(r);
  EXPECT_EQ(c.features.estimated_tokens, without);
  EXPECT_EQ(std::find(c.preferred.begin(), c.preferred.end(), "tools"), c.preferred.end());

  r.tool_choice = "auto";
  ClassifierOptions o;
  o.tools_required = true;
  c = Classifier(o).classify(r);
  EXPECT_EQ(c.required, std::vector<std::string>{"tools"});
}

}  // namespace
}  // namespace llmpool::router
