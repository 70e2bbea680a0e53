#include "router/canary.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

namespace llmpool::router {
namespace {

class CanaryControllerTest : public ::testing::Test {
 protected:
  std::unique_ptr<CanaryController> make(int64_t min_samples = 20) {
    CanaryOptions o;
    o.max_helpful_drop = 0.10;
    o.min_samples = min_samples;
    CanaryRouteConfig code{"code", "coder-stable", "baseline", {{"canary", "coder-next", 5.0}, {"b", "coder-alt", 20.0}}};
    auto r = CanaryController::create({code}, o, random_, [this](const CanaryEvent& e) { events_.push_back(e); });
    EXPECT_TRUE(r) << r.status().to_string();
    return std::move(r).value();
  }
  static std::string user_in(const std::string& route, uint32_t lo, uint32_t hi) {
    for (int i = 0;; ++i) {
      std::string u = "user-" + std::to_string(i);
      uint32_t b = canary_bucket(route, u);
      if (b >= lo && b < hi) return u;
    }
  }
  qos::SeededRandom random_{1234};
  std::vector<CanaryEvent> events_;
};

TEST_F(CanaryControllerTest, Fnv1aMatchesReferenceValues) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST_F(CanaryControllerTest, SameUserAlwaysGetsTheSameArm) {
  auto c = make();
  for (int i = 0; i < 50; ++i) {
    std::string u = "user-" + std::to_string(i);
    auto a = c->assign("code", u);
    for (int k = 0; k < 5; ++k) EXPECT_EQ(c->assign("code", u)->arm, a->arm);
  }
}

TEST_F(CanaryControllerTest, TheTenantChangesOnlyTheKey) {
  EXPECT_EQ(canary_key("", "u1"), "u1");               // without tenancy: the user id, as before
  EXPECT_EQ(canary_key("acme", ""), "");               // without a user id: a random bucket, as before
  EXPECT_EQ(canary_key("acme", "u1"), std::string("acme\0u1", 7));
  EXPECT_EQ(canary_bucket("code", canary_key("acme", "u1")), canary_bucket("code", std::string("acme\0u1", 7)));

  // The same user id in two tenants is two users: stable within a tenant,
  // and not always the same arm across tenants.
  auto c = make();
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    std::string u = "user-" + std::to_string(i);
    auto acme = c->assign("code", canary_key("acme", u));
    auto globex = c->assign("code", canary_key("globex", u));
    EXPECT_EQ(acme->bucket, canary_bucket("code", canary_key("acme", u)));
    EXPECT_EQ(c->assign("code", canary_key("acme", u))->arm, acme->arm);
    EXPECT_EQ(c->assign("code", canary_key("globex", u))->arm, globex->arm);
    if (acme->arm != globex->arm) ++differ;
  }
  EXPECT_GT(differ, 0);
}

TEST_F(CanaryControllerTest, SlicesFollowThePercentages) {
  auto c = make();
  std::map<std::string, int> n;
  for (int i = 0; i < 20000; ++i) ++n[c->assign("code", "u" + std::to_string(i))->arm];
  EXPECT_NEAR(n["canary"] / 20000.0, 0.05, 0.01);
  EXPECT_NEAR(n["b"] / 20000.0, 0.20, 0.015);
  EXPECT_NEAR(n["baseline"] / 20000.0, 0.75, 0.015);
  auto stats = c->stats("code");
  EXPECT_EQ(stats[0].name, "baseline");
  EXPECT_DOUBLE_EQ(stats[0].percent, 75.0);
  EXPECT_EQ(stats[1].requests, n["canary"]);
}

TEST_F(CanaryControllerTest, ArmsOwnConsecutiveBucketRanges) {
  auto c = make();
  auto a = c->assign("code", user_in("code", 0, 500));
  EXPECT_EQ(a->arm, "canary");
  EXPECT_EQ(a->model, "coder-next");
  EXPECT_FALSE(a->baseline);
  EXPECT_EQ(c->assign("code", user_in("code", 500, 2500))->arm, "b");
  auto base = c->assign("code", user_in("code", 2500, 10000));
  EXPECT_EQ(base->arm, "baseline");
  EXPECT_TRUE(base->baseline);
  EXPECT_EQ(base->model, "coder-stable");
}

TEST_F(CanaryControllerTest, UnknownRouteHasNoAssignment) {
  auto c = make();
  EXPECT_FALSE(c->assign("chat", "u1"));
  EXPECT_TRUE(c->stats("chat").empty());
  EXPECT_EQ(c->record_feedback("chat", "x", true).code(), StatusCode::kNotFound);
  EXPECT_EQ(c->record_feedback("code", "x", true).param(), "arm");
}

TEST_F(CanaryControllerTest, AnonymousRequestsDrawFromTheRandomSource) {
  auto c1 = make();
  std::vector<std::string> first;
  for (int i = 0; i < 100; ++i) first.push_back(c1->assign("code", "")->arm);
  qos::SeededRandom again(1234);
  auto c2 = CanaryController::create({{"code", "coder-stable", "baseline", {{"canary", "coder-next", 5.0}, {"b", "coder-alt", 20.0}}}},
                                     {}, again)
                .value();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(c2->assign("code", "")->arm, first[static_cast<size_t>(i)]);
}

TEST_F(CanaryControllerTest, AutoDisablesARegressingCanaryAfterTheMinimumSample) {
  auto c = make();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c->record_feedback("code", "baseline", i % 5 != 0));  // 80%
  for (int i = 0; i < 19; ++i) ASSERT_TRUE(c->record_feedback("code", "canary", i % 2 == 0));    // ~50%
  EXPECT_TRUE(events_.empty());  // 19 < min_samples
  ASSERT_TRUE(c->record_feedback("code", "canary", false));
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, "auto_disabled");
  EXPECT_EQ(events_[0].arm, "canary");
  EXPECT_DOUBLE_EQ(events_[0].arm_helpful_rate, 0.5);
  EXPECT_DOUBLE_EQ(events_[0].baseline_helpful_rate, 0.8);
  EXPECT_EQ(events_[0].arm_samples, 20);
  EXPECT_NE(events_[0].message.find("helpful rate 50.0% over 20 ratings is below baseline 80.0% minus 10.0%"),
            std::string::npos)
      << events_[0].message;
  EXPECT_FALSE(c->stats("code")[1].enabled);
  EXPECT_EQ(c->stats("code")[1].disabled_reason, events_[0].message);
  // Its users now go to the baseline; the other arm keeps its users.
  EXPECT_EQ(c->assign("code", user_in("code", 0, 500))->arm, "baseline");
  EXPECT_EQ(c->assign("code", user_in("code", 500, 2500))->arm, "b");
  ASSERT_TRUE(c->record_feedback("code", "canary", false));
  EXPECT_EQ(events_.size(), 1u);  // only once
}

TEST_F(CanaryControllerTest, KeepsACanaryWithinTheDelta) {
  auto c = make();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c->record_feedback("code", "baseline", i % 5 != 0));  // 80%
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c->record_feedback("code", "canary", i % 4 != 0));    // 75%
  EXPECT_TRUE(events_.empty());
  EXPECT_TRUE(c->stats("code")[1].enabled);
}

TEST_F(CanaryControllerTest, WaitsForTheBaselineSampleToo) {
  auto c = make();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(c->record_feedback("code", "canary", false));
  for (int i = 0; i < 19; ++i) ASSERT_TRUE(c->record_feedback("code", "baseline", true));
  EXPECT_TRUE(events_.empty());
  ASSERT_TRUE(c->record_feedback("code", "baseline", true));  // the baseline's 20th rating triggers the judgement
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].arm, "canary");
}

TEST_F(CanaryControllerTest, ManualReEnableClearsCountersAndIsLogged) {
  auto c = make();
  ASSERT_TRUE(c->set_enabled("code", "b", false));
  EXPECT_EQ(c->assign("code", user_in("code", 500, 2500))->arm, "baseline");
  ASSERT_TRUE(c->record_feedback("code", "b", true));
  ASSERT_TRUE(c->set_enabled("code", "b", true));
  auto s = c->stats("code")[2];
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.helpful, 0);
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_EQ(events_[0].kind, "disabled");
  EXPECT_EQ(events_[1].kind, "enabled");
  EXPECT_EQ(c->set_enabled("code", "baseline", false).code(), StatusCode::kInvalidArgument);
}

TEST_F(CanaryControllerTest, TracksLatencyPerArm) {
  auto c = make();
  for (int i = 1; i <= 100; ++i) ASSERT_TRUE(c->record_latency("code", "canary", i));
  auto s = c->stats("code")[1];
  EXPECT_EQ(s.latency_samples, 100);
  EXPECT_DOUBLE_EQ(s.mean_latency_ms, 50.5);
  EXPECT_DOUBLE_EQ(s.p95_latency_ms, 95.0);
}

TEST_F(CanaryControllerTest, RejectsInvalidConfiguration) {
  auto over = CanaryController::create({{"code", "m", "baseline", {{"a", "x", 60}, {"b", "y", 50}}}}, {}, random_);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.status().param(), "canary.routes[0].arms[1].percent");
  auto dup = CanaryController::create({{"code", "m", "baseline", {{"baseline", "x", 5}}}}, {}, random_);
  EXPECT_EQ(dup.status().param(), "canary.routes[0].arms[0].name");
  auto twice = CanaryController::create({{"r", "m", "baseline", {}}, {"r", "m", "baseline", {}}}, {}, random_);
  EXPECT_EQ(twice.status().param(), "canary.routes[1].route");
  auto neg = CanaryController::create({{"r", "m", "baseline", {{"a", "x", -1}}}}, {}, random_);
  EXPECT_EQ(neg.status().code(), StatusCode::kInvalidArgument);
  auto nomodel = CanaryController::create({{"r", "", "baseline", {}}}, {}, random_);
  EXPECT_EQ(nomodel.status().param(), "canary.routes[0].baseline_model");
}

TEST_F(CanaryControllerTest, ConcurrentFeedbackIsNotLost) {
  auto c = make(1000000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        (void)c->record_feedback("code", "b", i % 2 == 0);
        (void)c->assign("code", "u" + std::to_string(i));
      }
    });
  for (auto& t : threads) t.join();
  auto s = c->stats("code")[2];
  EXPECT_EQ(s.helpful + s.not_helpful, 4000);
  int64_t total = 0;
  for (auto& a : c->stats("code")) total += a.requests;
  EXPECT_EQ(total, 4000);
}

}  // namespace
}  // namespace llmpool::router
