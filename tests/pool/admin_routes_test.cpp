#include "api/admin_routes.h"

#include <gtest/gtest.h>

#include <thread>

#include "pool/pool_test_util.h"

namespace llmpool::api {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using pool::testing::acquire_now;
using pool::testing::FakeMaker;
using pool::testing::ModelFiles;

class AdminRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config::Config cfg;
    cfg.pool.memory_budget_bytes = 5000;
    cfg.pool.watchdog_free_memory_percent = 0;
    for (const char* n : {"a", "org/b"}) {
      config::ModelConfig m;
      m.name = n;
      m.path = files_.make(n == std::string("a") ? "a" : "b", 1000);
      m.parallel = 2;
      m.max_queue = 7;
      m.keep_alive_ms = 30000;
      cfg.models.push_back(m);
    }
    cfg.models[1].pinned = true;
    pool::ModelPool::Options o;
    o.make_provider = maker_.fn();
    o.housekeeping_thread = false;
    pool_ = std::make_shared<pool::ModelPool>(cfg, std::move(o));
    pool_->start();
    add_admin_routes(router_, pool_);
  }
  HttpResponse call(const std::string& method, const std::string& path) {
    HttpRequest req;
    req.method = method;
    req.path = req.target = path;
    auto w = std::make_shared<BufferedResponseWriter>();
    router_.dispatch(req, w);
    for (int i = 0; i < 500 && !w->finished(); ++i) std::this_thread::sleep_for(10ms);
    return w->response();
  }

  ModelFiles files_;
  FakeMaker maker_;
  std::shared_ptr<pool::ModelPool> pool_;
  HttpRouter router_;
};

TEST_F(AdminRoutesTest, CapacityStatusDescribesEveryModel) {
  auto a = acquire_now(*pool_, "a");
  ASSERT_TRUE(a.is_ok());
  HttpResponse r = call("GET", "/api/capacity-status");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["models"].size(), 2u);
  const json& m = j["models"][0];
  EXPECT_EQ(m["name"], "a");
  EXPECT_EQ(m["state"], "ready");
  EXPECT_EQ(m["memory_bytes"], 1000);
  EXPECT_EQ(m["active"], 1);  // the lease held above
  EXPECT_EQ(m["queued"], 0);
  EXPECT_EQ(m["parallel"], 2);
  EXPECT_EQ(m["max_queue"], 7);
  EXPECT_EQ(m["keep_alive"], "30s");
  EXPECT_EQ(m["pinned"], false);
  EXPECT_TRUE(m["last_used"].is_number());
  EXPECT_TRUE(m["error"].is_null());
  const json& b = j["models"][1];
  EXPECT_EQ(b["name"], "org/b");
  EXPECT_EQ(b["state"], "unloaded");
  EXPECT_EQ(b["pinned"], true);
  EXPECT_EQ(b["memory_bytes"], 0);
  EXPECT_EQ(j["pool"]["memory_budget_bytes"], 5000);
  EXPECT_EQ(j["pool"]["memory_used_bytes"], 1000);
}

TEST_F(AdminRoutesTest, LoadAndUnloadByNameIncludingNamesWithSlashes) {
  HttpResponse r = call("POST", "/api/models/org/b/load");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["state"], "ready");
  EXPECT_EQ(pool::testing::state_of(*pool_, "org/b"), "ready");
  r = call("POST", "/api/models/org%2Fb/unload");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(pool::testing::state_of(*pool_, "org/b"), "unloaded");
}

TEST_F(AdminRoutesTest, UnloadingABusyModelIs409) {
  auto a = acquire_now(*pool_, "a");
  ASSERT_TRUE(a.is_ok());
  HttpResponse r = call("POST", "/api/models/a/unload");
  EXPECT_EQ(r.status, 409) << r.body;
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["code"], "model_busy");
  EXPECT_NE(e["message"].get<std::string>().find("in flight"), std::string::npos);
  a = Status::internal("released");
  EXPECT_EQ(call("POST", "/api/models/a/unload").status, 200);
}

TEST_F(AdminRoutesTest, UnknownModelsAndPathsAreOpenAiErrors) {
  HttpResponse r = call("POST", "/api/models/nope/load");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "model_not_found");
  EXPECT_EQ(call("POST", "/api/models/a/explode").status, 404);
  EXPECT_EQ(call("GET", "/api/models/a/load").status, 405);
  EXPECT_EQ(call("POST", "/api/models/%zz/load").status, 400);
}

TEST_F(AdminRoutesTest, AFailedLoadReportsItsError) {
  maker_.fail("a", true);
  HttpResponse r = call("POST", "/api/models/a/load");
  EXPECT_EQ(r.status, 503) << r.body;
  json s = json::parse(call("GET", "/api/capacity-status").body);
  EXPECT_EQ(s["models"][0]["state"], "failed");
  EXPECT_NE(s["models"][0]["error"].get<std::string>().find("bad file"), std::string::npos);
}

}  // namespace
}  // namespace llmpool::api
