// ChatTemplate: the model's Jinja chat template, applied and parsed the way
// llama-server does (through llama.cpp's common chat library): messages and
// tools become the prompt; the template's format decides the grammar that
// constrains tool calls (lazy, triggered by e.g. "<tool_call>", or forced
// for tool_choice "required") and the parser that splits the output into
// content, reasoning_content (thinking) and tool calls.
//
// Forced calls (tool_choice "required", which a named function becomes) are
// constrained from the first token, so even a model with random weights
// writes a complete call of a listed function with arguments that match its
// schema: the template's own call syntax where it has one, else the generic
// format (apply_generic_tool_format).
//
// Engine-internal. ChatTemplate is immutable after create() and thread-safe;
// an OutputParser belongs to one choice and is used by the engine thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/chat.h"
#include "common/status.h"

struct llama_model;
struct llama_vocab;

namespace llmpool::engine {

// How to constrain sampling for one request.
struct GrammarSpec {
  std::string grammar;                        // GBNF; empty: unconstrained
  bool lazy = false;                          // only after a trigger appears
  std::vector<std::string> trigger_patterns;  // regexes over the output
  std::vector<int32_t> trigger_tokens;
  std::string prefill_text;                   // the prompt's tail: the template's generation prompt
  std::vector<int32_t> prefill_tokens;        // its tokens, fed to the samplers before sampling
  bool grammar_prefill = false;               // the grammar starts at prefill_text (a template's own
                                              // forced grammar, for formats whose calls have no trigger word)
  // Thinking budget (GenerateRequest::thinking_budget) for templates with a
  // thinking block: once `thinking_budget` tokens were spent inside it, the
  // first end tag is forced and the model answers. -1: no limit.
  int32_t thinking_budget = -1;
  std::string thinking_start;                 // e.g. "<think>"; empty: thinking opens implicitly
  std::vector<std::string> thinking_end;      // e.g. "</think>"
};

// Splits one choice's raw output as it grows. Engine thread only.
class OutputParser {
 public:
  virtual ~OutputParser() = default;
  // Parses the whole raw output so far and returns what is new since the
  // previous call (content, reasoning and tool-call pieces). `final` is
  // true once the output is complete.
  virtual Delta update(const std::string& raw, bool final) = 0;
  // The parsed result after the final update.
  virtual const std::string& content() const = 0;
  virtual const std::string& reasoning() const = 0;
  virtual const std::vector<ToolCall>& tool_calls() const = 0;
};

struct FormattedChat {
  std::string prompt;
  GrammarSpec grammar;                      // from tools; empty without tools
  std::vector<std::string> extra_stops;     // the template's end markers
  // Makes a parser for one choice; null when the output needs no parsing.
  std::function<std::unique_ptr<OutputParser>()> make_parser;
};

// Renders plain messages (role and content; no tools, no tool calls) into a
// prompt that ends with the assistant's turn.
using MessageFormatter = std::function<Result<std::string>(const std::vector<ChatMessage>&)>;

// The generic tool-call format, for chat templates that cannot write tool
// calls (llama.cpp's former COMMON_CHAT_FORMAT_GENERIC, rebuilt on its PEG
// parser so that one definition gives the grammar and the output parser).
// The system message lists the tools and asks for one JSON object,
// {"tool_call": {"name": ..., "arguments": {...}}}, or with
// parallel_tool_calls {"tool_calls": [{"name": ..., "arguments": ...}, ...]};
// earlier calls in the history are written the same way and tool results
// become user messages ({"tool_response": ...}). tool_choice "required"
// forces that object from the first token (the grammar fixes the function
// names and each one's arguments schema); "auto" lets the model answer in
// text or open the object (a lazy grammar); "none", or no tools, only
// rewrites the history. `format` renders the rewritten messages.
// Errors: those of `format`; InvalidArgument (param "tools") when the tools
// give no grammar. Thread-safe if `format` is.
Result<FormattedChat> apply_generic_tool_format(const GenerateRequest& request, const MessageFormatter& format);

class ChatTemplate {
 public:
  // Reads the model's template (ChatML when the model has none).
  // InvalidArgument if the template does not parse.
  static Result<std::unique_ptr<ChatTemplate>> create(const llama_model* model);
  ~ChatTemplate();

  // Formats `request.messages` with its tools, ending with the assistant's
  // turn. Tools go through the template's own format when it can write tool
  // calls, else through the generic format. InvalidArgument (param
  // "messages" or "tools") when the template rejects them. Thread-safe.
  Result<FormattedChat> apply(const GenerateRequest& request) const;

  // Whether the template writes tool calls in a format of its own.
  bool supports_tool_calls() const;

 private:
  struct Impl;
  explicit ChatTemplate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmpool::engine
