#include "engine/text_stream.h"

#include <gtest/gtest.h>

namespace llmpool::engine {
namespace {

TEST(TextStreamTest, PassesTextThroughWithoutStops) {
  TextStream t;
  EXPECT_EQ(t.push("Hello"), "Hello");
  EXPECT_EQ(t.push(" world"), " world");
  EXPECT_EQ(t.flush(), "");
  EXPECT_FALSE(t.stopped());
}

TEST(TextStreamTest, HoldsBackAnIncompleteUtf8Character) {
  TextStream t;
  EXPECT_EQ(t.push("a\xE3\x81"), "a");   // first two bytes of a 3-byte character
  EXPECT_EQ(t.push("\x82z"), "\xE3\x81\x82z");
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x98\x80"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("abc"), 0u);
}

TEST(TextStreamTest, FlushDropsACharacterThatCanNoLongerComplete) {
  TextStream t({"END"});
  EXPECT_EQ(t.push("ok EN"), "ok ");
  EXPECT_EQ(t.push("\xE3\x81"), "EN");
  EXPECT_EQ(t.flush(), "");  // never "\xE3\x81", which a client would see as U+FFFD
  TextStream u({"END"});
  EXPECT_EQ(u.push("E"), "");
  EXPECT_EQ(u.flush(), "E");
}

TEST(TextStreamTest, StopStringSplitAcrossPiecesIsNeverDelivered) {
  TextStream t({"END"});
  EXPECT_EQ(t.push("abc E"), "abc ");  // "E" may start END
  EXPECT_EQ(t.push("N"), "");
  EXPECT_EQ(t.push("Dxyz"), "");
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.push("more"), "");
  EXPECT_EQ(t.flush(), "");
}

TEST(TextStreamTest, FalseStartIsReleased) {
  TextStream t({"END"});
  EXPECT_EQ(t.push("EN"), "");
  EXPECT_EQ(t.push("x"), "ENx");
  EXPECT_EQ(t.push("E"), "");
  EXPECT_EQ(t.flush(), "E");
}

TEST(TextStreamTest, EarliestOfSeveralStopsWins) {
  TextStream t({"cd", "b"});
  EXPECT_EQ(t.push("abcd"), "a");
  EXPECT_TRUE(t.stopped());
}

}  // namespace
}  // namespace llmpool::engine
