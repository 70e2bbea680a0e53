#include "tenancy/tenant_store.h"

#include <ctime>

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <system_error>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "tenancy/crypto.h"
#include "tenancy/sqlite.h"

namespace llmpool::tenancy {

namespace {

constexpr std::string_view kKeyTag = "llmp_";
constexpr size_t kPrefixLength = 8;
constexpr size_t kSecretBytes = 24;  // 192 bits, 48 hex digits
constexpr size_t kHmacSecretBytes = 32;
constexpr size_t kMaxPlanLength = 64;
constexpr size_t kMaxListEntries = 1024;
constexpr size_t kMaxListEntryLength = 256;

// Each migration runs in its own transaction; index i brings the schema
// to version i + 1. Append only: never edit a migration that has shipped.
constexpr const char* kMigrations[] = {
    // 1: tenants.
    R"sql(
    CREATE TABLE tenants (
      name TEXT PRIMARY KEY NOT NULL,
      plan TEXT NOT NULL,
      throughput TEXT NOT NULL,
      storage_days INTEGER NOT NULL,
      max_consumers INTEGER NOT NULL,
      allowed_models TEXT NOT NULL,
      route_groups TEXT NOT NULL,
      max_priority INTEGER NOT NULL,
      requests_per_minute INTEGER NOT NULL,
      tokens_per_minute INTEGER NOT NULL,
      max_concurrent_requests INTEGER NOT NULL,
      daily_token_budget INTEGER NOT NULL,
      monthly_token_budget INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    ) STRICT;
    )sql",
    // 2: API keys and HMAC signing keys; both go with their tenant.
    R"sql(
    CREATE TABLE api_keys (
      prefix TEXT PRIMARY KEY NOT NULL,
      tenant TEXT REFERENCES tenants(name) ON DELETE CASCADE,
      secret_sha256 BLOB NOT NULL,
      admin INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      revoked_at INTEGER,
      requests_per_minute INTEGER NOT NULL,
      tokens_per_minute INTEGER NOT NULL,
      max_concurrent_requests INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX api_keys_by_tenant ON api_keys(tenant);
    CREATE TABLE hmac_keys (
      key_id TEXT PRIMARY KEY NOT NULL,
      tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
      secret TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      revoked_at INTEGER
    ) STRICT;
    CREATE INDEX hmac_keys_by_tenant ON hmac_keys(tenant);
    )sql",
    // 3: usage per tenant, key, model and UTC day. Kept when a tenant or a
    // key goes (it is the billing record), hence no foreign keys.
    R"sql(
    CREATE TABLE usage (
      tenant TEXT NOT NULL,
      key_id TEXT NOT NULL,
      model TEXT NOT NULL,
      day TEXT NOT NULL,
      requests INTEGER NOT NULL,
      prompt_tokens INTEGER NOT NULL,
      completion_tokens INTEGER NOT NULL,
      PRIMARY KEY (tenant, key_id, model, day)
    ) STRICT, WITHOUT ROWID;
    )sql",
    // 4: a count of changes to what verify_key() remembers (a key's or a
    // tenant's row changed or went), bumped by triggers so that writes from
    // any connection or tool count. verify_key() watches it instead of every
    // commit: usage rows are written every second and change no key.
    R"sql(
    CREATE TABLE key_epoch (n INTEGER NOT NULL) STRICT;
    INSERT INTO key_epoch (n) VALUES (0);
    CREATE TRIGGER key_epoch_key_update AFTER UPDATE ON api_keys BEGIN UPDATE key_epoch SET n = n + 1; END;
    CREATE TRIGGER key_epoch_key_delete AFTER DELETE ON api_keys BEGIN UPDATE key_epoch SET n = n + 1; END;
    CREATE TRIGGER key_epoch_tenant_update AFTER UPDATE ON tenants BEGIN UPDATE key_epoch SET n = n + 1; END;
    CREATE TRIGGER key_epoch_tenant_delete AFTER DELETE ON tenants BEGIN UPDATE key_epoch SET n = n + 1; END;
    )sql",
};
constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

constexpr const char* kTenantColumns =
    "name, plan, throughput, storage_days, max_consumers, allowed_models, route_groups, max_priority, "
    "requests_per_minute, tokens_per_minute, max_concurrent_requests, daily_token_budget, "
    "monthly_token_budget, created_at, updated_at";
constexpr const char* kKeyColumns =
    "prefix, tenant, admin, created_at, expires_at, revoked_at, requests_per_minute, tokens_per_minute, "
    "max_concurrent_requests";

std::string encode_list(const std::vector<std::string>& items) { return nlohmann::json(items).dump(); }

Result<std::vector<std::string>> decode_list(const std::string& text) {
  Result<nlohmann::json> j = parse_json(text, JsonLimits{.max_depth = 2, .max_bytes = 0}, "a stored list");
  if (!j) return j.status();
  if (!j->is_array()) return Status::internal("database: a stored list is not an array");
  std::vector<std::string> out;
  for (const auto& item : *j) {
    if (!item.is_string()) return Status::internal("database: a stored list holds a non-string");
    out.push_back(item.get<std::string>());
  }
  return out;
}

Status validate_list(const std::vector<std::string>& items, const char* param) {
  if (items.size() > kMaxListEntries) {
    return Status::invalid_argument(std::string(param) + " has more than 1024 entries", param);
  }
  for (const auto& item : items) {
    if (item.empty() || item.size() > kMaxListEntryLength) {
      return Status::invalid_argument(std::string(param) + " entries must be 1 to 256 bytes long", param);
    }
  }
  return Status::ok();
}

Status validate_limit(int64_t v, const char* param) {
  if (v < 0) return Status::invalid_argument(std::string(param) + " must not be negative", param);
  return Status::ok();
}

Status validate_tenant(const Tenant& t) {
  Status s = validate_tenant_name(t.name);
  if (!s) return s;
  if (t.plan.size() > kMaxPlanLength) return Status::invalid_argument("plan is longer than 64 bytes", "plan");
  if (t.quotas.throughput.size() > kMaxPlanLength) {
    return Status::invalid_argument("quotas.throughput is longer than 64 bytes", "quotas.throughput");
  }
  if (t.max_priority < -1000 || t.max_priority > 1000) {
    return Status::invalid_argument("max_priority must be within -1000..1000", "max_priority");
  }
  const std::pair<int64_t, const char*> limits[] = {
      {t.quotas.storage_days, "quotas.storage_days"},
      {t.quotas.max_consumers, "quotas.max_consumers"},
      {t.requests_per_minute, "requests_per_minute"},
      {t.tokens_per_minute, "tokens_per_minute"},
      {t.max_concurrent_requests, "max_concurrent_requests"},
      {t.daily_token_budget, "daily_token_budget"},
      {t.monthly_token_budget, "monthly_token_budget"},
  };
  for (const auto& [v, name] : limits) {
    if (s = validate_limit(v, name); !s) return s;
  }
  if (s = validate_list(t.allowed_models, "allowed_models"); !s) return s;
  return validate_list(t.route_groups, "route_groups");
}

bool list_allows(const std::vector<std::string>& list, std::string_view item) {
  return std::any_of(list.begin(), list.end(), [&](const std::string& e) { return e == "*" || e == item; });
}

Result<Tenant> read_tenant(const sql::Statement& st) {
  Tenant t;
  t.name = st.column_text(0);
  t.plan = st.column_text(1);
  t.quotas.throughput = st.column_text(2);
  t.quotas.storage_days = st.column_int(3);
  t.quotas.max_consumers = st.column_int(4);
  Result<std::vector<std::string>> models = decode_list(st.column_text(5));
  if (!models) return models.status();
  t.allowed_models = std::move(*models);
  Result<std::vector<std::string>> groups = decode_list(st.column_text(6));
  if (!groups) return groups.status();
  t.route_groups = std::move(*groups);
  t.max_priority = static_cast<int32_t>(st.column_int(7));
  t.requests_per_minute = st.column_int(8);
  t.tokens_per_minute = st.column_int(9);
  t.max_concurrent_requests = st.column_int(10);
  t.daily_token_budget = st.column_int(11);
  t.monthly_token_budget = st.column_int(12);
  t.created_at = st.column_int(13);
  t.updated_at = st.column_int(14);
  return t;
}

ApiKeyInfo read_key(const sql::Statement& st) {
  ApiKeyInfo k;
  k.prefix = st.column_text(0);
  k.tenant = st.is_null(1) ? std::string() : st.column_text(1);
  k.admin = st.column_int(2) != 0;
  k.created_at = st.column_int(3);
  k.expires_at = st.column_int(4);
  if (!st.is_null(5)) k.revoked_at = st.column_int(5);
  k.limits.requests_per_minute = st.column_int(6);
  k.limits.tokens_per_minute = st.column_int(7);
  k.limits.max_concurrent_requests = st.column_int(8);
  return k;
}

HmacKeyInfo read_hmac(const sql::Statement& st) {
  HmacKeyInfo k;
  k.key_id = st.column_text(0);
  k.tenant = st.column_text(1);
  k.created_at = st.column_int(2);
  if (!st.is_null(3)) k.revoked_at = st.column_int(3);
  return k;
}

// Key limit vs tenant limit: 0 on either side means "no bound from there".
int64_t effective_limit(int64_t key, int64_t tenant) {
  if (key == 0) return tenant;
  if (tenant == 0) return key;
  return std::min(key, tenant);
}

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool is_prefix_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'); }

// 8 characters of RFC 4648 base32 in lower case, from 5 random bytes.
Result<std::string> random_prefix() {
  Result<std::string> bytes = random_bytes(5);
  if (!bytes) return bytes.status();
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  uint64_t v = 0;
  for (unsigned char c : *bytes) v = (v << 8) | c;
  std::string out(kPrefixLength, 'a');
  for (size_t i = 0; i < kPrefixLength; ++i) out[kPrefixLength - 1 - i] = kAlphabet[(v >> (5 * i)) & 31];
  return out;
}

bool is_constraint(const Status& s) { return s.error_code() == "constraint"; }

// Steps `st` to the end, turning each row into a T with `read` (which
// returns T or Result<T>).
template <typename T, typename Read>
Result<std::vector<T>> collect_rows(sql::Statement& st, Read read) {
  std::vector<T> out;
  while (true) {
    Result<bool> row = st.step();
    if (!row) return row.status();
    if (!*row) return out;
    Result<T> item = read(st);
    if (!item) return item.status();
    out.push_back(std::move(*item));
  }
}

// The tenant row named `name` read through `db`. NotFound if none.
Result<Tenant> read_tenant_row(sql::Database& db, std::string_view name) {
  Result<sql::Statement> st = db.prepare(std::string("SELECT ") + kTenantColumns + " FROM tenants WHERE name = ?");
  if (!st) return st.status();
  if (Status s = st->bind_all(name); !s) return s;
  Result<bool> row = st->step();
  if (!row) return row.status();
  if (!*row) return Status::not_found("no tenant named " + std::string(name), "name");
  return read_tenant(*st);
}

// Runs the one-integer query `sql` on `db`, prepared into `cached` the first
// time; the statement is reset after (no read transaction stays open).
Result<int64_t> query_int(sql::Database& db, std::optional<sql::Statement>& cached, const char* sql) {
  if (!cached) {
    Result<sql::Statement> st = db.prepare(sql);
    if (!st) return st.status();
    cached.emplace(std::move(st).value());
  }
  cached->reset();
  Result<bool> row = cached->step();
  if (!row) return row.status();
  if (!*row) return Status::internal(std::string(sql) + " returned no row");
  int64_t v = cached->column_int(0);
  cached->reset();
  return v;
}

}  // namespace

Status validate_tenant_name(std::string_view name, std::string param) {
  if (name.empty() || name.size() > kMaxTenantNameLength) {
    return Status::invalid_argument("a tenant name must be 1 to 64 characters long", std::move(param));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return Status::invalid_argument("a tenant name may hold only a-z, 0-9, '_' and '-'", std::move(param));
    }
  }
  return Status::ok();
}

bool Tenant::allows_model(std::string_view model) const { return list_allows(allowed_models, model); }
bool Tenant::allows_route_group(std::string_view group) const { return list_allows(route_groups, group); }

struct TenantStore::Impl {
  sql::Database db;

  template <typename F>
  Status transaction(F&& body) {
    return sql::transaction(db, std::forward<F>(body));
  }

  Result<int> version() { return sql::schema_version(db); }

  // Rows of `sql` (two `?` for the tenant: '' matches every tenant).
  template <typename T, typename Read>
  Result<std::vector<T>> list_for_tenant(const std::string& sql, std::string_view tenant, Read read) {
    if (!tenant.empty()) {
      if (Status s = validate_tenant_name(tenant, "tenant"); !s) return s;
    }
    Result<sql::Statement> st = db.prepare(sql);
    if (!st) return st.status();
    if (Status s = st->bind_all(tenant, tenant); !s) return s;
    return collect_rows<T>(*st, read);
  }

  // Runs an UPDATE that sets revoked_at (first `?`) on the row with `id`
  // (second `?`); NotFound with `missing` when no row has it.
  Status revoke(const char* sql, int64_t now, std::string_view id, std::string missing, const char* param) {
    Result<sql::Statement> st = db.prepare(sql);
    if (!st) return st.status();
    if (Status s = st->bind_all(now, id); !s) return s;
    if (Status s = st->run(); !s) return s;
    if (db.changes() == 0) return Status::not_found(std::move(missing), param);
    return Status::ok();
  }

  Result<bool> tenant_exists(std::string_view name) {
    Result<sql::Statement> st = db.prepare("SELECT 1 FROM tenants WHERE name = ?");
    if (!st) return st.status();
    if (Status s = st->bind_all(name); !s) return s;
    return st->step();
  }

  Result<Tenant> get_tenant(std::string_view name) { return read_tenant_row(db, name); }
};

// A connection of verify_key()'s own, opened on first use, and what it
// last saw of the file.
struct TenantStore::KeyReader {
  std::mutex mu;
  std::optional<sql::Database> db;  // under mu
  std::optional<sql::Statement> version_query, epoch_query;
  int64_t data_version = -1;  // PRAGMA data_version when last asked
  int64_t epoch = -1;         // key_epoch when last read; -1: never

  // Whether a key or tenant may have changed since this reader last asked:
  // cheap when nothing was committed (PRAGMA data_version changes with every
  // commit of another connection, the store's own included); otherwise the
  // key_epoch row says whether the commit touched keys or tenants. True
  // the first time (what others remembered is older than this reader's
  // first look).
  Result<bool> keys_changed(const std::string& path) {
    if (!db) {
      Result<sql::Database> opened = sql::Database::open(path);
      if (!opened) return opened.status();
      Status s = opened->exec("PRAGMA busy_timeout = 5000");
      if (s) s = opened->exec("PRAGMA query_only = 1");
      if (!s) return s;
      db.emplace(std::move(opened).value());
    }
    Result<int64_t> version = query_int(*db, version_query, "PRAGMA data_version");
    if (!version) return version.status();
    if (*version == data_version) return false;
    Result<int64_t> now = query_int(*db, epoch_query, "SELECT n FROM key_epoch");
    if (!now) return now.status();
    data_version = *version;  // only once the epoch is read: a failure asks again
    const bool changed = *now != epoch;
    epoch = *now;
    return changed;
  }
};

TenantStore::TenantStore(std::unique_ptr<Impl> impl, std::string path, const WallClock& clock)
    : impl_(std::move(impl)), path_(std::move(path)), clock_(clock), readers_(new KeyReader[kKeyReaders]) {}
TenantStore::~TenantStore() = default;

int TenantStore::current_schema_version() { return kSchemaVersion; }

Result<std::unique_ptr<TenantStore>> TenantStore::open(const std::string& data_dir, const WallClock& clock) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status::internal("cannot create the data_dir " + data_dir + ": " + ec.message());
  std::string path = (std::filesystem::path(data_dir) / "llmpool.db").string();
  // Secrets live in this file (HMAC secrets, key hashes): owner only. The
  // WAL and shared-memory files SQLite creates take the same mode.
  mode_t old_mask = ::umask(077);
  Result<sql::Database> db = sql::Database::open(path);
  ::umask(old_mask);
  if (!db) return db.status();
  if (::chmod(path.c_str(), 0600) != 0) return Status::internal("cannot make " + path + " private");
  auto impl = std::make_unique<Impl>(Impl{std::move(*db)});
  if (Status s = sql::prepare_store(impl->db, {std::begin(kMigrations), std::end(kMigrations)}); !s) return s;
  return std::unique_ptr<TenantStore>(new TenantStore(std::move(impl), std::move(path), clock));
}

Result<int> TenantStore::schema_version() const {
  std::lock_guard lock(mu_);
  return impl_->version();
}

Status TenantStore::checkpoint() {
  std::lock_guard lock(mu_);
  return impl_->db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

Status TenantStore::add_tenant(const Tenant& tenant) {
  if (Status s = validate_tenant(tenant); !s) return s;
  std::lock_guard lock(mu_);
  int64_t now = clock_.now_unix();
  Result<sql::Statement> st = impl_->db.prepare(std::string("INSERT INTO tenants (") + kTenantColumns +
                                                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st) return st.status();
  Status s = st->bind_all(tenant.name, tenant.plan, tenant.quotas.throughput, tenant.quotas.storage_days,
                          tenant.quotas.max_consumers, encode_list(tenant.allowed_models),
                          encode_list(tenant.route_groups), tenant.max_priority, tenant.requests_per_minute,
                          tenant.tokens_per_minute, tenant.max_concurrent_requests, tenant.daily_token_budget,
                          tenant.monthly_token_budget, now, now);
  if (!s) return s;
  s = st->run();
  if (is_constraint(s)) {
    return Status::invalid_argument("a tenant named " + tenant.name + " already exists", "name",
                                    "already_exists");
  }
  return s;
}

Result<Tenant> TenantStore::get_tenant(std::string_view name) const {
  if (Status s = validate_tenant_name(name); !s) return s;
  std::lock_guard lock(mu_);
  return impl_->get_tenant(name);
}

Result<std::vector<Tenant>> TenantStore::list_tenants() const {
  std::lock_guard lock(mu_);
  Result<sql::Statement> st =
      impl_->db.prepare(std::string("SELECT ") + kTenantColumns + " FROM tenants ORDER BY name");
  if (!st) return st.status();
  return collect_rows<Tenant>(*st, read_tenant);
}

Status TenantStore::update_tenant(const Tenant& tenant) {
  if (Status s = validate_tenant(tenant); !s) return s;
  std::lock_guard lock(mu_);
  Result<sql::Statement> st = impl_->db.prepare(
      "UPDATE tenants SET plan = ?, throughput = ?, storage_days = ?, max_consumers = ?, allowed_models = ?, "
      "route_groups = ?, max_priority = ?, requests_per_minute = ?, tokens_per_minute = ?, "
      "max_concurrent_requests = ?, daily_token_budget = ?, monthly_token_budget = ?, updated_at = ? "
      "WHERE name = ?");
  if (!st) return st.status();
  Status s = st->bind_all(tenant.plan, tenant.quotas.throughput, tenant.quotas.storage_days,
                          tenant.quotas.max_consumers, encode_list(tenant.allowed_models),
                          encode_list(tenant.route_groups), tenant.max_priority, tenant.requests_per_minute,
                          tenant.tokens_per_minute, tenant.max_concurrent_requests, tenant.daily_token_budget,
                          tenant.monthly_token_budget, clock_.now_unix(), tenant.name);
  if (!s) return s;
  forget_keys();  // they carry the tenant's old fields
  if (s = st->run(); !s) return s;
  if (impl_->db.changes() == 0) return Status::not_found("no tenant named " + tenant.name, "name");
  return Status::ok();
}

Status TenantStore::remove_tenant(std::string_view name) {
  if (Status s = validate_tenant_name(name); !s) return s;
  std::lock_guard lock(mu_);
  forget_keys();
  Result<sql::Statement> st = impl_->db.prepare("DELETE FROM tenants WHERE name = ?");
  if (!st) return st.status();
  if (Status s = st->bind_all(name); !s) return s;
  if (Status s = st->run(); !s) return s;
  if (impl_->db.changes() == 0) return Status::not_found("no tenant named " + std::string(name), "name");
  return Status::ok();
}

Result<CreatedApiKey> TenantStore::create_key(const NewApiKey& spec) {
  if (!spec.admin || !spec.tenant.empty()) {
    if (Status s = validate_tenant_name(spec.tenant, "tenant"); !s) return s;
  }
  const std::pair<int64_t, const char*> limits[] = {
      {spec.limits.requests_per_minute, "requests_per_minute"},
      {spec.limits.tokens_per_minute, "tokens_per_minute"},
      {spec.limits.max_concurrent_requests, "max_concurrent_requests"},
  };
  for (const auto& [v, name] : limits) {
    if (Status s = validate_limit(v, name); !s) return s;
  }
  if (spec.expires_at < 0) return Status::invalid_argument("expires_at must not be negative", "expires_at");
  std::lock_guard lock(mu_);
  int64_t now = clock_.now_unix();
  if (spec.expires_at != 0 && spec.expires_at <= now) {
    return Status::invalid_argument("expires_at lies in the past", "expires_at");
  }
  if (!spec.tenant.empty()) {
    Result<Tenant> tenant = impl_->get_tenant(spec.tenant);
    if (!tenant) return tenant.status();
    const std::pair<int64_t, int64_t> pairs[] = {
        {spec.limits.requests_per_minute, tenant->requests_per_minute},
        {spec.limits.tokens_per_minute, tenant->tokens_per_minute},
        {spec.limits.max_concurrent_requests, tenant->max_concurrent_requests},
    };
    for (size_t i = 0; i < std::size(pairs); ++i) {
      auto [key_limit, tenant_limit] = pairs[i];
      if (tenant_limit != 0 && key_limit > tenant_limit) {
        return Status::invalid_argument(std::string(limits[i].second) + " " + std::to_string(key_limit) +
                                            " is above the tenant's " + std::to_string(tenant_limit),
                                        limits[i].second);
      }
    }
  }
  Result<std::string> secret_bytes = random_bytes(kSecretBytes);
  if (!secret_bytes) return secret_bytes.status();
  std::string secret = to_hex(*secret_bytes);
  // A prefix collision (40 random bits) is rare but possible: draw again.
  for (int attempt = 0; attempt < 8; ++attempt) {
    Result<std::string> prefix = random_prefix();
    if (!prefix) return prefix.status();
    Result<sql::Statement> st = impl_->db.prepare(std::string("INSERT INTO api_keys (") + kKeyColumns +
                                                  ", secret_sha256) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)");
    if (!st) return st.status();
    Status s = st->bind_all(*prefix, spec.tenant, spec.admin, now, spec.expires_at, spec.limits.requests_per_minute,
                            spec.limits.tokens_per_minute, spec.limits.max_concurrent_requests,
                            sql::Blob{sha256(secret)});
    if (!s) return s;
    if (spec.tenant.empty()) {
      if (s = st->bind_null(2); !s) return s;
    }
    s = st->run();
    if (is_constraint(s)) continue;
    if (!s) return s;
    CreatedApiKey out;
    out.info.prefix = *prefix;
    out.info.tenant = spec.tenant;
    out.info.admin = spec.admin;
    out.info.created_at = now;
    out.info.expires_at = spec.expires_at;
    out.info.limits = spec.limits;
    out.key = std::string(kKeyTag) + *prefix + "_" + secret;
    return out;
  }
  return Status::internal("could not draw an unused key prefix");
}

Result<std::vector<ApiKeyInfo>> TenantStore::list_keys(std::string_view tenant) const {
  std::lock_guard lock(mu_);
  return impl_->list_for_tenant<ApiKeyInfo>(
      std::string("SELECT ") + kKeyColumns +
          " FROM api_keys WHERE (? = '' OR tenant = ?) ORDER BY created_at, prefix",
      tenant, read_key);
}

Status TenantStore::revoke_key(std::string_view prefix) {
  std::lock_guard lock(mu_);
  forget_keys();
  return impl_->revoke("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE prefix = ?", clock_.now_unix(),
                       prefix, "no API key with prefix " + std::string(prefix), "prefix");
}

Result<VerifiedKey> TenantStore::verify_key(std::string_view key_text) const {
  // llmp_ + 8 + _ + 48: anything else is not one of our keys.
  constexpr size_t kLength = kKeyTag.size() + kPrefixLength + 1 + kSecretBytes * 2;
  auto malformed = [] { return Status::unauthenticated("malformed API key"); };
  if (key_text.size() != kLength || key_text.substr(0, kKeyTag.size()) != kKeyTag) return malformed();
  std::string_view prefix = key_text.substr(kKeyTag.size(), kPrefixLength);
  std::string_view secret = key_text.substr(kKeyTag.size() + kPrefixLength + 1);
  if (key_text[kKeyTag.size() + kPrefixLength] != '_' || !std::all_of(prefix.begin(), prefix.end(), is_prefix_char) ||
      !is_lower_hex(secret)) {
    return malformed();
  }
  std::string presented = sha256(secret);
  auto expired = [&](const ApiKeyInfo& key) { return key.expires_at != 0 && key.expires_at <= clock_.now_unix(); };

  // One of the readers, not the store's mutex: the I/O threads check keys
  // side by side (waiting on one mutex here cost the gateway a context
  // switch a request).
  KeyReader* reader = nullptr;
  std::unique_lock<std::mutex> held = take_reader(reader);
  Result<bool> changed = reader->keys_changed(path_);
  if (!changed) return changed.status();
  if (*changed) forget_keys();
  uint64_t generation = 0;
  {
    std::shared_lock cache(cache_mu_);
    if (auto hit = cached_keys_.find(std::string(prefix)); hit != cached_keys_.end()) {
      if (!constant_time_equal(presented, hit->second.secret_sha256)) return Status::unauthenticated("unknown API key");
      if (expired(hit->second.verified.key)) return Status::unauthenticated("API key expired");
      return hit->second.verified;
    }
    generation = cache_generation_;
  }
  Result<sql::Statement> st =
      reader->db->prepare(std::string("SELECT ") + kKeyColumns + ", secret_sha256 FROM api_keys WHERE prefix = ?");
  if (!st) return st.status();
  if (Status s = st->bind_all(prefix); !s) return s;
  Result<bool> row = st->step();
  if (!row) return row.status();
  // An unknown prefix still pays for one comparison, so its timing tells
  // little more than a wrong secret's.
  std::string stored = *row ? st->column_blob(9) : std::string(presented.size(), '\0');
  bool match = constant_time_equal(presented, stored);
  if (!*row || !match) return Status::unauthenticated("unknown API key");
  VerifiedKey out;
  out.key = read_key(*st);
  st->reset();
  if (out.key.revoked_at) return Status::unauthenticated("API key revoked");
  if (expired(out.key)) return Status::unauthenticated("API key expired");
  out.effective = out.key.limits;
  if (!out.key.tenant.empty()) {
    Result<Tenant> tenant = read_tenant_row(*reader->db, out.key.tenant);
    if (!tenant) return tenant.status();
    out.effective.requests_per_minute =
        effective_limit(out.key.limits.requests_per_minute, tenant->requests_per_minute);
    out.effective.tokens_per_minute = effective_limit(out.key.limits.tokens_per_minute, tenant->tokens_per_minute);
    out.effective.max_concurrent_requests =
        effective_limit(out.key.limits.max_concurrent_requests, tenant->max_concurrent_requests);
    out.tenant = std::move(*tenant);
  }
  std::unique_lock cache(cache_mu_);
  // A forget_keys() since the cache was looked at: what was read may be
  // older than that change (it is still this request's answer).
  if (cache_generation_ != generation) return out;
  if (cached_keys_.size() >= kMaxCachedKeys) cached_keys_.clear();
  cached_keys_[std::string(prefix)] = CachedKey{std::move(stored), out};
  return out;
}

void TenantStore::forget_keys() const {
  std::unique_lock cache(cache_mu_);
  cached_keys_.clear();
  ++cache_generation_;
}

std::unique_lock<std::mutex> TenantStore::take_reader(KeyReader*& reader) const {
  // Each thread starts at its own reader, so with no more threads than
  // readers nobody waits; otherwise the first free one, or the own one.
  static std::atomic<uint32_t> threads{0};
  thread_local const uint32_t own = threads.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < kKeyReaders; ++i) {
    KeyReader& r = readers_[(own + i) % kKeyReaders];
    std::unique_lock<std::mutex> lock(r.mu, std::try_to_lock);
    if (lock.owns_lock()) {
      reader = &r;
      return lock;
    }
  }
  reader = &readers_[own % kKeyReaders];
  return std::unique_lock<std::mutex>(reader->mu);
}

Result<HmacKey> TenantStore::create_hmac_key(std::string_view tenant) {
  if (Status s = validate_tenant_name(tenant, "tenant"); !s) return s;
  std::lock_guard lock(mu_);
  Result<bool> exists = impl_->tenant_exists(tenant);
  if (!exists) return exists.status();
  if (!*exists) return Status::not_found("no tenant named " + std::string(tenant), "tenant");
  Result<std::string> secret = random_bytes(kHmacSecretBytes);
  if (!secret) return secret.status();
  int64_t now = clock_.now_unix();
  for (int attempt = 0; attempt < 8; ++attempt) {
    Result<std::string> id = random_bytes(8);
    if (!id) return id.status();
    HmacKey key;
    key.info.key_id = "hk_" + to_hex(*id);
    key.info.tenant = std::string(tenant);
    key.info.created_at = now;
    key.secret = to_hex(*secret);
    Result<sql::Statement> st =
        impl_->db.prepare("INSERT INTO hmac_keys (key_id, tenant, secret, created_at) VALUES (?, ?, ?, ?)");
    if (!st) return st.status();
    if (Status s = st->bind_all(key.info.key_id, key.info.tenant, key.secret, now); !s) return s;
    Status s = st->run();
    if (is_constraint(s)) continue;
    if (!s) return s;
    return key;
  }
  return Status::internal("could not draw an unused HMAC key id");
}

Result<std::vector<HmacKeyInfo>> TenantStore::list_hmac_keys(std::string_view tenant) const {
  std::lock_guard lock(mu_);
  return impl_->list_for_tenant<HmacKeyInfo>(
      "SELECT key_id, tenant, created_at, revoked_at FROM hmac_keys WHERE (? = '' OR tenant = ?)"
      " ORDER BY created_at, key_id",
      tenant, read_hmac);
}

Status TenantStore::revoke_hmac_key(std::string_view key_id) {
  std::lock_guard lock(mu_);
  return impl_->revoke("UPDATE hmac_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
                       clock_.now_unix(), key_id, "no HMAC key " + std::string(key_id), "key_id");
}

std::string usage_day(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

Status TenantStore::record_usage(const UsageRecord& u) {
  if (Status s = validate_tenant_name(u.tenant, "tenant"); !s) return s;
  if (u.key_id.size() > 256 || u.model.size() > 256 || u.day.size() != 10)
    return Status::invalid_argument("usage: key id and model at most 256 bytes, day YYYY-MM-DD", "usage");
  if (u.requests < 0 || u.prompt_tokens < 0 || u.completion_tokens < 0)
    return Status::invalid_argument("usage: counts cannot be negative", "usage");
  std::lock_guard lock(mu_);
  Result<sql::Statement> st = impl_->db.prepare(
      "INSERT INTO usage (tenant, key_id, model, day, requests, prompt_tokens, completion_tokens)"
      " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, key_id, model, day) DO UPDATE SET"
      " requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
      " completion_tokens = completion_tokens + excluded.completion_tokens");
  if (!st) return st.status();
  if (Status s = st->bind_all(u.tenant, u.key_id, u.model, u.day, u.requests, u.prompt_tokens, u.completion_tokens);
      !s)
    return s;
  return st->run();
}

Result<std::vector<UsageRecord>> TenantStore::usage(std::string_view tenant, std::string_view from_day,
                                                   std::string_view to_day) const {
  std::lock_guard lock(mu_);
  if (!tenant.empty()) {
    if (Status s = validate_tenant_name(tenant, "tenant"); !s) return s;
  }
  Result<sql::Statement> st = impl_->db.prepare(
      "SELECT tenant, key_id, model, day, requests, prompt_tokens, completion_tokens FROM usage"
      " WHERE (? = '' OR tenant = ?) AND (? = '' OR day >= ?) AND (? = '' OR day <= ?)"
      " ORDER BY tenant, day, model, key_id");
  if (!st) return st.status();
  if (Status s = st->bind_all(tenant, tenant, from_day, from_day, to_day, to_day); !s) return s;
  std::vector<UsageRecord> out;
  for (;;) {
    Result<bool> row = st->step();
    if (!row) return row.status();
    if (!*row) break;
    out.push_back({st->column_text(0), st->column_text(1), st->column_text(2), st->column_text(3),
                   st->column_int(4), st->column_int(5), st->column_int(6)});
  }
  return out;
}

Result<HmacKey> TenantStore::hmac_secret(std::string_view key_id) const {
  std::lock_guard lock(mu_);
  Result<sql::Statement> st =
      impl_->db.prepare("SELECT key_id, tenant, created_at, revoked_at, secret FROM hmac_keys WHERE key_id = ?");
  if (!st) return st.status();
  if (Status s = st->bind_all(key_id); !s) return s;
  Result<bool> row = st->step();
  if (!row) return row.status();
  if (!*row) return Status::unauthenticated("unknown HMAC key id");
  HmacKey key;
  key.info = read_hmac(*st);
  if (key.info.revoked_at) return Status::unauthenticated("HMAC key revoked");
  key.secret = st->column_text(4);
  return key;
}

}  // namespace llmpool::tenancy
