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
// Everything else (settings, concurrency bound, errors, timeouts,
// cancellation, threading) is RemoteProvider's; see openai_provider.h.
#pragma once

#include "providers/openai_provider.h"

namespace llmpool::providers {

// The /api/chat or /api/generate body for `request`.
Result<nlohmann::json> ollama_request_json(const GenerateRequest& request, const std::string& upstream_model);

// Decodes Ollama's NDJSON stream.
class OllamaStreamDecoder : public UpstreamDecoder {
 public:
  OllamaStreamDecoder(bool chat, std::string url) : UpstreamDecoder(1, std::move(url)), chat_(chat) {}
  Status feed(std::string_view bytes) override;
  Status finish() override;
  const char* end_marker() const override { return "\"done\": true"; }

 private:
  Status line(std::string_view text);

  bool chat_;
  std::string buffer_;  // bytes of an unfinished line
};

class OllamaProvider : public RemoteProvider {
 public:
  // Reads the settings; connects lazily (nothing is sent until a request).
  static Result<ProviderPtr> create(const config::ModelConfig& config);

 protected:
  using RemoteProvider::RemoteProvider;
  Result<UpstreamCall> prepare(const GenerateRequest& request) const override;
};

}  // namespace llmpool::providers
