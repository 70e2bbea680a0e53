// The corpus-learned SPM vocabulary: layout, merges, determinism, bounds.
#include "train/vocab_builder.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace llmpool::train {
namespace {

std::vector<std::string> sample_texts() {
  return {"the cat sat on the mat", "the dog and the cat", "a cat is not a dog\nthe end", "thethethe",
          "at the\tend", "the end\nthe end\n"};
}

TEST(VocabBuilderTest, FixedTokensComeFirst) {
  auto v = build_vocab(sample_texts(), VocabOptions{300, 200, 2});
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->tokens[kUnkToken], "<unk>");
  EXPECT_EQ(v->tokens[kBosToken], "<s>");
  EXPECT_EQ(v->tokens[kImStartToken], "<|im_start|>");
  EXPECT_EQ(v->tokens[kImEndToken], "<|im_end|>");
  EXPECT_EQ(v->tokens[kFirstByteToken], "<0x00>");
  EXPECT_EQ(v->tokens[kFirstByteToken + 0x0A], "<0x0A>");
  EXPECT_EQ(v->types[kFirstByteToken + 0xFF], 6);
  EXPECT_EQ(v->types[kImEndToken], 3);
}

TEST(VocabBuilderTest, LearnsFrequentWordsAsTokensWithFallingScores) {
  auto v = build_vocab(sample_texts(), VocabOptions{300, 200, 2});
  ASSERT_TRUE(v.is_ok());
  const auto has = [&](const std::string& t) { return std::find(v->tokens.begin(), v->tokens.end(), t) != v->tokens.end(); };
  EXPECT_TRUE(has("\xE2\x96\x81the"));
  EXPECT_TRUE(has("\xE2\x96\x81" "cat"));
  EXPECT_TRUE(has("\xE2\x96\x81" "end\n"));  // a newline ends the word before it
  EXPECT_FALSE(has("\t"));
  EXPECT_GT(v->merges, 0u);
  // Merge scores fall with rank, so llama.cpp applies them in learned order.
  const size_t first_merge = kFixedTokens + v->alphabet;
  for (size_t i = first_merge + 1; i < v->tokens.size(); ++i) EXPECT_LT(v->scores[i], v->scores[i - 1]);
  // No token spans a word start after its first character.
  for (size_t i = first_merge; i < v->tokens.size(); ++i) {
    EXPECT_EQ(v->tokens[i].find("\xE2\x96\x81", 1), std::string::npos) << v->tokens[i];
  }
}

TEST(VocabBuilderTest, StopsWhenNoPairRepeatsAndIsDeterministic) {
  auto a = build_vocab(sample_texts(), VocabOptions{4000, 200, 2});
  auto b = build_vocab(sample_texts(), VocabOptions{4000, 200, 2});
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_LT(a->tokens.size(), 4000u);
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->scores, b->scores);
}

TEST(VocabBuilderTest, CapsTheAlphabetAndTheSize) {
  auto v = build_vocab({"abcdefghij abcdefghij"}, VocabOptions{300, 3, 2});
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->alphabet, 3u);
  EXPECT_LE(v->tokens.size(), 300u);
  EXPECT_EQ(build_vocab({"x"}, VocabOptions{299, 200, 2}).status().param(), "vocab_size");
  EXPECT_EQ(build_vocab({"x"}, VocabOptions{70000, 200, 2}).status().param(), "vocab_size");
}

TEST(VocabBuilderTest, EscapesSpacesLikeTheSpmTokenizer) {
  EXPECT_EQ(escape_spm("a b"), "\xE2\x96\x81" "a\xE2\x96\x81" "b");
  EXPECT_EQ(escape_spm("a b", false), "a\xE2\x96\x81" "b");
}

}  // namespace
}  // namespace llmpool::train
