// Fuzz target: parse_json (llmpool's own JSON parser) against nlohmann's
// strict parser (json_internal::parse_json_reference), which it replaced.
//
// Input: the whole input is one text, parsed with the default depth limit
// (64); byte 0 also picks a small limit (0-15) for the rest of the input;
// and each line of the input, after a "data:" prefix if it has one, is a
// text too (the SSE and NDJSON bodies of the stream_decoder corpus). Both
// parsers must accept the same texts, build the same DOM (same types, floats
// bit for bit) and refuse the rest for the same kind of reason (too deep or
// not JSON); any disagreement aborts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/json_parser.h"

using namespace llmpool;

namespace {

// By how the message starts: nlohmann's syntax errors quote the input.
bool too_deep(const Status& s) { return s.message().rfind("the request body is nested deeper than", 0) == 0; }

void check(std::string_view text, int max_depth) {
  JsonLimits limits;
  limits.max_depth = max_depth;
  Result<nlohmann::json> mine = parse_json(text, limits);
  Result<nlohmann::json> ref = json_internal::parse_json_reference(text, limits);
  // The one intended difference: any NUL byte is refused (nlohmann ends the
  // text at one after the value).
  const bool nul = text.find('\0') != std::string_view::npos;
  bool same = mine.is_ok() == (ref.is_ok() && !nul);
  if (same && mine.is_ok()) same = json_internal::same_json(*mine, *ref);
  if (same && !mine.is_ok() && !ref.is_ok()) same = too_deep(mine.status()) == too_deep(ref.status());
  if (same) return;
  std::fprintf(stderr, "json_fuzz: the parsers disagree on %zu bytes (max_depth %d)\n mine: %s\n nlohmann: %s\n",
               text.size(), max_depth, mine ? mine->dump().c_str() : mine.status().message().c_str(),
               ref ? ref->dump().c_str() : ref.status().message().c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check(input, kDefaultJsonLimits.max_depth);
  if (size > 0) check(input.substr(1), data[0] % 16);
  if (input.find('\n') == std::string_view::npos) return 0;
  for (size_t start = 0; start <= size;) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = size;
    std::string_view line = input.substr(start, end - start);
    if (line.substr(0, 5) == "data:") line.remove_prefix(line.size() > 5 && line[5] == ' ' ? 6 : 5);
    check(line, kDefaultJsonLimits.max_depth);
    start = end + 1;
  }
  return 0;
}
