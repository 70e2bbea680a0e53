#include "router/service.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "router/fake_directory.h"

namespace llmpool::router {
namespace {

using namespace std::chrono_literals;
using ensemble::testing::answer;
using ensemble::testing::failure;
using nlohmann::json;
using testing::FakeDirectory;
using testing::model;

const char* kCodePrompt = "```python\ndef add(a, b):\n    return a - b\n```\nFix this python function.";

class RouterServiceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    svc_.reset();
    if (!log_path_.empty()) std::filesystem::remove(log_path_);
  }

  void start() {
    RouterService::Options o;
    o.clock = &clock_;
    o.timer = &timer_;
    o.random = &random_;
    o.metrics = &metrics_;
    o.feedback_capacity = feedback_capacity_;
    o.tenants = tenants_;
    o.tenant_known = tenant_known_;
    auto s = RouterService::create(cfg_, dir_, o);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    svc_ = std::move(s).value();
  }

  void with_log() {
    log_path_ = (std::filesystem::temp_directory_path() /
                 ("llmpool-router-test-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl"))
                    .string();
    std::filesystem::remove(log_path_);
    cfg_.routing.decision_log = log_path_;
  }

  std::vector<json> log_lines() {
    svc_->flush_log();
    std::ifstream in(log_path_);
    std::vector<json> out;
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
  }

  RouteOutcome run(const std::string& asked, const std::string& prompt, RouteHints hints = {},
                   std::string id = {}, std::string tenant = {}) {
    RouteRequest rq;
    rq.generate.model = asked;
    rq.generate.tenant = std::move(tenant);
    rq.generate.messages = {{"user", prompt}};
    rq.hints = std::move(hints);
    rq.response_id = id.empty() ? "chatcmpl-" + std::to_string(++requests_) : id;
    std::optional<RouteOutcome> out;
    svc_->route(std::move(rq), nullptr, [&](RouteOutcome o) { out = std::move(o); });
    for (int i = 0; i < 100 && !out; ++i) timer_.advance(10ms);
    EXPECT_TRUE(out.has_value());
    return out ? std::move(*out) : RouteOutcome{Status::internal("no answer"), {}};
  }

  // A request for "auto" saying "hi".
  static RouteRequest hi() {
    RouteRequest rq;
    rq.generate.model = "auto";
    rq.generate.messages = {{"user", "hi"}};
    return rq;
  }

  config::RouteGroupConfig group(std::string name, std::vector<std::string> models,
                                 std::vector<std::string> fallbacks = {}) {
    config::RouteGroupConfig g;
    g.name = std::move(name);
    g.models = std::move(models);
    g.fallbacks = std::move(fallbacks);
    return g;
  }

  void add(const config::ModelConfig& m, std::vector<ensemble::testing::Script> scripts) {
    cfg_.models.push_back(m);
    providers_[m.name] = dir_->add(m, std::move(scripts));
  }

  qos::ManualClock clock_;
  qos::ManualTimer timer_{clock_};
  qos::SeededRandom random_{7};
  std::shared_ptr<FakeDirectory> dir_ = std::make_shared<FakeDirectory>(timer_);
  std::map<std::string, std::shared_ptr<ensemble::testing::FakeProvider>> providers_;
  obs::MetricsRegistry metrics_;
  config::Config cfg_;
  size_t feedback_capacity_ = 100000;
  std::vector<std::string> tenants_;
  std::function<bool(const std::string&)> tenant_known_;
  std::unique_ptr<RouterService> svc_;
  std::string log_path_;
  int requests_ = 0;
};

TEST_F(RouterServiceTest, AutoPicksTheModelWithTheRequiredTagAndLogsTheDecision) {
  add(model("general", {"general"}), {answer("hello", 0)});
  add(model("coder", {"code"}), {answer("fixed", 0)});
  with_log();
  start();
  RouteOutcome o = run("auto", kCodePrompt);
  ASSERT_TRUE(o.completion.is_ok()) << o.completion.status().message();
  EXPECT_EQ(o.info.model, "coder");
  EXPECT_EQ(o.info.route, "auto");
  EXPECT_NE(o.info.reason.find("best score"), std::string::npos) << o.info.reason;
  EXPECT_EQ(o.completion->choices.at(0).text, "fixed");
  EXPECT_EQ(providers_["general"]->calls(), 0);
  EXPECT_EQ(dir_->acquired("general"), 0);  // scoring never loads a model
  EXPECT_EQ(o.info.ensemble["strategy"], "fastest");

  auto lines = log_lines();
  ASSERT_EQ(lines.size(), 1u);
  const json& l = lines[0];
  EXPECT_EQ(l["route"], "auto");
  EXPECT_EQ(l["chosen"], "coder");
  EXPECT_EQ(l["answered_by"], "coder");
  EXPECT_EQ(l["request_id"], "chatcmpl-1");
  ASSERT_EQ(l["candidates"].size(), 2u);
  EXPECT_EQ(l["candidates"][0]["model"], "coder");
  EXPECT_EQ(l["candidates"][1]["excluded"], true);
  EXPECT_NE(l["candidates"][1]["reason"].get<std::string>().find("missing required tags"), std::string::npos);
  EXPECT_TRUE(l["router_us"].is_number());
  EXPECT_GE(l["router_us"].get<double>(), 0.0);
  EXPECT_EQ(l["classification"]["required"], json::array({"code"}));
  EXPECT_TRUE(l["effort"].is_object());
  EXPECT_EQ(metrics_.histogram("llmpool_router_overhead_seconds", "", {}, {}).count(), 1u);
}

TEST_F(RouterServiceTest, RequiredTagsBecomePreferredWhenNoModelHasThem) {
  add(model("general", {"general"}), {answer("ok", 0)});
  with_log();
  start();
  RouteOutcome o = run("auto", kCodePrompt);
  ASSERT_TRUE(o.completion.is_ok()) << o.completion.status().message();
  EXPECT_EQ(o.info.model, "general");
  EXPECT_NE(o.info.reason.find("required tags"), std::string::npos) << o.info.reason;
  EXPECT_EQ(log_lines().at(0)["relaxed_required_tags"], true);
}

TEST_F(RouterServiceTest, FallsBackAndRoutesAroundAnOpenBreaker) {
  add(model("a", {"general"}), {failure(Status::unavailable("a is down"), 0)});
  add(model("b", {"general"}), {answer("from b", 0)});
  cfg_.routing.groups = {group("g", {"a"}, {"b"})};
  cfg_.routing.breaker.failure_threshold = 1;
  cfg_.routing.breaker.cooldown_ms = 1000;
  start();
  RouteOutcome o = run("g", "hello there");
  ASSERT_TRUE(o.completion.is_ok()) << o.completion.status().message();
  EXPECT_EQ(o.info.model, "b");
  EXPECT_NE(o.info.reason.find("fallback"), std::string::npos) << o.info.reason;
  EXPECT_EQ(providers_["a"]->calls(), 1);

  // a's breaker is open: the next request goes straight to b.
  json m = svc_->metrics_json();
  EXPECT_EQ(m["instances"][0]["id"], "a");
  EXPECT_EQ(m["instances"][0]["breaker_state"], "open");
  o = run("g", "hello again");
  EXPECT_EQ(o.info.model, "b");
  EXPECT_EQ(providers_["a"]->calls(), 1);
  EXPECT_NE(metrics_.render().find("llmpool_breaker_state{instance=\"a\"} 1"), std::string::npos);
  EXPECT_EQ(metrics_.counter("llmpool_breaker_opens_total", "", {{"instance", "a"}}).value(), 1.0);

  // After the cooldown a probe goes to a again (half-open); it fails, b answers.
  clock_.advance(1500ms);
  o = run("g", "and again");
  EXPECT_EQ(providers_["a"]->calls(), 2);
  EXPECT_EQ(o.info.model, "b");
}

TEST_F(RouterServiceTest, AnExplicitModelKeepsItsGroupsFallbacks) {
  add(model("a", {"general"}), {failure(Status::unavailable("down"), 0)});
  add(model("b", {"general"}), {answer("b", 0)});
  add(model("c", {"general"}), {answer("c", 0)});
  cfg_.routing.groups = {group("g", {"a", "c"}, {"b"})};
  start();
  EXPECT_TRUE(svc_->routes("a", {}));
  EXPECT_FALSE(svc_->routes("b", {}));  // in no group's models: no fallbacks
  EXPECT_TRUE(svc_->routes("g", {}));
  EXPECT_TRUE(svc_->routes("auto", {}));
  RouteOutcome o = run("a", "hi");
  ASSERT_TRUE(o.completion.is_ok());
  EXPECT_EQ(o.info.model, "b");
  EXPECT_EQ(o.info.route, "a");
  EXPECT_NE(o.info.reason.find("requested by name"), std::string::npos);
  EXPECT_EQ(providers_["c"]->calls(), 0);  // the explicit choice is not second-guessed
}

TEST_F(RouterServiceTest, AClientThatGoesAwayCancelsTheRun) {
  add(model("a", {"general"}), {ensemble::testing::stall()});
  start();
  RouteRequest rq = hi();
  auto cancel = std::make_shared<CancelToken>();
  std::optional<RouteOutcome> out;
  svc_->route(std::move(rq), cancel, [&](RouteOutcome o) { out = std::move(o); });
  timer_.advance(500ms);
  EXPECT_FALSE(out.has_value());  // still running
  cancel->cancel();
  for (int i = 0; i < 50 && !out; ++i) timer_.advance(10ms);
  ASSERT_TRUE(out.has_value());
  EXPECT_FALSE(out->completion.is_ok());
  EXPECT_TRUE(providers_["a"]->cancelled(0));
  timer_.advance(10ms);  // the stalled fake reports back at its next poll (its own, not the router's)
  EXPECT_EQ(svc_->metrics_json()["instances"][0]["router_in_flight"], 0);
}

TEST_F(RouterServiceTest, AClientsCancelReachesTheAttemptAtOnceWithoutAPoll) {
  add(model("a", {"general"}), {ensemble::testing::stall()});
  start();
  RouteRequest rq = hi();
  auto cancel = std::make_shared<CancelToken>();
  std::vector<std::string> events;
  svc_->route(std::move(rq), cancel, [&](RouteOutcome o) {
    events.push_back(std::string("done: ") + (o.completion.is_ok() ? "ok" : o.completion.status().message()));
    events.push_back(providers_["a"]->cancelled(0) ? "attempt cancelled" : "attempt running");
  });
  ASSERT_EQ(providers_["a"]->calls(), 1);
  EXPECT_FALSE(providers_["a"]->cancelled(0));
  cancel->cancel();  // no timer advances: nothing is polled
  events.push_back("cancel returned");
  EXPECT_EQ(events, (std::vector<std::string>{"done: cancelled by the caller", "attempt cancelled", "cancel returned"}));
}

TEST_F(RouterServiceTest, ARequestWhoseClientIsGoneBeforeItStartsEndsAtOnce) {
  add(model("a", {"general"}), {ensemble::testing::stall()});
  start();
  RouteRequest rq = hi();
  auto cancel = std::make_shared<CancelToken>();
  cancel->cancel();
  std::optional<RouteOutcome> out;
  svc_->route(std::move(rq), cancel, [&](RouteOutcome o) { out = std::move(o); });
  ASSERT_TRUE(out.has_value());  // inside route(), with no timer advance
  EXPECT_FALSE(out->completion.is_ok());
  EXPECT_EQ(providers_["a"]->calls(), 0);
}

TEST_F(RouterServiceTest, AStreamStartsWithTheModelThatAnswersAndPassesItsDeltas) {
  add(model("a", {"general"}), {failure(Status::unavailable("a is down"), 50)});
  add(model("b", {"general"}), {ensemble::testing::streamed({"from", " b"}, 100)});
  cfg_.routing.groups = {group("g", {"a"}, {"b"})};
  start();
  RouteRequest rq;
  rq.generate.model = "g";
  rq.generate.messages = {{"user", "hello there"}};
  rq.response_id = "chatcmpl-stream";
  std::vector<std::string> events;
  rq.on_stream_start = [&](const RouteInfo& info) {
    events.push_back("start " + info.model + " " + info.route);
    EXPECT_NE(info.reason.find("fallback/hedge 'b'"), std::string::npos) << info.reason;
    EXPECT_EQ(info.ensemble["strategy"], "fastest");
  };
  rq.on_delta = [&](Delta d) { events.push_back("delta " + d.text); };
  std::optional<RouteOutcome> out;
  svc_->route(std::move(rq), nullptr, [&](RouteOutcome o) {
    events.push_back("done");
    out = std::move(o);
  });
  timer_.advance(140ms);  // a failed at 50 ms; b, the fallback, streams from 150 ms
  EXPECT_TRUE(events.empty());
  timer_.advance(15ms);
  EXPECT_EQ(events, (std::vector<std::string>{"start b g", "delta from"}));
  EXPECT_FALSE(out.has_value());
  for (int i = 0; i < 100 && !out; ++i) timer_.advance(10ms);
  ASSERT_TRUE(out && out->completion.is_ok());
  EXPECT_EQ(events, (std::vector<std::string>{"start b g", "delta from", "delta  b", "delta ", "done"}));
  EXPECT_EQ(out->info.model, "b");
  EXPECT_EQ(out->completion->choices.at(0).text, "from b");
}

TEST_F(RouterServiceTest, GatheringStrategiesDoNotStream) {
  add(model("a", {"general"}), {ensemble::testing::streamed({"same"}, 10)});
  add(model("b", {"general"}), {ensemble::testing::streamed({"same"}, 10)});
  cfg_.routing.groups = {group("g", {"a", "b"})};
  start();
  RouteRequest rq;
  rq.generate.model = "g";
  rq.generate.messages = {{"user", "hello there"}};
  rq.hints.strategy = ensemble::StrategyKind::kVoting;
  int streamed = 0;
  rq.on_stream_start = [&](const RouteInfo&) { ++streamed; };
  rq.on_delta = [&](Delta) { ++streamed; };
  std::optional<RouteOutcome> out;
  svc_->route(std::move(rq), nullptr, [&](RouteOutcome o) { out = std::move(o); });
  for (int i = 0; i < 100 && !out; ++i) timer_.advance(10ms);
  ASSERT_TRUE(out && out->completion.is_ok());
  EXPECT_EQ(out->completion->choices.at(0).text, "same");
  EXPECT_EQ(streamed, 0);
}

TEST_F(RouterServiceTest, UnknownModelIsNotFound) {
  add(model("a", {"general"}), {answer("x", 0)});
  start();
  RouteOutcome o = run("nope", "hi");
  ASSERT_FALSE(o.completion.is_ok());
  EXPECT_EQ(o.completion.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(o.completion.status().param(), "model");
}

TEST_F(RouterServiceTest, EffortSetsTheThinkingBudgetOnlyForThinkingModels) {
  add(model("thinker", {"general"}, true), {answer("t", 0)});
  add(model("plain", {"general"}), {answer("p", 0)});
  cfg_.routing.groups = {group("t", {"thinker"}), group("p", {"plain"})};
  start();
  RouteHints high;
  high.reasoning_effort = ReasoningEffort::kHigh;
  ASSERT_TRUE(run("t", "Prove that the sum of two even numbers is even.", high).completion.is_ok());
  GenerateRequest r = providers_["thinker"]->request(0);
  EXPECT_GT(r.thinking_budget, 256);
  ASSERT_TRUE(r.sampling.max_tokens.has_value());
  EXPECT_GT(*r.sampling.max_tokens, r.thinking_budget);

  ASSERT_TRUE(run("p", "Prove that the sum of two even numbers is even.", high).completion.is_ok());
  r = providers_["plain"]->request(0);
  EXPECT_EQ(r.thinking_budget, -1);  // untouched: the model has no thinking block
  ASSERT_TRUE(r.sampling.max_tokens.has_value());

  RouteHints low;
  low.reasoning_effort = ReasoningEffort::kMinimal;
  low.temperature_set = true;
  ASSERT_TRUE(run("t", "hi", low).completion.is_ok());
  r = providers_["thinker"]->request(1);
  EXPECT_EQ(r.thinking_budget, 0);  // too little effort to think
  EXPECT_EQ(r.sampling.temperature, 1.0f);  // the client's (default) temperature is kept
}

TEST_F(RouterServiceTest, VotingChosenPerRequestReturnsTheMajority) {
  add(model("a", {"general"}), {answer("Paris", 0)});
  add(model("b", {"general"}), {answer("paris.", 0)});
  add(model("c", {"general"}), {answer("Lyon", 0)});
  start();
  RouteHints h;
  h.strategy = ensemble::StrategyKind::kVoting;
  RouteOutcome o = run("auto", "What is the capital of France?", h);
  ASSERT_TRUE(o.completion.is_ok()) << o.completion.status().message();
  EXPECT_EQ(o.info.ensemble["strategy"], "voting");
  EXPECT_EQ(o.info.ensemble["votes"].get<double>(), 2.0);
  EXPECT_EQ(o.completion->choices.at(0).text.substr(0, 5), "Paris");
  EXPECT_EQ(o.info.ensemble["candidates"].size(), 3u);
  EXPECT_NE(o.info.reason.find("voting"), std::string::npos);
}

TEST_F(RouterServiceTest, ConsensusBelowItsThresholdEscalatesToAReasoningModel) {
  add(model("a", {"general"}), {answer("yes", 0)});
  add(model("b", {"general"}), {answer("no", 0)});
  add(model("deep", {"reasoning"}), {answer("it depends", 0)});
  auto g = group("g", {"a", "b"});
  g.strategy = "consensus";
  g.consensus_threshold = 0.6;
  cfg_.routing.groups = {g};
  with_log();
  start();
  RouteOutcome o = run("g", "Is it true?");
  ASSERT_TRUE(o.completion.is_ok()) << o.completion.status().message();
  EXPECT_EQ(o.info.model, "deep");
  EXPECT_EQ(o.completion->choices.at(0).text, "it depends");
  EXPECT_EQ(o.info.ensemble["strategy"], "consensus");
  EXPECT_EQ(o.info.ensemble["escalate"], true);
  EXPECT_EQ(o.info.ensemble["escalation"]["to"], "deep");
  EXPECT_EQ(o.info.ensemble["escalation"]["ok"], true);
  EXPECT_NE(o.info.reason.find("escalated to 'deep'"), std::string::npos) << o.info.reason;
  json line = log_lines().at(0);
  EXPECT_EQ(line["answered_by"], "deep");
  EXPECT_EQ(line["escalation"]["from"], o.info.ensemble["winner_model"]);
  EXPECT_EQ(line["attempts"].size(), 3u);

  // Agreement at the threshold (1 of 2 = 0.5): no escalation.
  config::Config next = cfg_;
  next.routing.groups[0].consensus_threshold = 0.5;
  ASSERT_TRUE(svc_->apply(next).is_ok());
  o = run("g", "Is it true?");
  EXPECT_NE(o.info.model, "deep");
  EXPECT_TRUE(o.info.ensemble["escalation"].is_null());
}

TEST_F(RouterServiceTest, WithoutAReasoningModelTheConsensusWinnerAnswers) {
  add(model("a", {"general"}), {answer("yes", 0)});
  add(model("b", {"general"}), {answer("no", 0)});
  auto g = group("g", {"a", "b"});
  g.strategy = "consensus";
  cfg_.routing.groups = {g};
  start();
  RouteOutcome o = run("g", "Is it true?");
  ASSERT_TRUE(o.completion.is_ok());
  EXPECT_EQ(o.info.model, "a");
  EXPECT_EQ(o.info.ensemble["escalation"]["ok"], false);
  EXPECT_TRUE(o.info.ensemble["escalation"]["to"].is_null());
}

TEST_F(RouterServiceTest, FeedbackReachesTheInstanceAndUnknownIdsAreNotFound) {
  add(model("a", {"general"}), {answer("x", 0)});
  feedback_capacity_ = 2;
  start();
  ASSERT_TRUE(run("auto", "hi", {}, "id-1").completion.is_ok());
  auto bad = svc_->feedback("nope", true);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(bad.status().param(), "response_id");

  auto ok = svc_->feedback("id-1", false);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->model, "a");
  json m = svc_->metrics_json();
  EXPECT_EQ(m["instances"][0]["feedback"], 1);
  EXPECT_LT(m["instances"][0]["quality"].get<double>(), 0.5);

  // The map is bounded: the oldest id is forgotten.
  ASSERT_TRUE(run("auto", "hi", {}, "id-2").completion.is_ok());
  ASSERT_TRUE(run("auto", "hi", {}, "id-3").completion.is_ok());
  EXPECT_FALSE(svc_->feedback("id-1", true).is_ok());
  EXPECT_TRUE(svc_->feedback("id-3", true).is_ok());
}

TEST_F(RouterServiceTest, AResponseIsRatedOnceInBoundedMemory) {
  add(model("a", {"general"}), {answer("x", 0)});
  feedback_capacity_ = 2;
  start();
  ASSERT_TRUE(run("auto", "hi", {}, "id-1").completion.is_ok());
  ASSERT_TRUE(svc_->feedback("id-1", false).is_ok());
  const double quality = svc_->metrics_json()["instances"][0]["quality"];
  for (int i = 0; i < 100; ++i) {
    auto again = svc_->feedback("id-1", false);
    ASSERT_FALSE(again.is_ok());
    EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
    EXPECT_EQ(again.status().error_code(), "feedback_exists");
    EXPECT_EQ(again.status().param(), "response_id");
  }
  json inst = svc_->metrics_json()["instances"][0];
  EXPECT_EQ(inst["feedback"], 1);
  EXPECT_DOUBLE_EQ(inst["quality"].get<double>(), quality);

  // Rated or not, the oldest id goes first once `feedback_capacity` newer ones came.
  ASSERT_TRUE(run("auto", "hi", {}, "id-2").completion.is_ok());
  ASSERT_TRUE(run("auto", "hi", {}, "id-3").completion.is_ok());
  EXPECT_EQ(svc_->feedback("id-1", true).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(svc_->feedback("id-2", true).is_ok());  // rating does not make an id newer
  ASSERT_TRUE(run("auto", "hi", {}, "id-4").completion.is_ok());
  EXPECT_EQ(svc_->feedback("id-2", true).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(svc_->feedback("id-3", true).is_ok());
}

// An id remembered again is one entry, the newest, with its new target and
// unrated; it does not push out an older id, whether the index is full or not.
TEST_F(RouterServiceTest, AnIdRememberedAgainIsOneEntryAndTheNewest) {
  add(model("a", {"general"}), {answer("x", 0)});
  feedback_capacity_ = 2;
  start();
  FeedbackTarget t{"a", "", "", "acme"};
  svc_->remember("id-1", t);
  svc_->remember("id-1", t);  // not full: one entry
  svc_->remember("id-2", t);  // full now, and id-1 is still known
  ASSERT_TRUE(svc_->feedback("id-1", true, "acme").is_ok());
  FeedbackTarget other{"a", "", "", "globex"};
  svc_->remember("id-1", other);  // full: id-1 becomes the newest, id-2 stays
  EXPECT_EQ(svc_->feedback("id-1", true, "acme").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(svc_->feedback("id-1", true, "globex").is_ok());  // unrated again
  svc_->remember("id-3", t);  // id-2 is the oldest now
  EXPECT_EQ(svc_->feedback("id-2", true, "acme").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(svc_->feedback("id-1", true, "globex").status().code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(svc_->feedback("id-3", true, "acme").is_ok());
  svc_->remember("id-3", other);  // full, and not the oldest: id-1 stays
  EXPECT_EQ(svc_->feedback("id-1", true, "globex").status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(svc_->feedback("id-3", true, "acme").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(svc_->feedback("id-3", true, "globex").is_ok());
  svc_->remember("id-4", t);  // id-1 is the oldest
  EXPECT_EQ(svc_->feedback("id-1", true, "globex").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(svc_->feedback("id-3", true, "globex").status().code(), StatusCode::kAlreadyExists);
}

TEST_F(RouterServiceTest, MetricLabelsComeFromTheConfiguration) {
  auto m = model("a", {"general"});
  m.aliases = {"a-alias"};
  add(m, {answer("x", 0)});
  cfg_.routing.groups = {group("g", {"a"})};
  start();
  EXPECT_EQ(metrics_.label("a"), "a");
  EXPECT_EQ(metrics_.label("a-alias"), "a");  // an alias counts as its model
  EXPECT_EQ(metrics_.label("g"), "g");
  EXPECT_EQ(metrics_.label("auto"), "auto");
  EXPECT_EQ(metrics_.label("gpt-4"), obs::kUnknownLabel);
  config::Config next = cfg_;
  next.models[0].name = "b";
  next.models[0].aliases.clear();
  ASSERT_TRUE(svc_->apply(next).is_ok());
  EXPECT_EQ(metrics_.label("b"), "b");
  EXPECT_EQ(metrics_.label("a-alias"), obs::kUnknownLabel);
}

TEST_F(RouterServiceTest, ACanaryIsAssignedByUserAndSwitchedOffOnARegression) {
  add(model("base", {"general"}), {answer("base", 0)});
  add(model("next", {"general"}), {answer("next", 0)});
  cfg_.routing.groups = {group("g", {"base"})};
  cfg_.routing.canary.min_samples = 3;
  cfg_.routing.canary.max_helpful_drop = 0.1;
  cfg_.routing.canary.routes = {{"g", "base", {{"trial", "next", 50}}}};
  with_log();
  start();
  // The same user always lands in the same arm.
  std::map<std::string, std::string> arm_of;
  for (int u = 0; u < 40; ++u) {
    std::string user = "user-" + std::to_string(u);
    RouteHints h;
    h.user = user;
    std::string id = "r-" + user;
    RouteOutcome o = run("g", "hi", h, id);
    ASSERT_TRUE(o.completion.is_ok());
    arm_of[id] = o.info.arm;
    EXPECT_EQ(o.info.model, o.info.arm == "trial" ? "next" : "base");
    EXPECT_EQ(run("g", "hi again", h).info.arm, o.info.arm);
  }
  // Baseline answers are helpful, the trial's are not: the trial is switched off.
  for (const auto& [id, arm] : arm_of) ASSERT_TRUE(svc_->feedback(id, arm != "trial").is_ok());
  json m = svc_->metrics_json();
  ASSERT_EQ(m["routes"].size(), 1u);
  const json& arms = m["routes"][0]["arms"];
  EXPECT_EQ(arms[0]["name"], "baseline");
  EXPECT_EQ(arms[1]["name"], "trial");
  EXPECT_EQ(arms[1]["enabled"], false);
  EXPECT_EQ(arms[0]["helpful_rate"], 1.0);
  EXPECT_EQ(metrics_.counter("llmpool_canary_events_total", "",
                             {{"route", "g"}, {"arm", "trial"}, {"kind", "auto_disabled"}})
                .value(),
            1.0);
  // From now on everyone gets the baseline, and the event is in the log.
  for (int u = 0; u < 10; ++u) {
    RouteHints h;
    h.user = "user-" + std::to_string(u);
    EXPECT_EQ(run("g", "hi", h).info.model, "base");
  }
  bool event = false;
  for (const auto& l : log_lines()) event = event || (l.value("event", "") == "canary" && l["kind"] == "auto_disabled");
  EXPECT_TRUE(event);
}

TEST_F(RouterServiceTest, AdmissionLimitsGenerationsAndClosesForShutdown) {
  add(model("a", {"general"}), {answer("x", 0)});
  cfg_.routing.admission.max_active = 1;
  cfg_.routing.admission.retry_after_seconds = 3;
  start();
  auto first = svc_->admit();
  ASSERT_TRUE(first.is_ok());
  auto second = svc_->admit();
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(second.status().message().find("max_active"), std::string::npos);
  EXPECT_EQ(svc_->retry_after_seconds(), 3);
  EXPECT_EQ(svc_->metrics_json()["admission"]["rejected"], 1);
  first->release();
  EXPECT_TRUE(svc_->close_and_drain(100ms));
  auto third = svc_->admit();
  ASSERT_FALSE(third.is_ok());
  EXPECT_EQ(third.status().code(), StatusCode::kUnavailable);
}

TEST_F(RouterServiceTest, ApplyKeepsStatisticsAndChangesGroups) {
  add(model("a", {"general"}), {answer("x", 0)});
  add(model("b", {"general"}), {answer("y", 0)});
  cfg_.routing.groups = {group("g", {"a"})};
  start();
  ASSERT_TRUE(run("g", "hi", {}, "id-a").completion.is_ok());
  ASSERT_TRUE(svc_->feedback("id-a", false).is_ok());
  config::Config next = cfg_;
  next.routing.groups = {group("g", {"b"})};
  ASSERT_TRUE(svc_->apply(next).is_ok());
  EXPECT_EQ(run("g", "hi").info.model, "b");
  EXPECT_EQ(svc_->metrics_json()["instances"][0]["feedback"], 1);  // a's statistics survived
  next.routing.groups = {group("g", {"a"})};
  std::filesystem::path bad = "/proc/llmpool-cannot-write/log.jsonl";
  next.routing.decision_log = bad.string();
  EXPECT_FALSE(svc_->is_current(next));
  EXPECT_FALSE(svc_->apply(next).is_ok());
  EXPECT_EQ(run("g", "hi").info.model, "b");  // the old configuration stays
  EXPECT_FALSE(svc_->is_current(next));       // so the next reload tries it again
  next.routing.decision_log.clear();
  ASSERT_TRUE(svc_->apply(next).is_ok());
  EXPECT_TRUE(svc_->is_current(next));
}

TEST_F(RouterServiceTest, DirectAttemptsCountInTheInstanceStatistics) {
  add(model("a", {"general"}), {answer("x", 0)});
  start();
  DirectAttempt d = svc_->start_direct("a");
  clock_.advance(40ms);
  d.finish(Status::ok());
  d.finish(Status::unavailable("twice"));  // only the first end counts
  json inst = svc_->metrics_json()["instances"][0];
  EXPECT_EQ(inst["latency_samples"], 1);
  EXPECT_DOUBLE_EQ(inst["avg_latency_ms"].get<double>(), 40.0);
  EXPECT_EQ(inst["success_rate"], 1.0);

  // A generation the client cancelled and a rejected request say nothing about health.
  DirectAttempt c = svc_->start_direct("a");
  c.finish(Status::ok(), /*cancelled=*/true);
  DirectAttempt q = svc_->start_direct("a");
  q.finish(Status::resource_exhausted("queue full"));
  inst = svc_->metrics_json()["instances"][0];
  EXPECT_EQ(inst["latency_samples"], 1);
  EXPECT_EQ(inst["success_rate"], 1.0);
  EXPECT_EQ(inst["router_in_flight"], 0);
}

// ------------------------------------------------------------------ tenants

TEST_F(RouterServiceTest, TheDecisionLogLineCarriesTheTenant) {
  add(model("a", {"general"}), {answer("x", 0)});
  cfg_.routing.groups = {group("g", {"a"}), group("empty", {"gone"})};
  with_log();
  start();
  ASSERT_TRUE(run("g", "hi", {}, "id-acme", "acme").completion.is_ok());
  ASSERT_TRUE(run("g", "hi", {}, "id-none").completion.is_ok());
  EXPECT_FALSE(run("empty", "hi", {}, "id-refused", "globex").completion.is_ok());  // no model can take it
  auto lines = log_lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["request_id"], "id-acme");
  EXPECT_EQ(lines[0]["tenant"], "acme");
  EXPECT_EQ(lines[1]["request_id"], "id-none");
  EXPECT_TRUE(lines[1].contains("tenant"));
  EXPECT_TRUE(lines[1]["tenant"].is_null());  // without tenancy
  EXPECT_EQ(lines[2]["tenant"], "globex");
  EXPECT_TRUE(lines[2]["chosen"].is_null());
  EXPECT_TRUE(lines[2]["error"].is_string());
}

TEST_F(RouterServiceTest, FeedbackOnAnotherTenantsResponseIsNotFoundExactlyAsAnUnknownId) {
  add(model("a", {"general"}), {answer("x", 0)});
  start();
  // What an id nobody knows gets, before it exists.
  Status unknown = svc_->feedback("id-1", true, "globex").status();
  ASSERT_EQ(unknown.code(), StatusCode::kNotFound);
  auto same_as_unknown = [&](const Status& s) {
    EXPECT_EQ(s.code(), unknown.code());
    EXPECT_EQ(s.message(), unknown.message());
    EXPECT_EQ(s.param(), unknown.param());
    EXPECT_EQ(s.error_code(), unknown.error_code());
  };

  ASSERT_TRUE(run("auto", "hi", {}, "id-1", "acme").completion.is_ok());
  same_as_unknown(svc_->feedback("id-1", false, "globex").status());
  same_as_unknown(svc_->feedback("id-1", false).status());  // no tenant is another tenant too
  EXPECT_EQ(svc_->metrics_json()["instances"][0]["feedback"], 0);  // nothing was recorded

  // The owner still has its one rating; after it, the others still see NotFound, not 409.
  auto ok = svc_->feedback("id-1", true, "acme");
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(ok->tenant, "acme");
  EXPECT_EQ(ok->model, "a");
  EXPECT_EQ(svc_->feedback("id-1", true, "acme").status().code(), StatusCode::kAlreadyExists);
  same_as_unknown(svc_->feedback("id-1", true, "globex").status());
  EXPECT_EQ(svc_->metrics_json()["instances"][0]["feedback"], 1);

  // Without tenancy everything is tenant "": as before.
  ASSERT_TRUE(run("auto", "hi", {}, "id-2").completion.is_ok());
  EXPECT_EQ(svc_->feedback("id-2", true, "acme").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(svc_->feedback("id-2", true).is_ok());
}

TEST_F(RouterServiceTest, CanaryAssignmentKeysOnTenantAndUser) {
  add(model("base", {"general"}), {answer("base", 0)});
  add(model("next", {"general"}), {answer("next", 0)});
  cfg_.routing.groups = {group("g", {"base"})};
  cfg_.routing.canary.routes = {{"g", "base", {{"trial", "next", 50}}}};  // buckets [0, 5000)
  with_log();
  start();
  // A user id that is in the trial for acme and in the baseline for globex.
  std::string user;
  for (int i = 0; user.empty(); ++i) {
    std::string u = "user-" + std::to_string(i);
    if (canary_bucket("g", canary_key("acme", u)) < 5000 && canary_bucket("g", canary_key("globex", u)) >= 5000)
      user = u;
  }
  RouteHints h;
  h.user = user;
  for (int round = 0; round < 3; ++round) {  // each tenant's user keeps its arm
    RouteOutcome acme = run("g", "hi", h, {}, "acme");
    RouteOutcome globex = run("g", "hi", h, {}, "globex");
    EXPECT_EQ(acme.info.arm, "trial");
    EXPECT_EQ(acme.info.model, "next");
    EXPECT_EQ(globex.info.arm, "baseline");
    EXPECT_EQ(globex.info.model, "base");
  }
  // Without a tenant the key is the user id alone, as before tenancy.
  RouteOutcome plain = run("g", "hi", h);
  EXPECT_EQ(plain.info.arm, canary_bucket("g", user) < 5000 ? "trial" : "baseline");

  auto lines = log_lines();
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(lines[0]["canary"]["bucket"], canary_bucket("g", canary_key("acme", user)));
  EXPECT_EQ(lines[1]["canary"]["bucket"], canary_bucket("g", canary_key("globex", user)));
  EXPECT_EQ(lines[6]["canary"]["bucket"], canary_bucket("g", user));
}

TEST_F(RouterServiceTest, ADirectAnswerIsRatedByItsOwnTenantOnly) {
  add(model("a", {"general"}), {answer("x", 0)});
  start();
  DirectAttempt d = svc_->start_direct("a", "acme");
  d.finish(Status::ok());
  FeedbackTarget t = d.feedback_target();
  EXPECT_EQ(t.model, "a");
  EXPECT_EQ(t.tenant, "acme");
  svc_->remember("id-direct", t);
  EXPECT_EQ(svc_->feedback("id-direct", true, "globex").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(svc_->feedback("id-direct", true).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(svc_->feedback("id-direct", true, "acme").is_ok());
}

// A tenant added after the start (the admin API, the CLI) is vouched for by
// Options::tenant_known and gets its own label; made-up ones stay _unknown.
TEST_F(RouterServiceTest, ATenantAddedAtRunTimeGetsItsOwnLabel) {
  add(model("a", {"general"}), {answer("x", 0)});
  tenants_ = {"acme"};
  std::set<std::string> store = {"acme"};
  std::mutex store_mu;
  int asked = 0;
  tenant_known_ = [&](const std::string& t) {
    std::lock_guard lock(store_mu);
    ++asked;
    return store.count(t) > 0;
  };
  start();
  ASSERT_TRUE(run("auto", "hi", {}, "id-1", "initech").completion.is_ok());
  const std::string help = "";
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help, {{"tenant", obs::kUnknownLabel}}).value(), 1.0);
  {
    std::lock_guard lock(store_mu);
    store.insert("initech");  // `llmpool tenants add initech`
  }
  ASSERT_TRUE(run("auto", "hi", {}, "id-2", "initech").completion.is_ok());
  ASSERT_TRUE(run("auto", "hi", {}, "id-3", "initech").completion.is_ok());
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help, {{"tenant", "initech"}}).value(), 2.0);
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help, {{"tenant", obs::kUnknownLabel}}).value(), 1.0);
  const int asked_after_add = asked;
  ASSERT_TRUE(run("auto", "hi", {}, "id-4", "initech").completion.is_ok());
  ASSERT_TRUE(run("auto", "hi", {}, "id-5", "acme").completion.is_ok());
  EXPECT_EQ(asked, asked_after_add);  // known tenants are not asked about again
  EXPECT_EQ(metrics_.render().find("intruder"), std::string::npos);
}

TEST_F(RouterServiceTest, TenantMetricLabelsAreBoundedToTheConfiguredTenants) {
  add(model("a", {"general"}), {answer("x", 0)});
  tenants_ = {"acme"};
  start();
  ASSERT_TRUE(run("auto", "hi", {}, "id-acme", "acme").completion.is_ok());
  ASSERT_TRUE(run("auto", "hi", {}, "id-none").completion.is_ok());
  ASSERT_TRUE(run("auto", "hi", {}, "id-u0", "intruder-0").completion.is_ok());
  const std::string one_unknown = metrics_.render();
  for (int i = 1; i < 500; ++i)
    ASSERT_TRUE(run("auto", "hi", {}, "id-u" + std::to_string(i), "intruder-" + std::to_string(i))
                    .completion.is_ok());
  ASSERT_TRUE(svc_->feedback("id-acme", true, "acme").is_ok());
  ASSERT_TRUE(svc_->feedback("id-u7", false, "intruder-7").is_ok());
  ASSERT_TRUE(svc_->feedback("id-none", true).is_ok());

  const std::string help = "";
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help, {{"tenant", "acme"}}).value(), 1.0);
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help, {{"tenant", obs::kUnknownLabel}}).value(), 500.0);
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help).value(), 1.0);  // no tenant: no label
  EXPECT_EQ(
      metrics_.counter("llmpool_router_feedback_total", help, {{"helpful", "true"}, {"tenant", "acme"}}).value(), 1.0);
  EXPECT_EQ(metrics_
                .counter("llmpool_router_feedback_total", help, {{"helpful", "false"}, {"tenant", obs::kUnknownLabel}})
                .value(),
            1.0);
  EXPECT_EQ(metrics_.counter("llmpool_router_feedback_total", help, {{"helpful", "true"}}).value(), 1.0);
  const std::string after = metrics_.render();
  EXPECT_EQ(after.find("intruder"), std::string::npos);
  // 499 more unknown tenants added no series: one per configured tenant,
  // one for all the others, one without a tenant.
  auto samples = [](const std::string& text, const std::string& family) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (line.rfind(family, 0) == 0) out.push_back(line.substr(0, line.rfind(' ')));
    return out;
  };
  const std::vector<std::string> expected = {"llmpool_router_decisions_total",
                                             "llmpool_router_decisions_total{tenant=\"_unknown\"}",
                                             "llmpool_router_decisions_total{tenant=\"acme\"}"};
  EXPECT_EQ(samples(one_unknown, "llmpool_router_decisions_total"), expected);
  EXPECT_EQ(samples(after, "llmpool_router_decisions_total"), expected);

  // A tenant configured later gets its series at once; the unknown ones stay _unknown.
  svc_->set_tenants({"acme", "globex"});
  EXPECT_NE(metrics_.render().find("llmpool_router_decisions_total{tenant=\"globex\"} 0"), std::string::npos);
  ASSERT_TRUE(run("auto", "hi", {}, "id-g", "globex").completion.is_ok());
  EXPECT_EQ(metrics_.counter("llmpool_router_decisions_total", help, {{"tenant", "globex"}}).value(), 1.0);
}

}  // namespace
}  // namespace llmpool::router
