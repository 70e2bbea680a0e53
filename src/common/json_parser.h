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
#include <cstdint>
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

// The length (2 to 4) of the well-formed UTF-8 character at `p`, whose
// first byte is past ASCII, or 0 when it is not one. Well-formed as
// Unicode's table 3-7 (and nlohmann) define it: no overlong forms, no
// surrogates, nothing past U+10FFFF. Reads nothing at or past `end`.
inline size_t utf8_length(const unsigned char* p, const unsigned char* end) {
  const unsigned char c = *p;
  size_t more;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte; the others are 80..BF
  if (c >= 0xC2 && c <= 0xDF) {
    more = 1;
  } else if (c == 0xE0) {
    more = 2, lo = 0xA0;
  } else if (c == 0xED) {
    more = 2, hi = 0x9F;
  } else if (c >= 0xE1 && c <= 0xEF) {
    more = 2;
  } else if (c == 0xF0) {
    more = 3, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    more = 3;
  } else if (c == 0xF4) {
    more = 3, hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t i = 1; i <= more; ++i) {
    if (static_cast<size_t>(end - p) <= i || p[i] < lo || p[i] > hi) return 0;
    lo = 0x80, hi = 0xBF;
  }
  return more + 1;
}

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

// The same parser with the same checks and limits, no DOM: `events` gets
// the values as they are read. True when the text is whole and valid and no
// method stopped it (a stopped parse leaves `error` without a reason).
bool parse_json_events(std::string_view text, int max_depth, llmpool::JsonEvents& events, JsonParseError& error);

// parse_json through nlohmann's strict sax_parse into its DOM builder, with
// the same limits and message shapes as parse_json.
Result<nlohmann::json> parse_json_reference(std::string_view text, const JsonLimits& limits = kDefaultJsonLimits,
                                            std::string_view what = "the request body", std::string param = {});

// For the comparisons: equal with the same type at every node and floats
// bit for bit (json's == calls 1, 1u and 1.0 equal, and -0.0 equal to 0.0).
// Recursive: for values parse_json's depth limit bounded.
bool same_json(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace llmpool::json_internal
