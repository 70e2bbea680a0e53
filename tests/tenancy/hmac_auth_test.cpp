#include "tenancy/hmac_auth.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "tenancy/tenancy_test_util.h"

namespace llmpool::tenancy {
namespace {

class HmacVerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<TenantStore>> s = TenantStore::open(dir_.path(), clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    store_ = std::move(s).value();
    Tenant t;
    t.name = "acme";
    ASSERT_TRUE(store_->add_tenant(t).is_ok());
    Result<HmacKey> k = store_->create_hmac_key("acme");
    ASSERT_TRUE(k.is_ok());
    key_ = *k;
    verifier_ = std::make_unique<HmacVerifier>(*store_, clock_, 4);
  }

  // A request signed now (or at `ts`) with the key.
  struct Signed {
    std::string method = "POST", path = "/v1/chat/completions?stream=false", body = R"({"model":"tiny"})";
    std::string key_id, timestamp, signature;
    SignedRequest view() const { return {method, path, body, key_id, timestamp, signature}; }
  };
  Signed sign(int64_t ts) const {
    Signed s;
    s.key_id = key_.info.key_id;
    s.timestamp = std::to_string(ts);
    s.signature = hmac_sign(key_.secret, s.method, s.path, s.timestamp, s.body);
    return s;
  }
  Signed sign() const { return sign(clock_.now_unix()); }

  testing::TempDir dir_;
  ManualWallClock clock_;
  std::unique_ptr<TenantStore> store_;
  HmacKey key_;
  std::unique_ptr<HmacVerifier> verifier_;
};

TEST_F(HmacVerifierTest, TheStringToSignIsTheDocumentedOne) {
  EXPECT_EQ(hmac_string_to_sign("GET", "/v1/models?x=1", "1700000000", ""),
            "GET\n/v1/models?x=1\n1700000000\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hmac_sign("key", "GET", "/", "1", "").size(), 64u);
}

TEST_F(HmacVerifierTest, AcceptsAGoodSignature) {
  Signed s = sign();
  Result<HmacIdentity> id = verifier_->verify(s.view());
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_EQ(id->tenant, "acme");
  EXPECT_EQ(id->key_id, key_.info.key_id);
}

// Two instances behind one balancer, each with its own verifier, sharing
// one check (in production the Redis limiter's claim_once; its own test
// runs against a real redis-server): a signature passes one of them once.
TEST_F(HmacVerifierTest, ASharedCheckRefusesAReplayOnAnotherInstance) {
  std::mutex mu;
  std::map<std::string, int64_t> shared;  // entry -> ttl asked for
  bool down = false;
  auto check = [&](std::string_view entry, int64_t ttl) -> Result<bool> {
    std::lock_guard lock(mu);
    if (down) return Status::unavailable("redis: connection refused");
    return shared.emplace(std::string(entry), ttl).second;
  };
  HmacVerifier other(*store_, clock_, 4);
  verifier_->share_replays(check);
  other.share_replays(check);
  Signed s = sign(clock_.now_unix() - 100);
  ASSERT_TRUE(verifier_->verify(s.view()).is_ok());
  Result<HmacIdentity> replay = other.verify(s.view());
  ASSERT_FALSE(replay.is_ok());
  EXPECT_EQ(replay.status().message(), "replayed HMAC signature");
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(shared.begin()->second, 201) << "remembered until the timestamp leaves the window";
  // The check down: refused, never let through.
  down = true;
  Result<HmacIdentity> r = other.verify(sign().view());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

TEST_F(HmacVerifierTest, RefusesAWrongBodyPathOrMethod) {
  Signed s = sign();
  s.body = R"({"model":"big"})";
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "wrong HMAC signature");
  s = sign();
  s.path = "/v1/chat/completions?stream=true";
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "wrong HMAC signature");
  s = sign();
  s.method = "PUT";
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "wrong HMAC signature");
  s = sign();
  s.signature[0] = s.signature[0] == 'a' ? 'b' : 'a';
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "wrong HMAC signature");
  s = sign();
  for (auto& c : s.signature) c = static_cast<char>(std::toupper(c));
  EXPECT_EQ(verifier_->verify(s.view()).status().code(), StatusCode::kUnauthenticated);
  // None of these reached the replay cache.
  EXPECT_EQ(verifier_->replay_cache_size(), 0u);
}

TEST_F(HmacVerifierTest, RefusesStaleAndFutureTimestampsAtTheWindowEdge) {
  int64_t now = clock_.now_unix();
  EXPECT_TRUE(verifier_->verify(sign(now - 300).view()).is_ok());
  EXPECT_TRUE(verifier_->verify(sign(now + 300).view()).is_ok());
  EXPECT_EQ(verifier_->verify(sign(now - 301).view()).status().message(),
            "X-Llmpool-Timestamp is outside the 300 s window");
  EXPECT_EQ(verifier_->verify(sign(now + 301).view()).status().code(), StatusCode::kUnauthenticated);
  Signed s = sign();
  s.timestamp = "+" + s.timestamp;
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "X-Llmpool-Timestamp is not Unix seconds");
}

TEST_F(HmacVerifierTest, RefusesAReplay) {
  Signed s = sign();
  ASSERT_TRUE(verifier_->verify(s.view()).is_ok());
  Result<HmacIdentity> again = verifier_->verify(s.view());
  EXPECT_EQ(again.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(again.status().message(), "replayed HMAC signature");
  // Still refused late in the window, and by the timestamp once out of it.
  clock_.advance(300);
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "replayed HMAC signature");
  clock_.advance(1);
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "X-Llmpool-Timestamp is outside the 300 s window");
}

TEST_F(HmacVerifierTest, TheReplayCacheIsBoundedAndForgetsOnlyExpiredEntries) {
  int64_t t0 = clock_.now_unix();
  for (int i = 0; i < 4; ++i) {
    Signed s = sign(t0 - 100 + i);
    ASSERT_TRUE(verifier_->verify(s.view()).is_ok()) << i;
  }
  EXPECT_EQ(verifier_->replay_cache_size(), 4u);
  // Full, with every entry live: a fifth is refused, not let through by forgetting one.
  EXPECT_EQ(verifier_->verify(sign(t0).view()).status().code(), StatusCode::kResourceExhausted);
  // Once the oldest have left the window there is room again.
  clock_.advance(202);  // t0-100 and t0-99 are now more than 300 s old
  EXPECT_TRUE(verifier_->verify(sign(clock_.now_unix()).view()).is_ok());
  EXPECT_EQ(verifier_->replay_cache_size(), 3u);
}

TEST_F(HmacVerifierTest, RefusesUnknownRevokedAndMissingKeys) {
  Signed s = sign();
  s.key_id = "hk_0000000000000000";
  EXPECT_EQ(verifier_->verify(s.view()).status().message(), "unknown HMAC key id");
  s = sign();
  s.key_id.clear();
  EXPECT_EQ(verifier_->verify(s.view()).status().code(), StatusCode::kUnauthenticated);
  ASSERT_TRUE(store_->revoke_hmac_key(key_.info.key_id).is_ok());
  EXPECT_EQ(verifier_->verify(sign().view()).status().message(), "HMAC key revoked");
}

}  // namespace
}  // namespace llmpool::tenancy
