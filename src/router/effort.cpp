#include "router/effort.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace llmpool::router {

Result<ReasoningEffort> parse_reasoning_effort(std::string_view text) {
  if (text == "minimal") return ReasoningEffort::kMinimal;
  if (text == "low") return ReasoningEffort::kLow;
  if (text == "medium") return ReasoningEffort::kMedium;
  if (text == "high") return ReasoningEffort::kHigh;
  return Status::invalid_argument("reasoning_effort must be one of minimal, low, medium, high; got '" +
                                      std::string(text.substr(0, 32)) + "'",
                                  "reasoning_effort");
}

const char* reasoning_effort_name(ReasoningEffort effort) {
  switch (effort) {
    case ReasoningEffort::kMinimal: return "minimal";
    case ReasoningEffort::kLow: return "low";
    case ReasoningEffort::kMedium: return "medium";
    case ReasoningEffort::kHigh: return "high";
  }
  return "medium";
}

double effort_score(double complexity, std::optional<ReasoningEffort> hint, const EffortOptions& o) {
  complexity = std::isfinite(complexity) ? std::clamp(complexity, 0.0, 1.0) : 0.0;
  if (!hint) return complexity;
  double h = 0.5;
  switch (*hint) {
    case ReasoningEffort::kMinimal: h = o.minimal_value; break;
    case ReasoningEffort::kLow: h = o.low_value; break;
    case ReasoningEffort::kMedium: h = o.medium_value; break;
    case ReasoningEffort::kHigh: h = o.high_value; break;
  }
  double w = std::clamp(o.hint_weight, 0.0, 1.0);
  return std::clamp(w * h + (1.0 - w) * complexity, 0.0, 1.0);
}

EffortParams regulate_effort(double complexity, std::optional<ReasoningEffort> hint, const ThinkingProfile& model,
                             int64_t prompt_tokens, const EffortOptions& o) {
  EffortParams p;
  p.effort = effort_score(complexity, hint, o);

  int32_t tier_tokens;
  if (p.effort < o.low_tier_below) {
    p.tier = "low";
    tier_tokens = o.low_tier_tokens;
  } else if (p.effort < o.medium_tier_below) {
    p.tier = "medium";
    tier_tokens = o.medium_tier_tokens;
  } else {
    p.tier = "high";
    tier_tokens = o.high_tier_tokens;
  }
  tier_tokens = std::max(1, tier_tokens);

  p.temperature = o.temperature_min + static_cast<float>(p.effort) * (o.temperature_max - o.temperature_min);

  if (model.supports_thinking && p.effort > o.thinking_above) {
    int32_t lo = std::max(0, model.min_thinking_tokens);
    int32_t hi = std::max(lo, model.max_thinking_tokens);
    p.thinking = true;
    p.thinking_budget = lo + static_cast<int32_t>(std::floor(static_cast<double>(hi - lo) * p.effort));
  }

  int64_t max_tokens = static_cast<int64_t>(tier_tokens) + p.thinking_budget;
  if (model.context > 0) {
    int64_t room = std::max<int64_t>(1, static_cast<int64_t>(model.context) - std::max<int64_t>(0, prompt_tokens));
    if (max_tokens > room) {
      max_tokens = room;
      p.thinking_budget = std::min<int32_t>(p.thinking_budget, static_cast<int32_t>(max_tokens / 2));
      if (p.thinking_budget == 0) p.thinking = false;
    }
  }
  p.max_tokens = static_cast<int32_t>(std::min<int64_t>(max_tokens, INT32_MAX));
  return p;
}

void apply_effort(const EffortParams& params, GenerateRequest& request, bool client_set_temperature) {
  if (!request.sampling.max_tokens) request.sampling.max_tokens = params.max_tokens;
  if (!client_set_temperature) request.sampling.temperature = params.temperature;
}

}  // namespace llmpool::router
