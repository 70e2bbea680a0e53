// Internal to common/json.cpp, its tests, fuzz target and benchmark: not
// part of llmpool's API (include common/json.h and call parse_json).
//
// parse_json_dom is the parser behind parse_json: strict RFC 8259, one pass
// over the bytes, building nlohmann::json's DOM directly. It accepts exactly
// what nlohmann 3.11.2's strict sax_parse (iterator input) accepts and
// builds the same DOM, with one exception: nlohmann reads a NUL byte after
// the value as the end of the text and ignores what follows; here any NUL
// is refused (no valid JSON text holds one, and a body that two parsers
// read differently is a smuggling risk). Like nlohmann, a UTF-8 byte order
// mark at the start is skipped. parse_json_reference is the parse_json of before, nlohmann's
// own parser, kept as the reference the differential test and fuzz target
// compare against and the benchmark measures.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/status.h"

namespace llmpool::json_internal {

// The bytes a JSON string holds as they are, read or written: ASCII from the
// space on, but the quote and the backslash. Everything else is an escape,
// the closing quote, a control character or UTF-8 (checked).
inline constexpr std::array<bool, 256> kPlainStringByte = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[static_cast<size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

struct JsonParseError {
  bool too_deep = false;  // a container opened past max_depth; `reason` is empty
  size_t offset = 0;      // of the byte where the text went wrong
  std::string reason;     // "invalid literal", "expected ',' or ']'", ...
};

// Parses `text` into `out` (which it overwrites): true, or false with
// `error` filled in. Objects and arrays deeper than `max_depth` are refused
// when they open, before anything is built for them. Never recurses (an
// explicit stack of the open containers), never reads outside `text`, and
// throws only what allocating throws (std::bad_alloc, std::length_error).
bool parse_json_dom(std::string_view text, int max_depth, nlohmann::json& out, JsonParseError& error);

// parse_json through nlohmann's strict sax_parse into its DOM builder, with
// the same limits and message shapes as parse_json.
Result<nlohmann::json> parse_json_reference(std::string_view text, const JsonLimits& limits = kDefaultJsonLimits,
                                            std::string_view what = "the request body", std::string param = {});

// For the comparisons: equal with the same type at every node and floats
// bit for bit (json's == calls 1, 1u and 1.0 equal, and -0.0 equal to 0.0).
// Recursive: for values parse_json's depth limit bounded.
bool same_json(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace llmpool::json_internal
