// The one place where llama.cpp return codes become Status values.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace llmpool::engine {

// Maps the result of llama_decode()/llama_encode() to a Status.
// 0 is ok; 1 (no KV slot) is ResourceExhausted; 2 (aborted) is Unavailable;
// -1 (invalid batch) is InvalidArgument; anything else is Internal.
Status decode_status(int32_t rc, std::string_view what);

// Installs a llama.cpp/ggml log callback that forwards to spdlog (warnings
// and errors at their level, the rest at debug), and initialises the
// backend. Idempotent and thread-safe.
void init_llama_backend();

}  // namespace llmpool::engine
