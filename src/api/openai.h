// OpenAI request/response mapping: JSON in, llmpool's plain types out, and
// back. Every field is type-checked and bounded; an error names the field
// (`param`) so the client knows what to fix. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/chat.h"
#include "common/status.h"
#include "providers/provider.h"

namespace llmpool::api {

// Bounds on request fields (documented in docs/api.md).
inline constexpr size_t kMaxMessages = 4096;
inline constexpr size_t kMaxStopStrings = 4;
inline constexpr size_t kMaxStopLength = 256;
inline constexpr size_t kMaxModelNameLength = 256;
inline constexpr int32_t kMaxTokensLimit = 1 << 20;

// Parses a /v1/chat/completions body. InvalidArgument (with param) on
// malformed JSON, missing or mistyped fields and out-of-range values;
// Unimplemented for options this server does not support yet.
Result<ChatRequest> parse_chat_request(std::string_view body);

// The chat.completion object for a finished completion.
nlohmann::json chat_completion_json(const std::string& id, const std::string& model,
                                    int64_t created, const Completion& completion);

// The /v1/models list entry for one model.
nlohmann::json model_json(const providers::ModelInfo& info, int64_t created);

// "chatcmpl-" followed by 24 random hex digits.
std::string new_completion_id(std::string_view prefix);

}  // namespace llmpool::api
