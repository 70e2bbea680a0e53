// OpenAiFake (llmpool-fake-upstream) on loopback, driven by the load
// generator's own HTTP client. Timing bounds are generous on purpose.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "fake_openai.h"
#include "http_client.h"
#include "providers/http_client.h"

namespace llmpool::fake {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Answer {
  std::string error;       // http_post's transport error
  bench::ResponseHead head;
  std::string body;
  double seconds = 0;
};

Answer post(const OpenAiFake& fake, const std::string& path, const json& body, double timeout_s = 10) {
  bench::HttpPost p;
  std::string err;
  p.url = *bench::parse_url(fake.url(), &err);
  p.path = path;
  p.body = body.dump();
  p.timeout_s = timeout_s;
  Answer a;
  bench::HttpHandlers h;
  h.on_head = [&](const bench::ResponseHead& head) { a.head = head; };
  h.on_body = [&](std::string_view bytes, bench::Clock::time_point) {
    a.body.append(bytes);
    return true;
  };
  auto t0 = bench::Clock::now();
  a.error = bench::http_post(p, h);
  a.seconds = std::chrono::duration<double>(bench::Clock::now() - t0).count();
  return a;
}

// A GET through llmpool's own client (the load generator's only POSTs).
Result<providers::HttpClientResponse> get(const std::string& url) {
  providers::HttpClient client;
  providers::HttpClientRequest r;
  r.method = "GET";
  r.url = url;
  std::promise<Result<providers::HttpClientResponse>> p;
  client.fetch(r, nullptr, [&](Result<providers::HttpClientResponse> res) { p.set_value(std::move(res)); });
  return p.get_future().get();
}

json chat(bool stream, int max_tokens = 0) {
  json b = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hello there"}}}}, {"stream", stream}};
  if (stream) b["stream_options"] = {{"include_usage", true}};
  if (max_tokens > 0) b["max_tokens"] = max_tokens;
  return b;
}

// The data of every event of an SSE body, "[DONE]" included.
std::vector<std::string> events(const std::string& body) {
  std::vector<std::string> out;
  bench::SseParser p;
  p.feed(body, [&](const std::string& data) { out.push_back(data); });
  return out;
}

// Polls until `pred` holds (5 s at most).
template <typename Pred>
bool eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

OpenAiFake::Options options(Behaviour b = {}) {
  OpenAiFake::Options o;
  o.model = "fake-model";
  o.name = "up-a";
  o.behaviour = std::move(b);
  return o;
}

TEST(AnswerTokensTest, CutsWordsAndCyclesWithASpace) {
  EXPECT_EQ(answer_tokens("a bb c", 5), (std::vector<std::string>{"a", " bb", " c", " a", " bb"}));
  EXPECT_EQ(answer_tokens("one", 2), (std::vector<std::string>{"one", " one"}));
  EXPECT_TRUE(answer_tokens("x y", 0).empty());
}

TEST(ApplyBehaviourTest, ChangesOnlyTheFieldsGiven) {
  Behaviour base;
  auto b = apply_behaviour(base, json{{"ttft_ms", 250}, {"stall", true}, {"error_rate", 0.25}});
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->ttft_ms, 250);
  EXPECT_TRUE(b->stall);
  EXPECT_DOUBLE_EQ(b->error_rate, 0.25);
  EXPECT_EQ(b->tokens, base.tokens);
  EXPECT_EQ(b->text, base.text);
}

TEST(ApplyBehaviourTest, NamesTheBadField) {
  const std::vector<std::pair<json, std::string>> bad = {
      {{{"ttft_ms", -1}}, "ttft_ms"},         {{{"tokens", 0}}, "tokens"},
      {{{"error_rate", 1.5}}, "error_rate"},   {{{"error_status", 200}}, "error_status"},
      {{{"stall", "yes"}}, "stall"},           {{{"text", ""}}, "text"},
      {{{"token_ms", 2.5}}, "token_ms"},       {{{"speed", 1}}, "speed"}};
  for (const auto& [update, field] : bad) {
    auto b = apply_behaviour(Behaviour{}, update);
    ASSERT_FALSE(b.is_ok()) << update.dump();
    EXPECT_EQ(b.status().param(), field) << b.status().to_string();
    EXPECT_NE(b.status().message().find("'" + field + "'"), std::string::npos) << b.status().message();
  }
}

TEST(OpenAiFakeTest, StreamsTheTextAsTokensWithUsage) {
  Behaviour b;
  b.text = "Paris is the capital";
  b.tokens = 6;
  OpenAiFake fake(options(b));
  ASSERT_TRUE(fake.start().is_ok());
  Answer a = post(fake, "/v1/chat/completions", chat(true));
  ASSERT_EQ(a.error, "");
  EXPECT_EQ(a.head.status, 200);
  EXPECT_EQ(a.head.header("content-type"), "text/event-stream");
  EXPECT_EQ(a.head.header("x-fake-upstream"), "up-a");
  std::string text;
  json usage;
  std::vector<std::string> ev = events(a.body);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string finish;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    json chunk = json::parse(ev[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["model"], "m");
    if (chunk.contains("usage")) usage = chunk["usage"];
    for (const json& c : chunk["choices"]) {
      if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
  }
  EXPECT_EQ(text, "Paris is the capital Paris is");
  EXPECT_EQ(finish, "stop");
  EXPECT_EQ(usage["completion_tokens"], 6);
  EXPECT_GT(usage["prompt_tokens"].get<int>(), 0);
  EXPECT_TRUE(eventually([&] { return fake.counts().ok == 1; }));
  EXPECT_EQ(fake.counts().active, 0);
}

TEST(OpenAiFakeTest, WholeAnswerHasNChoicesCutByMaxTokens) {
  Behaviour b;
  b.text = "a b c d e f";
  OpenAiFake fake(options(b));
  ASSERT_TRUE(fake.start().is_ok());
  json body = chat(false, 3);
  body["n"] = 2;
  Answer a = post(fake, "/v1/chat/completions", body);
  ASSERT_EQ(a.error, "");
  ASSERT_EQ(a.head.status, 200) << a.body;
  json r = json::parse(a.body);
  EXPECT_EQ(r["object"], "chat.completion");
  ASSERT_EQ(r["choices"].size(), 2u);
  for (const json& c : r["choices"]) {
    EXPECT_EQ(c["message"]["content"], "a b c");
    EXPECT_EQ(c["finish_reason"], "length");
  }
  EXPECT_EQ(r["usage"]["completion_tokens"], 6);
}

TEST(OpenAiFakeTest, ListsItsModelAndReportsItsStateOnGet) {
  OpenAiFake fake(options());
  ASSERT_TRUE(fake.start().is_ok());
  auto models = get(fake.url("/v1/models"));
  ASSERT_TRUE(models.is_ok()) << models.status().to_string();
  EXPECT_EQ(models->head.status, 200);
  json list = json::parse(models->body);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "fake-model");

  ASSERT_EQ(post(fake, "/v1/chat/completions", chat(false)).head.status, 200);
  auto control = get(fake.url("/control"));
  ASSERT_TRUE(control.is_ok()) << control.status().to_string();
  json state = json::parse(control->body);
  EXPECT_EQ(state["name"], "up-a");
  EXPECT_EQ(state["behaviour"], to_json(Behaviour{}));
  EXPECT_EQ(state["counts"]["requests"], 1);
  EXPECT_EQ(state["counts"]["ok"], 1);
}

TEST(OpenAiFakeTest, ControlChangesTheSpeedOfLaterRequests) {
  OpenAiFake fake(options());
  ASSERT_TRUE(fake.start().is_ok());
  Answer fast = post(fake, "/v1/chat/completions", chat(true));
  ASSERT_EQ(fast.error, "");
  Answer c = post(fake, "/control", json{{"ttft_ms", 300}, {"token_ms", 10}, {"tokens", 4}});
  ASSERT_EQ(c.head.status, 200) << c.body;
  json state = json::parse(c.body);
  EXPECT_EQ(state["behaviour"]["ttft_ms"], 300);
  EXPECT_EQ(state["counts"]["requests"], 1);
  Answer slow = post(fake, "/v1/chat/completions", chat(true));
  ASSERT_EQ(slow.error, "");
  EXPECT_GE(slow.seconds, 0.3);
  EXPECT_TRUE(eventually([&] { return fake.counts().ok == 2; }));

  Answer reset = post(fake, "/control", json{{"reset_counts", true}});
  EXPECT_EQ(json::parse(reset.body)["counts"]["requests"], 0);
}

TEST(OpenAiFakeTest, ControlRefusesBadFieldsAndChangesNothing) {
  OpenAiFake fake(options());
  ASSERT_TRUE(fake.start().is_ok());
  Answer a = post(fake, "/control", json{{"ttft_ms", 100}, {"tokenz", 3}});
  EXPECT_EQ(a.head.status, 400);
  json e = json::parse(a.body);
  EXPECT_EQ(e["error"]["param"], "tokenz");
  EXPECT_EQ(fake.behaviour().ttft_ms, 0);
}

TEST(OpenAiFakeTest, ErrorRateIsSeeded) {
  Behaviour b;
  b.error_rate = 0.5;
  b.error_status = 503;
  std::vector<std::vector<int>> runs;
  for (int run = 0; run < 2; ++run) {
    OpenAiFake fake(options(b));
    ASSERT_TRUE(fake.start().is_ok());
    std::vector<int> statuses;
    for (int i = 0; i < 16; ++i) statuses.push_back(post(fake, "/v1/chat/completions", chat(false)).head.status);
    runs.push_back(statuses);
    EXPECT_EQ(fake.counts().errors + fake.counts().ok, 16);
  }
  EXPECT_EQ(runs[0], runs[1]);
  int failed = static_cast<int>(std::count(runs[0].begin(), runs[0].end(), 503));
  EXPECT_GT(failed, 0);
  EXPECT_LT(failed, 16);
}

TEST(OpenAiFakeTest, StallHoldsRequestsUntilSwitchedOff) {
  Behaviour b;
  b.stall = true;
  OpenAiFake fake(options(b));
  ASSERT_TRUE(fake.start().is_ok());
  auto pending = std::async(std::launch::async, [&] { return post(fake, "/v1/chat/completions", chat(true)); });
  ASSERT_TRUE(eventually([&] { return fake.counts().stalled == 1; }));
  EXPECT_EQ(pending.wait_for(200ms), std::future_status::timeout);
  Answer c = post(fake, "/control", json{{"stall", false}});
  ASSERT_EQ(c.head.status, 200);
  Answer a = pending.get();
  ASSERT_EQ(a.error, "");
  EXPECT_EQ(events(a.body).back(), "[DONE]");
  EXPECT_TRUE(eventually([&] { return fake.counts().ok == 1; }));
}

TEST(OpenAiFakeTest, StalledRequestIsCountedCancelledWhenTheClientLeaves) {
  Behaviour b;
  b.stall = true;
  OpenAiFake fake(options(b));
  ASSERT_TRUE(fake.start().is_ok());
  Answer a = post(fake, "/v1/chat/completions", chat(true), 0.3);
  EXPECT_NE(a.error, "");
  EXPECT_TRUE(eventually([&] { return fake.counts().cancelled == 1 && fake.counts().active == 0; }))
      << fake.control_state().dump();
}

TEST(OpenAiFakeTest, RejectsABodyThatIsNotJson) {
  OpenAiFake fake(options());
  ASSERT_TRUE(fake.start().is_ok());
  Answer a = post(fake, "/v1/chat/completions", json("not an object"));
  EXPECT_EQ(a.head.status, 400);
  EXPECT_EQ(fake.counts().bad_requests, 1);
  EXPECT_EQ(fake.counts().requests, 0);
}

}  // namespace
}  // namespace llmpool::fake
