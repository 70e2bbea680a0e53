// Pure mapping of the remote providers: URLs, upstream errors, request
// bodies and stream decoding. No network.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>

#include "common/json.h"
#include "providers/factory.h"
#include "providers/http_client.h"
#include "providers/ollama_provider.h"
#include "providers/openai_provider.h"

namespace llmpool::providers {
namespace {

using nlohmann::json;

TEST(ParseHttpUrlTest, SplitsHostPortAndPath) {
  auto u = parse_http_url("http://127.0.0.1:8000/v1");
  ASSERT_TRUE(u.is_ok()) << u.status().to_string();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->to_string(), "http://127.0.0.1:8000/v1");

  u = parse_http_url("HTTP://example.com");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->path, "/");
  EXPECT_EQ(u->origin(), "http://example.com");

  u = parse_http_url("http://[::1]:11434/api?x=1");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 11434);
  EXPECT_EQ(u->path, "/api?x=1");
  EXPECT_EQ(u->origin(), "http://[::1]:11434");
}

TEST(ParseHttpUrlTest, RejectsWhatItCannotUse) {
  for (const char* bad : {"", "127.0.0.1:80", "ftp://x", "http://", "http://:80/", "http://h:0", "http://h:70000",
                          "http://h:8x", "http://u:p@h/", "http://h/a b", "http://h/#frag", "http://[::1/"}) {
    auto u = parse_http_url(bad);
    EXPECT_FALSE(u.is_ok()) << bad;
    EXPECT_EQ(u.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseHttpUrlTest, HttpsDefaultsToPort443) {
  auto u = parse_http_url("https://api.openai.com/v1");
  ASSERT_TRUE(u.is_ok()) << u.status().to_string();
  EXPECT_TRUE(u->tls());
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->origin(), "https://api.openai.com");
  u = parse_http_url("HTTPS://h:8443/v1");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->origin(), "https://h:8443");
  u = parse_http_url("https://h:80");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->origin(), "https://h:80");  // 80 is not https's default
  EXPECT_FALSE(parse_http_url("http://h").value().tls());
}

TEST(UpstreamErrorStatusTest, MapsHttpStatusesToCodes) {
  const std::string url = "http://h/v1/chat/completions";
  EXPECT_EQ(upstream_error_status(400, "{}", url).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(upstream_error_status(422, "{}", url).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(upstream_error_status(401, "{}", url).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(upstream_error_status(403, "{}", url).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(upstream_error_status(404, "{}", url).code(), StatusCode::kNotFound);
  EXPECT_EQ(upstream_error_status(408, "{}", url).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(upstream_error_status(429, "{}", url).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(upstream_error_status(500, "{}", url).code(), StatusCode::kUnavailable);
  EXPECT_EQ(upstream_error_status(501, "{}", url).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(upstream_error_status(503, "{}", url).code(), StatusCode::kUnavailable);
}

TEST(UpstreamErrorStatusTest, KeepsTheUpstreamsMessageParamAndCode) {
  // OpenAI's shape.
  Status s = upstream_error_status(
      400, R"({"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":"invalid_value"}})",
      "http://h/v1");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "bad temperature");
  EXPECT_EQ(s.param(), "temperature");
  EXPECT_EQ(s.error_code(), "invalid_value");
  // llama-server's: a numeric code that only echoes the HTTP status.
  s = upstream_error_status(400, R"({"error":{"code":400,"message":"Field 'n' out of range","type":"invalid_request_error"}})",
                            "http://h/v1");
  EXPECT_EQ(s.message(), "Field 'n' out of range");
  EXPECT_EQ(s.error_code(), "");
  // Ollama's.
  s = upstream_error_status(404, R"({"error":"model 'x' not found"})", "http://h");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model 'x' not found");
  // Older vLLM's.
  s = upstream_error_status(400, R"({"object":"error","message":"too long","type":"BadRequestError","code":400})",
                            "http://h");
  EXPECT_EQ(s.message(), "too long");
  // Not JSON: the body itself; server errors say who answered.
  s = upstream_error_status(502, "Bad Gateway\n", "upstream for model 'm'");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "upstream for model 'm' answered HTTP 502: Bad Gateway");
  s = upstream_error_status(429, "", "http://h");
  EXPECT_NE(s.message().find("no details given"), std::string::npos);
}

TEST(UpstreamErrorStatusTest, QuotesAtMostAShortPieceOfAHugeMessage) {
  std::string huge = json{{"error", {{"message", std::string(100000, 'e') + "\u00e9"}, {"param", std::string(1000, 'p')}}}}.dump();
  Status s = upstream_error_status(400, huge, "upstream for model 'm'");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_LE(s.message().size(), 520u);
  EXPECT_EQ(s.message().substr(s.message().size() - 3), "...");
  EXPECT_EQ(s.param(), "");
  s = upstream_error_status(502, std::string(100000, 'x'), "upstream for model 'm'");
  EXPECT_LT(s.message().size(), 600u);
}

GenerateRequest chat(std::string text) {
  GenerateRequest r;
  ChatMessage system, user;
  system.role = "system";
  system.content = "be brief";
  user.role = "user";
  user.content = std::move(text);
  r.messages = {system, user};
  return r;
}

TEST(OpenAiRequestJsonTest, SendsAStreamingChatWithOnlyTheFieldsThatAreSet) {
  auto j = openai_request_json(chat("hi"), "up");
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ(*j, json::parse(R"({
    "model":"up",
    "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],
    "stream":true, "stream_options":{"include_usage":true}, "temperature":1.0})"));
}

TEST(OpenAiRequestJsonTest, AWholeAnswerIsAskedForWithoutStreamFields) {
  auto j = openai_request_json(chat("hi"), "up", /*stream=*/false);
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ(*j, json::parse(R"({
    "model":"up",
    "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],
    "temperature":1.0})"));
}

// Every sampling field set to a value that differs from its default.
void set_every_sampling_field(GenerateRequest& r) {
  SamplingParams& s = r.sampling;
  s.temperature = 0.7f;
  s.top_p = 0.9f;
  s.top_k = 40;
  s.min_p = 0.05f;
  s.presence_penalty = 0.5f;
  s.frequency_penalty = -0.25f;
  s.repeat_penalty = 1.1f;
  s.penalty_last_n = 128;
  s.logit_bias = {{15, -100.0f}, {7, 2.5f}};
  s.seed = 42;
  s.max_tokens = 16;
  s.stop = {"\n", "END"};
  s.ignore_eos = true;
  s.top_logprobs = 3;
  s.json_schema = R"({"type":"object"})";
  r.n = 2;
}

TEST(OpenAiRequestJsonTest, MapsEverySamplingField) {
  GenerateRequest r = chat("hi");
  set_every_sampling_field(r);
  SamplingParams& s = r.sampling;
  auto j = openai_request_json(r, "up");
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)["temperature"], 0.7);
  EXPECT_EQ((*j)["top_p"], 0.9);
  EXPECT_EQ((*j)["top_k"], 40);
  EXPECT_EQ((*j)["min_p"], 0.05);
  EXPECT_EQ((*j)["presence_penalty"], 0.5);
  EXPECT_EQ((*j)["frequency_penalty"], -0.25);
  EXPECT_EQ((*j)["repeat_penalty"], 1.1);
  EXPECT_EQ((*j)["repeat_last_n"], 128);
  EXPECT_EQ((*j)["logit_bias"], json::parse(R"({"15":-100.0,"7":2.5})"));
  EXPECT_EQ((*j)["seed"], 42);
  EXPECT_EQ((*j)["max_tokens"], 16);
  EXPECT_EQ((*j)["stop"], json::parse(R"(["\n","END"])"));
  EXPECT_EQ((*j)["ignore_eos"], true);
  EXPECT_EQ((*j)["logprobs"], true);
  EXPECT_EQ((*j)["top_logprobs"], 3);
  EXPECT_EQ((*j)["n"], 2);
  EXPECT_EQ((*j)["response_format"],
            json::parse(R"({"type":"json_schema","json_schema":{"name":"response","schema":{"type":"object"}}})"));

  s.json_schema.clear();
  s.json_object = true;
  j = openai_request_json(r, "up");
  EXPECT_EQ((*j)["response_format"], json::parse(R"({"type":"json_object"})"));
}

TEST(OpenAiRequestJsonTest, SendsPromptsWithIntegerLogprobs) {
  GenerateRequest r;
  r.prompt = "Once";
  r.sampling.top_logprobs = 2;
  auto j = openai_request_json(r, "up");
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)["prompt"], "Once");
  EXPECT_FALSE(j->contains("messages"));
  EXPECT_EQ((*j)["logprobs"], 2);
  EXPECT_FALSE(j->contains("top_logprobs"));
}

// Feeds `bytes` to a decoder in pieces of `step` bytes.
struct Decoded {
  std::vector<Delta> deltas;
  Status status;
  bool ended = false;
  Completion completion;
};

Decoded decode(UpstreamDecoder& d, const std::string& bytes, size_t step, bool finish = true) {
  Decoded out;
  d.on_delta = [&](Delta x) { out.deltas.push_back(std::move(x)); };
  for (size_t i = 0; i < bytes.size() && out.status.is_ok(); i += step)
    out.status = d.feed(std::string_view(bytes).substr(i, step));
  if (out.status.is_ok() && finish) out.status = d.finish();
  out.ended = d.ended();
  out.completion = d.completion();
  return out;
}

const char* kChatStream =
    ": keep-alive\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"Bye\"},\"finish_reason\":null}]}\n\n"
    "event: message\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo ✓\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
    "data: [DONE]\n\n";

TEST(OpenAiStreamDecoderTest, DecodesDeltasPerChoiceWhateverTheSplit) {
  for (size_t step : {size_t(1), size_t(7), size_t(4096)}) {
    OpenAiStreamDecoder d(true, 2, "http://h/v1/chat/completions");
    Decoded r = decode(d, kChatStream, step);
    ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
    EXPECT_TRUE(r.ended);
    ASSERT_EQ(r.deltas.size(), 5u) << "step " << step;
    EXPECT_EQ(r.deltas[0].text, "Hel");
    EXPECT_EQ(r.deltas[1].index, 1);
    EXPECT_EQ(r.deltas[3].finish_reason, FinishReason::kStop);
    EXPECT_EQ(r.deltas[4].finish_reason, FinishReason::kLength);
    ASSERT_EQ(r.completion.choices.size(), 2u);
    EXPECT_EQ(r.completion.choices[0].text, "Hello ✓");
    EXPECT_EQ(r.completion.choices[1].text, "Bye");
    EXPECT_EQ(r.completion.choices[1].finish_reason, FinishReason::kLength);
    EXPECT_EQ(r.completion.usage.prompt_tokens, 12);
    EXPECT_EQ(r.completion.usage.completion_tokens, 5);
    EXPECT_EQ(r.completion.usage.cached_prompt_tokens, 4);
  }
}

TEST(OpenAiStreamDecoderTest, AddsUpPerChoiceUsageReports) {
  // llama-server with n = 2 sends one usage chunk per choice.
  std::string s =
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":51,\"completion_tokens\":3}}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":51,\"completion_tokens\":4}}\n\n"
      "data: [DONE]\n\n";
  OpenAiStreamDecoder d(true, 2, "u");
  Decoded r = decode(d, s, 100);
  EXPECT_EQ(r.completion.usage.prompt_tokens, 51);
  EXPECT_EQ(r.completion.usage.completion_tokens, 7);
}

TEST(OpenAiStreamDecoderTest, NotEndedWithoutDone) {
  OpenAiStreamDecoder d(true, 1, "u");
  Decoded r = decode(d, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi", 5);
  EXPECT_TRUE(r.status.is_ok());
  EXPECT_FALSE(r.ended);
  EXPECT_EQ(r.completion.choices[0].text, "a");
}

TEST(OpenAiStreamDecoderTest, ReportsErrorsSentInTheStream) {
  OpenAiStreamDecoder d(true, 1, "http://h/v1/chat/completions");
  Decoded r = decode(d, "data: {\"error\":{\"code\":500,\"message\":\"kv cache full\"}}\n\n", 3);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("kv cache full"), std::string::npos);

  OpenAiStreamDecoder d2(true, 1, "http://h/v1/chat/completions");
  r = decode(d2, "data: {not json}\n\n", 100);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("unreadable"), std::string::npos);
}

TEST(OpenAiStreamDecoderTest, ReadsBothLogprobFormats) {
  std::string s =
      "data: {\"choices\":[{\"index\":0,\"text\":\"a\",\"logprobs\":{\"content\":[{\"token\":\"a\",\"logprob\":-0.5,"
      "\"top_logprobs\":[{\"token\":\"a\",\"logprob\":-0.5},{\"token\":\"b\",\"logprob\":-1.5}]}]}}]}\n\n"
      "data: {\"choices\":[{\"index\":0,\"text\":\"c\",\"logprobs\":{\"tokens\":[\"c\"],\"token_logprobs\":[-2.0],"
      "\"top_logprobs\":[{\"c\":-2.0}]}}]}\n\n"
      "data: [DONE]\n\n";
  OpenAiStreamDecoder d(false, 1, "u");
  Decoded r = decode(d, s, 11);
  ASSERT_TRUE(r.status.is_ok());
  ASSERT_EQ(r.completion.choices[0].logprobs.size(), 2u);
  EXPECT_EQ(r.completion.choices[0].text, "ac");
  EXPECT_EQ(r.completion.choices[0].logprobs[0].top.size(), 2u);
  EXPECT_FLOAT_EQ(r.completion.choices[0].logprobs[0].top[1].logprob, -1.5f);
  EXPECT_EQ(r.completion.choices[0].logprobs[1].token, "c");
  EXPECT_FLOAT_EQ(r.completion.choices[0].logprobs[1].logprob, -2.0f);
}

TEST(OpenAiStreamDecoderTest, AcceptsAWholeJsonAnswer) {
  OpenAiStreamDecoder d(true, 1, "u");
  HttpResponseHead head;
  head.status = 200;
  head.headers["content-type"] = "application/json; charset=utf-8";
  d.start(head);
  Decoded r = decode(d,
                     R"({"choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"length"}],)"
                     R"("usage":{"prompt_tokens":3,"completion_tokens":2}})",
                     9);
  ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
  EXPECT_TRUE(r.ended);
  ASSERT_EQ(r.deltas.size(), 1u);
  EXPECT_EQ(r.deltas[0].text, "Hi!");
  EXPECT_EQ(r.completion.choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.completion.usage.completion_tokens, 2);
}

// Whole answers in the common shape are read without a DOM; everything else
// (and every answer whose reading the reader declines) through the DOM. The
// two must deliver the same: here over hand-picked shapes and every
// truncation, deletion and duplication of a byte of a full answer.
std::string flatten(const Decoded& r) {
  std::string s = std::string(status_code_name(r.status.code())) + "|" + r.status.message() + "|" +
                  (r.ended ? "ended" : "open") + "|";
  auto delta = [&s](const Delta& d) {
    s += std::to_string(d.index) + "," + d.text + "," + d.reasoning_content + "," +
         (d.finish_reason ? finish_reason_name(*d.finish_reason) : "-") + "," +
         std::to_string(d.tool_calls.size()) + "," + std::to_string(d.logprobs.size()) + ";";
  };
  for (const Delta& d : r.deltas) delta(d);
  const Usage& u = r.completion.usage;
  s += "|" + std::to_string(u.prompt_tokens) + "," + std::to_string(u.completion_tokens) + "," +
       std::to_string(u.cached_prompt_tokens) + "|";
  for (const Choice& c : r.completion.choices)
    s += std::to_string(c.index) + "," + c.text + "," + c.reasoning_content + "," +
         finish_reason_name(c.finish_reason) + "," + std::to_string(c.tool_calls.size()) + ";";
  return s;
}

Decoded decode_whole(bool chat, int32_t n, const std::string& body, bool dom) {
  OpenAiStreamDecoder d(chat, n, "u");
  if (dom) d.read_whole_with_dom();
  HttpResponseHead head;
  head.status = 200;
  head.headers["content-type"] = "application/json";
  d.start(head);
  return decode(d, body, body.size() + 1);
}

TEST(OpenAiWholeAnswerTest, TheCommonShapeReaderAndTheDomDeliverTheSame) {
  const std::string full =
      R"({"choices":[{"finish_reason":"length","index":1,"logprobs":null,"message":{"content":"Hi \"you\"\n)"
      "\\u00e9 caf\xc3\xa9"
      R"(","reasoning_content":"hm","role":"assistant","tool_calls":null}},{"index":0,"message":{"content":null}}],)"
      R"("created":1733000000,"error":null,"id":"chatcmpl-1","model":"m","object":"chat.completion",)"
      R"("timings":{"prompt_ms":1.25,"n":[1,-2,3e2,true,false,null,{}]},)"
      R"("usage":{"completion_tokens":8,"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":4},"total_tokens":20}})";
  std::vector<std::pair<bool, std::string>> bodies = {
      {true, full},
      {false, R"({"choices":[{"text":"abc","index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":1}})"},
      {false, R"({"choices":[{"text":"abc","message":{"content":"no"}}]})"},
      {true, R"({"choices":[{"text":"no","message":{"content":"yes"}}]})"},
      {true, R"({"choices":[]})"},
      {true, R"({"choices":null})"},
      {true, R"({"object":"x"})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"choices":[{"message":{"content":"b"}}]})"},
      {true, R"({"choices":[{"message":{"content":"a","content":"b"}}]})"},
      {true, R"({"choices":[{"index":0,"index":1,"message":{"content":"a"}}]})"},
      {true, R"({"choices":[{"index":-1,"message":{"content":"a"}}]})"},
      {true, R"({"choices":[{"index":1024,"message":{"content":"a"}}]})"},
      {true, R"({"choices":[{"index":18446744073709551615,"message":{"content":"a"}}]})"},
      {true, R"({"choices":[{"index":1.0,"message":{"content":"a"}}]})"},
      {true, R"({"choices":[{"index":"1","message":{"content":7}}]})"},
      {true, R"({"choices":[5,null,{"message":{"content":"a"}}]})"},
      {true, R"({"choices":[{"message":null,"finish_reason":null,"logprobs":null}]})"},
      {true, R"({"choices":[{"message":{"content":"a","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}}]})"},
      {true, R"({"choices":[{"message":{"content":"a"},"logprobs":{"content":[{"token":"a","logprob":-1}]}}]})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"error":{"code":429,"message":"slow"}})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"error":"bad"})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"usage":null})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":1.5,"completion_tokens":-3}})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":99999999999,"prompt_tokens_details":null}})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":18446744073709551615}})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":1,"prompt_tokens":2}})"},
      {true, R"({"choices":[{"message":{"content":"a"}}],"usage":[]})"},
      {true, R"([{"choices":[]}])"},
      {true, R"("choices")"},
      {true, "\xEF\xBB\xBF" R"({"choices":[{"message":{"content":"bom"}}]})"},
      {true, R"({"choices":[{"message":{"content":"a"}}]} {})"},
      {true, R"({"choices":[{"message":{"content":"\ud800"}}]})"},
      {true, "{\"choices\":[{\"message\":{\"content\":\"\xff\"}}]}"},
      {true, std::string(100, '[') + std::string(100, ']')},
  };
  for (size_t i = 0; i < full.size(); ++i) {
    bodies.push_back({true, full.substr(0, i)});
    bodies.push_back({true, full.substr(0, i) + full.substr(i + 1)});
    bodies.push_back({true, full.substr(0, i + 1) + full.substr(i)});
  }
  for (const auto& [chat, body] : bodies)
    for (int32_t n : {1, 2})
      EXPECT_EQ(flatten(decode_whole(chat, n, body, false)), flatten(decode_whole(chat, n, body, true)))
          << "chat " << chat << ", n " << n << ": " << body;
  // The common shape, read without the DOM, as whole() reads it.
  Decoded r = decode_whole(true, 2, full, false);
  ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
  ASSERT_EQ(r.completion.choices.size(), 2u);
  EXPECT_EQ(r.completion.choices[1].text, "Hi \"you\"\n\xc3\xa9 caf\xc3\xa9");
  EXPECT_EQ(r.completion.choices[1].reasoning_content, "hm");
  EXPECT_EQ(r.completion.choices[1].finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.completion.choices[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.completion.usage.prompt_tokens, 12);
  EXPECT_EQ(r.completion.usage.completion_tokens, 8);
  EXPECT_EQ(r.completion.usage.cached_prompt_tokens, 4);
}

TEST(OllamaRequestJsonTest, MapsChatAndOptions) {
  GenerateRequest r = chat("hi");
  r.messages[0].role = "developer";
  SamplingParams& s = r.sampling;
  s.temperature = 0.2f;
  s.top_p = 0.8f;
  s.top_k = 20;
  s.min_p = 0.1f;
  s.seed = 7;
  s.max_tokens = 32;
  s.stop = {"###"};
  s.repeat_penalty = 1.3f;
  s.presence_penalty = 0.4f;
  s.frequency_penalty = 0.3f;
  s.json_object = true;
  auto j = ollama_request_json(r, "llama3");
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ(*j, json::parse(R"({
    "model":"llama3",
    "messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],
    "stream":true,
    "format":"json",
    "options":{"temperature":0.2,"top_p":0.8,"top_k":20,"min_p":0.1,"seed":7,"num_predict":32,"stop":["###"],
               "repeat_penalty":1.3,"presence_penalty":0.4,"frequency_penalty":0.3}})"));

  s.json_schema = R"({"type":"object","properties":{"a":{"type":"integer"}}})";
  j = ollama_request_json(r, "llama3");
  EXPECT_EQ((*j)["format"], json::parse(s.json_schema));
}

TEST(OllamaRequestJsonTest, SendsPromptsRaw) {
  GenerateRequest r;
  r.prompt = "Once upon";
  auto j = ollama_request_json(r, "m");
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)["prompt"], "Once upon");
  EXPECT_EQ((*j)["raw"], true);
  EXPECT_FALSE(j->contains("messages"));
}

TEST(OllamaRequestJsonTest, RefusesWhatOllamaCannotDo) {
  GenerateRequest r = chat("hi");
  r.n = 2;
  auto j = ollama_request_json(r, "m");
  EXPECT_EQ(j.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(j.status().param(), "n");
  r.n = 1;
  r.sampling.logit_bias = {{1, 1.0f}};
  EXPECT_EQ(ollama_request_json(r, "m").status().param(), "logit_bias");
  r.sampling.logit_bias.clear();
  r.sampling.top_logprobs = 0;
  EXPECT_EQ(ollama_request_json(r, "m").status().param(), "logprobs");
}

TEST(OllamaStreamDecoderTest, DecodesNdjsonWithFinalCounts) {
  std::string s =
      "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n"
      "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\n"
      "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"length\","
      "\"prompt_eval_count\":9,\"eval_count\":2}\n";
  for (size_t step : {size_t(1), size_t(13), size_t(1000)}) {
    OllamaStreamDecoder d(true, "http://h/api/chat");
    Decoded r = decode(d, s, step);
    ASSERT_TRUE(r.status.is_ok());
    EXPECT_TRUE(r.ended);
    ASSERT_EQ(r.deltas.size(), 3u);
    EXPECT_EQ(r.deltas[2].finish_reason, FinishReason::kLength);
    EXPECT_EQ(r.completion.choices[0].text, "Hello");
    EXPECT_EQ(r.completion.choices[0].finish_reason, FinishReason::kLength);
    EXPECT_EQ(r.completion.usage.prompt_tokens, 9);
    EXPECT_EQ(r.completion.usage.completion_tokens, 2);
  }
}

TEST(OllamaStreamDecoderTest, GenerateLinesAndErrors) {
  OllamaStreamDecoder d(false, "http://h/api/generate");
  Decoded r = decode(d, "{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":true}", 4);
  ASSERT_TRUE(r.status.is_ok());
  EXPECT_TRUE(r.ended);  // the last line may lack its newline
  EXPECT_EQ(r.completion.choices[0].text, "ab");
  EXPECT_EQ(r.completion.choices[0].finish_reason, FinishReason::kStop);

  OllamaStreamDecoder e(true, "http://h/api/chat");
  r = decode(e, "{\"error\":\"llama runner process has terminated\"}\n", 100);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("llama runner process has terminated"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Tools

GenerateRequest tool_chat() {
  GenerateRequest r = chat("weather in Paris?");
  ToolSpec weather;
  weather.name = "get_weather";
  weather.description = "current weather";
  weather.parameters = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  ToolSpec time;
  time.name = "get_time";
  time.parameters = R"({"type":"object","properties":{}})";
  r.tools = {weather, time};
  ChatMessage call;
  call.role = "assistant";
  call.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
  ChatMessage answer;
  answer.role = "tool";
  answer.tool_call_id = "call_1";
  answer.content = "sunny";
  r.messages.push_back(call);
  r.messages.push_back(answer);
  return r;
}

// The body is written with no DOM, its members sorted as json_text() writes
// a DOM's: with every field set, its text is its own DOM's text.
TEST(OpenAiRequestJsonTest, TheBodyIsWrittenAsJsonTextWouldWriteItsDom) {
  auto canonical = [](const std::string& text) {
    auto j = parse_json(text);
    return j ? json_text(*j) : "not JSON: " + j.status().to_string();
  };
  GenerateRequest r = tool_chat();  // system, user, a tool call, its result
  r.messages[1].content = "hi \"there\"\n\xe2\x82\xac";
  const std::vector<ToolSpec> both = r.tools;
  r.tools.resize(1);  // one required tool: named in tool_choice
  r.tool_choice = "required";
  r.parallel_tool_calls = false;
  set_every_sampling_field(r);
  SamplingParams& s = r.sampling;
  s.logit_bias.push_back({15, 1.0f});  // a repeated token: its last bias is sent
  s.seed = 4000000000u;                 // past INT32_MAX
  for (bool stream : {false, true}) {
    std::string text;
    ASSERT_TRUE(append_openai_request(text, r, "up", stream).is_ok());
    EXPECT_EQ(canonical(text), text);
    EXPECT_EQ(parse_json(text)->at("logit_bias"), json::parse(R"({"15":1.0,"7":2.5})"));
    EXPECT_EQ(parse_json(text)->at("seed"), 4000000000u);
  }
  r.tools = both;  // two: tool_choice "required"
  s.json_schema.clear();
  s.json_object = true;
  std::string text;
  ASSERT_TRUE(append_openai_request(text, r, "up").is_ok());
  EXPECT_EQ(canonical(text), text);
  EXPECT_EQ(parse_json(text)->at("tool_choice"), "required");

  GenerateRequest p;
  p.prompt = "Once \x01";
  p.sampling.top_logprobs = 2;
  text.clear();
  ASSERT_TRUE(append_openai_request(text, p, "up").is_ok());
  EXPECT_EQ(canonical(text), text);

  r.tools = {{"bad", "", "[1]"}};
  text = "kept";
  EXPECT_FALSE(append_openai_request(text, r, "up").is_ok());
  EXPECT_EQ(text, "kept");
}

TEST(OpenAiRequestJsonTest, ForwardsToolsToolChoiceAndToolMessages) {
  GenerateRequest r = tool_chat();
  auto j = openai_request_json(r, "up");
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ((*j)["tools"], json::parse(R"([
    {"type":"function","function":{"name":"get_weather","description":"current weather",
     "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
    {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}])"));
  EXPECT_FALSE(j->contains("tool_choice"));  // auto is the upstream's default
  EXPECT_FALSE(j->contains("parallel_tool_calls"));
  EXPECT_EQ((*j)["messages"][2], json::parse(R"({"role":"assistant","content":null,"tool_calls":[
    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]})"));
  EXPECT_EQ((*j)["messages"][3], json::parse(R"({"role":"tool","tool_call_id":"call_1","content":"sunny"})"));

  r.tool_choice = "required";
  r.parallel_tool_calls = false;
  j = openai_request_json(r, "up");
  EXPECT_EQ((*j)["tool_choice"], "required");
  EXPECT_EQ((*j)["parallel_tool_calls"], false);

  // A client's named function: the API keeps that one tool and "required".
  r.tools.resize(1);
  j = openai_request_json(r, "up");
  EXPECT_EQ((*j)["tool_choice"], json::parse(R"({"type":"function","function":{"name":"get_weather"}})"));

  r.tool_choice = "none";
  j = openai_request_json(r, "up");
  EXPECT_FALSE(j->contains("tools"));
  EXPECT_FALSE(j->contains("tool_choice"));
}

TEST(OpenAiRequestJsonTest, RefusesToolParametersThatAreNotAnObject) {
  GenerateRequest r = tool_chat();
  r.tools[1].parameters = "[1]";
  auto j = openai_request_json(r, "up");
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(j.status().param(), "tools[1].function.parameters");
}

const char* kToolStream =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,"
    "\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
    "\"{\\\"city\\\":\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
    "\"\\\"Paris\\\"}\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\","
    "\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: [DONE]\n\n";

TEST(OpenAiStreamDecoderTest, AssemblesStreamedToolCallsAndRelaysThePieces) {
  for (size_t step : {size_t(1), size_t(9), size_t(4096)}) {
    OpenAiStreamDecoder d(true, 1, "upstream for model 'm'");
    Decoded r = decode(d, kToolStream, step);
    ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
    EXPECT_TRUE(r.ended);
    ASSERT_EQ(r.deltas.size(), 5u) << "step " << step;
    ASSERT_EQ(r.deltas[0].tool_calls.size(), 1u);
    EXPECT_EQ(r.deltas[0].tool_calls[0].id, "call_a");
    EXPECT_EQ(r.deltas[0].tool_calls[0].name, "get_weather");
    EXPECT_EQ(r.deltas[1].tool_calls[0].arguments, "{\"city\":");
    EXPECT_EQ(r.deltas[1].tool_calls[0].id, "");
    EXPECT_EQ(r.deltas[3].tool_calls[0].index, 1);
    EXPECT_EQ(r.deltas[4].finish_reason, FinishReason::kToolCalls);
    const Choice& c = r.completion.choices[0];
    ASSERT_EQ(c.tool_calls.size(), 2u);
    EXPECT_EQ(c.tool_calls[0].id, "call_a");
    EXPECT_EQ(c.tool_calls[0].name, "get_weather");
    EXPECT_EQ(c.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
    EXPECT_EQ(c.tool_calls[1].id, "call_b");
    EXPECT_EQ(c.tool_calls[1].arguments, "{}");
    EXPECT_EQ(c.text, "");
    EXPECT_EQ(c.finish_reason, FinishReason::kToolCalls);
  }
}

TEST(OpenAiStreamDecoderTest, ReadsToolCallsOfAWholeAnswer) {
  OpenAiStreamDecoder d(true, 1, "u");
  HttpResponseHead head;
  head.headers["content-type"] = "application/json";
  d.start(head);
  Decoded r = decode(d,
                     R"({"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[)"
                     R"({"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},)"
                     R"("finish_reason":"tool_calls"}]})",
                     16);
  ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
  ASSERT_EQ(r.completion.choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r.completion.choices[0].tool_calls[0].id, "c1");
  EXPECT_EQ(r.completion.choices[0].tool_calls[0].name, "f");
  EXPECT_EQ(r.completion.choices[0].tool_calls[0].arguments, "{\"x\":1}");
  EXPECT_EQ(r.completion.choices[0].finish_reason, FinishReason::kToolCalls);
  ASSERT_EQ(r.deltas.size(), 1u);
  EXPECT_EQ(r.deltas[0].tool_calls.size(), 1u);
}

TEST(OpenAiStreamDecoderTest, RefusesAToolCallIndexBeyondTheLimit) {
  OpenAiStreamDecoder d(true, 1, "upstream for model 'm'");
  Decoded r = decode(d,
                     "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":100000000,"
                     "\"function\":{\"arguments\":\"x\"}}]}}]}\n\n",
                     4096);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("tool call index"), std::string::npos) << r.status.message();
}

TEST(OllamaRequestJsonTest, ForwardsToolsAndToolMessages) {
  GenerateRequest r = tool_chat();
  auto j = ollama_request_json(r, "m");
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ((*j)["tools"][0]["function"]["name"], "get_weather");
  EXPECT_EQ((*j)["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
  // Ollama takes a call's arguments as an object, and names the function a
  // tool message answers.
  EXPECT_EQ((*j)["messages"][2], json::parse(R"({"role":"assistant","content":"","tool_calls":[
    {"function":{"name":"get_weather","arguments":{"city":"Paris"}}}]})"));
  EXPECT_EQ((*j)["messages"][3], json::parse(R"({"role":"tool","content":"sunny","tool_name":"get_weather"})"));

  r.tool_choice = "none";
  j = ollama_request_json(r, "m");
  EXPECT_FALSE(j->contains("tools"));

  r.tool_choice = "required";
  j = ollama_request_json(r, "m");
  EXPECT_EQ(j.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(j.status().param(), "tool_choice");

  r.tool_choice = "auto";
  r.messages[2].tool_calls[0].arguments = "not json";
  j = ollama_request_json(r, "m");
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(j.status().param(), "messages[2].tool_calls[0].function.arguments");
}

TEST(OllamaStreamDecoderTest, ReadsToolCallsWithObjectArguments) {
  std::string s =
      "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\","
      "\"arguments\":{\"city\":\"Paris\"}}},{\"function\":{\"name\":\"get_time\",\"arguments\":{}}}]},\"done\":false}\n"
      "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"eval_count\":9}\n";
  for (size_t step : {size_t(1), size_t(4096)}) {
    OllamaStreamDecoder d(true, "u");
    Decoded r = decode(d, s, step);
    ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
    EXPECT_TRUE(r.ended);
    ASSERT_EQ(r.deltas.size(), 2u);
    ASSERT_EQ(r.deltas[0].tool_calls.size(), 2u);
    EXPECT_EQ(r.deltas[0].tool_calls[1].index, 1);
    const Choice& c = r.completion.choices[0];
    ASSERT_EQ(c.tool_calls.size(), 2u);
    EXPECT_EQ(c.tool_calls[0].id, "call_0");
    EXPECT_EQ(c.tool_calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(c.tool_calls[0].arguments), json::parse(R"({"city":"Paris"})"));
    EXPECT_EQ(c.tool_calls[1].id, "call_1");
    EXPECT_EQ(c.tool_calls[1].arguments, "{}");
    EXPECT_EQ(c.finish_reason, FinishReason::kToolCalls);  // Ollama says "stop"
  }
}

// ---------------------------------------------------------------------------
// Bounded reading

TEST(LineSplitterTest, SplitsLinesWhateverThePiecesAndKeepsTheRest) {
  for (size_t step : {size_t(1), size_t(3), size_t(100)}) {
    LineSplitter s;
    std::vector<std::string> lines;
    std::string in = "one\r\ntwo\n\nthree";
    for (size_t i = 0; i < in.size(); i += step) {
      Status st = s.feed(std::string_view(in).substr(i, step), [&](std::string_view l) {
        lines.emplace_back(l);
        return Status::ok();
      });
      ASSERT_TRUE(st.is_ok());
    }
    EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", ""})) << step;
    EXPECT_EQ(s.pending(), 5u);
    EXPECT_EQ(s.take_rest(), "three");
    EXPECT_EQ(s.pending(), 0u);
  }
}

TEST(LineSplitterTest, ALongLineFedByteByByteIsScannedOnce) {
  // A rescan from the line's start on every piece would compare about
  // 5 * 10^11 bytes here; a scan that resumes compares each byte once.
  LineSplitter s;
  size_t got = 0;
  auto on_line = [&](std::string_view l) {
    got = l.size();
    return Status::ok();
  };
  const std::string line(1000000, 'x');
  for (char c : line) ASSERT_TRUE(s.feed(std::string_view(&c, 1), on_line).is_ok());
  EXPECT_EQ(s.pending(), line.size());
  ASSERT_TRUE(s.feed("\n", on_line).is_ok());
  EXPECT_EQ(got, line.size());
  EXPECT_EQ(s.pending(), 0u);
}

TEST(OpenAiStreamDecoderTest, AnEventLargerThanTheLimitFailsTheRequest) {
  // One endless line, fed in pieces.
  OpenAiStreamDecoder a(true, 1, "upstream for model 'm'", 4096);
  Decoded r = decode(a, "data: " + std::string(10000, 'x'), 512, /*finish=*/false);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("larger than 4096 bytes"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("upstream for model 'm'"), std::string::npos) << r.status.message();

  // Many short data lines that never end their event.
  OpenAiStreamDecoder b(true, 1, "u", 4096);
  std::string lines;
  for (int i = 0; i < 2000; ++i) lines += "data: x\n";
  r = decode(b, lines, 64, /*finish=*/false);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("larger than 4096 bytes"), std::string::npos) << r.status.message();

  // Events under the limit pass, however many.
  OpenAiStreamDecoder c(true, 1, "u", 4096);
  std::string events;
  for (int i = 0; i < 2000; ++i) events += "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
  r = decode(c, events + "data: [DONE]\n\n", 1000);
  ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
  EXPECT_EQ(r.completion.choices[0].text.size(), 2000u);
}

TEST(OpenAiStreamDecoderTest, DeeplyNestedJsonFailsTheRequest) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  OpenAiStreamDecoder d(true, 1, "upstream for model 'm'");
  Decoded r = decode(d, "data: " + deep + "\n\n", 65536);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("nested deeper than"), std::string::npos) << r.status.message();

  OpenAiStreamDecoder w(true, 1, "u");
  HttpResponseHead head;
  head.headers["content-type"] = "application/json";
  w.start(head);
  r = decode(w, "{\"choices\":" + deep + "}", 65536);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("nested deeper than"), std::string::npos) << r.status.message();

  // An error answer that deep still maps by its HTTP status, with the raw body cut short.
  Status s = upstream_error_status(500, deep, "upstream for model 'm'");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_LT(s.message().size(), 700u);
}

TEST(OllamaStreamDecoderTest, LongOrDeepLinesFailTheRequest) {
  OllamaStreamDecoder a(true, "u", 4096);
  Decoded r = decode(a, std::string(10000, ' ') + "{}", 512, /*finish=*/false);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("larger than 4096 bytes"), std::string::npos) << r.status.message();

  OllamaStreamDecoder b(true, "u");
  r = decode(b, std::string(100000, '[') + std::string(100000, ']') + "\n", 65536);
  EXPECT_EQ(r.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status.message().find("nested deeper than"), std::string::npos) << r.status.message();
}

config::ModelConfig remote(const std::string& type, const std::string& base_url) {
  config::ModelConfig c;
  c.name = "m";
  c.type = type;
  c.base_url = base_url;
  c.context = 8192;
  c.capabilities = {"general"};
  return c;
}

TEST(RemoteProviderCreateTest, ChecksTheSettings) {
  auto p = create_provider(remote("openai", ""));
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().param(), "base_url");

  p = create_provider(remote("openai", "https://api.example.com/v1"));
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();  // connects lazily

  auto bad_ca = remote("openai", "https://api.example.com/v1");
  bad_ca.ca_file = "/nonexistent/llmpool-test-ca.pem";
  p = create_provider(bad_ca);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().param(), "ca_file");
  EXPECT_NE(p.status().message().find("/nonexistent/llmpool-test-ca.pem"), std::string::npos)
      << p.status().message();

  p = create_provider(remote("openai", "ftp://api.example.com/v1"));
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);

  p = create_provider(remote("ollama", "localhost:11434"));
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

TEST(RemoteProviderCreateTest, MissingApiKeyVariableNamesIt) {
  ::unsetenv("LLMPOOL_TEST_NO_SUCH_KEY");
  auto c = remote("openai", "http://127.0.0.1:1/v1");
  c.api_key_env = "LLMPOOL_TEST_NO_SUCH_KEY";
  auto p = create_provider(c);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().param(), "api_key_env");
  EXPECT_NE(p.status().message().find("LLMPOOL_TEST_NO_SUCH_KEY"), std::string::npos);
}

TEST(RemoteProviderCreateTest, CreatesBothTypesWithTheirInfo) {
  ::setenv("LLMPOOL_TEST_KEY", "sk-test", 1);
  auto c = remote("openai", "http://127.0.0.1:1/v1/");
  c.api_key_env = "LLMPOOL_TEST_KEY";
  c.max_concurrent = 3;
  auto p = create_provider(c);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ((*p)->info().context, 8192);
  EXPECT_EQ((*p)->info().type, "openai");
  EXPECT_EQ((*p)->stats().parallel, 3);
  auto* remote_provider = dynamic_cast<RemoteProvider*>(p->get());
  ASSERT_NE(remote_provider, nullptr);
  EXPECT_EQ(remote_provider->settings().url("/chat/completions"), "http://127.0.0.1:1/v1/chat/completions");
  EXPECT_EQ(remote_provider->settings().upstream_model, "m");
  EXPECT_EQ(remote_provider->settings().headers.at("Authorization"), "Bearer sk-test");
  EXPECT_EQ((*p)->tokenize("x", false).status().code(), StatusCode::kUnimplemented);

  auto o = create_provider(remote("ollama", "http://127.0.0.1:11434"));
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ((*o)->info().type, "ollama");
}

}  // namespace
}  // namespace llmpool::providers
