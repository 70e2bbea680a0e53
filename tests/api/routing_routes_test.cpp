// The router behind the HTTP routes: OpenAiRoutes with a RouterService over
// scripted fake providers (no model, no network, manual clock).
#include "api/routing_routes.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "api/openai_routes.h"
#include "router/fake_directory.h"

namespace llmpool::api {
namespace {

using namespace std::chrono_literals;
using ensemble::testing::answer;
using ensemble::testing::Script;
using ensemble::testing::streamed;
using nlohmann::json;
using router::testing::FakeDirectory;
using router::testing::model;

class RoutingRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto m : {model("general", {"general"}), model("coder", {"code"}), model("solo", {"general"})}) {
      cfg_.models.push_back(m);
      auto it = scripts_.find(m.name);
      dir_->add(m, {it != scripts_.end() ? it->second : answer(m.name == "coder" ? "def fixed(): pass" : "hello", 0)});
    }
    config::RouteGroupConfig g;
    g.name = "pair";
    g.models = {"general", "coder"};
    cfg_.routing.groups = {g};
    cfg_.routing.admission.max_active = 2;
    cfg_.routing.admission.retry_after_seconds = 7;
    router::RouterService::Options o;
    o.clock = &clock_;
    o.timer = &timer_;
    o.metrics = &metrics_;
    auto s = router::RouterService::create(cfg_, dir_, o);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    service_ = std::move(s).value();
    add_openai_routes(router_, dir_, metrics_, service_);
    add_routing_routes(router_, service_);
  }

  HttpResponse call(const std::string& method, const std::string& path, const std::string& body = "") {
    HttpRequest req;
    req.method = method;
    req.path = req.target = path;
    req.body = body;
    auto w = std::make_shared<BufferedResponseWriter>();
    router_.dispatch(req, w);
    for (int i = 0; i < 100 && !w->finished(); ++i) timer_.advance(10ms);
    EXPECT_TRUE(w->finished());
    return w->response();
  }

  static std::string chat(const std::string& model, const std::string& extra = "") {
    return R"({"model":")" + model + R"(","messages":[{"role":"user","content":"Write a python function with def and return"}])" +
           extra + "}";
  }

  // The JSON of every `data:` event of an SSE body but [DONE].
  static std::vector<json> events(const std::string& body) {
    std::vector<json> out;
    size_t pos = 0;
    while ((pos = body.find("data: ", pos)) != std::string::npos) {
      size_t end = body.find("\n\n", pos);
      std::string data = body.substr(pos + 6, end - pos - 6);
      if (data != "[DONE]") out.push_back(json::parse(data));
      pos = end;
    }
    return out;
  }

  // The contents of a stream's chunks, in order, for choice `index`.
  static std::vector<std::string> contents(const std::vector<json>& ev, int index = 0) {
    std::vector<std::string> out;
    for (const auto& e : ev)
      for (const auto& c : e.value("choices", json::array()))
        if (c["index"] == index && c["delta"].contains("content") && c["delta"]["content"].is_string())
          out.push_back(c["delta"]["content"]);
    return out;
  }

  std::map<std::string, Script> scripts_;  // set before SetUp: a model's script instead of the default answer
  qos::ManualClock clock_;
  qos::ManualTimer timer_{clock_};
  std::shared_ptr<FakeDirectory> dir_ = std::make_shared<FakeDirectory>(timer_);
  obs::MetricsRegistry metrics_;
  config::Config cfg_;
  std::shared_ptr<router::RouterService> service_;
  HttpRouter router_;
};

TEST_F(RoutingRoutesTest, AutoAnswersWithTheModelInAHeaderAndTheLlmpoolField) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("auto"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(r.headers["x-llmpool-model"], "coder");
  EXPECT_FALSE(r.headers["x-llmpool-route-reason"].empty());
  EXPECT_EQ(j["model"], "coder");
  EXPECT_EQ(j["llmpool"]["model"], "coder");
  EXPECT_EQ(j["llmpool"]["route"], "auto");
  EXPECT_EQ(j["llmpool"]["reason"], r.headers["x-llmpool-route-reason"]);
  EXPECT_EQ(j["llmpool"]["ensemble"]["strategy"], "fastest");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "def fixed(): pass");
}

TEST_F(RoutingRoutesTest, ARoutedStreamCarriesTheLlmpoolFieldOnItsFirstChunk) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("pair", R"(,"stream":true,"stream_options":{"include_usage":true})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_EQ(r.headers["x-llmpool-model"], "coder");
  std::vector<json> ev = events(r.body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev[0]["llmpool"]["model"], "coder");
  EXPECT_EQ(ev[0]["choices"][0]["delta"]["content"], "def fixed(): pass");
  EXPECT_FALSE(ev[1].contains("llmpool"));
  EXPECT_EQ(ev[1]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(ev.back().contains("usage"));
  EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos);
}

TEST_F(RoutingRoutesTest, ADirectRequestSaysSoToo) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("solo", R"(,"stream":true)"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-llmpool-model"], "solo");
  EXPECT_EQ(r.headers["x-llmpool-route-reason"], "requested by name");
  std::vector<json> ev = events(r.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev[0]["llmpool"]["route"], "solo");
  EXPECT_TRUE(ev[0]["llmpool"]["ensemble"].is_null());
}

// A provider asked for a whole answer may deliver it whole (a queue model's
// job is then redelivered when its worker dies): deltas only for a stream,
// by name as through the router.
TEST_F(RoutingRoutesTest, OnlyAStreamAsksTheProviderForDeltas) {
  auto solo = dir_->add(model("solo", {"general"}), {streamed({"he", "llo"}, 0)});
  HttpResponse r = call("POST", "/v1/chat/completions", chat("solo"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(solo->calls(), 1);
  EXPECT_EQ(solo->streamed_calls(), 0);
  r = call("POST", "/v1/chat/completions", chat("solo", R"(,"stream":true)"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(contents(events(r.body)), (std::vector<std::string>{"he", "llo"}));
  EXPECT_EQ(solo->streamed_calls(), 1);
}

TEST_F(RoutingRoutesTest, FeedbackNamesWhatIsWrongAndFindsKnownResponses) {
  HttpResponse r = call("POST", "/v1/feedback", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "invalid_json");
  r = call("POST", "/v1/feedback", R"({"response_id":"x"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "helpful");
  r = call("POST", "/v1/feedback", R"({"helpful":true})");
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "response_id");
  r = call("POST", "/v1/feedback", R"({"response_id":"chatcmpl-unknown","helpful":true})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "invalid_request_error");

  for (const char* m : {"auto", "solo"}) {
    std::string id = json::parse(call("POST", "/v1/chat/completions", chat(m)).body)["id"];
    r = call("POST", "/v1/feedback", R"({"response_id":")" + id + R"(","helpful":false})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["model"], std::string(m) == "auto" ? "coder" : "solo");
  }
}

TEST_F(RoutingRoutesTest, AResponseIsRatedOnceASecondRatingIs409) {
  std::string id = json::parse(call("POST", "/v1/chat/completions", chat("solo")).body)["id"];
  const std::string body = R"({"response_id":")" + id + R"(","helpful":false})";
  ASSERT_EQ(call("POST", "/v1/feedback", body).status, 200);
  const double quality = service_->metrics_json()["instances"][2]["quality"];
  for (int i = 0; i < 100; ++i) {
    HttpResponse r = call("POST", "/v1/feedback", body);
    ASSERT_EQ(r.status, 409) << r.body;
    json e = json::parse(r.body)["error"];
    EXPECT_EQ(e["code"], "feedback_exists");
    EXPECT_EQ(e["param"], "response_id");
    EXPECT_EQ(e["type"], "invalid_request_error");
  }
  json inst = service_->metrics_json()["instances"][2];
  ASSERT_EQ(inst["id"], "solo");
  EXPECT_EQ(inst["feedback"], 1);
  EXPECT_DOUBLE_EQ(inst["quality"].get<double>(), quality);  // one rating moved it, the repeats did not
}

// Every series of a /metrics text, without its value.
std::set<std::string> series(const std::string& text) {
  std::set<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (!line.empty() && line[0] != '#') out.insert(line.substr(0, line.rfind(' ')));
    pos = end + 1;
  }
  return out;
}

TEST_F(RoutingRoutesTest, ModelNamesAClientSentNeverBecomeLabels) {
  const std::string ensemble = R"(,"ensemble":{"strategy":"voting"})";
  // Once each: what an unknown name and a known one count under.
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("no-such-model", ensemble)).status, 404);
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("pair", ensemble)).status, 200);
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("no-such-model")).status, 404);
  const std::string before = call("GET", "/metrics").body;
  std::mt19937 rng(42);
  for (int i = 0; i < 1000; ++i) {
    std::string name = "m-" + std::to_string(rng()) + (i % 3 == 0 ? "\\\"x" : "");
    HttpResponse r = call("POST", "/v1/chat/completions", chat(name, i % 2 == 0 ? ensemble : ""));
    ASSERT_EQ(r.status, 404) << r.body;
  }
  const std::string after = call("GET", "/metrics").body;
  EXPECT_EQ(series(after), series(before));
  EXPECT_LT(after.size(), before.size() + 400);  // only counts and sums grew (the leak was megabytes)
  // Routed ones count (a name sent straight to a model is refused before any metric).
  EXPECT_NE(after.find("llmpool_requests_total{model=\"_unknown\",endpoint=\"chat.completions\",status=\"404\"} 501\n"),
            std::string::npos)
      << after;
  EXPECT_EQ(after.find("m-"), std::string::npos);
}

TEST_F(RoutingRoutesTest, RoutingMetricsDescribeEveryInstance) {
  call("POST", "/v1/chat/completions", chat("auto"));
  HttpResponse r = call("GET", "/api/routing-metrics");
  ASSERT_EQ(r.status, 200);
  json j = json::parse(r.body);
  ASSERT_EQ(j["instances"].size(), 3u);
  const json& coder = j["instances"][1];
  EXPECT_EQ(coder["id"], "coder");
  EXPECT_EQ(coder["capability_tags"], json::array({"code"}));
  EXPECT_EQ(coder["breaker_state"], "closed");
  EXPECT_EQ(coder["latency_samples"], 1);
  EXPECT_TRUE(coder["score"].is_number());
  EXPECT_TRUE(coder["last_score"].is_number());
  EXPECT_EQ(j["admission"]["max_active"], 2);
  std::string prom = call("GET", "/metrics").body;
  EXPECT_NE(prom.find("llmpool_router_overhead_seconds_count 1"), std::string::npos);
  EXPECT_NE(prom.find("llmpool_breaker_state{instance=\"coder\"} 0"), std::string::npos);
  EXPECT_NE(prom.find("llmpool_admission_active 0"), std::string::npos);
}

TEST_F(RoutingRoutesTest, OverTheAdmissionLimitIs429WithRetryAfter) {
  auto a = service_->admit();
  auto b = service_->admit();
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  HttpResponse r = call("POST", "/v1/chat/completions", chat("solo"));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["Retry-After"], "7");
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "rate_limit_error");
  a->release();
  EXPECT_EQ(call("POST", "/v1/chat/completions", chat("auto")).status, 200);
}

TEST_F(RoutingRoutesTest, AfterShutdownBeganGenerationsAre503) {
  EXPECT_TRUE(service_->close_and_drain(100ms));
  for (const char* m : {"auto", "solo"}) {
    HttpResponse r = call("POST", "/v1/chat/completions", chat(m));
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(json::parse(r.body)["error"]["type"], "unavailable_error");
  }
  EXPECT_EQ(call("GET", "/api/routing-metrics").status, 200);  // the rest still answers
}

TEST_F(RoutingRoutesTest, BadRoutingFieldsAreNamed) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("auto", R"(,"ensemble":{"strategy":"best"})"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "ensemble.strategy");
  r = call("POST", "/v1/chat/completions", chat("auto", R"(,"ensemble":{"strategy":"voting","k":99})"));
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "ensemble.k");
  r = call("POST", "/v1/chat/completions", chat("auto", R"(,"ensemble":{"strategy":"judge","judge":"nobody"})"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "ensemble.judge");
  r = call("POST", "/v1/chat/completions", chat("auto", R"(,"reasoning_effort":"extreme")"));
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "reasoning_effort");
  r = call("POST", "/v1/chat/completions", chat("auto", R"(,"user":42)"));
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "user");
  r = call("POST", "/v1/chat/completions", chat("nothing-here"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "model");
}

TEST_F(RoutingRoutesTest, AnEnsembleCanBeChosenPerRequest) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("pair", R"(,"ensemble":{"strategy":"voting","k":2})"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["llmpool"]["ensemble"]["strategy"], "voting");
  EXPECT_EQ(j["llmpool"]["ensemble"]["candidates"].size(), 2u);
}

// The same routes over providers that stream their answers.
class RoutedStreamTest : public RoutingRoutesTest {
 protected:
  RoutedStreamTest() {
    scripts_["coder"] = streamed({"def ", "fixed", "(): pass"}, 100, 50);
    scripts_["general"] = streamed({"hel", "lo"}, 400, 50);
  }
};

TEST_F(RoutedStreamTest, ARoutedStreamPassesTheDeltasThroughAsTheyCome) {
  HttpRequest req;
  req.method = "POST";
  req.path = req.target = "/v1/chat/completions";
  req.body = chat("pair", R"(,"stream":true)");
  auto w = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(req, w);
  timer_.advance(50ms);
  EXPECT_TRUE(w->response().headers.empty());  // nothing is out before the first delta
  timer_.advance(60ms);                        // coder's first piece
  HttpResponse mid = w->response();
  EXPECT_FALSE(w->finished());
  EXPECT_EQ(mid.content_type, "text/event-stream");
  EXPECT_EQ(mid.headers["x-llmpool-model"], "coder");
  EXPECT_FALSE(mid.headers["x-llmpool-route-reason"].empty());
  std::vector<json> ev = events(mid.body);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["model"], "coder");
  EXPECT_EQ(ev[0]["llmpool"]["model"], "coder");
  EXPECT_EQ(ev[0]["llmpool"]["route"], "pair");
  EXPECT_EQ(ev[0]["llmpool"]["ensemble"]["strategy"], "fastest");
  EXPECT_EQ(ev[0]["choices"][0]["delta"]["content"], "def ");
  for (int i = 0; i < 100 && !w->finished(); ++i) timer_.advance(10ms);
  ASSERT_TRUE(w->finished());
  HttpResponse r = w->response();
  ev = events(r.body);
  EXPECT_EQ(contents(ev), (std::vector<std::string>{"def ", "fixed", "(): pass"}));
  EXPECT_EQ(ev.back()["choices"][0]["finish_reason"], "stop");
  for (size_t i = 1; i < ev.size(); ++i) EXPECT_FALSE(ev[i].contains("llmpool"));
  EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos);
  // The stream's first token counts for the model that answered.
  std::string prom = call("GET", "/metrics").body;
  EXPECT_NE(prom.find("llmpool_time_to_first_token_seconds_count{model=\"coder\"} 1"), std::string::npos);
  EXPECT_NE(prom.find("llmpool_inter_token_latency_seconds_count{model=\"coder\"} 2"), std::string::npos);
  EXPECT_EQ(prom.find("llmpool_time_to_first_token_seconds_count{model=\"pair\"} 1"), std::string::npos);
  // The same request without stream: the whole answer.
  r = call("POST", "/v1/chat/completions", chat("pair"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["message"]["content"], "def fixed(): pass");
}

TEST_F(RoutedStreamTest, NTwoStreamsBothChoicesOfTheWinner) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("pair", R"(,"stream":true,"n":2)"));
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<json> ev = events(r.body);
  EXPECT_EQ(contents(ev, 0), (std::vector<std::string>{"def ", "fixed", "(): pass"}));
  EXPECT_EQ(contents(ev, 1), (std::vector<std::string>{"def ", "fixed", "(): pass"}));
  r = call("POST", "/v1/chat/completions", chat("pair", R"(,"n":2)"));
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][1]["index"], 1);
}

class RoutedStreamFailureTest : public RoutingRoutesTest {
 protected:
  RoutedStreamFailureTest() {
    scripts_["coder"] = ensemble::testing::failure(Status::unavailable("coder is down"), 50);
    scripts_["general"] = ensemble::testing::failure(Status::unavailable("general is down"), 50);
    Script broken = streamed({"so", "lo"}, 50);
    broken.error = Status::internal("the engine stopped");
    scripts_["solo"] = broken;
  }
};

TEST_F(RoutedStreamFailureTest, AStreamThatFailsBeforeAnyDeltaIsAnErrorResponse) {
  HttpResponse r = call("POST", "/v1/chat/completions", chat("pair", R"(,"stream":true)"));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.content_type, "text/event-stream");
  json j = json::parse(r.body);
  EXPECT_EQ(j["error"]["type"], "unavailable_error");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("down"), std::string::npos);
}

TEST_F(RoutedStreamFailureTest, AStreamThatFailsAfterItsFirstDeltaEndsWithAnErrorEvent) {
  // solo streams two pieces, then fails: the client already has them.
  HttpResponse r =
      call("POST", "/v1/chat/completions", chat("solo", R"(,"stream":true,"ensemble":{"strategy":"fastest"})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-llmpool-model"], "solo");
  std::vector<json> ev = events(r.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(contents(ev), (std::vector<std::string>{"so", "lo"}));
  ASSERT_TRUE(ev.back().contains("error"));
  EXPECT_NE(ev.back()["error"]["message"].get<std::string>().find("the engine stopped"), std::string::npos);
  EXPECT_EQ(r.body.find("data: [DONE]"), std::string::npos);
}

}  // namespace
}  // namespace llmpool::api
