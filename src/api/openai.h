// OpenAI request/response mapping: JSON in, llmpool's plain types out, and
// back. Every field is type-checked and bounded; an error names the field
// (`param`) so the client knows what to fix. Pure functions; thread-safe.
// The fields and their bounds are listed in docs/api.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/chat.h"
#include "common/status.h"
#include "providers/provider.h"
#include "router/service.h"

namespace llmpool::api {

// Bounds on request fields (docs/api.md, "Bounds"). Strings without a bound
// of their own (message content, a prompt) are bounded by the body limit
// (server.max_body_bytes); JSON nesting by kMaxRequestDepth (64) while the
// body is parsed; JSON schemas by engine::kSchemaLimits.
inline constexpr size_t kMaxMessages = 4096;
inline constexpr size_t kMaxContentParts = 1024;        // parts of one message's content
inline constexpr size_t kMaxToolCallsPerMessage = 128;  // an assistant message's tool_calls
inline constexpr size_t kMaxToolCallIdLength = 256;
inline constexpr size_t kMaxToolNameLength = 128;
inline constexpr size_t kMaxToolDescriptionLength = 16 << 10;
inline constexpr size_t kMaxStopStrings = 4;
inline constexpr size_t kMaxStopLength = 256;
inline constexpr size_t kMaxModelNameLength = 256;
inline constexpr int32_t kMaxTokensLimit = 1 << 20;
inline constexpr int32_t kMaxChoices = 16;
inline constexpr int32_t kMaxTopLogprobs = 20;
inline constexpr size_t kMaxLogitBias = 1024;
inline constexpr size_t kMaxTools = 128;

enum class Endpoint { kChat, kCompletions };

inline constexpr size_t kMaxUserLength = 256;
inline constexpr size_t kMaxDetokenizeTokens = 1 << 20;

struct ApiRequest {
  GenerateRequest generate;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // For the router: `user`, `reasoning_effort`, whether `temperature` was
  // given, and the extension `ensemble: {strategy, k, judge}`.
  router::RouteHints hints;
};

// Parses a /v1/chat/completions or /v1/completions body. InvalidArgument
// (with param) on malformed JSON, missing or mistyped fields and
// out-of-range values; Unimplemented for options not supported.
Result<ApiRequest> parse_request(std::string_view body, Endpoint endpoint);

inline constexpr size_t kMaxEmbeddingInputs = 2048;

struct EmbeddingsRequest {
  std::string model;
  std::vector<std::string> inputs;
  bool base64 = false;             // encoding_format "base64"
  std::optional<int32_t> dimensions;
};

// /tokenize and /detokenize bodies; `model` is empty when not given.
struct TokenizeRequest {
  std::string model;
  std::string content;
  bool add_special = false;
};
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};
// InvalidArgument naming the field for a malformed body.
Result<TokenizeRequest> parse_tokenize_request(std::string_view body);
Result<DetokenizeRequest> parse_detokenize_request(std::string_view body);

// Parses a /v1/embeddings body (input: a string or an array of strings).
Result<EmbeddingsRequest> parse_embeddings_request(std::string_view body);

// {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],"model","usage"}
// With `base64`, each embedding is the base64 of its little-endian float32s.
nlohmann::json embeddings_json(const std::string& model, const Embeddings& e, bool base64);

// Identity of one response: its id, model and creation time.
struct ResponseMeta {
  std::string id;
  std::string model;
  int64_t created = 0;
};

// The whole response for a finished completion, appended to `out` as JSON
// text with no DOM built. `llmpool`: the route's "llmpool" member as JSON
// text, or empty for none.
void append_completion(std::string& out, Endpoint endpoint, const ResponseMeta& meta, const Completion& completion,
                       bool with_logprobs, std::string_view llmpool = {});
// One streaming chunk for a delta; `first` adds the assistant role (chat).
void append_chunk(std::string& out, Endpoint endpoint, const ResponseMeta& meta, const Delta& delta, bool first,
                  bool with_logprobs, std::string_view llmpool = {});
// The final usage-only chunk (stream_options.include_usage).
void append_usage_chunk(std::string& out, Endpoint endpoint, const ResponseMeta& meta, const Usage& usage);

// The same as DOMs (parsed from that text), for callers that embed them.
nlohmann::json completion_json(Endpoint endpoint, const ResponseMeta& meta, const Completion& completion,
                               bool with_logprobs);
nlohmann::json chunk_json(Endpoint endpoint, const ResponseMeta& meta, const Delta& delta, bool first,
                          bool with_logprobs);
nlohmann::json usage_chunk_json(Endpoint endpoint, const ResponseMeta& meta, const Usage& usage);

// The /v1/models list entry for one model.
nlohmann::json model_json(const providers::ModelInfo& info, int64_t created);

// `prefix` followed by "-" and 24 random hex digits.
std::string new_completion_id(std::string_view prefix);

}  // namespace llmpool::api
