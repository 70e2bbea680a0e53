// Authentication and authorization through the HTTP route table: the real
// Authenticator over a real TenantStore (SQLite in a temp dir), a real
// JwtVerifier and HmacVerifier under a manual wall clock, in front of the
// OpenAI, routing and admin tenant routes over scripted fake providers.
#include "api/auth.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <stdlib.h>
#include <thread>

#include "api/openai_routes.h"
#include "api/routing_routes.h"
#include "api/tenant_routes.h"
#include "ratelimit/local_limiter.h"
#include "ratelimit/redis_limiter.h"
#include "ratelimit/redis_server.h"
#include "router/fake_directory.h"
#include "tenancy/tenancy_test_util.h"

namespace llmpool::api {
namespace {

using namespace std::chrono_literals;
using ensemble::testing::answer;
using nlohmann::json;
using router::testing::FakeDirectory;
using router::testing::model;
using tenancy::testing::TempDir;

const char* kSecretEnv = "LLMPOOL_AUTH_TEST_SECRET";
const std::string kSecret = "0123456789abcdef0123456789abcdef-test-secret";

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv(kSecretEnv, kSecret.c_str(), 1);
    for (auto m : {model("tiny", {"general"}), model("small", {"general"})}) {
      cfg_.models.push_back(m);
      providers_[m.name] = dir_->add(m, {answer("hello from " + m.name, 0)});
    }
    config::RouteGroupConfig g;
    g.name = "pair";
    g.models = {"tiny", "small"};
    config::RouteGroupConfig vote = g;  // both members answer every request
    vote.name = "vote";
    vote.strategy = "voting";
    cfg_.routing.groups = {g, vote};
    cfg_.data_dir = tmp_.path();
    cfg_.auth.enabled = true;
    cfg_.auth.hmac_enabled = true;
    cfg_.auth.jwt.hs256_secret_env = kSecretEnv;
    cfg_.auth.jwt.issuer = "llmpool-test";
    cfg_.auth.jwt.audience = "llmpool";
    config::TenantConfig acme;
    acme.name = "acme";
    acme.plan = "paid";
    acme.allowed_models = {"*"};
    acme.route_groups = {"*"};
    acme.max_priority = 10;
    config::TenantConfig globex;
    globex.name = "globex";
    globex.plan = "free";
    globex.allowed_models = {"tiny"};
    globex.max_priority = 0;
    config::TenantConfig tight;  // rate limited
    tight.name = "tight";
    tight.allowed_models = {"tiny"};
    tight.requests_per_minute = 2;
    tight.tokens_per_minute = 1000;
    config::TenantConfig budget;
    budget.name = "budget";
    budget.allowed_models = {"tiny"};
    budget.daily_token_budget = 100;
    config::TenantConfig tokens;
    tokens.name = "tokens";
    tokens.allowed_models = {"tiny"};
    tokens.tokens_per_minute = 1000;
    cfg_.tenants = {acme, globex, tight, budget, tokens};

    auto store = tenancy::TenantStore::open(tmp_.path(), clock_);
    ASSERT_TRUE(store.is_ok()) << store.status().message();
    store_ = std::move(store).value();
    ASSERT_TRUE(sync_yaml_tenants(*store_, cfg_.tenants).is_ok());
    auto auth = Authenticator::create(cfg_, store_, clock_);
    ASSERT_TRUE(auth.is_ok()) << auth.status().message();
    auth_ = std::move(auth).value();

    router::RouterService::Options o;
    o.clock = &qclock_;
    o.timer = &timer_;
    o.metrics = &metrics_;
    auto s = router::RouterService::create(cfg_, dir_, o);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    service_ = std::move(s).value();
    router_.set_guard([a = auth_](const HttpRequest& r) { return a->guard(r); });
    recorder_ = std::make_shared<tenancy::UsageRecorder>(store_, std::chrono::hours(1), clock_);
    add_openai_routes(router_, dir_, metrics_, service_,
                      {routes_limiter_ ? routes_limiter_ : std::shared_ptr<ratelimit::Limiter>(limiter_), recorder_});
    add_routing_routes(router_, service_);
    add_tenant_routes(router_, auth_, recorder_);

    acme_key_ = key_for("acme");
    globex_key_ = key_for("globex");
    tenancy::NewApiKey admin;
    admin.admin = true;
    admin_key_ = store_->create_key(admin).value().key;
  }

  void TearDown() override { unsetenv(kSecretEnv); }

  std::string key_for(const std::string& tenant) {
    tenancy::NewApiKey k;
    k.tenant = tenant;
    auto created = store_->create_key(k);
    EXPECT_TRUE(created.is_ok()) << created.status().message();
    return created.is_ok() ? created->key : "";
  }

  HttpResponse call(const std::string& method, const std::string& target, const std::string& body = "",
                    std::map<std::string, std::string> headers = {}) {
    HttpRequest req;
    req.method = method;
    req.target = target;
    req.path = target.substr(0, target.find('?'));
    req.body = body;
    req.headers = std::move(headers);
    return send(req);
  }

  HttpResponse send(const HttpRequest& req) {
    auto w = std::make_shared<BufferedResponseWriter>();
    router_.dispatch(req, w);
    for (int i = 0; i < 100 && !w->finished(); ++i) timer_.advance(10ms);
    // An admission through Redis answers from the limiter's thread.
    for (int i = 0; i < 5000 && routes_limiter_ && !w->finished(); ++i) {
      std::this_thread::sleep_for(1ms);
      timer_.advance(1ms);
    }
    EXPECT_TRUE(w->finished());
    return w->response();
  }

  // A request made inside the process (a batch line) with its principal set.
  HttpResponse call_as(std::shared_ptr<const Principal> principal, const std::string& target, const std::string& body) {
    HttpRequest req;
    req.method = "POST";
    req.target = target;
    req.path = target;
    req.body = body;
    req.principal = std::move(principal);
    return send(req);
  }

  // Tenant "tight" (2 requests a minute) with `key`: two answered with
  // OpenAI's x-ratelimit-* headers, the third refused with 429 before the
  // model sees it.
  void expect_two_then_429(const std::string& key) {
    for (int i = 0; i < 2; ++i) {
      HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":16)"), bearer(key));
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.headers["x-ratelimit-limit-requests"], "2");
      EXPECT_EQ(r.headers["x-ratelimit-remaining-requests"], std::to_string(1 - i));
      EXPECT_EQ(r.headers["x-ratelimit-limit-tokens"], "1000");
      EXPECT_EQ(r.headers.count("x-ratelimit-reset-requests"), 1u);
    }
    const int calls = providers_["tiny"]->calls();
    HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":16)"), bearer(key));
    ASSERT_EQ(r.status, 429) << r.body;
    json e = json::parse(r.body)["error"];
    EXPECT_EQ(e["code"], "rate_limit_exceeded");
    EXPECT_EQ(e["type"], "rate_limit_error");
    EXPECT_GE(std::stoi(r.headers["Retry-After"]), 1);
    EXPECT_EQ(r.headers["x-ratelimit-remaining-requests"], "0");
    EXPECT_EQ(providers_["tiny"]->calls(), calls);  // the model never saw it
  }

  static std::map<std::string, std::string> bearer(const std::string& token) {
    return {{"authorization", "Bearer " + token}};
  }

  static std::string chat(const std::string& model, const std::string& extra = "") {
    return R"({"model":")" + model + R"(","messages":[{"role":"user","content":"hi"}])" + extra + "}";
  }

  json claims(const std::string& tenant) const {
    return {{"tenant", tenant}, {"iss", "llmpool-test"}, {"aud", "llmpool"}, {"sub", "user-1"},
            {"exp", clock_.now_unix() + 600}};
  }

  std::map<std::string, std::string> signed_headers(const tenancy::HmacKey& k, const std::string& method,
                                                    const std::string& target, const std::string& body,
                                                    int64_t ts) {
    std::string t = std::to_string(ts);
    return {{"x-llmpool-key-id", k.info.key_id},
            {"x-llmpool-timestamp", t},
            {"x-llmpool-signature", tenancy::hmac_sign(k.secret, method, target, t, body)}};
  }

  static void expect_unauthenticated(const HttpResponse& r, const std::string& why = "") {
    EXPECT_EQ(r.status, 401) << r.body;
    json j = json::parse(r.body);
    EXPECT_EQ(j["error"]["code"], "invalid_api_key") << r.body;
    EXPECT_EQ(j["error"]["type"], "authentication_error") << r.body;
    EXPECT_EQ(r.headers.count("WWW-Authenticate"), 1u);
    if (!why.empty()) {
      EXPECT_NE(r.body.find(why), std::string::npos) << r.body;
    }
  }

  TempDir tmp_;
  tenancy::ManualWallClock clock_;
  qos::ManualClock qclock_;
  qos::ManualTimer timer_{qclock_};
  std::shared_ptr<FakeDirectory> dir_ = std::make_shared<FakeDirectory>(timer_);
  std::map<std::string, std::shared_ptr<ensemble::testing::FakeProvider>> providers_;
  obs::MetricsRegistry metrics_;
  config::Config cfg_;
  std::shared_ptr<tenancy::TenantStore> store_;
  std::shared_ptr<Authenticator> auth_;
  std::shared_ptr<tenancy::UsageRecorder> recorder_;
  ratelimit::ManualClock rclock_;
  std::shared_ptr<ratelimit::LocalLimiter> limiter_ = std::make_shared<ratelimit::LocalLimiter>(rclock_);
  std::shared_ptr<ratelimit::Limiter> routes_limiter_;  // set before SetUp: the routes' limiter instead
  std::shared_ptr<router::RouterService> service_;
  HttpRouter router_;
  std::string acme_key_, globex_key_, admin_key_;
};

TEST_F(AuthenticatorTest, EveryRouteButHealthRefusesARequestWithoutCredentials) {
  auto routes = router_.registered();
  ASSERT_GE(routes.size(), 10u);
  int walked = 0;
  for (auto [method, path] : routes) {
    if (!path.empty() && path.back() == '*') path.pop_back(), path += "acme";
    HttpResponse r = call(method, path, "{}");
    ++walked;
    if (path == "/health") {
      EXPECT_EQ(r.status, 200) << method << " " << path;
      continue;
    }
    SCOPED_TRACE(method + " " + path);
    expect_unauthenticated(r, "no credentials");
    // A wrong key, and a JWT-looking token, are refused the same way.
    expect_unauthenticated(call(method, path, "{}", bearer("llmp_aaaaaaaa_" + std::string(48, '0'))));
    expect_unauthenticated(call(method, path, "{}", bearer("a.b.c")));
  }
  EXPECT_EQ(walked, static_cast<int>(routes.size()));
  // Unknown paths too: nothing about the route table leaks without credentials.
  expect_unauthenticated(call("GET", "/v1/nope"));
}

TEST_F(AuthenticatorTest, ApiKeysWorkAsBearerAndAsXApiKey) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny"), bearer(acme_key_));
  ASSERT_EQ(r.status, 200) << r.body;
  r = call("POST", "/v1/chat/completions", chat("tiny"), {{"x-api-key", acme_key_}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = call("POST", "/v1/chat/completions", chat("tiny"), {{"authorization", "bearer   " + acme_key_ + " "}});
  ASSERT_EQ(r.status, 200) << r.body;
  // The tenant rides on the request to the provider, from the key and never from the body.
  r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"tenant":"globex","user":"globex")"), bearer(acme_key_));
  auto p = providers_["tiny"];
  EXPECT_EQ(p->request(static_cast<size_t>(p->calls() - 1)).tenant, "acme");
}

TEST_F(AuthenticatorTest, BadApiKeysAreRefused) {
  std::string wrong = acme_key_;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(wrong)), "unknown API key");
  expect_unauthenticated(call("GET", "/v1/models", "", bearer("llmp_short")), "malformed");
  expect_unauthenticated(call("GET", "/v1/models", "", {{"authorization", "Basic " + acme_key_}}), "Bearer");
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(std::string(100000, 'x'))));
  // Revoked.
  std::string k = key_for("acme");
  ASSERT_EQ(call("GET", "/v1/models", "", bearer(k)).status, 200);
  ASSERT_TRUE(store_->revoke_key(k.substr(5, 8)).is_ok());
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(k)), "revoked");
  // Expired.
  tenancy::NewApiKey spec;
  spec.tenant = "acme";
  spec.expires_at = clock_.now_unix() + 60;
  std::string e = store_->create_key(spec).value().key;
  ASSERT_EQ(call("GET", "/v1/models", "", bearer(e)).status, 200);
  clock_.advance(61);
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(e)), "expired");
}

TEST_F(AuthenticatorTest, AdminRoutesNeedAnAdminKey) {
  for (const char* path : {"/metrics", "/api/routing-metrics", "/admin/tenants", "/admin/keys"}) {
    SCOPED_TRACE(path);
    HttpResponse r = call("GET", path, "", bearer(acme_key_));
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_EQ(json::parse(r.body)["error"]["code"], "permission_denied");
    EXPECT_EQ(call("GET", path, "", bearer(admin_key_)).status, 200);
  }
  // A JWT or a signed request is never an admin credential.
  std::string jwt = tenancy::testing::sign_hs256({{"alg", "HS256"}, {"typ", "JWT"}}, claims("acme"), kSecret);
  EXPECT_EQ(call("GET", "/admin/keys", "", bearer(jwt)).status, 403);
}

TEST_F(AuthenticatorTest, JwtsAreCheckedForSignatureExpiryAudienceAndAlgorithm) {
  using tenancy::testing::sign_hs256;
  const json hs = {{"alg", "HS256"}, {"typ", "JWT"}};
  std::string good = sign_hs256(hs, claims("globex"), kSecret);
  HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny"), bearer(good));
  ASSERT_EQ(r.status, 200) << r.body;
  auto p = providers_["tiny"];
  EXPECT_EQ(p->request(static_cast<size_t>(p->calls() - 1)).tenant, "globex");
  // A JWT is a bearer token: presenting it again within its life is its use, not a replay.
  EXPECT_EQ(call("GET", "/v1/models", "", bearer(good)).status, 200);

  json expired = claims("globex");
  expired["exp"] = clock_.now_unix() - 120;
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(sign_hs256(hs, expired, kSecret))), "expired");
  json aud = claims("globex");
  aud["aud"] = "someone-else";
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(sign_hs256(hs, aud, kSecret))), "aud");
  json iss = claims("globex");
  iss["iss"] = "evil";
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(sign_hs256(hs, iss, kSecret))));
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(sign_hs256(hs, claims("globex"), kSecret + "x"))));
  // alg none, and a token claiming another algorithm.
  std::string none = tenancy::testing::b64json({{"alg", "none"}}) + "." + tenancy::testing::b64json(claims("acme")) + ".";
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(none)));
  expect_unauthenticated(
      call("GET", "/v1/models", "", bearer(sign_hs256({{"alg", "HS512"}}, claims("acme"), kSecret))));
  // A tenant that does not exist, and no exp.
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(sign_hs256(hs, claims("initech"), kSecret))), "tenant");
  json no_exp = claims("acme");
  no_exp.erase("exp");
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(sign_hs256(hs, no_exp, kSecret))));
}

TEST_F(AuthenticatorTest, Rs256RefusesAnHs256TokenSignedWithItsPublicKey) {
  auto key = tenancy::testing::make_rsa_key();
  std::string pem = tenancy::testing::public_pem(key.get());
  config::Config c = cfg_;
  c.auth.jwt = {};
  c.auth.jwt.algorithm = "RS256";
  c.auth.jwt.public_key_file = tmp_.write("jwt.pem", pem);
  ASSERT_TRUE(auth_->apply(c).is_ok());  // what a reload does
  const json rs = {{"alg", "RS256"}, {"typ", "JWT"}};
  json cl = claims("acme");
  cl.erase("iss");
  cl.erase("aud");
  EXPECT_EQ(call("GET", "/v1/models", "", bearer(tenancy::testing::sign_with(rs, cl, key.get()))).status, 200);
  expect_unauthenticated(
      call("GET", "/v1/models", "", bearer(tenancy::testing::sign_hs256({{"alg", "HS256"}}, cl, pem))));
  auto other = tenancy::testing::make_rsa_key();
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(tenancy::testing::sign_with(rs, cl, other.get()))));
  // A reload that cannot read its key keeps the verifier it had.
  c.auth.jwt.public_key_file = tmp_.file("missing.pem");
  EXPECT_FALSE(auth_->apply(c).is_ok());
  EXPECT_EQ(call("GET", "/v1/models", "", bearer(tenancy::testing::sign_with(rs, cl, key.get()))).status, 200);
}

TEST_F(AuthenticatorTest, SignedRequestsAreCheckedAndAcceptedOnce) {
  tenancy::HmacKey k = store_->create_hmac_key("globex").value();
  const std::string target = "/v1/chat/completions?trace=1";
  const std::string body = chat("tiny");
  auto h = signed_headers(k, "POST", target, body, clock_.now_unix());
  HttpResponse r = call("POST", target, body, h);
  ASSERT_EQ(r.status, 200) << r.body;
  auto p = providers_["tiny"];
  EXPECT_EQ(p->request(static_cast<size_t>(p->calls() - 1)).tenant, "globex");
  expect_unauthenticated(call("POST", target, body, h), "replayed");
  // The body, the query string and the method are covered.
  auto h2 = signed_headers(k, "POST", target, body, clock_.now_unix() + 1);
  expect_unauthenticated(call("POST", target, chat("small"), h2), "wrong HMAC signature");
  expect_unauthenticated(call("POST", "/v1/chat/completions?trace=2", body, h2), "wrong HMAC signature");
  // Stale and future timestamps.
  expect_unauthenticated(call("POST", target, body, signed_headers(k, "POST", target, body, clock_.now_unix() - 301)),
                         "window");
  expect_unauthenticated(call("POST", target, body, signed_headers(k, "POST", target, body, clock_.now_unix() + 301)),
                         "window");
  // Another key's secret.
  tenancy::HmacKey other = store_->create_hmac_key("acme").value();
  auto forged = signed_headers(other, "POST", target, body, clock_.now_unix() + 2);
  forged["x-llmpool-key-id"] = k.info.key_id;
  expect_unauthenticated(call("POST", target, body, forged));
  ASSERT_TRUE(store_->revoke_hmac_key(k.info.key_id).is_ok());
  expect_unauthenticated(call("POST", target, body, signed_headers(k, "POST", target, body, clock_.now_unix() + 3)),
                         "revoked");
}

TEST_F(AuthenticatorTest, ATenantReachesOnlyItsModels) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("small"), bearer(globex_key_));
  EXPECT_EQ(r.status, 404) << r.body;
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["code"], "model_not_found");
  EXPECT_EQ(e["param"], "model");
  // The same answer as for a model that does not exist.
  HttpResponse missing = call("POST", "/v1/chat/completions", chat("nope"), bearer(globex_key_));
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(json::parse(missing.body)["error"]["code"], "model_not_found");
  // Route groups and auto need a grant too.
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("pair"), bearer(globex_key_)).status, 404);
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("auto"), bearer(globex_key_)).status, 404);
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("pair"), bearer(acme_key_)).status, 200);
  EXPECT_EQ(call("POST", "/v1/completions", R"({"model":"small","prompt":"x"})", bearer(globex_key_)).status, 404);
  EXPECT_EQ(call("POST", "/tokenize", R"({"model":"small","content":"x"})", bearer(globex_key_)).status, 404);
  EXPECT_EQ(call("POST", "/v1/embeddings", R"({"model":"small","input":"x"})", bearer(globex_key_)).status, 404);
  EXPECT_EQ(providers_["small"]->calls(), 0);

  auto names = [&](const std::string& key) {
    std::vector<std::string> out;
    const json list = json::parse(call("GET", "/v1/models", "", bearer(key)).body);
    for (const auto& m : list["data"]) out.push_back(m["id"].get<std::string>());
    return out;
  };
  EXPECT_EQ(names(globex_key_), std::vector<std::string>{"tiny"});
  EXPECT_EQ(names(acme_key_), (std::vector<std::string>{"tiny", "small"}));
}

TEST_F(AuthenticatorTest, PriorityIsCappedAtTheTenantsMaximum) {
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("tiny", R"(,"priority":50)"), bearer(globex_key_)).status, 200);
  auto p = providers_["tiny"];
  EXPECT_EQ(p->request(static_cast<size_t>(p->calls() - 1)).priority, 0);
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("tiny", R"(,"priority":50)"), bearer(acme_key_)).status, 200);
  EXPECT_EQ(p->request(static_cast<size_t>(p->calls() - 1)).priority, 10);
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("tiny", R"(,"priority":-5)"), bearer(acme_key_)).status, 200);
  EXPECT_EQ(p->request(static_cast<size_t>(p->calls() - 1)).priority, -5);
}

TEST_F(AuthenticatorTest, ATenantRatesOnlyItsOwnResponses) {
  for (const char* model : {"tiny", "pair"}) {  // direct and routed answers
    SCOPED_TRACE(model);
    HttpResponse r = call("POST", "/v1/chat/completions", chat(model), bearer(acme_key_));
    ASSERT_EQ(r.status, 200) << r.body;
    std::string id = json::parse(r.body)["id"];
    std::string fb = R"({"response_id":")" + id + R"(","helpful":true})";
    HttpResponse other = call("POST", "/v1/feedback", fb, bearer(globex_key_));
    EXPECT_EQ(other.status, 404) << other.body;
    EXPECT_EQ(call("POST", "/v1/feedback", fb, bearer(acme_key_)).status, 200);
  }
}

TEST_F(AuthenticatorTest, AdminsManageTenantsAndKeysOverHttp) {
  auto admin = bearer(admin_key_);
  HttpResponse r = call("POST", "/admin/tenants", R"({"name":"initech","plan":"trial","models":["small"]})", admin);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(json::parse(r.body)["source"], "database");
  r = call("POST", "/admin/keys", R"({"tenant":"initech"})", admin);
  ASSERT_EQ(r.status, 201) << r.body;
  std::string key = json::parse(r.body)["key"];
  std::string id = json::parse(r.body)["id"];
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("small"), bearer(key)).status, 200);
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("tiny"), bearer(key)).status, 404);
  r = call("PATCH", "/admin/tenants/initech", R"({"models":["tiny"]})", admin);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("tiny"), bearer(key)).status, 200);
  // The key list never shows a secret.
  r = call("GET", "/admin/keys", "", admin);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body.find(key.substr(14)), std::string::npos);
  EXPECT_EQ(call("DELETE", "/admin/keys/" + id, "", admin).status, 200);
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(key)), "revoked");
  // YAML tenants are read-only here; bad bodies name their field.
  r = call("PATCH", "/admin/tenants/acme", R"({"max_priority":100})", admin);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(call("DELETE", "/admin/tenants/globex", "", admin).status, 403);
  r = call("POST", "/admin/tenants", R"({"name":"Bad Name!"})", admin);
  EXPECT_EQ(r.status, 400) << r.body;
  r = call("POST", "/admin/tenants", R"({"name":"ok","max_priority":"high"})", admin);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "max_priority") << r.body;
  r = call("POST", "/admin/keys", R"({"tenant":"initech","requests_per_minute":-1})", admin);
  EXPECT_EQ(r.status, 400) << r.body;
  r = call("POST", "/admin/keys", std::string(100, '[') + std::string(100, ']'), admin);
  EXPECT_EQ(r.status, 400) << r.body;
  r = call("POST", "/admin/keys", R"({"tenant":"globex","hmac":true})", admin);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(json::parse(r.body)["secret"].get<std::string>().size(), 64u);
  EXPECT_EQ(call("DELETE", "/admin/tenants/initech", "", admin).status, 200);
  expect_unauthenticated(call("GET", "/v1/models", "", bearer(key)));
}

TEST_F(AuthenticatorTest, YamlTenantsWinOverTheDatabase) {
  // Someone changed acme in the database behind the config's back.
  tenancy::Tenant t = store_->get_tenant("acme").value();
  t.allowed_models = {};
  ASSERT_TRUE(store_->update_tenant(t).is_ok());
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("small"), bearer(acme_key_)).status, 200);
  ASSERT_TRUE(sync_yaml_tenants(*store_, cfg_.tenants).is_ok());
  EXPECT_EQ(store_->get_tenant("acme").value().allowed_models, std::vector<std::string>{"*"});
}

TEST_F(AuthenticatorTest, AnEnsembleCountsOnceWithEachMembersTokens) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("vote"), bearer(acme_key_));
  ASSERT_EQ(r.status, 200) << r.body;
  // The answer's own usage is its winner's (OpenAI's shape) ...
  EXPECT_EQ(json::parse(r.body)["usage"]["completion_tokens"], 5);
  // ... the tenant's usage has one request and both members' tokens.
  json u = json::parse(call("GET", "/v1/usage", "", bearer(acme_key_)).body);
  EXPECT_EQ(u["total"]["requests"], 1) << u.dump();
  EXPECT_EQ(u["total"]["prompt_tokens"], 20) << u.dump();
  EXPECT_EQ(u["total"]["completion_tokens"], 10) << u.dump();
  std::set<std::string> models;
  for (const auto& row : u["data"]) {
    models.insert(row["model"].get<std::string>());
    EXPECT_EQ(row["prompt_tokens"], 10) << row.dump();
  }
  EXPECT_EQ(models, (std::set<std::string>{"tiny", "small"}));
}

TEST_F(AuthenticatorTest, ATenantSeesOnlyItsOwnUsage) {
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("tiny"), bearer(acme_key_)).status, 200);
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("small"), bearer(acme_key_)).status, 200);
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("tiny"), bearer(globex_key_)).status, 200);
  // Refused requests are not counted.
  ASSERT_EQ(call("POST", "/v1/chat/completions", chat("small"), bearer(globex_key_)).status, 404);
  HttpResponse r = call("GET", "/v1/usage", "", bearer(globex_key_));
  ASSERT_EQ(r.status, 200) << r.body;
  json u = json::parse(r.body);
  ASSERT_EQ(u["data"].size(), 1u) << r.body;
  EXPECT_EQ(u["data"][0]["tenant"], "globex");
  EXPECT_EQ(u["data"][0]["model"], "tiny");
  EXPECT_EQ(u["data"][0]["key_id"], globex_key_.substr(5, 8));
  EXPECT_EQ(u["data"][0]["day"], "2026-01-01");
  EXPECT_EQ(u["total"]["requests"], 1);
  EXPECT_EQ(u["total"]["prompt_tokens"], 10);
  EXPECT_EQ(u["total"]["completion_tokens"], 5);
  u = json::parse(call("GET", "/v1/usage", "", bearer(acme_key_)).body);
  EXPECT_EQ(u["total"]["requests"], 2);
  for (const auto& row : u["data"]) EXPECT_EQ(row["tenant"], "acme");
  // Admins see everyone's, or one tenant's; tenants cannot.
  EXPECT_EQ(call("GET", "/admin/usage", "", bearer(acme_key_)).status, 403);
  u = json::parse(call("GET", "/admin/usage", "", bearer(admin_key_)).body);
  EXPECT_EQ(u["total"]["requests"], 3);
  u = json::parse(call("GET", "/admin/usage?tenant=globex", "", bearer(admin_key_)).body);
  EXPECT_EQ(u["total"]["requests"], 1);
  u = json::parse(call("GET", "/v1/usage?from=2026-01-02", "", bearer(acme_key_)).body);
  EXPECT_EQ(u["total"]["requests"], 0);
  EXPECT_EQ(call("GET", "/v1/usage?from=yesterday", "", bearer(acme_key_)).status, 400);
  EXPECT_EQ(call("GET", "/admin/usage?tenant=Bad%20Name", "", bearer(admin_key_)).status, 400);
  // Kept in SQLite: a fresh store over the same folder reads it back.
  auto again = tenancy::TenantStore::open(tmp_.path(), clock_);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ((*again)->usage("acme").value().size(), 2u);
}

TEST_F(AuthenticatorTest, RateLimitsAnswer429WithOpenAisHeaders) {
  const std::string key = key_for("tight");
  expect_two_then_429(key);
  // Another tenant is not affected; the bucket refills with time.
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("tiny"), bearer(globex_key_)).status, 200);
  rclock_.advance(std::chrono::seconds(31));
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":16)"), bearer(key)).status, 200);
}

// The same routes with the Redis limiter, as serve runs them: admissions
// answer from the limiter's threads (admit_async), finishes are queued; with
// the parameter above 0, requests are admitted from allotments (slices of
// the limits taken from Redis, rate_limits.allotment_ms) in process.
class AuthenticatorRedisTest : public AuthenticatorTest, public ::testing::WithParamInterface<int> {
 protected:
  void SetUp() override {
    ASSERT_EQ(redis_.start(), "");
    ratelimit::Options o;
    o.url = redis_.url();
    o.async_finish = true;
    o.pool_size = 2;
    o.allotment = std::chrono::milliseconds(GetParam());
    auto l = ratelimit::RedisLimiter::create(o);
    ASSERT_TRUE(l.is_ok()) << l.status().message();
    redis_limiter_ = std::shared_ptr<ratelimit::RedisLimiter>(std::move(l).value());
    routes_limiter_ = redis_limiter_;
    AuthenticatorTest::SetUp();
  }
  // Stopped before the routes (which hold the limiter) go: the limiter's last writes then fail at once.
  ratelimit::testing::RedisServer redis_;
  std::shared_ptr<ratelimit::RedisLimiter> redis_limiter_;
};

INSTANTIATE_TEST_SUITE_P(AllotmentMs, AuthenticatorRedisTest, ::testing::Values(0, 200));

TEST_P(AuthenticatorRedisTest, RateLimitsHoldAndEveryAdmissionIsFinished) {
  const std::string key = key_for("tight");
  expect_two_then_429(key);

  // Many at once, from several threads: every one answered, every admission finished.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto w = std::make_shared<BufferedResponseWriter>();
        HttpRequest req;
        req.method = "POST";
        req.target = req.path = "/v1/chat/completions";
        req.body = chat("tiny", R"(,"max_tokens":16)");
        req.headers = bearer(acme_key_);
        router_.dispatch(req, w);
        for (int n = 0; n < 5000 && !w->finished(); ++n) std::this_thread::sleep_for(1ms);
        if (w->finished() && w->response().status == 200) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
  redis_limiter_->wait_for_finishes();
  EXPECT_EQ(redis_limiter_->open_tickets(), 0u);

  // Redis gone: the limiter fails closed, with a 503 that says why.
  redis_.kill();
  HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":16)"), bearer(key));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("rate limits cannot be checked"), std::string::npos) << r.body;
}

TEST_F(AuthenticatorTest, TokenReservationsAreReconciledWithRealUsage) {
  // Each request reserves about 400 tokens of the 1000 per minute but uses 15
  // (the fake's usage): without reconciliation the third would be refused.
  const std::string key = key_for("tokens");
  for (int i = 0; i < 2; ++i) {
    HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":400)"), bearer(key));
    ASSERT_EQ(r.status, 200) << r.body;
  }
  HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":400)"), bearer(key));
  EXPECT_EQ(r.status, 200) << r.body;
  // A request larger than the whole per-minute token limit is refused at once.
  rclock_.advance(std::chrono::seconds(60));
  r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":5000)"), bearer(key));
  EXPECT_EQ(r.status, 429) << r.body;
  // Without max_tokens the reservation is the model's context (4096 here): too much for 1000 a minute.
  r = call("POST", "/v1/chat/completions", chat("tiny"), bearer(key));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(limiter_->open_tickets(), 0u);  // every admission was finished
}

TEST_F(AuthenticatorTest, BudgetsAnswerInsufficientQuotaAndRefusedRequestsCostNothing) {
  const std::string key = key_for("budget");
  // Refused before admission (a model it may not use): nothing is charged.
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(call("POST", "/v1/chat/completions", chat("small", R"(,"max_tokens":60)"), bearer(key)).status, 404);
  HttpResponse r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":60)"), bearer(key));
  ASSERT_EQ(r.status, 200) << r.body;  // reserves ~65 of 100, uses 15
  r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":60)"), bearer(key));
  ASSERT_EQ(r.status, 200) << r.body;  // 15 + ~65 fit in 100
  r = call("POST", "/v1/chat/completions", chat("tiny", R"(,"max_tokens":90)"), bearer(key));
  ASSERT_EQ(r.status, 429) << r.body;  // 30 used + ~95 do not
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "insufficient_quota");
}

TEST(RouteAccessTest, OnlyHealthIsOpenAndOperatorRoutesAreAdmin) {
  EXPECT_EQ(route_access("/health"), Access::kOpen);
  for (const char* p : {"/metrics", "/admin/keys", "/admin", "/api/models/x/load", "/api/capacity-status"})
    EXPECT_EQ(route_access(p), Access::kAdmin) << p;
  for (const char* p : {"/v1/models", "/health/", "/healthz", "//health", "/HEALTH", "/v1/chat/completions", "/"})
    EXPECT_EQ(route_access(p), Access::kTenant) << p;
}

}  // namespace
}  // namespace llmpool::api

namespace llmpool::api {
namespace {

// Batch lines run as their batch's tenant (serve: route_dispatch with
// principal_for_tenant): its models and limits hold, a removed tenant's
// lines are refused, and a batch made without a tenant runs as an admin.
TEST_F(AuthenticatorTest, BatchLinesRunAsTheirTenant) {
  auto globex = auth_->principal_for_tenant("globex");
  ASSERT_NE(globex, nullptr);
  EXPECT_EQ(globex->tenant_name(), "globex");
  EXPECT_FALSE(globex->admin);
  EXPECT_EQ(call_as(globex, "/v1/chat/completions", chat("tiny")).status, 200);
  HttpResponse denied = call_as(globex, "/v1/chat/completions", chat("small"));
  EXPECT_EQ(denied.status, 404) << denied.body;
  EXPECT_NE(denied.body.find("model_not_found"), std::string::npos);

  EXPECT_EQ(auth_->principal_for_tenant("no-such-tenant"), nullptr);
  // Without a principal the line meets the guard like any request.
  HttpResponse refused = call_as(nullptr, "/v1/chat/completions", chat("tiny"));
  EXPECT_EQ(refused.status, 401);

  auto admin = auth_->principal_for_tenant("");
  ASSERT_NE(admin, nullptr);
  EXPECT_TRUE(admin->admin);
  EXPECT_EQ(call_as(admin, "/v1/chat/completions", chat("small")).status, 200);
}

}  // namespace
}  // namespace llmpool::api
