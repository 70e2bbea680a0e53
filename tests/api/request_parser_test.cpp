// Hostile request bodies: deep nesting, a wrong JSON type at every field of
// every depth, and the bounds on sizes and counts. Each must answer a
// Status naming the field (param) and never crash or throw.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "api/openai.h"
#include "api/routing_routes.h"

namespace llmpool::api {
namespace {

using nlohmann::json;

const char* kMessages = R"("messages":[{"role":"user","content":"x"}])";

// `depth` nested arrays (or objects {"a": ...}) around 1, as JSON text.
std::string nested(size_t depth, bool objects = false) {
  std::string s;
  s.reserve(depth * 6 + 1);
  for (size_t i = 0; i < depth; ++i) s += objects ? "{\"a\":" : "[";
  s += "1";
  for (size_t i = 0; i < depth; ++i) s += objects ? "}" : "]";
  return s;
}

// A nested JSON schema: {"type":"object","properties":{"a":{...}}}, `depth` objects deep.
std::string nested_schema(size_t depth) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += R"({"type":"object","properties":{"a":)";
  s += R"({"type":"string"})";
  for (size_t i = 0; i < depth; ++i) s += "}}";
  return s;
}

Status chat_error(const std::string& body) {
  Result<ApiRequest> r = parse_request(body, Endpoint::kChat);
  EXPECT_FALSE(r.is_ok()) << body.substr(0, 200);
  return r.status();
}

std::string chat_with(const std::string& extra) {
  return std::string(R"({"model":"m",)") + kMessages + "," + extra + "}";
}

TEST(ParseRequestTest, DeeplyNestedMaxTokensIsRefusedNamingTheField) {
  // 100,000 nested arrays, 200 KB: used to crash the server (dump() in the error message).
  std::string body = chat_with(R"("max_tokens":)" + nested(100000));
  ASSERT_GT(body.size(), 200000u);
  Status s = chat_error(body);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.param(), "max_tokens");
  EXPECT_NE(s.message().find("nested deeper than 64"), std::string::npos) << s.message();
  EXPECT_LT(s.message().size(), 200u);
}

TEST(ParseRequestTest, DeeplyNestedToolParametersAreRefusedNamingTheSchema) {
  std::string body = chat_with(R"("tools":[{"type":"function","function":{"name":"f","parameters":)" +
                               nested(100000, true) + "}}]");
  Status s = chat_error(body);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.param(), "tools[0].function.parameters");
}

TEST(ParseRequestTest, DeepResponseFormatSchemaIsRefusedQuickly) {
  // 20,000 levels: used to hang the server for a minute, then kill it.
  std::string body =
      chat_with(R"("response_format":{"type":"json_schema","json_schema":{"name":"n","schema":)" +
                nested_schema(20000) + "}}");
  Status s = chat_error(body);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.param(), "response_format.json_schema.schema");
}

TEST(ParseRequestTest, SchemaDeeperThanTheSchemaLimitIsRefused) {
  // 20 objects are 41 levels: within the body's 64, past the schema's 32.
  std::string schema = nested_schema(20);
  Status rf = chat_error(chat_with(R"("response_format":{"type":"json_schema","json_schema":{"schema":)" + schema + "}}"));
  EXPECT_EQ(rf.param(), "response_format.json_schema.schema");
  EXPECT_NE(rf.message().find("deeper than 32"), std::string::npos) << rf.message();
  Status tool = chat_error(chat_with(R"("tools":[{"type":"function","function":{"name":"f","parameters":)" + schema + "}}]"));
  EXPECT_EQ(tool.param(), "tools[0].function.parameters");
  // 10 objects (21 levels) are fine.
  EXPECT_TRUE(parse_request(chat_with(R"("response_format":{"type":"json_schema","json_schema":{"schema":)" +
                                      nested_schema(10) + "}}"),
                            Endpoint::kChat)
                  .is_ok());
}

TEST(ParseRequestTest, DeepValuesAnywhereNameTheirField) {
  struct Case {
    std::string body;
    std::string param;
  } cases[] = {
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":)" + nested(70) + "}]}]}",
       "messages[0].content[0].text"},
      {R"({"model":)" + nested(70) + "," + kMessages + "}", "model"},
      {chat_with(R"("stop":["a",)" + nested(70) + "]"), "stop[1]"},
      {chat_with(R"("logit_bias":{"5":)" + nested(70) + "}"), "logit_bias.5"},
      {chat_with(R"("metadata":)" + nested(70)), "metadata"},  // unknown fields are bounded too
      {nested(70), ""},
  };
  for (const auto& c : cases) {
    Status s = chat_error(c.body);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.param(), c.param) << s.message();
  }
}

TEST(ParseRequestTest, WrongTypesAtDepthNameTheirPath) {
  const std::string history =
      R"("messages":[{"role":"user","content":"weather?"},
          {"role":"user","content":[{"type":"text","text":"a"}]},
          {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
            "function":{"name":"get_weather","arguments":"{}"}}]},
          {"role":"tool","tool_call_id":"call_1","content":"sunny"}])";
  auto with_history = [&](std::string from, std::string to) {
    std::string h = history;
    size_t at = h.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    h.replace(at, from.size(), to);
    return R"({"model":"m",)" + h + "}";
  };
  struct Case {
    std::string body;
    std::string param;
  } cases[] = {
      {chat_with(R"("tools":[{"type":1,"function":{"name":"f"}}])"), "tools[0].type"},
      {chat_with(R"("tools":[{"type":"code","function":{"name":"f"}}])"), "tools[0].type"},
      {chat_with(R"("tools":[{"type":"function","function":3}])"), "tools[0].function"},
      {chat_with(R"("tools":[{"type":"function","function":{"name":["f"]}}])"), "tools[0].function.name"},
      {chat_with(R"("tools":[{"type":"function","function":{"name":"f","description":7}}])"),
       "tools[0].function.description"},
      {chat_with(R"("tools":[{"type":"function","function":{"name":"f","parameters":[]}}])"),
       "tools[0].function.parameters"},
      {chat_with(R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"function":{"name":1}})"),
       "tool_choice.function.name"},
      {with_history(R"("id":"call_1")", R"("id":7)"), "messages[2].tool_calls[0].id"},
      {with_history(R"("name":"get_weather")", R"("name":false)"), "messages[2].tool_calls[0].function.name"},
      {with_history(R"("arguments":"{}")", R"("arguments":12)"), "messages[2].tool_calls[0].function.arguments"},
      {with_history(R"("text":"a")", R"("text":5)"), "messages[1].content[0].text"},
      {with_history(R"("tool_call_id":"call_1")", R"("tool_call_id":1)"), "messages[3].tool_call_id"},
      {with_history(R"("role":"tool")", R"("role":{})"), "messages[3].role"},
      {chat_with(R"("response_format":{"type":"json_schema","json_schema":{"schema":"object"}})"),
       "response_format.json_schema.schema"},
      {chat_with(R"("response_format":{"type":"json_schema","json_schema":[]})"), "response_format.json_schema"},
      {chat_with(R"("response_format":{"type":7})"), "response_format.type"},
      {chat_with(R"("logit_bias":{"123":"up"})"), "logit_bias.123"},
      {chat_with(R"("logit_bias":{"abc":1})"), "logit_bias.abc"},
      {chat_with(R"("stop":["a",1])"), "stop[1]"},
      {chat_with(R"("stream_options":{"include_usage":1})"), "stream_options.include_usage"},
      {chat_with(R"("stream_options":"yes")"), "stream_options"},
      {chat_with(R"("ensemble":{"strategy":"voting","judge":7})"), "ensemble.judge"},
  };
  for (const auto& c : cases) {
    Status s = chat_error(c.body);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(s.param(), c.param) << c.body << " -> " << s.message();
  }
}

// Every path of a full request, in walk order.
void collect_paths(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>* out) {
  out->push_back(at);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) collect_paths(it.value(), at / it.key(), out);
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) collect_paths(j[i], at / i, out);
}

// "/messages/2/tool_calls/0/id" -> "messages[2].tool_calls[0].id"
std::string dotted(const json::json_pointer& p, const json& root) {
  std::string out;
  const json* at = &root;
  std::string text = p.to_string();
  size_t pos = 1;
  while (pos <= text.size() && !text.empty()) {
    size_t next = text.find('/', pos);
    std::string token = text.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (at->is_array()) {
      out += "[" + token + "]";
      at = &(*at)[std::stoul(token)];
    } else {
      if (!out.empty()) out += ".";
      out += token;
      at = &(*at)[token];
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  return out;
}

// The error is about the changed field, a field inside it, or the value
// that holds it. A changed tool may also surface as `tool_choice`, which
// names it.
bool related(const std::string& param, const std::string& path) {
  if (param == "tool_choice" && path.rfind("tools", 0) == 0) return true;
  return param.rfind(path, 0) == 0 || path.rfind(param, 0) == 0;
}

const json kFullRequest = json::parse(R"({
  "model": "m",
  "messages": [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    {"role": "assistant", "content": null, "reasoning_content": "r",
     "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
  "tools": [{"type": "function", "function": {"name": "f", "description": "d",
             "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}],
  "tool_choice": {"type": "function", "function": {"name": "f"}},
  "parallel_tool_calls": true,
  "temperature": 0.5, "top_p": 0.9, "top_k": 4, "min_p": 0.1, "presence_penalty": 0.1,
  "frequency_penalty": 0.1, "repeat_penalty": 1.1, "repeat_last_n": 8, "seed": 1, "max_tokens": 8,
  "max_completion_tokens": 8, "n": 1, "priority": 1, "thinking_budget": 4, "ignore_eos": false, "speculative": true,
  "logit_bias": {"12": 1},
  "stream": false, "stream_options": {"include_usage": true},
  "logprobs": true, "top_logprobs": 2,
  "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
  "stop": ["a", "b"],
  "user": "u", "reasoning_effort": "low",
  "ensemble": {"strategy": "voting", "k": 2, "judge": "j"}
})");

TEST(ParseRequestTest, EveryFieldGivenEveryWrongTypeAnswersAStatusNamingIt) {
  ASSERT_TRUE(parse_request(kFullRequest.dump(), Endpoint::kChat).is_ok());
  std::vector<json::json_pointer> paths;
  collect_paths(kFullRequest, json::json_pointer(), &paths);
  const json replacements[] = {nullptr, true, 7, 2.5, "s", json::array(), json::object(), json::array({1}),
                               json::object({{"k", 1}}), json::parse(nested(70))};
  size_t errors = 0;
  for (const auto& p : paths) {
    if (p.empty()) continue;
    std::string path = dotted(p, kFullRequest);
    for (const json& r : replacements) {
      if (r.type() == kFullRequest[p].type() && !r.is_array() && !r.is_object()) continue;
      json mutated = kFullRequest;
      mutated[p] = r;
      std::string body = mutated.dump();
      for (Endpoint e : {Endpoint::kChat, Endpoint::kCompletions}) {
        if (e == Endpoint::kCompletions) {
          mutated["prompt"] = "x";
          body = mutated.dump();
        }
        Result<ApiRequest> result = Status::internal("not run");
        EXPECT_NO_THROW(result = parse_request(body, e)) << path << " = " << r.dump().substr(0, 40);
        if (result.is_ok()) continue;
        ++errors;
        const Status& s = result.status();
        EXPECT_TRUE(s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kUnimplemented)
            << path << ": " << s.to_string();
        if (r.is_null() || e == Endpoint::kCompletions) continue;  // null is "not set"; completions skip chat fields
        EXPECT_TRUE(related(s.param(), path))
            << path << " = " << r.dump().substr(0, 40) << " -> param '" << s.param() << "': " << s.message();
        EXPECT_LT(s.message().size(), 400u) << s.message();
      }
    }
  }
  EXPECT_GT(errors, 300u);
}

TEST(ParseRequestTest, SpeculativeIsOnUnlessTheRequestTurnsItOff) {
  auto on = parse_request(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", Endpoint::kChat);
  ASSERT_TRUE(on.is_ok()) << on.status().message();
  EXPECT_TRUE(on->generate.sampling.speculative);
  auto off = parse_request(R"({"model":"m","prompt":"hi","speculative":false})", Endpoint::kCompletions);
  ASSERT_TRUE(off.is_ok()) << off.status().message();
  EXPECT_FALSE(off->generate.sampling.speculative);
  auto bad = parse_request(R"({"model":"m","prompt":"hi","speculative":"no"})", Endpoint::kCompletions);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().param(), "speculative");
}

TEST(ParseRequestTest, CountsAndLengthsAreBounded) {
  std::string tools = "[";
  for (size_t i = 0; i <= kMaxTools; ++i)
    tools += std::string(i ? "," : "") + R"({"type":"function","function":{"name":"f)" + std::to_string(i) + R"("}})";
  tools += "]";
  EXPECT_EQ(chat_error(chat_with(R"("tools":)" + tools)).param(), "tools");
  std::string long_name(kMaxToolNameLength + 1, 'n');
  EXPECT_EQ(chat_error(chat_with(R"("tools":[{"type":"function","function":{"name":")" + long_name + R"("}}])")).param(),
            "tools[0].function.name");
  std::string long_desc(kMaxToolDescriptionLength + 1, 'd');
  EXPECT_EQ(chat_error(chat_with(R"("tools":[{"type":"function","function":{"name":"f","description":")" + long_desc +
                                 R"("}}])"))
                .param(),
            "tools[0].function.description");
  std::string calls = "[";
  for (size_t i = 0; i <= kMaxToolCallsPerMessage; ++i)
    calls += std::string(i ? "," : "") + R"({"id":"c","function":{"name":"f","arguments":"{}"}})";
  calls += "]";
  EXPECT_EQ(chat_error(R"({"model":"m","messages":[{"role":"assistant","tool_calls":)" + calls + "}]}").param(),
            "messages[0].tool_calls");
  std::string parts = "[";
  for (size_t i = 0; i <= kMaxContentParts; ++i) parts += std::string(i ? "," : "") + R"({"type":"text","text":"a"})";
  parts += "]";
  EXPECT_EQ(chat_error(R"({"model":"m","messages":[{"role":"user","content":)" + parts + "}]}").param(),
            "messages[0].content");
  // A schema past the size limit, in a tool and in response_format.
  std::string big = R"({"type":"object","description":")" + std::string(70 << 10, 'x') + R"("})";
  Status tool = chat_error(chat_with(R"("tools":[{"type":"function","function":{"name":"f","parameters":)" + big + "}}]"));
  EXPECT_EQ(tool.param(), "tools[0].function.parameters");
  EXPECT_NE(tool.message().find("bytes"), std::string::npos) << tool.message();
  Status rf = chat_error(chat_with(R"("response_format":{"type":"json_schema","json_schema":{"schema":)" + big + "}}"));
  EXPECT_EQ(rf.param(), "response_format.json_schema.schema");
}

TEST(ParseRequestTest, SchemaConstructsThatBlowUpTheConverterAreRefusedUpFront) {
  auto schema_error = [](const std::string& schema) {
    return chat_error(chat_with(R"("response_format":{"type":"json_schema","json_schema":{"schema":)" + schema + "}}"));
  };
  for (const char* schema : {
           R"({"type":"array","items":{"type":"string"},"minItems":100000})",
           R"({"type":"array","maxItems":4294967296})",
           R"({"type":"string","maxLength":1000000})",
           R"({"type":"string","pattern":"^a{100000}$"})",
           R"({"type":"integer","minimum":-9223372036854775808,"maximum":-1})",
       }) {
    Status s = schema_error(schema);
    EXPECT_EQ(s.param(), "response_format.json_schema.schema") << schema;
    EXPECT_NE(s.message().find("limit"), std::string::npos) << schema << " -> " << s.message();
  }
  std::string big_enum = R"({"enum":[)";
  for (int i = 0; i < 2000; ++i) big_enum += std::string(i ? "," : "") + std::to_string(i);
  big_enum += "]}";
  EXPECT_NE(schema_error(big_enum).message().find("enum"), std::string::npos);
  // `type` arrays nested 20 deep: 2^20 copies in the converter.
  std::string copies;
  for (int i = 0; i < 20; ++i) copies += R"({"type":["array","null"],"items":)";
  copies += R"({"type":"string"})" + std::string(20, '}');
  Status s = schema_error(copies);
  EXPECT_NE(s.message().find("expands"), std::string::npos) << s.message();
  std::string wide = R"({"type":"object","properties":{)";
  for (int i = 0; i < 200; ++i) wide += std::string(i ? "," : "") + "\"p" + std::to_string(i) + R"(":{"type":"string"})";
  wide += "}}";
  EXPECT_NE(schema_error(wide).message().find("properties"), std::string::npos);
  // In tools the same checks apply, naming the tool.
  Status tool = chat_error(chat_with(R"("tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"f","parameters":)" +
                                     big_enum + "}}]"));
  EXPECT_EQ(tool.param(), "tools[1].function.parameters");
}

TEST(ParseRequestTest, OtherBodiesAreBoundedAndTyped) {
  Result<EmbeddingsRequest> e = parse_embeddings_request(R"({"model":"m","input":)" + nested(100000) + "}");
  ASSERT_FALSE(e.is_ok());
  EXPECT_EQ(e.status().param(), "input[0]");
  e = parse_embeddings_request(R"({"model":"m","input":["a",1.5]})");
  ASSERT_FALSE(e.is_ok());
  EXPECT_EQ(e.status().param(), "input[1]");
  e = parse_embeddings_request(R"({"model":"m","input":"a","encoding_format":7})");
  ASSERT_FALSE(e.is_ok());
  EXPECT_EQ(e.status().param(), "encoding_format");

  Result<FeedbackRequest> f = parse_feedback_request(R"({"response_id":"x","helpful":)" + nested(100000) + "}");
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().param(), "helpful");
  f = parse_feedback_request(R"({"response_id":7,"helpful":true})");
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().param(), "response_id");
}

}  // namespace
}  // namespace llmpool::api
