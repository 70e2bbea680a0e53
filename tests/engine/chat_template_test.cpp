// The model's Jinja template through llama.cpp's chat library: tools in the
// prompt, the tool-call grammar, and the parser that splits thinking, content
// and tool calls. Uses a tiny model written with the Qwen3 template (tools and
// <think>) by the make_test_models fixture.
#include "engine/chat_template.h"

#include <gtest/gtest.h>
#include <llama.h>

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

TEST_F(ChatTemplateTest, RequiredToolChoiceForcesTheGrammarFromTheGenerationPrompt) {
  load(kQwen3);
  auto req = weather_request();
  req.tool_choice = "required";
  auto f = tmpl_->apply(req);
  ASSERT_TRUE(f.is_ok());
  EXPECT_FALSE(f->grammar.lazy);
  EXPECT_EQ(f->grammar.prefill_text, "<|im_start|>assistant\n");
  EXPECT_EQ(f->prompt.substr(f->prompt.size() - f->grammar.prefill_text.size()), f->grammar.prefill_text);
  EXPECT_TRUE(f->grammar.grammar_prefill);
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
