#include "engine/chat_template.h"

#include <llama.h>

#include <functional>
#include <random>

#include "chat.h"  // llama.cpp common: templates, tool-call grammars, output parsers
#include "common.h"

namespace llmpool::engine {
namespace {

std::string regex_escape_text(const std::string& s) {
  static const std::string kSpecial = R"(\^$.|?*+()[]{}/-)";
  std::string out;
  for (char c : s) {
    if (kSpecial.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

common_chat_msg to_common(const ChatMessage& m) {
  common_chat_msg out;
  out.role = m.role == "developer" ? "system" : m.role;
  out.content = m.content;
  out.reasoning_content = m.reasoning_content;
  out.tool_call_id = m.tool_call_id;
  for (const auto& c : m.tool_calls) out.tool_calls.push_back({c.name, c.arguments, c.id});
  return out;
}

class CommonOutputParser : public OutputParser {
 public:
  explicit CommonOutputParser(common_chat_parser_params params) : params_(std::move(params)) {}

  Delta update(const std::string& raw, bool final) override {
    common_chat_msg msg;
    try {
      msg = common_chat_parse(raw, !final, params_);
    } catch (const std::exception&) {
      // A partial output the parser cannot read yet: wait for more, or at
      // the end keep everything as plain content.
      if (!final) return {};
      msg = previous_;
      msg.content = raw;
      msg.tool_calls.clear();
    }
    // Calls without an id get one, stable across updates (as llama-server does).
    msg.set_tool_call_ids(ids_, [] {
      static thread_local std::mt19937_64 rng{std::random_device{}()};
      static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
      std::string id = "call_";
      for (int i = 0; i < 24; ++i) id += kAlnum[rng() % (sizeof(kAlnum) - 1)];
      return id;
    });
    Delta d;
    for (const auto& diff : common_chat_msg_diff::compute_diffs(previous_, msg)) {
      d.text += diff.content_delta;
      d.reasoning_content += diff.reasoning_content_delta;
      if (diff.tool_call_index != std::string::npos) {
        ToolCallDelta t;
        t.index = static_cast<int32_t>(diff.tool_call_index);
        t.id = diff.tool_call_delta.id;
        t.name = diff.tool_call_delta.name;
        t.arguments = diff.tool_call_delta.arguments;
        d.tool_calls.push_back(std::move(t));
      }
    }
    previous_ = std::move(msg);
    content_ = previous_.content;
    reasoning_ = previous_.reasoning_content;
    calls_.clear();
    for (const auto& c : previous_.tool_calls) calls_.push_back({c.id, c.name, c.arguments});
    return d;
  }
  const std::string& content() const override { return content_; }
  const std::string& reasoning() const override { return reasoning_; }
  const std::vector<ToolCall>& tool_calls() const override { return calls_; }

 private:
  common_chat_parser_params params_;
  common_chat_msg previous_;
  std::vector<std::string> ids_;
  std::string content_;
  std::string reasoning_;
  std::vector<ToolCall> calls_;
};

}  // namespace

struct ChatTemplate::Impl {
  const llama_model* model = nullptr;
  common_chat_templates_ptr templates;
};

ChatTemplate::ChatTemplate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChatTemplate::~ChatTemplate() = default;

Result<std::unique_ptr<ChatTemplate>> ChatTemplate::create(const llama_model* model) {
  auto impl = std::make_unique<Impl>();
  impl->model = model;
  try {
    impl->templates = common_chat_templates_init(model, "");
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("the model's chat template does not parse: ") + e.what());
  }
  if (!impl->templates) return Status::invalid_argument("the model's chat template could not be loaded");
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(impl)));
}

Result<FormattedChat> ChatTemplate::apply(const GenerateRequest& request) const {
  common_chat_templates_inputs in;
  for (const auto& m : request.messages) in.messages.push_back(to_common(m));
  if (request.tool_choice != "none")
    for (const auto& t : request.tools) in.tools.push_back({t.name, t.description, t.parameters});
  in.tool_choice = request.tool_choice == "required" ? COMMON_CHAT_TOOL_CHOICE_REQUIRED
                   : request.tool_choice == "none"   ? COMMON_CHAT_TOOL_CHOICE_NONE
                                                     : COMMON_CHAT_TOOL_CHOICE_AUTO;
  in.parallel_tool_calls = request.parallel_tool_calls;
  in.reasoning_format = request.parse_reasoning ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
  in.add_generation_prompt = true;
  in.use_jinja = true;
  in.enable_thinking = request.thinking_budget != 0;  // a zero budget: the template's no-thinking form

  common_chat_params params;
  try {
    params = common_chat_templates_apply(impl_->templates.get(), in);
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("the chat template rejected the request: ") + e.what(),
                                    request.tools.empty() ? "messages" : "tools");
  }

  FormattedChat out;
  out.prompt = std::move(params.prompt);
  out.extra_stops = params.additional_stops;
  if (!params.grammar.empty() && !in.tools.empty()) {
    GrammarSpec& g = out.grammar;
    g.grammar = params.grammar;
    g.lazy = params.grammar_lazy;
    for (const auto& t : params.grammar_triggers) {
      switch (t.type) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: g.trigger_patterns.push_back(regex_escape_text(t.value)); break;
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: g.trigger_patterns.push_back(t.value); break;
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
          std::string p = t.value;
          if (p.empty() || p.front() != '^') p = "^" + p;
          if (p.back() != '$') p += "$";
          g.trigger_patterns.push_back(p);
          break;
        }
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: g.trigger_tokens.push_back(t.token); break;
      }
    }
    // The grammar starts at the generation prompt the template already
    // wrote; the engine feeds the prompt's matching tokens to it first.
    if (!g.lazy) {
      g.prefill_text = params.generation_prompt;
      g.grammar_prefill = true;
    }
  }
  if (request.thinking_budget >= 0 && params.supports_thinking && !params.thinking_end_tags.empty()) {
    GrammarSpec& g = out.grammar;
    g.thinking_budget = request.thinking_budget;
    g.thinking_start = params.thinking_start_tag;
    g.thinking_end = params.thinking_end_tags;
    // The budget sampler must see whether the generation prompt already
    // opened the thinking block.
    g.prefill_text = params.generation_prompt;
  }
  bool needs_parser = !in.tools.empty() || (request.parse_reasoning && params.supports_thinking);
  if (needs_parser) {
    common_chat_parser_params pp(params);
    pp.reasoning_format = in.reasoning_format;
    pp.parse_tool_calls = !in.tools.empty();
    if (!params.parser.empty()) {
      try {
        pp.parser.load(params.parser);
      } catch (const std::exception& e) {
        return Status::internal(std::string("the chat template's output parser does not load: ") + e.what());
      }
    }
    out.make_parser = [pp]() -> std::unique_ptr<OutputParser> { return std::make_unique<CommonOutputParser>(pp); };
  }
  return out;
}

}  // namespace llmpool::engine
