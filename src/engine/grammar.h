// JSON schema -> GBNF through llama.cpp's own converter (llama-common).
// Kept in its own translation unit: llama-common brings its own JSON type.
#pragma once

#include <string>

#include "common/status.h"

namespace llmpool::engine {

// InvalidArgument (param response_format) if `schema_json` is not JSON or
// the converter rejects it. Thread-safe (pure).
Result<std::string> json_schema_grammar(const std::string& schema_json);

}  // namespace llmpool::engine
