// The one way llmpool reads JSON it did not write itself: client request
// bodies, upstream answers and stream events, files. The nesting depth and
// the size are checked while parsing, so no recursive routine (dump(),
// schema conversion, a visitor) ever sees a value deeper than the limit.
// Error messages name what was read and where the text went wrong; they
// never quote the input beyond a short flat excerpt (json_excerpt).
//
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace llmpool {

struct JsonLimits {
  // Objects and arrays nested deeper than this are refused. 64 is far
  // beyond any OpenAI request or JSON schema a client sends in practice.
  int max_depth = 64;
  // 0: no limit beyond the caller's (the HTTP body limit, say).
  size_t max_bytes = 0;
};

inline constexpr JsonLimits kDefaultJsonLimits{};

// Parses `text` as one JSON value. InvalidArgument (param `param`) when it
// is not JSON, is nested deeper than limits.max_depth or is larger than
// limits.max_bytes; the message starts with `what` ("the request body",
// "the upstream's answer") and gives the byte offset of the problem.
Result<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits = kDefaultJsonLimits,
                                  std::string_view what = "the request body", std::string param = {});

// A short, flat description of `value` for error messages: a scalar as JSON,
// cut to `max_chars` with "..."; an array or object by its kind and size
// ("an array of 3 items"). Never recursive.
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 48);

// "a string", "a number", "an integer", "a boolean", "null", "an array", "an object".
const char* json_type_name(const nlohmann::json& value);

// `value` as compact JSON text: byte for byte what
// value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
// writes (invalid UTF-8 becomes U+FFFD), in a fraction of its time for what
// answers are made of: containers, ASCII strings and integers are written
// here; floats, strings with bytes past ASCII and binary values go through
// nlohmann's serializer. Recursive, as dump() is: for values that
// parse_json's depth limit or our own code bounded.
std::string json_text(const nlohmann::json& value);

}  // namespace llmpool
