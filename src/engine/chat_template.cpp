#include "engine/chat_template.h"

#include <llama.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <random>
#include <string_view>

#include "chat-peg-parser.h"  // llama.cpp common: the PEG parsers behind every chat format
#include "chat.h"             // llama.cpp common: templates, tool-call grammars, output parsers
#include "common.h"
#include "json-schema-to-grammar.h"

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
    if (!parse(raw, !final, msg)) {
      // A partial output the parser cannot read yet: wait for more. At the
      // end (an output cut off by max_tokens, say): what a partial parse
      // reads, else everything as plain content.
      if (!final) return {};
      if (!parse(raw, true, msg)) {
        msg = previous_;
        if (msg.tool_calls.empty()) msg.content = raw;
      }
    }
    // Calls without an id get one, stable across updates (as llama-server does).
    msg.set_tool_call_ids(ids_, [] {
      static thread_local std::mt19937_64 rng{std::random_device{}()};
      static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
      std::string id = "call_";
      for (int i = 0; i < 24; ++i) id += kAlnum[rng() % (sizeof(kAlnum) - 1)];
      return id;
    });
    std::vector<common_chat_msg_diff> diffs;
    try {
      diffs = common_chat_msg_diff::compute_diffs(previous_, msg);
    } catch (const std::exception&) {
      // A partial parse can read less than the one before (a call whose
      // closing marker is half written): what was sent stands; wait for
      // more, or at the end keep it.
      if (!final) return {};
      msg = previous_;
    }
    Delta d;
    for (const auto& diff : diffs) {
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
  bool parse(const std::string& raw, bool partial, common_chat_msg& out) const {
    try {
      out = common_chat_parse(raw, partial, params_);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  common_chat_parser_params params_;
  common_chat_msg previous_;
  std::vector<std::string> ids_;
  std::string content_;
  std::string reasoning_;
  std::vector<ToolCall> calls_;
};

std::function<std::unique_ptr<OutputParser>()> parser_factory(common_chat_parser_params params) {
  return [params = std::move(params)]() -> std::unique_ptr<OutputParser> {
    return std::make_unique<CommonOutputParser>(params);
  };
}

// ---- The generic tool-call format ------------------------------------------

constexpr std::string_view kGenericOpen = "{\"tool_call\":";           // one call
constexpr std::string_view kGenericOpenParallel = "{\"tool_calls\":";  // a list of calls

std::string json_string(const std::string& s) { return common_json::make(s).dump_safe(); }

// One call as the generic format writes it. The arguments are JSON text
// (the model's own, or a client's earlier call) and go in as they are:
// nothing here parses or re-serialises a value a client sent.
std::string generic_call(const std::string& name, const std::string& arguments) {
  return "{\"name\": " + json_string(name) + ", \"arguments\": " + (arguments.empty() ? "{}" : arguments) + "}";
}

std::string generic_calls(const std::vector<ToolCall>& calls, bool parallel) {
  if (!parallel && calls.size() == 1)
    return std::string(kGenericOpen) + " " + generic_call(calls[0].name, calls[0].arguments) + "}";
  std::string s = std::string(kGenericOpenParallel) + " [";
  for (size_t i = 0; i < calls.size(); ++i) s += (i ? ", " : "") + generic_call(calls[i].name, calls[i].arguments);
  return s + "]}";
}

std::string generic_instructions(const GenerateRequest& r) {
  std::string s = "You can call these tools; each one's arguments follow its JSON Schema \"parameters\":\n";
  for (const auto& t : r.tools) {
    s += "{\"name\": " + json_string(t.name) + ", \"description\": " + json_string(t.description) +
         ", \"parameters\": " + (t.parameters.empty() ? "{}" : t.parameters) + "}\n";
  }
  const std::string form = r.parallel_tool_calls
                               ? std::string(kGenericOpenParallel) + " [{\"name\": \"<tool name>\", \"arguments\": {...}}, ...]}"
                               : std::string(kGenericOpen) + " {\"name\": \"<tool name>\", \"arguments\": {...}}}";
  if (r.tool_choice == "required") {
    s += r.tools.size() == 1 ? "\nYou must call " + r.tools[0].name + "." : std::string("\nYou must call a tool.");
    return s + " Answer with only this JSON object and nothing else:\n" + form;
  }
  return s + "\nTo call tools, answer with only this JSON object and nothing else:\n" + form +
         "\nOtherwise answer the user in plain text.";
}

// The request's messages as a template without tool support can render
// them: the tools described in the system message, earlier calls written
// in the generic format, tool results as user messages.
std::vector<ChatMessage> generic_messages(const GenerateRequest& r, bool describe_tools) {
  std::vector<ChatMessage> out;
  out.reserve(r.messages.size() + 1);
  size_t first = 0;  // the first message not yet copied
  if (describe_tools) {
    const std::string text = generic_instructions(r);
    if (!r.messages.empty() && (r.messages[0].role == "system" || r.messages[0].role == "developer")) {
      out.push_back(r.messages[0]);
      out.back().role = "system";
      out.back().content += "\n\n" + text;
      first = 1;
    } else {
      out.emplace_back("system", text);
    }
  }
  for (size_t i = first; i < r.messages.size(); ++i) {
    ChatMessage m = r.messages[i];
    if (m.role == "assistant" && !m.tool_calls.empty()) {
      m.content = (m.content.empty() ? "" : m.content + "\n") +
                  generic_calls(m.tool_calls, r.parallel_tool_calls || m.tool_calls.size() > 1);
      m.tool_calls.clear();
    } else if (m.role == "tool") {
      m.role = "user";
      m.content = "{\"tool_response\": {\"tool_call_id\": " + json_string(m.tool_call_id) +
                  ", \"content\": " + json_string(m.content) + "}}";
      m.tool_call_id.clear();
    }
    out.push_back(std::move(m));
  }
  return out;
}

// One PEG definition gives both the grammar and the output parser, so what
// the sampler allows and what the parser reads cannot drift apart.
common_peg_arena generic_parser(const GenerateRequest& r, bool forced) {
  std::vector<common_chat_tool> tools;
  for (const auto& t : r.tools) tools.push_back({t.name, t.description, t.parameters});
  const common_json tools_json = common_chat_tools_to_json_oaicompat(tools);
  const std::string open(r.parallel_tool_calls ? kGenericOpenParallel : kGenericOpen);
  return build_chat_peg_parser([&](common_chat_peg_builder& p) {
    auto calls = p.standard_json_tools(open, "}", tools_json, r.parallel_tool_calls, forced, "name", "arguments",
                                       /*array_wrapped=*/r.parallel_tool_calls);
    if (forced) return calls + p.space() + p.end();
    return p.optional(p.content(p.until(open))) + calls + p.end();
  });
}

// The grammar's lines, "name ::= body" each.
std::vector<std::string> grammar_lines(const std::string& grammar) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < grammar.size()) {
    size_t end = grammar.find('\n', start);
    if (end == std::string::npos) end = grammar.size();
    if (end > start) lines.push_back(grammar.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// `grammar` (a template's "required" grammar) rooted at its tool calls
// alone: the rules a lazy grammar starts at once a trigger word appears
// (the parser's trigger rules), so the call begins at the first token, with
// no free text or thinking before it. With `single`, one call where the
// format writes each call on its own (tool-calls ::= (tool-call space)+).
// "" when the parser has no trigger rules or the grammar lacks them. The
// grammar comes from common's builder and keeps the arguments' schemas; a
// grammar rebuilt from the saved parser would not (schemas are not saved).
std::string rooted_at_calls(const std::string& grammar, const std::string& parser, bool single) {
  if (parser.empty() || grammar.empty()) return {};
  std::string root;
  try {
    common_peg_arena arena;
    arena.load(parser);
    for (const auto& line : grammar_lines(build_grammar([&](const common_grammar_builder& b) {
           arena.build_grammar(b, /*lazy=*/true);
         })))
      if (line.rfind("root ::= ", 0) == 0) root = line.substr(9);
  } catch (const std::exception&) {
    return {};
  }
  if (root.empty()) return {};
  std::vector<std::string> lines = grammar_lines(grammar);
  auto defined = [&](const std::string& name) {
    return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(name + " ::= ", 0) == 0; });
  };
  if (single && root == "tool-call | tool-calls" &&
      std::find(lines.begin(), lines.end(), "tool-calls ::= (tool-call space)+") != lines.end())
    root = "tool-call";
  // The root names rules, "a | b | c"; each must be in the grammar.
  for (size_t start = 0; start < root.size();) {
    size_t end = root.find(" | ", start);
    if (end == std::string::npos) end = root.size();
    if (!defined(root.substr(start, end - start))) return {};
    start = end + 3;
  }
  std::string out;
  for (const auto& l : lines) out += (l.rfind("root ::= ", 0) == 0 ? "root ::= " + root : l) + "\n";
  return out;
}

}  // namespace

Result<FormattedChat> apply_generic_tool_format(const GenerateRequest& request, const MessageFormatter& format) {
  const bool describe = !request.tools.empty() && request.tool_choice != "none";
  const bool forced = describe && request.tool_choice == "required";
  auto prompt = format(generic_messages(request, describe));
  if (!prompt) return prompt.status();
  FormattedChat out;
  out.prompt = std::move(prompt).value();
  if (!describe) return out;

  common_chat_parser_params pp;
  pp.format = COMMON_CHAT_FORMAT_PEG_NATIVE;
  pp.parse_tool_calls = true;
  GrammarSpec& g = out.grammar;
  try {
    pp.parser = generic_parser(request, forced);
    g.grammar = build_grammar([&](const common_grammar_builder& b) { pp.parser.build_grammar(b, !forced); });
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("the tools give no tool-call grammar: ") + e.what(), "tools");
  }
  if (g.grammar.empty()) return Status::invalid_argument("the tools give no tool-call grammar", "tools");
  // Forced: the object from the first token. Auto: only once the model opens it.
  g.lazy = !forced;
  if (g.lazy)
    g.trigger_patterns.push_back(
        regex_escape_text(std::string(request.parallel_tool_calls ? kGenericOpenParallel : kGenericOpen)));
  out.make_parser = parser_factory(std::move(pp));
  return out;
}

struct ChatTemplate::Impl {
  const llama_model* model = nullptr;
  common_chat_templates_ptr templates;
  bool tool_calls = false;  // the template can write tool calls (its own format)

  common_chat_templates_inputs inputs(const GenerateRequest& request, const std::vector<ChatMessage>& messages) const {
    common_chat_templates_inputs in;
    for (const auto& m : messages) in.messages.push_back(to_common(m));
    in.tool_choice = COMMON_CHAT_TOOL_CHOICE_NONE;
    in.parallel_tool_calls = request.parallel_tool_calls;
    in.reasoning_format =
        request.parse_reasoning ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
    in.add_generation_prompt = true;
    in.use_jinja = true;
    in.enable_thinking = request.thinking_budget != 0;  // a zero budget: the template's no-thinking form
    return in;
  }

  Result<common_chat_params> render(const common_chat_templates_inputs& in) const {
    // llama.cpp's chat code formats the date with std::localtime, whose
    // result buffer is shared by every thread; each model has two
    // preparation threads (ThreadSanitizer showed the race). One render at
    // a time, process-wide; tokenizing, the heavy part, stays parallel.
    static std::mutex render_mu;
    std::lock_guard<std::mutex> lock(render_mu);
    try {
      return common_chat_templates_apply(templates.get(), in);
    } catch (const std::exception& e) {
      return Status::invalid_argument(std::string("the chat template rejected the request: ") + e.what(),
                                      in.tools.empty() ? "messages" : "tools");
    }
  }

  // The generic tool-call format through this template.
  Result<FormattedChat> apply_generic(const GenerateRequest& request) const {
    std::vector<std::string> stops;
    auto out = apply_generic_tool_format(request, [&](const std::vector<ChatMessage>& messages) -> Result<std::string> {
      auto params = render(inputs(request, messages));
      if (!params) return params.status();
      stops = std::move(params->additional_stops);
      return std::move(params->prompt);
    });
    if (out) out->extra_stops = std::move(stops);
    return out;
  }
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
  const auto caps = common_chat_templates_get_caps(impl->templates.get());
  const auto it = caps.find("supports_tool_calls");
  impl->tool_calls = it != caps.end() && it->second;
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(impl)));
}

bool ChatTemplate::supports_tool_calls() const { return impl_->tool_calls; }

Result<FormattedChat> ChatTemplate::apply(const GenerateRequest& request) const {
  const bool with_tools = !request.tools.empty() && request.tool_choice != "none";
  const bool forced = with_tools && request.tool_choice == "required";
  // A template without tool support gets the generic format, which also
  // writes earlier calls and tool results into the history (the template
  // would drop them), with or without tools offered now.
  const bool tool_history = std::any_of(request.messages.begin(), request.messages.end(), [](const ChatMessage& m) {
    return m.role == "tool" || !m.tool_calls.empty();
  });
  if (!impl_->tool_calls && (with_tools || tool_history)) return impl_->apply_generic(request);

  common_chat_templates_inputs in = impl_->inputs(request, request.messages);
  if (with_tools) {
    for (const auto& t : request.tools) in.tools.push_back({t.name, t.description, t.parameters});
    in.tool_choice = forced ? COMMON_CHAT_TOOL_CHOICE_REQUIRED : COMMON_CHAT_TOOL_CHOICE_AUTO;
  }
  auto rendered = impl_->render(in);
  if (!rendered) return rendered.status();
  common_chat_params params = std::move(rendered).value();
  bool prefill = false;  // the grammar starts at the generation prompt
  if (forced) {
    // The template's "required" grammar lets text and thinking come before
    // the call, which a weak model may never leave: root it at the calls.
    // Formats without trigger rules keep their own grammar; without a
    // grammar, the generic format.
    std::string calls_only = rooted_at_calls(params.grammar, params.parser, !request.parallel_tool_calls);
    if (!calls_only.empty()) {
      params.grammar = std::move(calls_only);
    } else if (params.grammar.empty()) {
      return impl_->apply_generic(request);
    } else {
      prefill = true;
    }
    params.grammar_lazy = false;
  }

  FormattedChat out;
  out.prompt = std::move(params.prompt);
  out.extra_stops = params.additional_stops;
  if (!params.grammar.empty() && with_tools) {
    GrammarSpec& g = out.grammar;
    g.grammar = params.grammar;
    g.lazy = params.grammar_lazy && !forced;
    if (g.lazy) {
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
    }
    // A template's own forced grammar starts at the generation prompt the
    // template already wrote; the engine feeds the prompt's matching tokens
    // to it first.
    if (prefill) {
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
  bool needs_parser = with_tools || (request.parse_reasoning && params.supports_thinking);
  if (needs_parser) {
    common_chat_parser_params pp(params);
    pp.reasoning_format = in.reasoning_format;
    pp.parse_tool_calls = with_tools;
    if (!params.parser.empty()) {
      try {
        pp.parser.load(params.parser);
      } catch (const std::exception& e) {
        return Status::internal(std::string("the chat template's output parser does not load: ") + e.what());
      }
    }
    out.make_parser = parser_factory(std::move(pp));
  }
  return out;
}

}  // namespace llmpool::engine
