// The prefix cache's policy, on plain token lists (no model).
#include "engine/prefix_cache.h"

#include <gtest/gtest.h>

#include <numeric>

namespace llmpool::engine {
namespace {

// `n` tokens starting at `first` (distinct ranges never share a token).
std::vector<int32_t> run_of(int32_t first, size_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class PrefixCacheTest : public ::testing::Test {
 protected:
  // Adds a sequence holding `tokens`, last used at `tick`.
  void add(std::vector<int32_t> tokens, uint64_t tick, bool idle = true) {
    held_.push_back(std::move(tokens));
    ticks_.push_back(tick);
    idle_.push_back(idle);
  }
  std::vector<SequenceView> views() const {
    std::vector<SequenceView> v;
    for (size_t i = 0; i < held_.size(); ++i) v.push_back({&held_[i], ticks_[i], idle_[i]});
    return v;
  }
  PrefixPlan plan(const std::vector<int32_t>& prompt, uint64_t now, size_t copy_cost = 32) const {
    return plan_prefix(prompt, views(), now, copy_cost);
  }

  std::vector<std::vector<int32_t>> held_;
  std::vector<uint64_t> ticks_;
  std::vector<bool> idle_;
};

TEST_F(PrefixCacheTest, CommonPrefixStopsAtTheFirstDifference) {
  EXPECT_EQ(common_prefix({1, 2, 3}, {1, 2, 4}), 2u);
  EXPECT_EQ(common_prefix({1, 2}, {1, 2, 3}), 2u);
  EXPECT_EQ(common_prefix({}, {1}), 0u);
}

TEST_F(PrefixCacheTest, NoIdleSequenceGivesNoTarget) {
  add(run_of(0, 10), 1, false);
  EXPECT_EQ(plan(run_of(0, 10), 2).target, -1);
}

TEST_F(PrefixCacheTest, RepeatedPromptTakesItsOwnSequenceLessTheLastToken) {
  const auto template_head = run_of(1000, 5);
  add(concat(template_head, run_of(0, 100)), 2);
  add(concat(template_head, run_of(200, 100)), 4);
  add({}, 0);
  const auto prompt = concat(template_head, run_of(0, 100));
  const PrefixPlan p = plan(prompt, 4);
  EXPECT_EQ(p.target, 0);
  EXPECT_EQ(p.donor, -1);
  EXPECT_EQ(p.reuse, prompt.size() - 1);
}

TEST_F(PrefixCacheTest, PromptSharingOnlyTemplateTokensTakesAnEmptySequence) {
  const auto template_head = run_of(1000, 5);
  add(concat(template_head, run_of(0, 100)), 2);  // long, recent
  add({}, 0);
  const PrefixPlan p = plan(concat(template_head, run_of(500, 50)), 2);
  EXPECT_EQ(p.target, 1);
  EXPECT_EQ(p.reuse, 0u);
}

TEST_F(PrefixCacheTest, UnrelatedPromptEvictsTheLeastValuableNotTheOldest) {
  // Oldest but long, newer but short, newest and long: plain LRU would wipe
  // the first; LRU x length wipes the short one.
  add(run_of(0, 200), 2);
  add(run_of(300, 30), 4);
  add(run_of(600, 200), 6);
  const PrefixPlan p = plan(run_of(900, 40), 6);
  EXPECT_EQ(p.target, 1);
  EXPECT_EQ(p.donor, -1);
  EXPECT_EQ(p.reuse, 0u);
}

TEST_F(PrefixCacheTest, SharedSystemPromptIsCopiedIntoAFreshSequence) {
  const auto system = run_of(0, 300);
  add(concat(system, run_of(5000, 100)), 3);  // the first conversation, kept
  add({}, 0);
  const PrefixPlan p = plan(concat(system, run_of(7000, 20)), 3);
  EXPECT_EQ(p.target, 1);
  EXPECT_EQ(p.donor, 0);
  EXPECT_EQ(p.reuse, 300u);
}

TEST_F(PrefixCacheTest, PrefixOfABusySequenceIsCopied) {
  const auto system = run_of(0, 300);
  add(concat(system, run_of(5000, 100)), 3, false);
  add(run_of(9000, 10), 1);
  const PrefixPlan p = plan(concat(system, run_of(7000, 20)), 3);
  EXPECT_EQ(p.target, 1);
  EXPECT_EQ(p.donor, 0);
  EXPECT_EQ(p.reuse, 300u);
}

TEST_F(PrefixCacheTest, StreamCopyIsSkippedWhenItGainsLessThanItCosts) {
  add(run_of(0, 40), 3, false);  // busy: 20 tokens in common
  add(run_of(0, 10), 1);         // idle: 10 in common
  auto prompt = concat(run_of(0, 20), run_of(800, 10));
  const PrefixPlan per_stream = plan(prompt, 3, 32);
  EXPECT_EQ(per_stream.target, 1);
  EXPECT_EQ(per_stream.donor, -1);
  EXPECT_EQ(per_stream.reuse, 10u);
  const PrefixPlan unified = plan(prompt, 3, 0);
  EXPECT_EQ(unified.donor, 0);
  EXPECT_EQ(unified.reuse, 20u);
}

TEST_F(PrefixCacheTest, NextTurnOfAChatExtendsItsOwnSequence) {
  const auto turn1 = run_of(0, 120);  // prompt and answer of the first turn
  add(turn1, 5);
  add(run_of(400, 60), 4);
  add({}, 0);
  const PrefixPlan p = plan(concat(turn1, run_of(2000, 30)), 6);
  EXPECT_EQ(p.target, 0);
  EXPECT_EQ(p.donor, -1);
  EXPECT_EQ(p.reuse, 120u);
}

TEST_F(PrefixCacheTest, EvictionOrderIsLeastValuableFirstAndSkipsBusyAndExcluded) {
  add(run_of(0, 200), 2);
  add(run_of(300, 30), 4);
  add(run_of(600, 200), 6, false);
  add({}, 1);
  add(run_of(900, 10), 6);
  EXPECT_EQ(eviction_order(views(), 6, 4), (std::vector<int32_t>{3, 1, 0}));
}

}  // namespace
}  // namespace llmpool::engine
