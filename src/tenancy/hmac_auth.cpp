#include "tenancy/hmac_auth.h"

#include <algorithm>

#include "tenancy/crypto.h"

namespace llmpool::tenancy {

std::string hmac_string_to_sign(std::string_view method, std::string_view path, std::string_view timestamp,
                                std::string_view body) {
  std::string s;
  s.reserve(method.size() + path.size() + timestamp.size() + 67);
  s.append(method).append("\n").append(path).append("\n").append(timestamp).append("\n");
  s.append(to_hex(sha256(body)));
  return s;
}

std::string hmac_sign(std::string_view secret, std::string_view method, std::string_view path,
                      std::string_view timestamp, std::string_view body) {
  return to_hex(hmac_sha256(secret, hmac_string_to_sign(method, path, timestamp, body)));
}

HmacVerifier::HmacVerifier(const TenantStore& store, const WallClock& clock, size_t max_replay_entries)
    : store_(store), clock_(clock), max_entries_(max_replay_entries) {}

void HmacVerifier::expire_locked(int64_t now) {
  auto end = by_expiry_.lower_bound(now);  // entries expiring before now are out of the window
  for (auto it = by_expiry_.begin(); it != end; ++it) seen_.erase(it->second);
  by_expiry_.erase(by_expiry_.begin(), end);
}

Result<HmacIdentity> HmacVerifier::verify(const SignedRequest& r) {
  if (r.key_id.empty() || r.timestamp.empty() || r.signature.empty()) {
    return Status::unauthenticated("missing X-Llmpool-Key-Id, X-Llmpool-Timestamp or X-Llmpool-Signature");
  }
  // Unix seconds: 1 to 12 digits, nothing else (no sign, no spaces).
  if (r.timestamp.size() > 12 ||
      !std::all_of(r.timestamp.begin(), r.timestamp.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Status::unauthenticated("X-Llmpool-Timestamp is not Unix seconds");
  }
  int64_t ts = 0;
  for (char c : r.timestamp) ts = ts * 10 + (c - '0');
  int64_t now = clock_.now_unix();
  if (ts < now - kHmacSkewSeconds || ts > now + kHmacSkewSeconds) {
    return Status::unauthenticated("X-Llmpool-Timestamp is outside the 300 s window");
  }
  if (r.signature.size() != 64 || !std::all_of(r.signature.begin(), r.signature.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return Status::unauthenticated("X-Llmpool-Signature is not 64 lowercase hex digits");
  }
  if (r.key_id.size() > 64) return Status::unauthenticated("unknown HMAC key id");
  Result<HmacKey> key = store_.hmac_secret(r.key_id);
  if (!key) return key.status();
  std::string expected = hmac_sign(key->secret, r.method, r.path, r.timestamp, r.body);
  if (!constant_time_equal(expected, r.signature)) return Status::unauthenticated("wrong HMAC signature");

  std::string entry = std::string(r.key_id) + ":" + std::string(r.signature);
  SharedReplayCheck shared;
  {
    std::lock_guard lock(mu_);
    expire_locked(now);
    if (seen_.count(entry)) return Status::unauthenticated("replayed HMAC signature");
    if (seen_.size() >= max_entries_) {
      return Status::resource_exhausted("too many signed requests within the replay window");
    }
    seen_.insert(entry);
    by_expiry_.emplace(ts + kHmacSkewSeconds, entry);
    shared = shared_;
  }
  if (shared) {
    // Until the timestamp leaves the window; after that the window refuses it.
    Result<bool> first = shared(entry, ts + kHmacSkewSeconds - now + 1);
    if (!first) return Status::unavailable("the shared HMAC replay check failed: " + first.status().message());
    if (!*first) return Status::unauthenticated("replayed HMAC signature");
  }
  return HmacIdentity{key->info.key_id, key->info.tenant};
}

void HmacVerifier::share_replays(SharedReplayCheck check) {
  std::lock_guard lock(mu_);
  shared_ = std::move(check);
}

size_t HmacVerifier::replay_cache_size() const {
  std::lock_guard lock(mu_);
  return seen_.size();
}

}  // namespace llmpool::tenancy
