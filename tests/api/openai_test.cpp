#include "api/openai.h"

#include <gtest/gtest.h>

namespace llmpool::api {
namespace {

Status parse_error(const std::string& body) {
  Result<ChatRequest> r = parse_chat_request(body);
  EXPECT_FALSE(r.is_ok()) << body;
  return r.status();
}

TEST(OpenAiTest, ParsesAChatRequest) {
  Result<ChatRequest> r = parse_chat_request(R"({
    "model": "tiny",
    "messages": [{"role": "system", "content": "be brief"},
                 {"role": "user", "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}]},
                 {"role": "assistant", "content": null}],
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 11,
    "max_tokens": 32, "stop": ["\n\n", "END"], "n": 1, "stream": false, "user": "ignored"
  })");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->model, "tiny");
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[1].content, "hello");
  EXPECT_EQ(r->messages[2].content, "");
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 0.9f);
  EXPECT_EQ(r->sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r->sampling.min_p, 0.05f);
  EXPECT_EQ(r->sampling.seed, 11u);
  EXPECT_EQ(r->sampling.max_tokens, 32);
  EXPECT_EQ(r->sampling.stop, (std::vector<std::string>{"\n\n", "END"}));
}

TEST(OpenAiTest, MaxCompletionTokensAndSingleStopString) {
  Result<ChatRequest> r = parse_chat_request(
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"stop":"."})");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->sampling.max_tokens, 5);
  EXPECT_EQ(r->sampling.stop, std::vector<std::string>{"."});
}

TEST(OpenAiTest, MalformedJsonIsInvalidJson) {
  Status s = parse_error(R"({"model": "tiny", "messages": [)");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.error_code(), "invalid_json");
  EXPECT_EQ(parse_error("[1,2]").code(), StatusCode::kInvalidArgument);
}

TEST(OpenAiTest, ErrorsNameTheField) {
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  struct Case {
    std::string body;
    std::string param;
  } cases[] = {
      {R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":7,)" + msgs + "}", "model"},
      {R"({"model":"m"})", "messages"},
      {R"({"model":"m","messages":[]})", "messages"},
      {R"({"model":"m","messages":["hi"]})", "messages[0]"},
      {R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"model":"m",)" + msgs + R"(,"temperature":"hot"})", "temperature"},
      {R"({"model":"m",)" + msgs + R"(,"temperature":-0.1})", "temperature"},
      {R"({"model":"m",)" + msgs + R"(,"temperature":1e308})", "temperature"},
      {R"({"model":"m",)" + msgs + R"(,"top_p":1.5})", "top_p"},
      {R"({"model":"m",)" + msgs + R"(,"top_k":-1})", "top_k"},
      {R"({"model":"m",)" + msgs + R"(,"max_tokens":0})", "max_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"max_tokens":2.5})", "max_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"max_tokens":99999999999999999999})", "max_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"max_completion_tokens":"many"})", "max_completion_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"seed":"x"})", "seed"},
      {R"({"model":"m",)" + msgs + R"(,"stop":[1]})", "stop"},
      {R"({"model":"m",)" + msgs + R"(,"stop":["a","b","c","d","e"]})", "stop"},
      {R"({"model":"m",)" + msgs + R"(,"stop":""})", "stop"},
      {R"({"model":"m",)" + msgs + R"(,"stream":"yes"})", "stream"},
      {R"({"model":"m",)" + msgs + R"(,"n":0})", "n"},
  };
  for (const auto& c : cases) {
    Status s = parse_error(c.body);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(s.param(), c.param) << c.body << " -> " << s.to_string();
  }
}

TEST(OpenAiTest, UnsupportedOptionsAreUnimplemented) {
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  EXPECT_EQ(parse_error(R"({"model":"m",)" + msgs + R"(,"n":2})").code(), StatusCode::kUnimplemented);
  EXPECT_EQ(parse_error(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})").param(),
            "messages[0].content[0].type");
}

TEST(OpenAiTest, CompletionJsonHasTheOpenAiShape) {
  Completion c;
  c.text = "hi";
  c.finish_reason = FinishReason::kLength;
  c.usage = {12, 3};
  nlohmann::json j = chat_completion_json("chatcmpl-1", "tiny", 1700000000, c);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 15);
}

TEST(OpenAiTest, CompletionIdsAreUnique) {
  std::string a = new_completion_id("chatcmpl"), b = new_completion_id("chatcmpl");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), std::string("chatcmpl-").size() + 24);
}

}  // namespace
}  // namespace llmpool::api
