// Small cryptographic helpers over OpenSSL 3 (libcrypto) that the tenancy
// module shares: digests, HMAC, random bytes, constant-time comparison and
// the text encodings credentials use (lowercase hex, base64url without
// padding).
//
// Pure functions; thread-safe. Byte strings are std::string (any bytes).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace llmpool::tenancy {

// SHA-256 of `data`: 32 raw bytes.
std::string sha256(std::string_view data);

// HMAC-SHA256(key, data): 32 raw bytes.
std::string hmac_sha256(std::string_view key, std::string_view data);

// `n` bytes from OpenSSL's CSPRNG (RAND_bytes). Internal if the generator
// cannot deliver (it never silently returns weak bytes).
Result<std::string> random_bytes(size_t n);

// True when `a` and `b` are equal. The time taken depends only on the
// lengths, never on where the contents differ (CRYPTO_memcmp); unequal
// lengths return false at once (lengths are not secret here).
bool constant_time_equal(std::string_view a, std::string_view b);

// Lowercase hex of `bytes`.
std::string to_hex(std::string_view bytes);

// base64url (RFC 4648 §5) without padding, as JWTs use it.
std::string base64url_encode(std::string_view bytes);

// Strict base64url decoding: only the alphabet A-Z a-z 0-9 - _, no padding,
// no whitespace, a length that is not 1 mod 4, and zero unused trailing
// bits (so each byte string has exactly one accepted encoding). nullopt on
// any violation.
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace llmpool::tenancy
