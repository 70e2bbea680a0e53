// TenantStore: tenants, API keys and HMAC signing keys in one embedded
// SQLite database, `<data_dir>/llmpool.db`.
//
// The database runs in WAL mode with a busy timeout, so several processes
// (a server and the `llmpool tenants|keys` CLI) can share the file. Its
// schema is versioned: a `schema_version` table holds the version, and
// open() applies every newer migration in order, each in its own
// transaction, so opening an up-to-date database changes nothing and a
// half-applied migration never exists. A database written by a newer
// llmpool (a version this build does not know) is refused.
//
// Every query is a prepared statement with bound values; no SQL text is
// ever built from data, so a name or model such as `x' OR 1=1 --` is data.
//
// API keys. The text form is `llmp_<prefix>_<secret>`: the prefix is 8
// characters of [a-z2-7] (40 random bits) that identify the key and may be
// shown and logged; the secret is 48 lowercase hex digits (192 random bits
// from RAND_bytes). Only SHA-256(secret) is stored (a secret of 192 random
// bits needs no salt or slow hash: there is nothing to guess); the key text
// is returned by create_key() once and can never be read back. verify_key()
// finds the key by prefix and compares the hashes in constant time.
//
// Per-key limits (requests and tokens per minute, concurrent requests) may
// only be lower than the tenant's: create_key() REFUSES (InvalidArgument) a
// key limit above its tenant's, it does not clamp. Because a tenant's
// limits may be lowered later, verify_key() also returns the effective
// limits, each the lower of the key's and the tenant's.
//
// HMAC signing keys (`KEY_ID SECRET`): the key id is `hk_` and 16 hex
// digits, the secret 64 hex digits (256 random bits). The secret is stored
// IN PLAIN: verifying an HMAC signature needs the secret itself, so a hash
// cannot serve, and encrypting it under a key kept on the same server
// (config or environment) would protect only against a leak of the
// database file alone. The database file is created with mode 0600
// instead; treat it like a private key.
//
// Limits are integers where 0 means "no limit" on a tenant and "the
// tenant's limit" on a key. Times are Unix seconds from the injected
// WallClock.
//
// verify_key() keeps the keys it found good in memory, so a request does not
// pay for SQL (the gateway's hot path). Nothing goes stale: the cache is
// emptied by this store's own writes (revoke, tenant update or removal) and
// whenever a key or tenant row changed through any connection (the CLI,
// another server on the same file): triggers count such changes in the
// key_epoch row, which verify_key() reads only when SQLite's
// `PRAGMA data_version` says something was committed. Expiry is checked on
// every hit. At most kMaxCachedKeys keys are kept (then it starts over).
//
// Thread-safety: thread-safe. One connection behind a mutex serves every
// call but verify_key(); each call holds the mutex for its statements
// (calls are short, single-row writes or small reads). verify_key() has
// kKeyReaders read-only connections of its own, each behind its own mutex,
// and the cache behind a shared mutex, so the I/O threads check keys side
// by side. Ownership: open() returns a TenantStore the caller owns; the
// WallClock outlives it.
//
// Errors: InvalidArgument (param names the field) for a bad name or value,
// with error code "already_exists" for a duplicate; NotFound for an unknown
// tenant, key or HMAC key id; Unauthenticated from verify_key() and
// hmac_secret() for a malformed, unknown, revoked or expired credential;
// Internal for database failures.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "tenancy/wall_clock.h"

namespace llmpool::tenancy {

inline constexpr size_t kMaxTenantNameLength = 64;

// A tenant name becomes a NATS subject token and a metric label: 1 to 64
// characters of [a-z0-9_-]. InvalidArgument (param `param`) otherwise.
Status validate_tenant_name(std::string_view name, std::string param = "name");

// Seed 000's TenantContext quotas.
struct TenantQuotas {
  std::string throughput;     // free text, as in the seed ("100rps", "standard")
  int64_t storage_days = 0;   // 0: no limit
  int64_t max_consumers = 0;  // 0: no limit
};

struct Tenant {
  std::string name;  // the tenant's id; see validate_tenant_name
  std::string plan;  // a plan name, free text up to 64 bytes
  TenantQuotas quotas;
  // Model names and route groups this tenant may use. Empty allows none
  // (fail closed); the single entry "*" allows all.
  std::vector<std::string> allowed_models;
  std::vector<std::string> route_groups;
  int32_t max_priority = 0;  // -1000..1000; a request's priority is capped here
  int64_t requests_per_minute = 0;
  int64_t tokens_per_minute = 0;
  int64_t max_concurrent_requests = 0;
  int64_t daily_token_budget = 0;
  int64_t monthly_token_budget = 0;
  // Set by the store; ignored on add and update.
  int64_t created_at = 0;
  int64_t updated_at = 0;

  bool allows_model(std::string_view model) const;
  bool allows_route_group(std::string_view group) const;
};

// Limits a key may carry, each below its tenant's; 0: the tenant's.
struct KeyLimits {
  int64_t requests_per_minute = 0;
  int64_t tokens_per_minute = 0;
  int64_t max_concurrent_requests = 0;
};

// What list_keys() shows of a key: never the key or its hash.
struct ApiKeyInfo {
  std::string prefix;  // the visible 8 characters
  std::string tenant;  // empty only for an admin key without a tenant
  bool admin = false;
  int64_t created_at = 0;
  int64_t expires_at = 0;               // 0: never
  std::optional<int64_t> revoked_at;    // set once revoked
  KeyLimits limits;
};

struct NewApiKey {
  std::string tenant;  // required unless admin
  bool admin = false;
  int64_t expires_at = 0;  // Unix seconds; 0: never. Must lie in the future.
  KeyLimits limits;
};

struct CreatedApiKey {
  ApiKeyInfo info;
  std::string key;  // `llmp_<prefix>_<secret>`: shown once, never stored
};

struct VerifiedKey {
  ApiKeyInfo key;
  std::optional<Tenant> tenant;  // absent only for an admin key without a tenant
  KeyLimits effective;           // the lower of the key's and the tenant's (0: none)
};

struct HmacKeyInfo {
  std::string key_id;
  std::string tenant;
  int64_t created_at = 0;
  std::optional<int64_t> revoked_at;
};

struct HmacKey {
  HmacKeyInfo info;
  std::string secret;  // the 64 hex digits; the HMAC key is this text's bytes
};

// Usage of one tenant's key on one model on one UTC day ("YYYY-MM-DD").
// record_usage() adds these counts to the row (creating it).
struct UsageRecord {
  std::string tenant;
  std::string key_id;  // API key prefix, HMAC key id, "jwt:<sub>"; "" for none
  std::string model;
  std::string day;
  int64_t requests = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// The UTC day of a Unix time, "YYYY-MM-DD".
std::string usage_day(int64_t unix_seconds);

class TenantStore {
 public:
  // Opens `<data_dir>/llmpool.db`, creating the folder and the file as
  // needed, and migrates the schema to the current version. Internal when
  // the file cannot be opened or a migration fails (nothing of that
  // migration is kept); Unimplemented when the database's schema is newer
  // than this build's.
  static Result<std::unique_ptr<TenantStore>> open(const std::string& data_dir,
                                                   const WallClock& clock = SystemWallClock::instance());
  ~TenantStore();
  TenantStore(const TenantStore&) = delete;
  TenantStore& operator=(const TenantStore&) = delete;

  // The schema version this build migrates to.
  static int current_schema_version();
  // The version recorded in the database.
  Result<int> schema_version() const;
  const std::string& path() const { return path_; }

  // Tenants.
  Status add_tenant(const Tenant& tenant);
  Result<Tenant> get_tenant(std::string_view name) const;
  Result<std::vector<Tenant>> list_tenants() const;  // by name
  // Replaces every field of the tenant named tenant.name. NotFound if none.
  Status update_tenant(const Tenant& tenant);
  // Removes the tenant and, with it, its API keys and HMAC keys.
  Status remove_tenant(std::string_view name);

  // API keys.
  Result<CreatedApiKey> create_key(const NewApiKey& spec);
  // Keys of `tenant`, or of everyone when `tenant` is empty; by creation time.
  Result<std::vector<ApiKeyInfo>> list_keys(std::string_view tenant = {}) const;
  // Revokes the key with this prefix. NotFound if none; revoking twice is ok.
  Status revoke_key(std::string_view prefix);
  // Checks a key's text. Unauthenticated when it is malformed, unknown,
  // wrong, revoked or expired (expires_at <= now).
  Result<VerifiedKey> verify_key(std::string_view key_text) const;

  // HMAC signing keys of a tenant.
  Result<HmacKey> create_hmac_key(std::string_view tenant);
  Result<std::vector<HmacKeyInfo>> list_hmac_keys(std::string_view tenant = {}) const;
  Status revoke_hmac_key(std::string_view key_id);
  // The secret for `key_id`. Unauthenticated when unknown or revoked.
  Result<HmacKey> hmac_secret(std::string_view key_id) const;

  // Usage (schema version 3): adds `delta` to its row. InvalidArgument for
  // a bad tenant name, an oversized key id or model, or negative counts.
  Status record_usage(const UsageRecord& delta);
  // Rows of `tenant` (everyone's when empty) with from_day <= day <= to_day
  // (either bound empty: open), by tenant, day, model and key.
  Result<std::vector<UsageRecord>> usage(std::string_view tenant = {}, std::string_view from_day = {},
                                         std::string_view to_day = {}) const;

  // Test hook and operator aid: writes the WAL back into the main file.
  Status checkpoint();

 private:
  struct Impl;
  TenantStore(std::unique_ptr<Impl> impl, std::string path, const WallClock& clock);

  // verify_key()'s connections and cache (see above).
  struct KeyReader;
  struct CachedKey {
    std::string secret_sha256;
    VerifiedKey verified;
  };
  static constexpr size_t kMaxCachedKeys = 4096;
  static constexpr size_t kKeyReaders = 4;
  // Empties the cache; what a lookup read before this is not remembered.
  void forget_keys() const;
  // A reader, locked: the calling thread's own if free, else any free one,
  // else waits for its own.
  std::unique_lock<std::mutex> take_reader(KeyReader*& reader) const;

  std::unique_ptr<Impl> impl_;
  std::string path_;
  const WallClock& clock_;
  mutable std::mutex mu_;  // impl_'s connection
  std::unique_ptr<KeyReader[]> readers_;
  mutable std::shared_mutex cache_mu_;
  mutable std::unordered_map<std::string, CachedKey> cached_keys_;  // by prefix; under cache_mu_
  mutable uint64_t cache_generation_ = 0;                          // under cache_mu_: forget_keys() calls
};

}  // namespace llmpool::tenancy
