// Plain request/response types shared by the API, the providers and the
// engine: what a chat or completion request asks for and what it got.
// No behaviour here; validation happens where the request is parsed
// (api/openai.cpp) and bounds are documented there. Thread-compatible values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llmpool {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", "developer"
  std::string content;  // text; multi-part text content is joined
};

// Sampling and stopping, as the OpenAI API defines them (plus llama.cpp's
// usual extras). Defaults match llama-server's where OpenAI leaves them open.
struct SamplingParams {
  float temperature = 1.0f;   // <= 0 means greedy
  float top_p = 1.0f;
  int32_t top_k = 0;          // 0 disables
  float min_p = 0.0f;         // 0 disables
  std::optional<uint32_t> seed;  // unset: a random seed per request
  std::optional<int32_t> max_tokens;  // unset: until end of generation or context
  std::vector<std::string> stop;
};

struct ChatRequest {
  std::string model;
  std::vector<ChatMessage> messages;
  SamplingParams sampling;
};

enum class FinishReason { kStop, kLength };
const char* finish_reason_name(FinishReason reason);

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
};

struct Completion {
  std::string text;
  FinishReason finish_reason = FinishReason::kStop;
  Usage usage;
};

}  // namespace llmpool
