// Small text helpers: cutting quoted input for messages (pure), and random
// hex ids. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
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

// ASCII case-insensitive equality (header names, media types).
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// The HTTP/1.1 headers that frame a message: its length and what happens to
// the connection. llmpool's server and client write them themselves and
// never send a handler's or caller's.
inline bool is_framing_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection");
}

// `digits` random lowercase hex digits (64 bits of a per-thread generator
// seeded by the OS for every 16): ids that must not repeat, not secrets.
inline std::string random_hex(size_t digits) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(digits);
  uint64_t v = 0;
  for (size_t i = 0; i < digits; ++i) {
    if (i % 16 == 0) v = rng();
    s += kHex[v & 15];
    v >>= 4;
  }
  return s;
}

}  // namespace llmpool
