// Effort regulation (seed 002 §3): one effort score in [0, 1] per request,
// from the classifier's complexity and the request's `reasoning_effort`,
// mapped to the parameters a model understands: a max_tokens tier, a
// temperature and, for models that think, a thinking budget in tokens.
//
//   hint     = minimal 0.05 | low 0.2 | medium 0.5 | high 0.9   (EffortOptions)
//   effort   = hint_weight * hint + (1 - hint_weight) * complexity   (with a hint)
//            = complexity                                           (without)
//   tier     = effort < 0.3: 2048 | < 0.6: 4096 | else 8192 tokens
//   temp     = 0.3 + effort * (0.9 - 0.3)
//   thinking = supports_thinking && effort > 0.4
//   budget   = min + (max - min) * effort thinking tokens, when thinking
//   max_tokens = tier + budget, capped by context - prompt_tokens
//
// Pure functions of their arguments; thread-safe. Defaults: docs/routing.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/chat.h"
#include "common/status.h"

namespace llmpool::router {

enum class ReasoningEffort { kMinimal, kLow, kMedium, kHigh };

// "minimal", "low", "medium", "high" (OpenAI's values). InvalidArgument
// with param "reasoning_effort" for anything else.
Result<ReasoningEffort> parse_reasoning_effort(std::string_view text);
const char* reasoning_effort_name(ReasoningEffort effort);

// How a model spends effort; from the model's configuration.
struct ThinkingProfile {
  bool supports_thinking = false;
  int32_t min_thinking_tokens = 256;
  int32_t max_thinking_tokens = 8192;
  int32_t context = 0;  // context window in tokens; 0 = unknown (no cap)
};

struct EffortOptions {
  double hint_weight = 0.7;  // share of reasoning_effort in the score when the request gives one
  double minimal_value = 0.05;
  double low_value = 0.2;
  double medium_value = 0.5;
  double high_value = 0.9;
  double low_tier_below = 0.3;     // effort below this: low tier
  double medium_tier_below = 0.6;  // below this: medium tier; else high
  int32_t low_tier_tokens = 2048;
  int32_t medium_tier_tokens = 4096;
  int32_t high_tier_tokens = 8192;
  float temperature_min = 0.3f;
  float temperature_max = 0.9f;
  double thinking_above = 0.4;     // thinking models think only above this effort
};

struct EffortParams {
  double effort = 0.0;
  const char* tier = "low";     // "low", "medium", "high"
  int32_t max_tokens = 0;       // completion tokens, thinking included
  float temperature = 0.0f;
  bool thinking = false;
  int32_t thinking_budget = 0;  // 0 when not thinking
};

// The effort score alone.
double effort_score(double complexity, std::optional<ReasoningEffort> hint, const EffortOptions& options = {});

// Parameters for one model. `prompt_tokens` (estimated) caps max_tokens to
// what the context window leaves; when capped, the thinking budget is at
// most half of max_tokens so that the answer keeps room.
EffortParams regulate_effort(double complexity, std::optional<ReasoningEffort> hint, const ThinkingProfile& model,
                             int64_t prompt_tokens = 0, const EffortOptions& options = {});

// Writes `params` into `request`: max_tokens unless the client set it, and
// temperature unless `client_set_temperature`. The thinking budget has no
// field in GenerateRequest yet; the caller passes it to the engine.
void apply_effort(const EffortParams& params, GenerateRequest& request, bool client_set_temperature);

}  // namespace llmpool::router
