// The host prompt cache's store: longest match, budget, LRU, no duplicates.
#include "engine/saved_prompts.h"

#include <gtest/gtest.h>

#include <vector>

namespace llmpool::engine {
namespace {

std::vector<uint8_t> bytes(size_t n) { return std::vector<uint8_t>(n, 7); }

TEST(SavedPromptsTest, TheLongestCommonPrefixWins) {
  SavedPrompts s(1000);
  EXPECT_TRUE(s.put({1, 2, 3, 4}, bytes(10)));
  EXPECT_TRUE(s.put({1, 2, 9}, bytes(10)));
  EXPECT_TRUE(s.put({5, 6}, bytes(10)));
  auto m = s.best({1, 2, 3, 8});
  ASSERT_NE(m.entry, nullptr);
  EXPECT_EQ(m.common, 3u);
  EXPECT_EQ(m.entry->tokens, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(s.best({7}).entry, nullptr);
  SavedPrompts::Entry e = s.take(m.entry);
  EXPECT_EQ(e.tokens.size(), 4u);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s.bytes(), 20u);
  EXPECT_EQ(s.best({1, 2, 3, 8}).common, 2u);
}

TEST(SavedPromptsTest, ALongerCopyReplacesItsPrefixAndAShorterOneIsNotKept) {
  SavedPrompts s(1000);
  EXPECT_TRUE(s.put({1, 2}, bytes(10)));
  EXPECT_TRUE(s.put({1, 2, 3}, bytes(15)));  // replaces {1, 2}
  EXPECT_EQ(s.size(), 1u);
  EXPECT_EQ(s.bytes(), 15u);
  EXPECT_FALSE(s.put({1, 2}, bytes(10)));     // {1, 2, 3} already holds it
  EXPECT_FALSE(s.put({1, 2, 3}, bytes(15)));  // the same
  EXPECT_EQ(s.size(), 1u);
}

TEST(SavedPromptsTest, TheLeastRecentlyUsedGoFirstUnderTheBudget) {
  SavedPrompts s(30);
  EXPECT_TRUE(s.put({1}, bytes(10)));
  EXPECT_TRUE(s.put({2}, bytes(10)));
  EXPECT_TRUE(s.put({3}, bytes(10)));
  EXPECT_FALSE(s.put({1}, bytes(10)));  // already there: now the most recent
  EXPECT_TRUE(s.put({4}, bytes(15)));   // {2} and {3} go, {1} stays
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s.bytes(), 25u);
  EXPECT_NE(s.best({1}).entry, nullptr);
  EXPECT_EQ(s.best({2}).entry, nullptr);
  EXPECT_EQ(s.best({3}).entry, nullptr);
  EXPECT_FALSE(s.put({5}, bytes(31)));  // larger than the whole budget
  EXPECT_FALSE(s.put({}, bytes(1)));
  EXPECT_EQ(s.size(), 2u);
}

}  // namespace
}  // namespace llmpool::engine
