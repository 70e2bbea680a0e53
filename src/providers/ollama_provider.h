// OllamaProvider (type "ollama"): a model served by Ollama, through its
// native API. `base_url` is the server's root, e.g. http://127.0.0.1:11434
// (no /v1): requests with messages go to /api/chat, requests with a prompt
// to /api/generate (with "raw": true, since a completions prompt is used as
// is), always with "stream": true. Ollama answers with NDJSON lines
// {"message":{"content":...},"done":false} (or {"response":...} for
// /api/generate) and a last {"done":true,"done_reason":"stop"|"length",
// "prompt_eval_count":N,"eval_count":M}, which gives the finish reason and
// the usage.
//
// Sampling maps to Ollama's "options": temperature, top_p, top_k, min_p,
// seed, num_predict (max_tokens), stop, repeat_penalty, repeat_last_n,
// presence_penalty, frequency_penalty; response_format json_object is
// "format": "json" and json_schema is "format": <the schema>. What Ollama
// cannot do is refused with Unimplemented naming the field: n > 1 (param
// "n"), logprobs, logit_bias, ignore_eos. The model's `context` should match
// the context Ollama runs it with; llmpool does not send num_ctx (a
// different num_ctx makes Ollama reload the model).
//
// Tools: `tools` go as /api/chat's "tools" (OpenAI's shape); assistant
// messages' tool_calls with their arguments as an object (InvalidArgument,
// param messages[i].tool_calls[k].function.arguments, when they are not a
// JSON object); tool messages with "tool_name", the function of the call
// they answer. Ollama cannot be made to call a tool: tool_choice
// "required" (or a named function) is Unimplemented (param tool_choice);
// "none" sends no tools. The answer's message.tool_calls (whole calls,
// arguments as an object) come back as one Delta::tool_calls piece per
// call with an id ("call_<k>" when Ollama gives none), and the choice then
// finishes with kToolCalls.
//
// Everything else (settings, concurrency bound, errors, timeouts,
// cancellation, threading) is RemoteProvider's; see openai_provider.h.
#pragma once

#include "providers/openai_provider.h"

namespace llmpool::providers {

// The /api/chat or /api/generate body for `request`.
Result<nlohmann::json> ollama_request_json(const GenerateRequest& request, const std::string& upstream_model,
                                           bool stream = true);

// Decodes Ollama's NDJSON stream.
class OllamaStreamDecoder : public UpstreamDecoder {
 public:
  OllamaStreamDecoder(bool chat, std::string who, size_t max_event_bytes = kMaxUpstreamEventBytes)
      : UpstreamDecoder(1, std::move(who), max_event_bytes), chat_(chat) {}
  Status feed(std::string_view bytes) override;
  Status finish() override;
  const char* end_marker() const override { return "\"done\": true"; }

 private:
  Status line(std::string_view text);
  Status tool_calls(const nlohmann::json& message, std::vector<ToolCallDelta>* out);

  bool chat_;
  LineSplitter lines_;
  int32_t tool_calls_ = 0;  // tool calls seen so far
};

class OllamaProvider : public RemoteProvider {
 public:
  // Reads the settings; connects lazily (nothing is sent until a request).
  static Result<ProviderPtr> create(const config::ModelConfig& config);

 protected:
  using RemoteProvider::RemoteProvider;
  Result<UpstreamCall> prepare(const GenerateRequest& request, bool stream) const override;
};

}  // namespace llmpool::providers
