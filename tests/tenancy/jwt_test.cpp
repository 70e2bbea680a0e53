#include "tenancy/jwt.h"

#include <stdlib.h>

#include <gtest/gtest.h>

#include "tenancy/tenancy_test_util.h"

namespace llmpool::tenancy {
namespace {

using nlohmann::json;
using testing::Pkey;

constexpr const char* kSecretEnv = "LLMPOOL_TEST_JWT_SECRET";
constexpr const char* kSecret = "a-test-secret-that-is-longer-than-32-bytes";

class JwtVerifierTest : public ::testing::Test {
 protected:
  // RSA key generation is the slow part: once for the suite.
  static void SetUpTestSuite() {
    rsa_ = testing::make_rsa_key().release();
    rsa_other_ = testing::make_rsa_key().release();
    ec_ = testing::make_p256_key().release();
    ec_other_ = testing::make_p256_key().release();
  }
  static void TearDownTestSuite() {
    for (EVP_PKEY* k : {rsa_, rsa_other_, ec_, ec_other_}) EVP_PKEY_free(k);
  }
  void SetUp() override { ::setenv(kSecretEnv, kSecret, 1); }
  void TearDown() override { ::unsetenv(kSecretEnv); }

  json claims() const {
    int64_t now = clock_.now_unix();
    return {{"iss", "llmpool-demo"}, {"aud", "llmpool"}, {"tenant", "acme"}, {"sub", "alice"},
            {"iat", now}, {"exp", now + 600}};
  }
  JwtConfig base(JwtAlgorithm alg) const {
    JwtConfig c;
    c.algorithm = alg;
    c.issuer = "llmpool-demo";
    c.audience = "llmpool";
    c.leeway_seconds = 30;
    return c;
  }
  std::unique_ptr<JwtVerifier> make(const JwtConfig& c) {
    Result<std::unique_ptr<JwtVerifier>> v = JwtVerifier::create(c, clock_);
    EXPECT_TRUE(v.is_ok()) << v.status().to_string();
    return v.is_ok() ? std::move(v).value() : nullptr;
  }
  std::unique_ptr<JwtVerifier> hs256() {
    JwtConfig c = base(JwtAlgorithm::kHs256);
    c.secret_env = kSecretEnv;
    return make(c);
  }
  std::unique_ptr<JwtVerifier> with_pem(JwtAlgorithm alg, EVP_PKEY* key) {
    JwtConfig c = base(alg);
    c.public_key_file = dir_.write("key.pem", testing::public_pem(key));
    return make(c);
  }
  std::string hs(const json& payload) {
    return testing::sign_hs256({{"alg", "HS256"}, {"typ", "JWT"}}, payload, kSecret);
  }
  static std::string reason(const Result<JwtIdentity>& r) { return r.status().message(); }

  testing::TempDir dir_;
  ManualWallClock clock_;
  static inline EVP_PKEY* rsa_ = nullptr;
  static inline EVP_PKEY* rsa_other_ = nullptr;
  static inline EVP_PKEY* ec_ = nullptr;
  static inline EVP_PKEY* ec_other_ = nullptr;
};

TEST_F(JwtVerifierTest, Hs256GoodTokenGivesTheTenant) {
  auto v = hs256();
  ASSERT_NE(v, nullptr);
  Result<JwtIdentity> id = v->verify(hs(claims()));
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_EQ(id->tenant, "acme");
  EXPECT_EQ(id->subject, "alice");
  EXPECT_EQ(id->expires_at, clock_.now_unix() + 600);
}

TEST_F(JwtVerifierTest, TheTenantClaimIsConfigurable) {
  JwtConfig c = base(JwtAlgorithm::kHs256);
  c.secret_env = kSecretEnv;
  c.tenant_claim = "org";
  auto v = make(c);
  json p = claims();
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: no org claim");
  p["org"] = "globex";
  Result<JwtIdentity> id = v->verify(hs(p));
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_EQ(id->tenant, "globex");
  p["org"] = "Not A Tenant";
  EXPECT_EQ(v->verify(hs(p)).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(JwtVerifierTest, RefusesExpiredAndMissingExp) {
  auto v = hs256();
  json p = claims();
  p["exp"] = clock_.now_unix() - 31;
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: expired");
  p.erase("exp");
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: exp is missing");
  p["exp"] = "tomorrow";
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: exp is not a number");
}

TEST_F(JwtVerifierTest, LeewayEdgesAreExact) {
  auto v = hs256();  // leeway 30 s
  int64_t now = clock_.now_unix();
  json p = claims();
  p["exp"] = now - 29;  // now < exp + leeway
  EXPECT_TRUE(v->verify(hs(p)).is_ok());
  p["exp"] = now - 30;  // now == exp + leeway
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: expired");
  p["exp"] = now + 600;
  p["nbf"] = now + 30;  // nbf == now + leeway
  EXPECT_TRUE(v->verify(hs(p)).is_ok());
  p["nbf"] = now + 31;
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: not valid yet (nbf)");
  // Moving the clock makes the same token good.
  clock_.advance(1);
  EXPECT_TRUE(v->verify(hs(p)).is_ok());
}

TEST_F(JwtVerifierTest, LeewayAbove60SecondsIsRefused) {
  JwtConfig c = base(JwtAlgorithm::kHs256);
  c.secret_env = kSecretEnv;
  c.leeway_seconds = 61;
  Result<std::unique_ptr<JwtVerifier>> v = JwtVerifier::create(c, clock_);
  ASSERT_FALSE(v.is_ok());
  EXPECT_EQ(v.status().param(), "leeway_seconds");
  c.leeway_seconds = 60;
  EXPECT_TRUE(JwtVerifier::create(c, clock_).is_ok());
}

TEST_F(JwtVerifierTest, RefusesWrongAudienceAndIssuer) {
  auto v = hs256();
  json p = claims();
  p["aud"] = "someone-else";
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: wrong audience");
  p["aud"] = json::array({"a", "llmpool"});
  EXPECT_TRUE(v->verify(hs(p)).is_ok());
  p.erase("aud");
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: wrong audience");
  p = claims();
  p["iss"] = "evil";
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: wrong issuer");
  p.erase("iss");
  EXPECT_EQ(reason(v->verify(hs(p))), "invalid token: wrong issuer");
}

TEST_F(JwtVerifierTest, RefusesAWrongSignature) {
  auto v = hs256();
  std::string other = testing::sign_hs256({{"alg", "HS256"}}, claims(), "another-secret-of-more-than-32-bytes!!");
  EXPECT_EQ(reason(v->verify(other)), "invalid token: bad signature");
  // A payload swapped under a good signature.
  std::string good = hs(claims());
  json p = claims();
  p["tenant"] = "globex";
  std::string forged = good.substr(0, good.find('.')) + "." + testing::b64json(p) + good.substr(good.rfind('.'));
  EXPECT_EQ(reason(v->verify(forged)), "invalid token: bad signature");
}

TEST_F(JwtVerifierTest, RefusesAlgNone) {
  auto v = hs256();
  std::string unsigned_token = testing::b64json({{"alg", "none"}}) + "." + testing::b64json(claims()) + ".";
  EXPECT_EQ(reason(v->verify(unsigned_token)), "invalid token: alg none is not accepted");
  std::string with_sig = testing::b64json({{"alg", "none"}}) + "." + testing::b64json(claims()) + ".AAAA";
  EXPECT_EQ(v->verify(with_sig).status().code(), StatusCode::kUnauthenticated);
  auto rs = with_pem(JwtAlgorithm::kRs256, rsa_);
  EXPECT_EQ(reason(rs->verify(unsigned_token)), "invalid token: alg none is not accepted");
}

TEST_F(JwtVerifierTest, RefusesAlgorithmConfusion) {
  // The classic attack: HS256 "signed" with the RSA public key's PEM text.
  std::string pem = testing::public_pem(rsa_);
  std::string token = testing::sign_hs256({{"alg", "HS256"}, {"typ", "JWT"}}, claims(), pem);
  auto rs = with_pem(JwtAlgorithm::kRs256, rsa_);
  ASSERT_NE(rs, nullptr);
  Result<JwtIdentity> r = rs->verify(token);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(reason(r), "invalid token: alg HS256 is not the configured RS256");
  // And the other way: an RS256 token at an HS256 verifier.
  auto hsv = hs256();
  EXPECT_EQ(hsv->verify(testing::sign_with({{"alg", "RS256"}}, claims(), rsa_)).status().code(),
            StatusCode::kUnauthenticated);
  // An RS256 signature relabelled ES256 at an ES256 verifier.
  auto es = with_pem(JwtAlgorithm::kEs256, ec_);
  EXPECT_EQ(es->verify(testing::sign_with({{"alg", "RS256"}}, claims(), rsa_)).status().code(),
            StatusCode::kUnauthenticated);
}

TEST_F(JwtVerifierTest, Rs256WithAPemKey) {
  auto v = with_pem(JwtAlgorithm::kRs256, rsa_);
  ASSERT_NE(v, nullptr);
  Result<JwtIdentity> id = v->verify(testing::sign_with({{"alg", "RS256"}}, claims(), rsa_));
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_EQ(id->tenant, "acme");
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "RS256"}}, claims(), rsa_other_))),
            "invalid token: bad signature");
}

TEST_F(JwtVerifierTest, Es256GoodAndBad) {
  auto v = with_pem(JwtAlgorithm::kEs256, ec_);
  ASSERT_NE(v, nullptr);
  std::string good = testing::sign_with({{"alg", "ES256"}}, claims(), ec_);
  Result<JwtIdentity> id = v->verify(good);
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_EQ(id->tenant, "acme");
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "ES256"}}, claims(), ec_other_))),
            "invalid token: bad signature");
  // DER instead of JOSE's raw r||s is refused.
  std::string input = testing::b64json({{"alg", "ES256"}}) + "." + testing::b64json(claims());
  std::string der = input + "." + base64url_encode(testing::evp_sign(ec_, input));
  EXPECT_EQ(reason(v->verify(der)), "invalid token: bad signature");
  // A flipped bit in s.
  std::string raw = *base64url_decode(good.substr(good.rfind('.') + 1));
  raw[40] ^= 1;
  EXPECT_EQ(reason(v->verify(good.substr(0, good.rfind('.') + 1) + base64url_encode(raw))),
            "invalid token: bad signature");
}

TEST_F(JwtVerifierTest, PemKeyOfTheWrongTypeIsRefusedAtCreate) {
  JwtConfig c = base(JwtAlgorithm::kEs256);
  c.public_key_file = dir_.write("rsa.pem", testing::public_pem(rsa_));
  Result<std::unique_ptr<JwtVerifier>> v = JwtVerifier::create(c, clock_);
  ASSERT_FALSE(v.is_ok());
  EXPECT_EQ(v.status().param(), "public_key_file");
}

TEST_F(JwtVerifierTest, JwksSelectsTheKeyByKid) {
  json jwks = {{"keys", json::array({testing::public_jwk(rsa_, "one"), testing::public_jwk(rsa_other_, "two"),
                                     testing::public_jwk(ec_, "ec-key")})}};
  JwtConfig c = base(JwtAlgorithm::kRs256);
  c.jwks_file = dir_.write("jwks.json", jwks.dump());
  auto v = make(c);
  ASSERT_NE(v, nullptr);
  Result<JwtIdentity> id = v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "two"}}, claims(), rsa_other_));
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_EQ(id->key_id, "two");
  EXPECT_TRUE(v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "one"}}, claims(), rsa_)).is_ok());
  // The kid names the other key: the signature does not hold.
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "one"}}, claims(), rsa_other_))),
            "invalid token: bad signature");
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "three"}}, claims(), rsa_))),
            "invalid token: no configured key has this kid");
  // The EC key in the set is not an RS256 key.
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "ec-key"}}, claims(), rsa_))),
            "invalid token: no configured key has this kid");
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "RS256"}}, claims(), rsa_))),
            "invalid token: the token has no kid to choose a key");
}

TEST_F(JwtVerifierTest, JwksSkipsKeysForOtherUsesAndRefusesDuplicateKids) {
  json rs384 = testing::public_jwk(rsa_, "k");
  rs384["alg"] = "RS384";
  json enc = testing::public_jwk(rsa_other_, "k");
  enc["use"] = "enc";
  json good = testing::public_jwk(rsa_other_, "k");
  good["alg"] = "RS256";
  good["use"] = "sig";
  JwtConfig c = base(JwtAlgorithm::kRs256);
  c.jwks_file = dir_.write("jwks.json", json{{"keys", {rs384, enc, good}}}.dump());
  auto v = make(c);
  ASSERT_NE(v, nullptr);
  EXPECT_TRUE(v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "k"}}, claims(), rsa_other_)).is_ok());
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "RS256"}, {"kid", "k"}}, claims(), rsa_))),
            "invalid token: bad signature");
  c.jwks_file = dir_.write("dup.json", json{{"keys", {testing::public_jwk(rsa_, "k"), good}}}.dump());
  Result<std::unique_ptr<JwtVerifier>> dup = JwtVerifier::create(c, clock_);
  ASSERT_FALSE(dup.is_ok());
  EXPECT_EQ(dup.status().param(), "jwks_file");
  c.jwks_file = dir_.write("none.json", json{{"keys", {rs384, enc}}}.dump());
  EXPECT_EQ(JwtVerifier::create(c, clock_).status().param(), "jwks_file");
}

TEST_F(JwtVerifierTest, JwksWithEs256Keys) {
  json jwks = {{"keys", json::array({testing::public_jwk(ec_, "a"), testing::public_jwk(ec_other_, "b")})}};
  JwtConfig c = base(JwtAlgorithm::kEs256);
  c.jwks_file = dir_.write("jwks.json", jwks.dump());
  auto v = make(c);
  ASSERT_NE(v, nullptr);
  EXPECT_TRUE(v->verify(testing::sign_with({{"alg", "ES256"}, {"kid", "b"}}, claims(), ec_other_)).is_ok());
  EXPECT_EQ(reason(v->verify(testing::sign_with({{"alg", "ES256"}, {"kid", "a"}}, claims(), ec_other_))),
            "invalid token: bad signature");
}

TEST_F(JwtVerifierTest, AnEmbeddedJwkHeaderIsNotTrusted) {
  auto v = with_pem(JwtAlgorithm::kRs256, rsa_);
  json header = {{"alg", "RS256"}, {"jwk", testing::public_jwk(rsa_other_, "")}};
  EXPECT_EQ(reason(v->verify(testing::sign_with(header, claims(), rsa_other_))), "invalid token: bad signature");
}

TEST_F(JwtVerifierTest, RefusesMalformedAndOversizedTokens) {
  auto v = hs256();
  std::string good = hs(claims());
  EXPECT_TRUE(v->verify(good).is_ok());
  EXPECT_EQ(v->verify("").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(v->verify("a.b").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(v->verify(good + ".x").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(v->verify(good + "=").status().code(), StatusCode::kUnauthenticated);  // padding
  EXPECT_EQ(v->verify(" " + good).status().code(), StatusCode::kUnauthenticated);
  json big = claims();
  big["pad"] = std::string(9000, 'x');
  EXPECT_EQ(reason(v->verify(hs(big))), "invalid token: too long");
  // Deep JSON in the header is refused by the parser's depth limit.
  std::string deep_header = base64url_encode(std::string(100, '[') + std::string(100, ']'));
  std::string rest = good.substr(good.find('.'));
  EXPECT_EQ(v->verify(deep_header + rest).status().code(), StatusCode::kUnauthenticated);
  // crit is refused.
  EXPECT_EQ(reason(v->verify(testing::sign_hs256({{"alg", "HS256"}, {"crit", {"exp"}}}, claims(), kSecret))),
            "invalid token: crit extensions are not understood");
}

TEST_F(JwtVerifierTest, Hs256NeedsTheEnvironmentVariableAndALongSecret) {
  JwtConfig c = base(JwtAlgorithm::kHs256);
  c.secret_env = "LLMPOOL_TEST_JWT_UNSET_VARIABLE";
  Result<std::unique_ptr<JwtVerifier>> v = JwtVerifier::create(c, clock_);
  ASSERT_FALSE(v.is_ok());
  EXPECT_EQ(v.status().param(), "secret_env");
  ::setenv(kSecretEnv, "short", 1);
  c.secret_env = kSecretEnv;
  EXPECT_EQ(JwtVerifier::create(c, clock_).status().param(), "secret_env");
}

TEST_F(JwtVerifierTest, ParsesAlgorithmNames) {
  EXPECT_EQ(*parse_jwt_algorithm("RS256"), JwtAlgorithm::kRs256);
  EXPECT_FALSE(parse_jwt_algorithm("none").is_ok());
  EXPECT_FALSE(parse_jwt_algorithm("hs256").is_ok());
}

}  // namespace
}  // namespace llmpool::tenancy
