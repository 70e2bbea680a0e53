// Small text helpers for messages that quote input. Pure; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace llmpool {

// `s` when it has at most `max_bytes` bytes; otherwise its longest prefix of
// whole UTF-8 characters within `max_bytes`, followed by "...".
inline std::string cut_utf8(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  std::string out(s.substr(0, cut));
  out += "...";
  return out;
}

}  // namespace llmpool
