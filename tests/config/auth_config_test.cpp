// The tenancy part of the config: data_dir, auth (JWT, HMAC), tenants and
// metrics_listen, with file:line for every bad value, and the exposure rule
// (no auth on a non-loopback host only when explicitly allowed).
#include <gtest/gtest.h>

#include <tuple>

#include "config/config.h"

namespace llmpool::config {
namespace {

const char* kModels = R"(
models:
  - name: tiny
    path: /m/tiny.gguf
  - name: small
    path: /m/small.gguf
routing:
  groups:
    - name: pair
      models: [tiny, small]
)";

LoadResult parse(const std::string& head) { return parse_config(head + kModels, "/etc/llmpool/a.yaml", false); }

const ConfigIssue* find_issue(const LoadResult& r, const std::string& field) {
  for (const auto& i : r.issues)
    if (i.field == field) return &i;
  return nullptr;
}

TEST(AuthConfigTest, WithoutTenancyNothingChanges) {
  LoadResult r = parse("");
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  EXPECT_FALSE(r.config.auth.enabled);
  EXPECT_TRUE(r.config.data_dir.empty());
  EXPECT_TRUE(r.config.tenants.empty());
  EXPECT_TRUE(check_exposure(r.config).is_ok());
}

TEST(AuthConfigTest, ReadsEveryField) {
  LoadResult r = parse(R"(
data_dir: data
metrics_listen: 127.0.0.1:9100
auth:
  enabled: true
  allow_unauthenticated_non_loopback: false
  hmac: {enabled: true}
  jwt:
    algorithm: HS256
    hs256_secret_env: LLMPOOL_JWT_SECRET
    issuer: llmpool-demo
    audience: llmpool
    tenant_claim: org
    leeway_s: 60
tenants:
  - name: acme
    plan: paid
    throughput: standard
    storage_days: 30
    max_consumers: 4
    models: ["*"]
    route_groups: [pair, auto]
    max_priority: 5
    requests_per_minute: 600
    tokens_per_minute: 100000
    max_concurrent_requests: 8
    daily_token_budget: 1000000
    monthly_token_budget: 20000000
  - name: globex
    models: [tiny]
)");
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const Config& c = r.config;
  EXPECT_EQ(c.data_dir, "/etc/llmpool/data");
  EXPECT_EQ(c.metrics_listen, "127.0.0.1:9100");
  EXPECT_TRUE(c.auth.enabled);
  EXPECT_TRUE(c.auth.hmac_enabled);
  EXPECT_EQ(c.auth.jwt.hs256_secret_env, "LLMPOOL_JWT_SECRET");
  EXPECT_EQ(c.auth.jwt.issuer, "llmpool-demo");
  EXPECT_EQ(c.auth.jwt.audience, "llmpool");
  EXPECT_EQ(c.auth.jwt.tenant_claim, "org");
  EXPECT_EQ(c.auth.jwt.leeway_s, 60);
  ASSERT_EQ(c.tenants.size(), 2u);
  const TenantConfig& a = c.tenants[0];
  EXPECT_EQ(a.name, "acme");
  EXPECT_EQ(a.plan, "paid");
  EXPECT_EQ(a.throughput, "standard");
  EXPECT_EQ(a.storage_days, 30);
  EXPECT_EQ(a.max_consumers, 4);
  EXPECT_EQ(a.allowed_models, std::vector<std::string>{"*"});
  EXPECT_EQ(a.route_groups, (std::vector<std::string>{"pair", "auto"}));
  EXPECT_EQ(a.max_priority, 5);
  EXPECT_EQ(a.requests_per_minute, 600);
  EXPECT_EQ(a.tokens_per_minute, 100000);
  EXPECT_EQ(a.max_concurrent_requests, 8);
  EXPECT_EQ(a.daily_token_budget, 1000000);
  EXPECT_EQ(a.monthly_token_budget, 20000000);
  EXPECT_EQ(a.line, 16);
  EXPECT_EQ(c.tenants[1].allowed_models, std::vector<std::string>{"tiny"});
}

TEST(AuthConfigTest, BadValuesAreReportedWithTheirLine) {
  LoadResult r = parse(R"(
auth:
  enabled: maybe
  jwt:
    algorithm: none
    hs256_secret_env: "s3cr3t value"
    leeway_s: 61
  sso: true
tenants:
  - name: Acme!
    models: [nope]
    route_groups: [nogroup]
    max_priority: 5000
    requests_per_minute: -1
  - name: dup
  - name: dup
  - plan: nameless
metrics_listen: 9100
)");
  ASSERT_FALSE(r.ok());
  struct Want {
    const char* field;
    int line;
    const char* text;
  };
  for (const Want& w : {Want{"auth.enabled", 3, "true or false"}, Want{"auth.jwt.algorithm", 5, "HS256, RS256"},
                        Want{"auth.jwt.hs256_secret_env", 6, "environment variable name"},
                        Want{"auth.jwt.leeway_s", 7, "between 0 and 60"}, Want{"auth.sso", 8, "unknown field"},
                        Want{"tenants[0].name", 10, "a-z"}, Want{"tenants[0].models[0]", 11, "unknown model 'nope'"},
                        Want{"tenants[0].route_groups[0]", 12, "unknown route group 'nogroup'"},
                        Want{"tenants[0].max_priority", 13, "between -1000 and 1000"},
                        Want{"tenants[0].requests_per_minute", 14, "between 0"},
                        Want{"tenants[2].name", 16, "duplicate tenant name 'dup'"},
                        Want{"tenants[3].name", 17, "is required"},
                        Want{"metrics_listen", 18, "host:port"}}) {
    const ConfigIssue* i = find_issue(r, w.field);
    ASSERT_NE(i, nullptr) << w.field;
    EXPECT_EQ(i->line, w.line) << w.field;
    EXPECT_NE(i->message.find(w.text), std::string::npos) << w.field << ": " << i->message;
  }
}

TEST(AuthConfigTest, ReadsTheRateLimiterAndReportsItsBadValuesWithTheirLine) {
  LoadResult good = parse(R"(
rate_limits:
  url: redis://127.0.0.1:6379
  fail_open: true
  lease_ttl_ms: 5000
  pool_size: 16
  allotment_ms: 250
)");
  ASSERT_TRUE(good.ok()) << good.issues.front().to_string();
  EXPECT_EQ(good.config.rate_limits.url, "redis://127.0.0.1:6379");
  EXPECT_TRUE(good.config.rate_limits.fail_open);
  EXPECT_EQ(good.config.rate_limits.lease_ttl_ms, 5000);
  EXPECT_EQ(good.config.rate_limits.pool_size, 16);
  EXPECT_EQ(parse("").config.rate_limits.pool_size, 4);
  EXPECT_EQ(good.config.rate_limits.allotment_ms, 250);
  EXPECT_EQ(parse("").config.rate_limits.allotment_ms, 0);

  LoadResult bad = parse(R"(
rate_limits:
  url: http://127.0.0.1:6379
  lease_ttl_ms: 10
  pool_size: 65
  allotment_ms: 20000
)");
  ASSERT_FALSE(bad.ok());
  for (auto [field, line, text] : {std::tuple{"rate_limits.url", 3, "redis://"},
                                   std::tuple{"rate_limits.lease_ttl_ms", 4, "between 1000"},
                                   std::tuple{"rate_limits.pool_size", 5, "between 1 and 64"},
                                   std::tuple{"rate_limits.allotment_ms", 6, "between 0 and 10000"}}) {
    const ConfigIssue* i = find_issue(bad, field);
    ASSERT_NE(i, nullptr) << field;
    EXPECT_EQ(i->line, line) << field;
    EXPECT_NE(i->message.find(text), std::string::npos) << field << ": " << i->message;
  }
}

TEST(AuthConfigTest, JwtNeedsTheKeySourceOfItsAlgorithm) {
  for (const char* jwt : {"{algorithm: HS256}", "{algorithm: RS256, hs256_secret_env: S}",
                          "{algorithm: HS256, hs256_secret_env: S, jwks_file: /k.json}",
                          "{algorithm: ES256, public_key_file: /a.pem, jwks_file: /k.json}"}) {
    LoadResult r = parse(std::string("auth:\n  jwt: ") + jwt + "\n");
    EXPECT_NE(find_issue(r, "auth.jwt"), nullptr) << jwt;
  }
  LoadResult ok = parse("auth:\n  jwt: {algorithm: RS256, public_keys: keys/jwt.pem}\n");
  ASSERT_TRUE(ok.ok()) << ok.issues.front().to_string();
  EXPECT_EQ(ok.config.auth.jwt.public_key_file, "/etc/llmpool/keys/jwt.pem");
  // With files checked, a missing key file is named.
  LoadResult missing =
      parse_config(std::string("auth:\n  jwt: {algorithm: ES256, jwks_file: /no/such/jwks.json}\n") + kModels,
                   "a.yaml", true);
  const ConfigIssue* i = find_issue(missing, "auth.jwt.jwks_file");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->line, 2);
}

TEST(AuthConfigTest, AuthNeedsACredentialStore) {
  LoadResult r = parse("auth: {enabled: true}\n");
  EXPECT_NE(find_issue(r, "auth.enabled"), nullptr);
  r = parse("data_dir: /tmp/x\nauth: {enabled: true}\n");
  EXPECT_TRUE(r.ok());
  r = parse("auth: {enabled: true, hmac: {enabled: true}, jwt: {hs256_secret_env: S}}\n");
  EXPECT_NE(find_issue(r, "auth.hmac.enabled"), nullptr);
}

TEST(AuthConfigTest, RefusesNoAuthOnANonLoopbackHostUnlessAllowed) {
  LoadResult r = parse("server: {host: 0.0.0.0}\n");
  ASSERT_TRUE(r.ok());
  Status st = check_exposure(r.config);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("0.0.0.0"), std::string::npos);
  EXPECT_EQ(st.param(), "server.host");
  r = parse("server: {host: 0.0.0.0}\nauth: {allow_unauthenticated_non_loopback: true}\n");
  EXPECT_TRUE(check_exposure(r.config).is_ok());
  r = parse("server: {host: 10.1.2.3}\ndata_dir: /d\nauth: {enabled: true}\n");
  EXPECT_TRUE(check_exposure(r.config).is_ok());
  for (const char* host : {"127.0.0.1", "127.3.4.5", "::1", "localhost"}) EXPECT_TRUE(is_loopback_host(host)) << host;
  for (const char* host : {"0.0.0.0", "::", "10.0.0.1", "127.0.0.1.evil", "127.x.0.1", "localhost.example", ""})
    EXPECT_FALSE(is_loopback_host(host)) << host;
}

TEST(AuthConfigTest, SplitsHostAndPort) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(split_host_port("127.0.0.1:9100", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9100);
  ASSERT_TRUE(split_host_port("[::1]:80", &host, &port));
  EXPECT_EQ(host, "::1");
  for (const char* bad : {"9100", ":9100", "h:", "h:0", "h:65536", "h:99999999999", "h:9x", "[::1:80", "[]:80"})
    EXPECT_FALSE(split_host_port(bad, &host, &port)) << bad;
}

}  // namespace
}  // namespace llmpool::config
