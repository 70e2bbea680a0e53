#include "tenancy/tenant_store.h"

#include <sys/stat.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "tenancy/tenancy_test_util.h"

namespace llmpool::tenancy {
namespace {

using testing::TempDir;

Tenant acme() {
  Tenant t;
  t.name = "acme";
  t.plan = "paid";
  t.quotas = {"100rps", 30, 4};
  t.allowed_models = {"tiny", "qwen2.5:0.5b"};
  t.route_groups = {"default"};
  t.max_priority = 5;
  t.requests_per_minute = 600;
  t.tokens_per_minute = 100000;
  t.max_concurrent_requests = 8;
  t.daily_token_budget = 1000000;
  t.monthly_token_budget = 20000000;
  return t;
}

NewApiKey spec(std::string tenant, int64_t expires_at = 0, KeyLimits limits = {}, bool admin = false) {
  NewApiKey k;
  k.tenant = std::move(tenant);
  k.expires_at = expires_at;
  k.limits = limits;
  k.admin = admin;
  return k;
}

// Reads one query's single text/int result through a separate connection.
std::string query_one(const std::string& db_path, const char* sql) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  std::string out = "<error>";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    out = t ? reinterpret_cast<const char*>(t) : "<null>";
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

class TenantStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = open(); }
  std::unique_ptr<TenantStore> open() {
    Result<std::unique_ptr<TenantStore>> s = TenantStore::open(dir_.path() + "/data", clock_);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(s).value() : nullptr;
  }
  std::string db_path() const { return dir_.path() + "/data/llmpool.db"; }

  TempDir dir_;
  ManualWallClock clock_;
  std::unique_ptr<TenantStore> store_;
};

TEST_F(TenantStoreTest, MigratesAnEmptyFolderToTheCurrentSchemaInWalMode) {
  ASSERT_NE(store_, nullptr);
  Result<int> v = store_->schema_version();
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(*v, TenantStore::current_schema_version());
  EXPECT_GE(TenantStore::current_schema_version(), 2);
  EXPECT_EQ(query_one(db_path(), "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(query_one(db_path(), "SELECT count(*) FROM schema_version"), "1");
  struct stat st{};
  ASSERT_EQ(::stat(db_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(TenantStoreTest, ReopeningKeepsDataAndChangesNothing) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  store_.reset();
  store_ = open();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(*store_->schema_version(), TenantStore::current_schema_version());
  EXPECT_EQ(query_one(db_path(), "SELECT count(*) FROM schema_version"), "1");
  Result<Tenant> t = store_->get_tenant("acme");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->plan, "paid");
}

TEST_F(TenantStoreTest, MigratesAVersionOneDatabaseForward) {
  store_.reset();
  // Roll the file back to what version 1 wrote: only the tenants table.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE api_keys; DROP TABLE hmac_keys; DROP TABLE usage; DROP TABLE key_epoch;"
                         " DROP TRIGGER key_epoch_tenant_update; DROP TRIGGER key_epoch_tenant_delete;"
                         " UPDATE schema_version SET version = 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  store_ = open();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(*store_->schema_version(), TenantStore::current_schema_version());
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  EXPECT_TRUE(store_->create_key(spec("acme")).is_ok());
}

TEST_F(TenantStoreTest, RefusesADatabaseFromANewerBuild) {
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  Result<std::unique_ptr<TenantStore>> s = TenantStore::open(dir_.path() + "/data", clock_);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnimplemented);
}

TEST_F(TenantStoreTest, AddGetListUpdateRemove) {
  Tenant a = acme();
  ASSERT_TRUE(store_->add_tenant(a).is_ok());
  Tenant g;
  g.name = "globex";
  g.plan = "free";
  g.allowed_models = {"tiny"};
  g.requests_per_minute = 5;
  ASSERT_TRUE(store_->add_tenant(g).is_ok());

  Result<Tenant> got = store_->get_tenant("acme");
  ASSERT_TRUE(got.is_ok());
  EXPECT_EQ(got->quotas.throughput, "100rps");
  EXPECT_EQ(got->quotas.storage_days, 30);
  EXPECT_EQ(got->quotas.max_consumers, 4);
  EXPECT_EQ(got->allowed_models, a.allowed_models);
  EXPECT_EQ(got->route_groups, a.route_groups);
  EXPECT_EQ(got->max_priority, 5);
  EXPECT_EQ(got->requests_per_minute, 600);
  EXPECT_EQ(got->tokens_per_minute, 100000);
  EXPECT_EQ(got->max_concurrent_requests, 8);
  EXPECT_EQ(got->daily_token_budget, 1000000);
  EXPECT_EQ(got->monthly_token_budget, 20000000);
  EXPECT_EQ(got->created_at, clock_.now_unix());
  EXPECT_TRUE(got->allows_model("tiny"));
  EXPECT_FALSE(got->allows_model("other"));

  Result<std::vector<Tenant>> all = store_->list_tenants();
  ASSERT_TRUE(all.is_ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "acme");
  EXPECT_EQ((*all)[1].name, "globex");

  clock_.advance(60);
  g.requests_per_minute = 50;
  g.allowed_models = {"*"};
  ASSERT_TRUE(store_->update_tenant(g).is_ok());
  got = store_->get_tenant("globex");
  ASSERT_TRUE(got.is_ok());
  EXPECT_EQ(got->requests_per_minute, 50);
  EXPECT_TRUE(got->allows_model("anything"));
  EXPECT_EQ(got->updated_at, got->created_at + 60);

  ASSERT_TRUE(store_->remove_tenant("globex").is_ok());
  EXPECT_EQ(store_->get_tenant("globex").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->remove_tenant("globex").code(), StatusCode::kNotFound);
  Tenant missing = g;
  missing.name = "nobody";
  EXPECT_EQ(store_->update_tenant(missing).code(), StatusCode::kNotFound);
}

TEST_F(TenantStoreTest, EmptyTextAndEmptyListsRoundTrip) {
  // An empty string_view has a null data(); it must bind as '' and not NULL.
  Tenant t;
  t.name = "bare";
  ASSERT_TRUE(store_->add_tenant(t).is_ok());
  Result<Tenant> got = store_->get_tenant("bare");
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(got->plan, "");
  EXPECT_TRUE(got->allowed_models.empty());
  EXPECT_FALSE(got->allows_model("tiny"));  // empty allows none
}

TEST_F(TenantStoreTest, RefusesADuplicateTenant) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Status s = store_->add_tenant(acme());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.error_code(), "already_exists");
  EXPECT_EQ(s.param(), "name");
}

TEST_F(TenantStoreTest, ValidatesNamesAndFields) {
  const char* bad[] = {"", "Acme", "a b", "a.b", "a/b", "x' OR 1=1 --", "é"};
  for (const char* name : bad) {
    Tenant t = acme();
    t.name = name;
    Status s = store_->add_tenant(t);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.param(), "name") << name;
  }
  EXPECT_TRUE(validate_tenant_name(std::string(64, 'a')).is_ok());
  EXPECT_FALSE(validate_tenant_name(std::string(65, 'a')).is_ok());
  EXPECT_TRUE(validate_tenant_name("a-b_9").is_ok());

  Tenant t = acme();
  t.requests_per_minute = -1;
  EXPECT_EQ(store_->add_tenant(t).param(), "requests_per_minute");
  t = acme();
  t.max_priority = 1001;
  EXPECT_EQ(store_->add_tenant(t).param(), "max_priority");
  t = acme();
  t.allowed_models = {""};
  EXPECT_EQ(store_->add_tenant(t).param(), "allowed_models");
  Result<std::vector<Tenant>> all = store_->list_tenants();
  ASSERT_TRUE(all.is_ok());
  EXPECT_TRUE(all->empty());
}

TEST_F(TenantStoreTest, SqlInjectionShapedTextStaysData) {
  Tenant t = acme();
  t.plan = "x' OR 1=1 --";
  t.allowed_models = {"'); DROP TABLE tenants; --", "\" OR \"\"=\""};
  t.quotas.throughput = "1; DELETE FROM api_keys";
  ASSERT_TRUE(store_->add_tenant(t).is_ok());
  Tenant other = acme();
  other.name = "other";
  ASSERT_TRUE(store_->add_tenant(other).is_ok());

  Result<Tenant> got = store_->get_tenant("acme");
  ASSERT_TRUE(got.is_ok());
  EXPECT_EQ(got->plan, t.plan);
  EXPECT_EQ(got->allowed_models, t.allowed_models);
  EXPECT_EQ(got->quotas.throughput, t.quotas.throughput);
  EXPECT_EQ(store_->list_tenants()->size(), 2u);

  // Lookups with such text find nothing and touch nothing.
  EXPECT_EQ(store_->get_tenant("x' OR 1=1 --").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->revoke_key("x' OR '1'='1").code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->hmac_secret("' OR 1=1 --").status().code(), StatusCode::kUnauthenticated);
  Result<CreatedApiKey> key = store_->create_key(spec("acme"));
  ASSERT_TRUE(key.is_ok());
  std::string forged = "llmp_' OR 1=_" + std::string(48, 'a');
  EXPECT_EQ(store_->verify_key(forged).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->list_keys()->size(), 1u);
  EXPECT_FALSE(store_->list_keys()->front().revoked_at.has_value());
}

TEST_F(TenantStoreTest, CreatesAndVerifiesAKey) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> k = store_->create_key(spec("acme", 0, {60, 0, 0}));
  ASSERT_TRUE(k.is_ok()) << k.status().to_string();
  ASSERT_EQ(k->key.size(), 5u + 8u + 1u + 48u);
  EXPECT_EQ(k->key.substr(0, 5), "llmp_");
  EXPECT_EQ(k->key.substr(5, 8), k->info.prefix);
  EXPECT_EQ(k->key[13], '_');

  Result<VerifiedKey> v = store_->verify_key(k->key);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->key.prefix, k->info.prefix);
  EXPECT_EQ(v->key.tenant, "acme");
  EXPECT_FALSE(v->key.admin);
  ASSERT_TRUE(v->tenant.has_value());
  EXPECT_EQ(v->tenant->name, "acme");
  EXPECT_EQ(v->effective.requests_per_minute, 60);
  EXPECT_EQ(v->effective.tokens_per_minute, 100000);  // the tenant's
  EXPECT_EQ(v->effective.max_concurrent_requests, 8);

  // One changed secret digit, a changed prefix, junk: all refused.
  std::string wrong = k->key;
  wrong.back() = wrong.back() == 'a' ? 'b' : 'a';
  EXPECT_EQ(store_->verify_key(wrong).status().code(), StatusCode::kUnauthenticated);
  std::string other_prefix = k->key;
  other_prefix[5] = other_prefix[5] == 'a' ? 'b' : 'a';
  EXPECT_EQ(store_->verify_key(other_prefix).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->verify_key("").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->verify_key(k->key + "0").status().code(), StatusCode::kUnauthenticated);
}

TEST_F(TenantStoreTest, TwoKeysAreDifferent) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> a = store_->create_key(spec("acme"));
  Result<CreatedApiKey> b = store_->create_key(spec("acme"));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_NE(a->key, b->key);
  EXPECT_NE(a->info.prefix, b->info.prefix);
  EXPECT_EQ(store_->list_keys("acme")->size(), 2u);
}

TEST_F(TenantStoreTest, RevokedKeysFail) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> k = store_->create_key(spec("acme"));
  ASSERT_TRUE(k.is_ok());
  ASSERT_TRUE(store_->revoke_key(k->info.prefix).is_ok());
  Result<VerifiedKey> v = store_->verify_key(k->key);
  EXPECT_EQ(v.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(v.status().message(), "API key revoked");
  Result<std::vector<ApiKeyInfo>> keys = store_->list_keys();
  ASSERT_TRUE(keys.is_ok());
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ(keys->front().revoked_at, clock_.now_unix());
  EXPECT_TRUE(store_->revoke_key(k->info.prefix).is_ok());  // twice is fine
  EXPECT_EQ(store_->revoke_key("zzzzzzzz").code(), StatusCode::kNotFound);
}

// verify_key() answers good keys from memory; a revoke or a tenant change
// made in the same store, or by another connection to the file (the CLI,
// another server), is seen by the very next call.
TEST_F(TenantStoreTest, RememberedKeysFollowEveryWriteToTheFile) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> a = store_->create_key(spec("acme"));
  Result<CreatedApiKey> b = store_->create_key(spec("acme"));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE(store_->verify_key(a->key).is_ok());
  ASSERT_TRUE(store_->verify_key(b->key).is_ok());
  // A wrong secret on a remembered prefix is still refused.
  std::string wrong = a->key;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  EXPECT_EQ(store_->verify_key(wrong).status().message(), "unknown API key");

  std::unique_ptr<TenantStore> cli = open();  // a second connection, as `llmpool keys revoke` opens
  ASSERT_NE(cli, nullptr);
  ASSERT_TRUE(cli->revoke_key(a->info.prefix).is_ok());
  EXPECT_EQ(store_->verify_key(a->key).status().message(), "API key revoked");

  Tenant cut = acme();
  cut.requests_per_minute = 7;
  ASSERT_TRUE(cli->update_tenant(cut).is_ok());
  Result<VerifiedKey> v = store_->verify_key(b->key);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->tenant->requests_per_minute, 7);
  EXPECT_EQ(v->effective.requests_per_minute, 7);

  cut.requests_per_minute = 5;  // the same store's own write
  ASSERT_TRUE(store_->update_tenant(cut).is_ok());
  EXPECT_EQ(store_->verify_key(b->key)->effective.requests_per_minute, 5);

  ASSERT_TRUE(cli->remove_tenant("acme").is_ok());
  EXPECT_EQ(store_->verify_key(b->key).status().code(), StatusCode::kUnauthenticated);
}

// The cache is kept through commits that change no key or tenant (usage is
// written every second): verify_key() reads the trigger-kept key_epoch, not
// every commit. Shown by a change that bypasses the triggers: it stays
// unseen until a counted change comes.
TEST_F(TenantStoreTest, RememberedKeysOutliveCommitsThatChangeNoKey) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> a = store_->create_key(spec("acme"));
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE(store_->verify_key(a->key).is_ok());
  EXPECT_EQ(query_one(db_path(), "SELECT n FROM key_epoch"), "0");

  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw,
                         "DROP TRIGGER key_epoch_key_update;"
                         "UPDATE api_keys SET revoked_at = 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(raw);
  std::unique_ptr<TenantStore> other = open();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->record_usage({"acme", a->info.prefix, "tiny", "2026-12-03", 1, 2, 3}).is_ok());
  EXPECT_TRUE(store_->verify_key(a->key).is_ok());  // remembered: no counted change

  ASSERT_TRUE(other->update_tenant(acme()).is_ok());  // counted: the tenants trigger
  EXPECT_EQ(query_one(db_path(), "SELECT n FROM key_epoch"), "1");
  EXPECT_EQ(store_->verify_key(a->key).status().message(), "API key revoked");
}

// Threads checking keys side by side (each on its own connection) all see a
// revoke made by another connection as soon as it is committed.
TEST_F(TenantStoreTest, EveryThreadSeesARevokeAtOnce) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> a = store_->create_key(spec("acme"));
  ASSERT_TRUE(a.is_ok());
  std::unique_ptr<TenantStore> cli = open();
  ASSERT_NE(cli, nullptr);
  std::atomic<bool> revoked{false};
  std::atomic<int> stale{0}, checks{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 400; ++i) {
        const bool after = revoked.load();
        Result<VerifiedKey> v = store_->verify_key(a->key);
        checks.fetch_add(1);
        if (after && v.is_ok()) stale.fetch_add(1);
        if (!after && !v.is_ok() && v.status().message() != "API key revoked") stale.fetch_add(1);
      }
    });
  }
  while (checks.load() < 600) std::this_thread::yield();
  ASSERT_TRUE(cli->revoke_key(a->info.prefix).is_ok());
  revoked.store(true);
  for (auto& t : threads) t.join();
  EXPECT_EQ(stale.load(), 0);
  EXPECT_EQ(store_->verify_key(a->key).status().message(), "API key revoked");
}

TEST_F(TenantStoreTest, KeysExpireByTheInjectedClock) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  int64_t now = clock_.now_unix();
  Result<CreatedApiKey> k = store_->create_key(spec("acme", now + 3600));
  ASSERT_TRUE(k.is_ok());
  clock_.advance(3599);
  EXPECT_TRUE(store_->verify_key(k->key).is_ok());
  clock_.advance(1);
  Result<VerifiedKey> v = store_->verify_key(k->key);
  EXPECT_EQ(v.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(v.status().message(), "API key expired");
  EXPECT_EQ(store_->create_key(spec("acme", clock_.now_unix())).status().param(), "expires_at");
}

TEST_F(TenantStoreTest, RefusesKeyLimitsAboveTheTenantsAndEnforcesLaterCuts) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> over = store_->create_key(spec("acme", 0, {0, 100001, 0}));
  ASSERT_FALSE(over.is_ok());
  EXPECT_EQ(over.status().param(), "tokens_per_minute");
  EXPECT_EQ(store_->create_key(spec("acme", 0, {0, 0, 9})).status().param(),
            "max_concurrent_requests");
  Result<CreatedApiKey> k = store_->create_key(spec("acme", 0, {500, 0, 0}));
  ASSERT_TRUE(k.is_ok());
  Tenant cut = acme();
  cut.requests_per_minute = 100;
  ASSERT_TRUE(store_->update_tenant(cut).is_ok());
  Result<VerifiedKey> v = store_->verify_key(k->key);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->key.limits.requests_per_minute, 500);
  EXPECT_EQ(v->effective.requests_per_minute, 100);
}

TEST_F(TenantStoreTest, AdminKeysNeedNoTenant) {
  Result<CreatedApiKey> k = store_->create_key(spec("", 0, {}, true));
  ASSERT_TRUE(k.is_ok()) << k.status().to_string();
  Result<VerifiedKey> v = store_->verify_key(k->key);
  ASSERT_TRUE(v.is_ok());
  EXPECT_TRUE(v->key.admin);
  EXPECT_TRUE(v->key.tenant.empty());
  EXPECT_FALSE(v->tenant.has_value());
  EXPECT_EQ(store_->create_key(spec("")).status().param(), "tenant");  // a tenant key needs a tenant
  EXPECT_EQ(store_->create_key(spec("nobody")).status().code(), StatusCode::kNotFound);
}

TEST_F(TenantStoreTest, TheDatabaseNeverHoldsTheKeyText) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> k = store_->create_key(spec("acme"));
  ASSERT_TRUE(k.is_ok());
  std::string secret = k->key.substr(14);
  std::string row = query_one(db_path(),
                              "SELECT prefix || '|' || tenant || '|' || hex(secret_sha256) FROM api_keys");
  EXPECT_EQ(row.find(secret), std::string::npos);
  EXPECT_EQ(row.find(k->key), std::string::npos);
  // The stored hash is SHA-256 of the secret, not the secret.
  EXPECT_EQ(query_one(db_path(), "SELECT lower(hex(secret_sha256)) FROM api_keys"), to_hex(sha256(secret)));
  // Nor any file SQLite wrote, before or after the WAL is checkpointed.
  for (int pass = 0; pass < 2; ++pass) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::string bytes = testing::read_all(db_path() + suffix);
      EXPECT_EQ(bytes.find(secret), std::string::npos) << suffix;
      EXPECT_EQ(bytes.find(secret.substr(0, 16)), std::string::npos) << suffix;
    }
    ASSERT_TRUE(store_->checkpoint().is_ok());
  }
}

TEST_F(TenantStoreTest, RemovingATenantRemovesItsKeys) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Tenant other = acme();
  other.name = "other";
  ASSERT_TRUE(store_->add_tenant(other).is_ok());
  Result<CreatedApiKey> k = store_->create_key(spec("acme"));
  Result<CreatedApiKey> keep = store_->create_key(spec("other"));
  Result<HmacKey> h = store_->create_hmac_key("acme");
  ASSERT_TRUE(k.is_ok() && keep.is_ok() && h.is_ok());
  ASSERT_TRUE(store_->remove_tenant("acme").is_ok());
  EXPECT_EQ(store_->verify_key(k->key).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->hmac_secret(h->info.key_id).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(store_->list_keys("acme")->empty());
  EXPECT_TRUE(store_->list_hmac_keys("acme")->empty());
  EXPECT_TRUE(store_->verify_key(keep->key).is_ok());
}

TEST_F(TenantStoreTest, HmacKeysAreCreatedListedAndRevoked) {
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<HmacKey> h = store_->create_hmac_key("acme");
  ASSERT_TRUE(h.is_ok()) << h.status().to_string();
  EXPECT_EQ(h->info.key_id.substr(0, 3), "hk_");
  EXPECT_EQ(h->info.key_id.size(), 19u);
  EXPECT_EQ(h->secret.size(), 64u);
  Result<HmacKey> got = store_->hmac_secret(h->info.key_id);
  ASSERT_TRUE(got.is_ok());
  EXPECT_EQ(got->secret, h->secret);
  EXPECT_EQ(got->info.tenant, "acme");
  EXPECT_EQ(store_->list_hmac_keys()->size(), 1u);
  ASSERT_TRUE(store_->revoke_hmac_key(h->info.key_id).is_ok());
  EXPECT_EQ(store_->hmac_secret(h->info.key_id).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(store_->create_hmac_key("nobody").status().code(), StatusCode::kNotFound);
}

TEST_F(TenantStoreTest, TwoStoresOnOneFileSeeEachOthersWrites) {
  std::unique_ptr<TenantStore> second = open();
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(store_->add_tenant(acme()).is_ok());
  Result<CreatedApiKey> k = second->create_key(spec("acme"));
  ASSERT_TRUE(k.is_ok()) << k.status().to_string();
  EXPECT_TRUE(store_->verify_key(k->key).is_ok());
}

TEST_F(TenantStoreTest, ConcurrentCallsFromManyThreadsAllLand) {
  constexpr int kThreads = 4, kPerThread = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        Tenant x = acme();
        x.name = "t" + std::to_string(t) + "-" + std::to_string(i);
        if (!store_->add_tenant(x).is_ok()) ++failures;
        Result<CreatedApiKey> k = store_->create_key(spec(x.name));
        if (!k.is_ok() || !store_->verify_key(k->key).is_ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store_->list_tenants()->size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(store_->list_keys()->size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace llmpool::tenancy
