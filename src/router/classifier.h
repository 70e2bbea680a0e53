// Classifier: the router's first look at a request. From the request text
// alone it computes deterministic features (length, code, reasoning,
// multi-step and technical markers), a complexity score in [0, 1] and the
// capability tags a model needs (required) or should have (preferred).
//
// It is a heuristic on purpose: no model, no allocation per word, one pass
// over at most `max_scan_bytes` of text, well under 100 µs for a 2 KB prompt
// (tests/router/classifier_bench.cpp measures it). The same request always
// gets the same answer. Formulas and defaults are in docs/routing.md.
//
// Tags come from {code, reasoning, fast, tools}; "embedding" is never produced for
// a chat or completion request (embeddings have their own endpoint), and
// "general" is implied for every model so it is never required.
//
// Classifier is immutable after construction: thread-safe, share freely.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/chat.h"

namespace llmpool::router {

// Weights of the normalised features in the complexity score. The score is
// the weighted mean, so only ratios matter; all zero gives complexity 0.
struct ClassifierWeights {
  double length = 0.15;
  double code = 0.15;
  double reasoning = 0.35;
  double multi_step = 0.20;
  double technical = 0.15;
};

struct ClassifierOptions {
  ClassifierWeights weights;
  // Token estimate: ASCII characters per token, and tokens per non-ASCII
  // character (CJK and other scripts tokenise far more densely).
  double chars_per_token = 4.0;
  double non_ascii_tokens_per_char = 0.75;
  // Tokens added per message for the chat template's role markers.
  int32_t tokens_per_message = 4;
  // The length feature reaches 1 at this many estimated tokens.
  int32_t length_saturation_tokens = 2048;
  // Markers are looked for in at most this many bytes of non-system text,
  // newest messages first. Length counts everything.
  int32_t max_scan_bytes = 16384;
  // Tag thresholds on the features / the complexity score.
  double code_preferred = 0.25;       // code feature >= this: prefer "code"
  double code_required = 0.5;         // code feature >= this: require "code"
  double reasoning_preferred = 0.3;   // reasoning feature >= this: prefer "reasoning"
  double reasoning_required_complexity = 0.5;  // ... and complexity >= this: require it
  double fast_below = 0.15;           // complexity < this: prefer "fast"
  // A request with tools (and tool_choice other than "none") prefers
  // "tools"; with this set it requires it instead.
  bool tools_required = false;
};

// Raw counts and the normalised features (each in [0, 1]).
struct Features {
  int64_t chars = 0;               // Unicode characters the model reads: messages, tool calls, prompt, tool specs
  int64_t estimated_tokens = 0;    // prompt tokens, estimated
  int32_t messages = 0;
  int32_t fence_blocks = 0;        // ``` fenced blocks (an unclosed fence counts)
  int32_t code_keywords = 0;       // "def", "return", "python", "#include", ...
  int32_t code_tokens = 0;         // snake_case/camelCase identifiers, calls "f(", lines ending in ; { }
  double symbol_density = 0.0;     // {}[]();=<>&|  per non-space character
  int32_t reasoning_markers = 0;   // "why", "prove", "explain", ...; "step by step" counts 2
  int32_t math_ops = 0;            // operators next to digits, and symbols like ≤ ∑ √
  int32_t list_items = 0;          // lines starting "1." / "2)" ...
  int32_t sequence_markers = 0;    // "first ... then", "finally", "step 2", ...
  int32_t technical_terms = 0;     // words from a built-in list ("latency", "mutex", ...)

  double length = 0.0;
  double code = 0.0;
  double reasoning = 0.0;
  double multi_step = 0.0;
  double technical = 0.0;
};

struct Classification {
  Features features;
  double complexity = 0.0;              // weighted mean of the features, [0, 1]
  std::vector<std::string> required;    // tags a model must have
  std::vector<std::string> preferred;   // tags that raise a model's fit
};

class Classifier {
 public:
  explicit Classifier(ClassifierOptions options = {});

  Classification classify(const GenerateRequest& request) const;
  const ClassifierOptions& options() const { return options_; }

 private:
  ClassifierOptions options_;
};

// Estimated prompt tokens of `request` with `options`' token estimate: what
// classify() reports as features.estimated_tokens, without the scan.
int64_t estimate_prompt_tokens(const GenerateRequest& request, const ClassifierOptions& options = {});

}  // namespace llmpool::router
