// HmacVerifier: checks HMAC-signed requests (seed 003).
//
// A client signs each request with an HMAC key from TenantStore
// (`KEY_ID SECRET`, the secret's text is the HMAC key) and sends
//   X-Llmpool-Key-Id:    KEY_ID
//   X-Llmpool-Timestamp: Unix seconds
//   X-Llmpool-Signature: lowercase hex of HMAC-SHA256(SECRET, string_to_sign)
// where string_to_sign is
//   METHOD "\n" PATH "\n" TIMESTAMP "\n" hex(SHA-256(body))
// and PATH is the request target as sent, query string included.
//
// A timestamp more than 300 s away from now (either way) is refused. Each
// signature is accepted once: a replay cache remembers every accepted
// (key id, signature) until its timestamp leaves the window, after which
// the timestamp check refuses it anyway. The cache is bounded: when it
// holds max_replay_entries live signatures, new requests are refused with
// ResourceExhausted rather than forgetting a live one (forgetting would
// let a replay through). The cache is per process; share_replays() adds a
// check shared by every instance (the Redis rate limiter's: SET NX under
// the signature), asked after the local cache, so a signature is accepted
// once across instances behind one balancer. When that check is down the
// request is refused with Unavailable: failing open would let replays in.
//
// The signature is compared in constant time (CRYPTO_memcmp).
//
// Thread-safety: thread-safe (the replay cache has its own mutex; check and
// insert are one step, so two concurrent copies of a request cannot both
// pass). Ownership: the store and the clock outlive the verifier.
// Errors: Unauthenticated for a missing or malformed header, an unknown or
// revoked key id, a stale timestamp, a wrong signature or a replay;
// ResourceExhausted when the replay cache is full; the store's errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "common/status.h"
#include "tenancy/tenant_store.h"
#include "tenancy/wall_clock.h"

namespace llmpool::tenancy {

inline constexpr int64_t kHmacSkewSeconds = 300;

// The parts of a request that the signature covers, and its three headers.
struct SignedRequest {
  std::string_view method;     // "POST"
  std::string_view path;       // "/v1/chat/completions?x=1"
  std::string_view body;
  std::string_view key_id;     // X-Llmpool-Key-Id
  std::string_view timestamp;  // X-Llmpool-Timestamp
  std::string_view signature;  // X-Llmpool-Signature
};

struct HmacIdentity {
  std::string key_id;
  std::string tenant;
};

// METHOD "\n" PATH "\n" TIMESTAMP "\n" hex(SHA-256(body)).
std::string hmac_string_to_sign(std::string_view method, std::string_view path, std::string_view timestamp,
                                std::string_view body);
// Lowercase hex HMAC-SHA256(secret, hmac_string_to_sign(...)): what a
// client puts in X-Llmpool-Signature.
std::string hmac_sign(std::string_view secret, std::string_view method, std::string_view path,
                      std::string_view timestamp, std::string_view body);

class HmacVerifier {
 public:
  explicit HmacVerifier(const TenantStore& store, const WallClock& clock = SystemWallClock::instance(),
                        size_t max_replay_entries = 100000);

  Result<HmacIdentity> verify(const SignedRequest& request);

  // A check shared by several instances: true when `entry` (key id and
  // signature) was not seen before by any of them; it remembers the entry
  // for ttl_seconds. Set once, before requests are verified.
  using SharedReplayCheck = std::function<Result<bool>(std::string_view entry, int64_t ttl_seconds)>;
  void share_replays(SharedReplayCheck check);

  // Live entries in the replay cache (for tests and metrics).
  size_t replay_cache_size() const;

 private:
  // Drops entries whose timestamps have left the window. Holds mu_.
  void expire_locked(int64_t now);

  const TenantStore& store_;
  const WallClock& clock_;
  const size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_set<std::string> seen_;           // key_id + ':' + signature
  std::multimap<int64_t, std::string> by_expiry_;  // timestamp + window -> entry
  SharedReplayCheck shared_;                       // guarded by mu_; empty: none
};

}  // namespace llmpool::tenancy
