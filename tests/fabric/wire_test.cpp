// The fabric's wire format: round trips, and every hostile input refused
// with a message naming the field (sizes, depth, types, bounds).
#include "fabric/wire.h"

#include <gtest/gtest.h>

#include "fabric/connection.h"

namespace llmpool::fabric {
namespace {

TEST(WireTest, JobRoundTrips) {
  JobMessage j{"b1:0", "acme", "m", "/v1/chat/completions", R"({"model":"m"})", "llm.acme.infer.stream.v1.n.x", 123};
  auto back = decode_job(encode_job(j), 1 << 20);
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(back->id, "b1:0");
  EXPECT_EQ(back->tenant, "acme");
  EXPECT_EQ(back->body, R"({"model":"m"})");
  EXPECT_EQ(back->reply, "llm.acme.infer.stream.v1.n.x");
  EXPECT_EQ(back->deadline_ms, 123);
}

TEST(WireTest, RefusesOversizedMessagesBeforeParsing) {
  std::string big(2000, ' ');
  auto r = decode_job("{" + big + "}", 1024);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("more than the limit of 1024"), std::string::npos);
}

TEST(WireTest, RefusesDeepNesting) {
  std::string deep = R"({"v":1,"id":"x","model":"m","endpoint":"/v1/completions","body":"","x":)" +
                     std::string(200, '[') + std::string(200, ']') + "}";
  auto r = decode_job(deep, 1 << 20);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("deep"), std::string::npos) << r.status().message();
}

TEST(WireTest, NamesTheBadField) {
  auto r = decode_job(R"({"v":1,"id":7,"model":"m","endpoint":"/v1/completions","body":""})", 1 << 20);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().param(), "id");
  r = decode_job(R"({"v":1,"id":"x","model":"m","endpoint":"/admin","body":""})", 1 << 20);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().param(), "endpoint");
  r = decode_job(R"({"v":1,"id":"x","model":"m","endpoint":"/v1/completions","body":"","reply":"a.>"})", 1 << 20);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().param(), "reply");
  r = decode_job(R"({"v":2,"id":"x","model":"m","endpoint":"/v1/completions","body":""})", 1 << 20);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().param(), "v");
  r = decode_job(R"([1,2])", 1 << 20);
  ASSERT_FALSE(r.is_ok());
  r = decode_job("not json", 1 << 20);
  ASSERT_FALSE(r.is_ok());
}

TEST(WireTest, EventsRoundTripAndCheckKinds) {
  StreamEvent e;
  e.seq = 3;
  e.kind = StreamEvent::Kind::kChunk;
  e.worker = "w1";
  e.chunk = {{"choices", nlohmann::json::array()}};
  auto back = decode_event(encode_event(e), 1 << 20);
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->seq, 3);
  EXPECT_EQ(back->kind, StreamEvent::Kind::kChunk);
  EXPECT_FALSE(decode_event(R"({"v":1,"seq":1,"kind":"boom"})", 1 << 20).is_ok());
  EXPECT_FALSE(decode_event(R"({"v":1,"seq":-1,"kind":"alive"})", 1 << 20).is_ok());
  EXPECT_FALSE(decode_event(R"({"v":1,"seq":1,"kind":"chunk","chunk":3})", 1 << 20).is_ok());
  EXPECT_FALSE(decode_event(R"({"v":1,"seq":1,"kind":"done","status_code":99,"body":""})", 1 << 20).is_ok());
}

TEST(WireTest, HeartbeatAndControlMessagesAreBounded) {
  Heartbeat h;
  h.id = "w1";
  h.models = {{"m", 4, 2, 7}};
  auto back = decode_heartbeat(encode_heartbeat(h), 1 << 20);
  ASSERT_TRUE(back.is_ok());
  ASSERT_EQ(back->models.size(), 1u);
  EXPECT_EQ(back->models[0], (ModelLoad{"m", 4, 2, 7}));
  EXPECT_EQ(*decode_scale(R"({"count":3})"), 3);
  EXPECT_FALSE(decode_scale(R"({"count":"3"})").is_ok());
  EXPECT_FALSE(decode_scale(R"({"count":99999999})").is_ok());
  EXPECT_FALSE(decode_scale(R"({})").is_ok());
  EXPECT_FALSE(decode_cancel(R"({"ids":[1]})").is_ok());
  EXPECT_EQ(decode_cancel(encode_cancel({"a", "b"}))->size(), 2u);
}

TEST(WireTest, ModelTokensAreSubjectSafeAndStable) {
  EXPECT_EQ(model_token("tiny"), "tiny");
  std::string t = model_token("Qwen2.5-0.5B/instruct");
  for (char c : t) EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') << t;
  EXPECT_EQ(t, model_token("Qwen2.5-0.5B/instruct"));
  EXPECT_NE(model_token("a.b"), model_token("a_b"));
  EXPECT_FALSE(request_subject("bad.tenant", "m").is_ok());
  EXPECT_EQ(*request_subject("acme", "m"), "llm.acme.infer.requests.v1.m");
}

}  // namespace
}  // namespace llmpool::fabric
