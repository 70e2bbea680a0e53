#include "tenancy/crypto.h"

#include <gtest/gtest.h>

namespace llmpool::tenancy {
namespace {

TEST(CryptoTest, Sha256MatchesTheKnownVector) {
  EXPECT_EQ(to_hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(CryptoTest, HmacSha256MatchesRfc4231TestCase2) {
  EXPECT_EQ(to_hex(hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(CryptoTest, RandomBytesHaveTheAskedLengthAndDiffer) {
  Result<std::string> a = random_bytes(16), b = random_bytes(16);
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(a->size(), 16u);
  EXPECT_NE(*a, *b);
}

TEST(CryptoTest, ConstantTimeEqualComparesContentAndLength) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(CryptoTest, Base64UrlRoundTripsEveryLength) {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    std::optional<std::string> back = base64url_decode(base64url_encode(bytes));
    ASSERT_TRUE(back.has_value()) << i;
    EXPECT_EQ(*back, bytes);
    bytes.push_back(static_cast<char>(i * 37 + 200));
  }
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
}

TEST(CryptoTest, Base64UrlDecodingIsStrict) {
  EXPECT_FALSE(base64url_decode("YWJj=").has_value());   // padding
  EXPECT_FALSE(base64url_decode("YW+j").has_value());    // standard alphabet
  EXPECT_FALSE(base64url_decode("YW/j").has_value());
  EXPECT_FALSE(base64url_decode("YW j").has_value());    // whitespace
  EXPECT_FALSE(base64url_decode("YWJjZ").has_value());   // length 1 mod 4
  EXPECT_FALSE(base64url_decode("YR").has_value());      // non-zero unused bits ("YQ" is "a")
  EXPECT_EQ(base64url_decode("YQ"), std::optional<std::string>("a"));
  EXPECT_EQ(base64url_decode(""), std::optional<std::string>(""));
}

}  // namespace
}  // namespace llmpool::tenancy
