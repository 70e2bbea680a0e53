#include "api/openai.h"
#include "common/json.h"

#include <gtest/gtest.h>

namespace llmpool::api {
namespace {

using nlohmann::json;

Status parse_error(const std::string& body, Endpoint e = Endpoint::kChat) {
  Result<ApiRequest> r = parse_request(body, e);
  EXPECT_FALSE(r.is_ok()) << body;
  return r.status();
}

TEST(OpenAiTest, ParsesAChatRequest) {
  Result<ApiRequest> r = parse_request(R"({
    "model": "tiny",
    "messages": [{"role": "system", "content": "be brief"},
                 {"role": "user", "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}]},
                 {"role": "assistant", "content": null}],
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 11,
    "presence_penalty": 0.5, "frequency_penalty": -0.5, "repeat_penalty": 1.1, "repeat_last_n": 32,
    "max_tokens": 32, "stop": ["\n\n", "END"], "n": 3, "stream": true,
    "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2,
    "logit_bias": {"42": -100, "7": 5.5}, "ignore_eos": true, "priority": 5, "user": "ignored"
  })", Endpoint::kChat);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const GenerateRequest& g = r->generate;
  EXPECT_EQ(g.model, "tiny");
  ASSERT_EQ(g.messages.size(), 3u);
  EXPECT_EQ(g.messages[1].content, "hello");
  EXPECT_EQ(g.messages[2].content, "");
  EXPECT_FALSE(g.prompt.has_value());
  const SamplingParams& s = g.sampling;
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_FLOAT_EQ(s.min_p, 0.05f);
  EXPECT_FLOAT_EQ(s.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(s.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(s.repeat_penalty, 1.1f);
  EXPECT_EQ(s.penalty_last_n, 32);
  EXPECT_EQ(s.seed, 11u);
  EXPECT_EQ(s.max_tokens, 32);
  EXPECT_EQ(s.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(s.top_logprobs, 2);
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_EQ(s.logit_bias.size(), 2u);
  EXPECT_EQ(g.n, 3);
  EXPECT_EQ(g.priority, 5);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiTest, ParsesACompletionsRequest) {
  Result<ApiRequest> r =
      parse_request(R"({"model":"m","prompt":"Once upon","logprobs":3,"max_tokens":4})", Endpoint::kCompletions);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->generate.prompt, "Once upon");
  EXPECT_EQ(r->generate.sampling.top_logprobs, 3);
  EXPECT_EQ(parse_error(R"({"model":"m"})", Endpoint::kCompletions).param(), "prompt");
  EXPECT_EQ(parse_error(R"({"model":"m","prompt":["a","b"]})", Endpoint::kCompletions).code(),
            StatusCode::kUnimplemented);
}

TEST(OpenAiTest, ResponseFormatBecomesSchemaOrJsonObject) {
  auto r = parse_request(R"({"model":"m","messages":[{"role":"user","content":"x"}],
    "response_format":{"type":"json_schema","json_schema":{"name":"t","schema":{"type":"object"}}}})",
                         Endpoint::kChat);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(json::parse(r->generate.sampling.json_schema), json({{"type", "object"}}));
  r = parse_request(R"({"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})",
                    Endpoint::kChat);
  ASSERT_TRUE(r.is_ok());
  EXPECT_TRUE(r->generate.sampling.json_object);
}

TEST(OpenAiTest, MaxCompletionTokensAndSingleStopString) {
  auto r = parse_request(
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"stop":"."})",
      Endpoint::kChat);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->generate.sampling.max_tokens, 5);
  EXPECT_EQ(r->generate.sampling.stop, std::vector<std::string>{"."});
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
      {R"({"model":"m",)" + msgs + R"(,"presence_penalty":3})", "presence_penalty"},
      {R"({"model":"m",)" + msgs + R"(,"frequency_penalty":"x"})", "frequency_penalty"},
      {R"({"model":"m",)" + msgs + R"(,"repeat_penalty":0})", "repeat_penalty"},
      {R"({"model":"m",)" + msgs + R"(,"max_tokens":0})", "max_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"max_tokens":2.5})", "max_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"max_tokens":99999999999999999999})", "max_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"max_completion_tokens":"many"})", "max_completion_tokens"},
      {R"({"model":"m",)" + msgs + R"(,"seed":"x"})", "seed"},
      {R"({"model":"m",)" + msgs + R"(,"stop":[1]})", "stop[0]"},
      {R"({"model":"m",)" + msgs + R"(,"stop":["a","b","c","d","e"]})", "stop"},
      {R"({"model":"m",)" + msgs + R"(,"stop":""})", "stop"},
      {R"({"model":"m",)" + msgs + R"(,"stream":"yes"})", "stream"},
      {R"({"model":"m",)" + msgs + R"(,"stream_options":{"include_usage":1}})", "stream_options.include_usage"},
      {R"({"model":"m",)" + msgs + R"(,"n":0})", "n"},
      {R"({"model":"m",)" + msgs + R"(,"n":1000})", "n"},
      {R"({"model":"m",)" + msgs + R"(,"logprobs":"yes"})", "logprobs"},
      {R"({"model":"m",)" + msgs + R"(,"top_logprobs":3})", "top_logprobs"},
      {R"({"model":"m",)" + msgs + R"(,"logprobs":true,"top_logprobs":50})", "top_logprobs"},
      {R"({"model":"m",)" + msgs + R"(,"logit_bias":{"abc":1}})", "logit_bias.abc"},
      {R"({"model":"m",)" + msgs + R"(,"logit_bias":{"5":500}})", "logit_bias.5"},
      {R"({"model":"m",)" + msgs + R"(,"logit_bias":[1]})", "logit_bias"},
      {R"({"model":"m",)" + msgs + R"(,"response_format":{"type":"yaml"}})", "response_format.type"},
      {R"({"model":"m",)" + msgs + R"(,"response_format":{"type":"json_schema"}})", "response_format.json_schema"},
      {R"({"model":"m",)" + msgs + R"(,"priority":1000})", "priority"},
  };
  for (const auto& c : cases) {
    Status s = parse_error(c.body);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(s.param(), c.param) << c.body << " -> " << s.to_string();
  }
}

TEST(OpenAiTest, UnsupportedContentIsUnimplemented) {
  EXPECT_EQ(parse_error(R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})").param(),
            "messages[0].content[0].type");
}

TEST(OpenAiTest, CompletionJsonHasTheOpenAiShape) {
  Completion c;
  Choice ch;
  ch.text = "hi";
  ch.finish_reason = FinishReason::kLength;
  ch.logprobs = {{"hi", -0.5f, {{"hi", -0.5f}, {"yo", -1.5f}}}};
  c.choices.push_back(ch);
  c.usage = {12, 3, 4};
  ResponseMeta meta{"chatcmpl-1", "tiny", 1700000000};
  json j = completion_json(Endpoint::kChat, meta, c, true);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "yo");
  EXPECT_EQ(j["usage"]["total_tokens"], 15);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  json t = completion_json(Endpoint::kCompletions, meta, c, true);
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "hi");
  EXPECT_EQ(t["choices"][0]["logprobs"]["tokens"][0], "hi");
  EXPECT_TRUE(completion_json(Endpoint::kChat, meta, c, false)["choices"][0]["logprobs"].is_null());
}

TEST(OpenAiTest, ChunksCarryRoleFirstAndFinishReasonLast) {
  ResponseMeta meta{"chatcmpl-1", "tiny", 1};
  Delta d;
  d.index = 1;
  d.text = "abc";
  json first = chunk_json(Endpoint::kChat, meta, d, true, false);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["index"], 1);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "abc");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  Delta last;
  last.index = 1;
  last.finish_reason = FinishReason::kStop;
  json end = chunk_json(Endpoint::kChat, meta, last, false, false);
  EXPECT_FALSE(end["choices"][0]["delta"].contains("content"));
  EXPECT_EQ(end["choices"][0]["finish_reason"], "stop");
  json usage = usage_chunk_json(Endpoint::kChat, meta, {5, 2, 0});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

TEST(OpenAiTest, ParsesToolsToolChoiceAndToolMessages) {
  auto r = parse_request(R"({"model":"m","messages":[
      {"role":"user","content":"weather?"},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
        "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"sunny"}],
    "tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object"}}},
             {"type":"function","function":{"name":"other"}}],
    "tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false})",
                         Endpoint::kChat);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const GenerateRequest& g = r->generate;
  ASSERT_EQ(g.messages.size(), 3u);
  ASSERT_EQ(g.messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(g.messages[1].tool_calls[0].name, "get_weather");
  EXPECT_EQ(g.messages[1].tool_calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(g.messages[2].tool_call_id, "call_1");
  ASSERT_EQ(g.tools.size(), 1u);  // a named tool_choice keeps only that tool, required
  EXPECT_EQ(g.tools[0].name, "get_weather");
  EXPECT_EQ(g.tool_choice, "required");
  EXPECT_FALSE(g.parallel_tool_calls);

  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  EXPECT_EQ(parse_error(R"({"model":"m",)" + msgs + R"(,"tools":[{"type":"code"}]})").param(), "tools[0].type");
  EXPECT_EQ(parse_error(R"({"model":"m",)" + msgs + R"(,"tool_choice":"maybe"})").param(), "tool_choice");
  EXPECT_EQ(parse_error(R"({"model":"m",)" + msgs + R"(,"tool_choice":"required"})").param(), "tool_choice");
  EXPECT_EQ(parse_error(R"({"model":"m",)" + msgs +
                        R"(,"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"b"}}})")
                .param(),
            "tool_choice");
}

TEST(OpenAiTest, ToolCallsAndReasoningInResponsesAndChunks) {
  Completion c;
  Choice ch;
  ch.finish_reason = FinishReason::kToolCalls;
  ch.reasoning_content = "thinking";
  ch.tool_calls = {{"call_9", "get_weather", R"({"city":"Rome"})"}};
  c.choices.push_back(ch);
  ResponseMeta meta{"chatcmpl-1", "m", 1};
  json j = completion_json(Endpoint::kChat, meta, c, false);
  const json& msg = j["choices"][0]["message"];
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(msg["content"].is_null());
  EXPECT_EQ(msg["reasoning_content"], "thinking");
  EXPECT_EQ(msg["tool_calls"][0]["id"], "call_9");
  EXPECT_EQ(msg["tool_calls"][0]["type"], "function");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(msg["tool_calls"][0]["function"]["arguments"], R"({"city":"Rome"})");

  Delta d;
  d.reasoning_content = "hm";
  d.tool_calls = {{0, "call_9", "get_weather", "{\"ci"}};
  json chunk = chunk_json(Endpoint::kChat, meta, d, false, false);
  const json& delta = chunk["choices"][0]["delta"];
  EXPECT_EQ(delta["reasoning_content"], "hm");
  EXPECT_EQ(delta["tool_calls"][0]["index"], 0);
  EXPECT_EQ(delta["tool_calls"][0]["id"], "call_9");
  EXPECT_EQ(delta["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(delta["tool_calls"][0]["function"]["arguments"], "{\"ci");
}

// The answers are written with no DOM, members in the order json_text()
// writes a DOM's (sorted): text that parses to a DOM whose text is the same
// bytes is valid JSON, sorted and escaped as every other answer is.
TEST(OpenAiTest, AnswersAreWrittenAsJsonTextWouldWriteTheirDom) {
  auto canonical = [](const std::string& text) {
    auto j = parse_json(text);
    if (!j) return std::string("not JSON: ") + j.status().to_string();
    return json_text(*j);
  };
  ResponseMeta meta{"chatcmpl-\"q\"", "m\xc3\xa9", 1700000000};
  Completion c;
  Choice plain;
  plain.text = "line\nnext \x01 \xe2\x82\xac bad \xff end";
  plain.finish_reason = FinishReason::kStop;
  plain.logprobs = {{"a", -0.25f, {{"b", -1.0f}, {"a", -0.25f}}}};
  Choice tools;
  tools.index = 1;
  tools.finish_reason = FinishReason::kToolCalls;
  tools.reasoning_content = "why";
  tools.tool_calls = {{"call_1", "f", R"({"x":1})"}, {"call_2", "g", ""}};
  Choice both = tools;
  both.index = 2;
  both.text = "and text";
  c.choices = {plain, tools, both};
  c.usage = {7, 8, 3};
  const std::string route = R"({"canary_arm":"b","ensemble":null,"model":"m","reason":"r","route":"auto"})";
  for (Endpoint e : {Endpoint::kChat, Endpoint::kCompletions}) {
    for (bool lp : {false, true}) {
      for (std::string_view llmpool : {std::string_view(), std::string_view(route)}) {
        std::string text;
        append_completion(text, e, meta, c, lp, llmpool);
        EXPECT_EQ(canonical(text), text);
        EXPECT_EQ(parse_json(text)->contains("llmpool"), !llmpool.empty());
        for (bool first : {false, true}) {
          Delta d;
          d.index = 3;
          d.text = first ? "" : "t\"x";
          d.reasoning_content = first ? "" : "r";
          d.logprobs = plain.logprobs;
          if (!first) d.finish_reason = FinishReason::kLength;
          d.tool_calls = {{0, "call_1", "f", "{"}, {1, "", "", "x\"}"}};
          std::string chunk;
          append_chunk(chunk, e, meta, d, first, lp, llmpool);
          EXPECT_EQ(canonical(chunk), chunk);
        }
      }
    }
    std::string usage;
    append_usage_chunk(usage, e, meta, c.usage);
    EXPECT_EQ(canonical(usage), usage);
  }
}

TEST(OpenAiTest, ParsesTokenizeAndDetokenizeBodies) {
  Result<TokenizeRequest> t = parse_tokenize_request(R"({"model":"m","content":"hi","add_special":true})");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->model, "m");
  EXPECT_EQ(t->content, "hi");
  EXPECT_TRUE(t->add_special);
  EXPECT_EQ(parse_tokenize_request(R"({"content":7})").status().param(), "content");
  EXPECT_EQ(parse_tokenize_request(R"({"content":"x","add_special":"yes"})").status().param(), "add_special");
  EXPECT_EQ(parse_tokenize_request(R"({"model":[],"content":"x"})").status().param(), "model");
  EXPECT_EQ(parse_tokenize_request(R"({"content":"x")").status().error_code(), "invalid_json");

  Result<DetokenizeRequest> d = parse_detokenize_request(R"({"tokens":[1,2,3]})");
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->model.empty());
  EXPECT_EQ(d->tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_detokenize_request(R"({"tokens":[1,"2"]})").status().param(), "tokens[1]");
  EXPECT_EQ(parse_detokenize_request(R"({"tokens":[1,4294967296]})").status().param(), "tokens[1]");
  EXPECT_EQ(parse_detokenize_request(R"({"tokens":{}})").status().param(), "tokens");
  std::string deep = R"({"tokens":[)" + std::string(100, '[') + std::string(100, ']') + "]}";
  EXPECT_EQ(parse_detokenize_request(deep).status().param(), "tokens[0]");
}

TEST(OpenAiTest, CompletionIdsAreUnique) {
  std::string a = new_completion_id("chatcmpl"), b = new_completion_id("chatcmpl");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), std::string("chatcmpl-").size() + 24);
}

}  // namespace
}  // namespace llmpool::api
