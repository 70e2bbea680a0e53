// The model's Jinja template through llama.cpp's chat library: tools in the
// prompt, the tool-call grammar, and the parser that splits thinking, content
// and tool calls. Uses the tiny models of the make_test_models fixture: one
// with the Qwen3 template (tools and <think>), one with ChatML (no tool
// support: the generic tool-call format).
#include "engine/chat_template.h"

#include <gtest/gtest.h>
#include <llama.h>

#include <map>

#include "engine/llama_status.h"

namespace llmpool::engine {
namespace {

const std::string kQwen3 = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-qwen3-q8_0.gguf";
const std::string kChatml = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";

class ChatTemplateTest : public ::testing::Test {
 protected:
  void load(const std::string& path) {
    init_llama_backend();
    model_.reset(llama_model_load_from_file(path.c_str(), llama_model_default_params()));
    ASSERT_TRUE(model_) << path;
    auto t = ChatTemplate::create(model_.get());
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    tmpl_ = std::move(t).value();
  }
  static GenerateRequest weather_request() {
    GenerateRequest r;
    r.messages = {{"user", "What's the weather in Paris?"}};
    r.tools = {{"get_weather", "Get the weather",
                R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"}};
    return r;
  }
  std::unique_ptr<llama_model, void (*)(llama_model*)> model_{nullptr, llama_model_free};
  std::unique_ptr<ChatTemplate> tmpl_;
};

TEST_F(ChatTemplateTest, ToolsGoIntoThePromptWithALazyGrammar) {
  load(kQwen3);
  auto f = tmpl_->apply(weather_request());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_NE(f->prompt.find("get_weather"), std::string::npos);
  EXPECT_NE(f->prompt.find("<tools>"), std::string::npos);
  EXPECT_FALSE(f->grammar.grammar.empty());
  EXPECT_TRUE(f->grammar.lazy);
  EXPECT_FALSE(f->grammar.trigger_patterns.empty());
  ASSERT_TRUE(f->make_parser);
}

// The Qwen3 template's "required" grammar lets text and thinking come before
// the call, which a weak model may never leave; a forced call must start at
// the first token with the template's own <tool_call> syntax.
TEST_F(ChatTemplateTest, RequiredToolChoiceForcesTheTemplatesCallSyntaxFromTheFirstToken) {
  load(kQwen3);
  EXPECT_TRUE(tmpl_->supports_tool_calls());
  auto req = weather_request();
  req.tool_choice = "required";
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_FALSE(f->grammar.grammar.empty());
  EXPECT_FALSE(f->grammar.lazy);
  EXPECT_TRUE(f->grammar.trigger_patterns.empty());
  EXPECT_FALSE(f->grammar.grammar_prefill);
  const std::string& g = f->grammar.grammar;
  const std::string root = g.substr(g.find("root ::="), g.find('\n', g.find("root ::=")) - g.find("root ::="));
  EXPECT_EQ(root.find("until"), std::string::npos) << root;      // no free text first
  EXPECT_EQ(root.find("think"), std::string::npos) << root;      // no thinking first
  EXPECT_NE(g.find("\"<tool_call>"), std::string::npos) << g;
  // At least one call: no way to end before it.
  EXPECT_EQ(g.find("tool-call?"), std::string::npos) << g;
  EXPECT_NE(g.find("get_weather"), std::string::npos);
  EXPECT_NE(f->prompt.find("get_weather"), std::string::npos);
  ASSERT_TRUE(f->make_parser);
  auto parser = f->make_parser();
  parser->update("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lyon\"}}\n</tool_call>", true);
  ASSERT_EQ(parser->tool_calls().size(), 1u);
  EXPECT_EQ(parser->tool_calls()[0].name, "get_weather");
  EXPECT_EQ(parser->content(), "");
}

TEST_F(ChatTemplateTest, ParserKeepsWhatACutOffCallHolds) {
  load(kQwen3);
  auto req = weather_request();
  req.tool_choice = "required";
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok() && f->make_parser);
  auto parser = f->make_parser();
  const std::string out = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
  for (size_t i = 1; i < out.size(); ++i) parser->update(out.substr(0, i), false);
  parser->update(out, true);  // max_tokens ended it here
  ASSERT_EQ(parser->tool_calls().size(), 1u);
  EXPECT_EQ(parser->tool_calls()[0].name, "get_weather");
  EXPECT_EQ(parser->content(), "");
}

TEST_F(ChatTemplateTest, RequiredToolChoiceWithoutParallelCallsAllowsOneCall) {
  load(kQwen3);
  auto req = weather_request();
  req.tool_choice = "required";
  auto parallel = tmpl_->apply(req);
  req.parallel_tool_calls = false;
  auto single = tmpl_->apply(req);
  ASSERT_TRUE(parallel.is_ok() && single.is_ok());
  EXPECT_NE(parallel->grammar.grammar, single->grammar.grammar);
  EXPECT_FALSE(single->grammar.lazy);
}

TEST_F(ChatTemplateTest, ThinkingBudgetCarriesTheTemplatesThinkingTags) {
  load(kQwen3);
  GenerateRequest req;
  req.messages = {{"user", "Why is the sky blue?"}};
  auto unlimited = tmpl_->apply(req);
  ASSERT_TRUE(unlimited.is_ok());
  EXPECT_EQ(unlimited->grammar.thinking_budget, -1);
  req.thinking_budget = 16;
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->grammar.thinking_budget, 16);
  EXPECT_EQ(f->grammar.thinking_start, "<think>");
  ASSERT_FALSE(f->grammar.thinking_end.empty());
  EXPECT_EQ(f->grammar.thinking_end[0], "</think>");
  EXPECT_EQ(f->prompt.substr(f->prompt.size() - f->grammar.prefill_text.size()), f->grammar.prefill_text);
  EXPECT_FALSE(f->grammar.grammar_prefill);
  // A zero budget asks the template for its no-thinking form: the thinking
  // block is already closed in the prompt.
  req.thinking_budget = 0;
  auto none = tmpl_->apply(req);
  ASSERT_TRUE(none.is_ok());
  EXPECT_NE(none->prompt.find("</think>"), std::string::npos);
  EXPECT_EQ(unlimited->prompt.find("</think>"), std::string::npos);
}

TEST_F(ChatTemplateTest, NoneDropsTheTools) {
  load(kQwen3);
  auto req = weather_request();
  req.tool_choice = "none";
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->prompt.find("get_weather"), std::string::npos);
  EXPECT_TRUE(f->grammar.grammar.empty());
}

TEST_F(ChatTemplateTest, ParserSplitsThinkingContentAndToolCallsAsTheyStream) {
  load(kQwen3);
  auto f = tmpl_->apply(weather_request());
  ASSERT_TRUE(f.is_ok() && f->make_parser);
  auto parser = f->make_parser();
  const std::string out =
      "<think>The user wants weather.</think>Let me check. <tool_call>\n"
      "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  std::string content, reasoning, args, name, id;
  for (size_t i = 1; i <= out.size(); i += 7) {  // grow the output in pieces, as tokens arrive
    Delta d = parser->update(out.substr(0, std::min(i, out.size())), false);
    content += d.text;
    reasoning += d.reasoning_content;
    for (const auto& c : d.tool_calls) {
      args += c.arguments;
      if (!c.name.empty()) name = c.name;
      if (!c.id.empty()) id = c.id;
    }
  }
  Delta last = parser->update(out, true);
  content += last.text;
  reasoning += last.reasoning_content;
  for (const auto& c : last.tool_calls) {
    args += c.arguments;
    if (!c.name.empty()) name = c.name;
    if (!c.id.empty()) id = c.id;
  }
  EXPECT_EQ(parser->reasoning(), "The user wants weather.");
  EXPECT_EQ(reasoning, parser->reasoning());
  EXPECT_EQ(content, parser->content());
  ASSERT_EQ(parser->tool_calls().size(), 1u);
  EXPECT_EQ(parser->tool_calls()[0].name, "get_weather");
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(args, parser->tool_calls()[0].arguments);
  EXPECT_NE(parser->tool_calls()[0].arguments.find("Paris"), std::string::npos);
  EXPECT_EQ(parser->tool_calls()[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(id, parser->tool_calls()[0].id);
}

// Collects what a parser streams while `out` grows in pieces of `step` bytes.
struct Streamed {
  std::string content;
  std::map<int32_t, ToolCall> calls;  // by index: id and name from the first delta, arguments appended
  std::vector<int32_t> first_delta_order;
};

Streamed stream_through(OutputParser& parser, const std::string& out, size_t step) {
  Streamed s;
  auto take = [&](const Delta& d) {
    s.content += d.text;
    for (const auto& c : d.tool_calls) {
      if (!s.calls.count(c.index)) {
        s.first_delta_order.push_back(c.index);
        EXPECT_FALSE(c.id.empty()) << "a call's first delta carries its id";
        EXPECT_FALSE(c.name.empty()) << "a call's first delta carries its name";
        s.calls[c.index] = {c.id, c.name, ""};
      } else {
        EXPECT_TRUE(c.name.empty()) << "the name comes once";
      }
      s.calls[c.index].arguments += c.arguments;
    }
  };
  for (size_t i = step; i < out.size(); i += step) take(parser.update(out.substr(0, i), false));
  take(parser.update(out, true));
  return s;
}

TEST_F(ChatTemplateTest, TemplateWithoutToolSupportUsesTheGenericFormatForcedForRequired) {
  load(kChatml);
  EXPECT_FALSE(tmpl_->supports_tool_calls());
  auto req = weather_request();
  req.tools.push_back({"get_time", "Get the time", R"({"type":"object","properties":{"zone":{"type":"string"}}})"});
  req.tool_choice = "required";
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  // The tools and the format are in the system message the template wrote.
  EXPECT_EQ(f->prompt.rfind("<|im_start|>system\nYou can call these tools", 0), 0u) << f->prompt;
  EXPECT_NE(f->prompt.find("\"name\": \"get_weather\""), std::string::npos);
  EXPECT_NE(f->prompt.find("\"name\": \"get_time\""), std::string::npos);
  EXPECT_NE(f->prompt.find("{\"tool_calls\": [{\"name\": \"<tool name>\""), std::string::npos);
  EXPECT_NE(f->prompt.find("<|im_start|>user\nWhat's the weather in Paris?<|im_end|>"), std::string::npos);
  EXPECT_EQ(f->prompt.substr(f->prompt.size() - 22), "<|im_start|>assistant\n");
  // Forced from the first token: the object's opening is the grammar's start.
  EXPECT_FALSE(f->grammar.grammar.empty());
  EXPECT_FALSE(f->grammar.lazy);
  EXPECT_FALSE(f->grammar.grammar_prefill);
  EXPECT_TRUE(f->grammar.prefill_text.empty());
  EXPECT_NE(f->grammar.grammar.find("get_weather"), std::string::npos);
  EXPECT_NE(f->grammar.grammar.find("get_time"), std::string::npos);
  ASSERT_TRUE(f->make_parser);

  auto parser = f->make_parser();
  const std::string out =
      "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, "
      "{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}]}";
  Streamed s = stream_through(*parser, out, 5);
  EXPECT_EQ(s.content, "");
  EXPECT_EQ(parser->content(), "");
  ASSERT_EQ(parser->tool_calls().size(), 2u);
  EXPECT_EQ(parser->tool_calls()[0].name, "get_weather");
  EXPECT_EQ(parser->tool_calls()[0].arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(parser->tool_calls()[1].name, "get_time");
  EXPECT_EQ(parser->tool_calls()[1].arguments, "{\"zone\": \"CET\"}");
  ASSERT_EQ(s.calls.size(), 2u);
  EXPECT_EQ(s.first_delta_order, (std::vector<int32_t>{0, 1}));
  for (int32_t i = 0; i < 2; ++i) {
    EXPECT_EQ(s.calls[i].name, parser->tool_calls()[i].name);
    EXPECT_EQ(s.calls[i].arguments, parser->tool_calls()[i].arguments);
    EXPECT_EQ(s.calls[i].id, parser->tool_calls()[i].id);
    EXPECT_EQ(s.calls[i].id.rfind("call_", 0), 0u);
  }
  EXPECT_NE(s.calls[0].id, s.calls[1].id);
}

TEST_F(ChatTemplateTest, GenericFormatWithoutParallelCallsTakesOneCallAndNamesTheFunction) {
  load(kChatml);
  auto req = weather_request();  // the API turns a named function into its tool alone, required
  req.tool_choice = "required";
  req.parallel_tool_calls = false;
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_NE(f->prompt.find("You must call get_weather."), std::string::npos);
  EXPECT_NE(f->prompt.find("{\"tool_call\": {\"name\": \"<tool name>\""), std::string::npos);
  EXPECT_EQ(f->grammar.grammar.find("tool_calls"), std::string::npos);
  auto parser = f->make_parser();
  Streamed s = stream_through(*parser, "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}}", 3);
  ASSERT_EQ(parser->tool_calls().size(), 1u);
  EXPECT_EQ(parser->tool_calls()[0].name, "get_weather");
  EXPECT_EQ(parser->tool_calls()[0].arguments, "{\"city\": \"Rome\"}");
  EXPECT_EQ(s.calls[0].arguments, parser->tool_calls()[0].arguments);
  EXPECT_EQ(parser->content(), "");
}

TEST_F(ChatTemplateTest, GenericFormatAutoAnswersInTextOrOpensACallLazily) {
  load(kChatml);
  auto f = tmpl_->apply(weather_request());
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_NE(f->prompt.find("Otherwise answer the user in plain text."), std::string::npos);
  EXPECT_TRUE(f->grammar.lazy);
  ASSERT_EQ(f->grammar.trigger_patterns.size(), 1u);
  EXPECT_EQ(f->grammar.trigger_patterns[0], R"(\{"tool_calls":)");
  auto text = f->make_parser();
  Streamed plain = stream_through(*text, "It is sunny in Paris today.", 4);
  EXPECT_EQ(plain.content, "It is sunny in Paris today.");
  EXPECT_TRUE(text->tool_calls().empty());
  for (size_t step : {1, 6}) {
    auto call = f->make_parser();
    Streamed s = stream_through(
        *call, "Let me look. {\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]}", step);
    ASSERT_EQ(call->tool_calls().size(), 1u);
    EXPECT_EQ(call->tool_calls()[0].name, "get_weather");
    EXPECT_EQ(s.content, call->content()) << "no piece of the call's opening streams as text";
    EXPECT_EQ(call->content().rfind("Let me look.", 0), 0u);
  }
}

TEST_F(ChatTemplateTest, GenericFormatWritesEarlierCallsAndToolResultsIntoTheHistory) {
  load(kChatml);
  auto req = weather_request();
  ChatMessage call("assistant", "");
  call.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
  ChatMessage result("tool", "sunny, 21 C");
  result.tool_call_id = "call_1";
  req.messages.push_back(call);
  req.messages.push_back(result);
  req.parallel_tool_calls = false;
  for (const char* choice : {"auto", "none"}) {
    req.tool_choice = choice;
    auto f = tmpl_->apply(req);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    EXPECT_NE(f->prompt.find("<|im_start|>assistant\n{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": "
                             "{\"city\":\"Paris\"}}}<|im_end|>"),
              std::string::npos)
        << f->prompt;
    EXPECT_NE(f->prompt.find("<|im_start|>user\n{\"tool_response\": {\"tool_call_id\": \"call_1\", \"content\": "
                             "\"sunny, 21 C\"}}<|im_end|>"),
              std::string::npos)
        << f->prompt;
  }
  // "none": the tools are not offered and nothing is constrained or parsed.
  EXPECT_EQ(tmpl_->apply(req)->prompt.find("You can call these tools"), std::string::npos);
  EXPECT_TRUE(tmpl_->apply(req)->grammar.grammar.empty());
  EXPECT_FALSE(tmpl_->apply(req)->make_parser);
}

TEST_F(ChatTemplateTest, GenericFormatAddsToAnExistingSystemMessage) {
  load(kChatml);
  auto req = weather_request();
  req.messages.insert(req.messages.begin(), ChatMessage("developer", "Be brief."));
  req.tool_choice = "required";
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->prompt.rfind("<|im_start|>system\nBe brief.\n\nYou can call these tools", 0), 0u) << f->prompt;
  EXPECT_EQ(f->prompt.find("<|im_start|>system", 1), std::string::npos);
}

// A model whose template the Jinja engine cannot read formats through its
// built-in template; the generic format works through any formatter.
TEST(GenericToolFormatTest, FormatsThroughAnyMessageFormatter) {
  GenerateRequest req;
  req.messages = {{"user", "Weather?"}};
  req.tools = {{"get_weather", "", R"({"type":"object","properties":{"city":{"type":"string"}}})"}};
  req.tool_choice = "required";
  std::vector<ChatMessage> seen;
  auto f = apply_generic_tool_format(req, [&](const std::vector<ChatMessage>& m) -> Result<std::string> {
    seen = m;
    return std::string("PROMPT");
  });
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->prompt, "PROMPT");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].role, "system");
  EXPECT_NE(seen[0].content.find("get_weather"), std::string::npos);
  EXPECT_FALSE(f->grammar.lazy);
  ASSERT_TRUE(f->make_parser);
  auto failing = apply_generic_tool_format(req, [](const std::vector<ChatMessage>&) -> Result<std::string> {
    return Status::internal("no template");
  });
  EXPECT_FALSE(failing.is_ok());
}

TEST_F(ChatTemplateTest, ChatmlTemplateWithoutToolsNeedsNoParser) {
  load(kChatml);
  GenerateRequest r;
  r.messages = {{"system", "S"}, {"user", "U"}};
  auto f = tmpl_->apply(r);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->prompt, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_FALSE(f->make_parser);
}

}  // namespace
}  // namespace llmpool::engine
