// JSON schema -> GBNF through llama.cpp's own converter (llama-common), and
// the limits that keep a client's schema from turning the converter (or
// llama.cpp's grammar parser after it) against the server.
//
// llama.cpp's converter is recursive, copies a schema once per entry of a
// `type` array (nested ones multiply), does work cubic in the number of
// optional properties of one object, and writes repetition counts
// (minItems, maxItems, minLength, maxLength, `{m,n}` in patterns) that
// llama.cpp's grammar parser expands into that many rules. So a schema is
// checked first, without recursion, against kSchemaLimits; each refusal is
// InvalidArgument naming `param` and the limit. Pure functions; thread-safe.
//
// The interface is text: inside the engine <nlohmann/json.hpp> is
// llama.cpp's vendored copy (another version than the rest of llmpool), so
// no JSON value crosses it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace llmpool::engine {

struct SchemaLimits {
  size_t max_bytes = 64 << 10;       // the schema's JSON text
  int max_depth = 32;                // JSON nesting inside the schema (its root object is 1)
  size_t max_object_members = 1024;  // keys of any one object in the schema
  int64_t max_repetition = 1000;     // minItems, maxItems, minLength, maxLength, {m,n} in a pattern
  int64_t max_repetition_total = 10000;  // the sum of those counts over the whole schema
  size_t max_enum_values = 1000;     // enum entries, over the whole schema
  size_t max_properties = 1000;      // properties, over the whole schema
  size_t max_optional_properties = 128;  // properties of one object not in its `required`
  size_t max_expanded_schemas = 10000;  // schemas the converter builds, `type` array copies counted
  double max_integer_bound = 9007199254740992.0;  // |minimum|, |maximum| and the exclusive ones: 2^53
  size_t max_grammar_bytes = 256 << 10;  // the grammar produced
};

inline constexpr SchemaLimits kSchemaLimits{};

// Checks the JSON text of a schema against kSchemaLimits (the nesting is
// checked on the text, before it is parsed). InvalidArgument (param
// `param`, e.g. "response_format.json_schema.schema" or
// "tools[0].function.parameters") when it is not a JSON object or passes a
// limit; the message says which.
Status check_json_schema(const std::string& schema_json, const std::string& param);

// The GBNF grammar for `schema_json`, after check_json_schema and with a
// check of the grammar's size. InvalidArgument (param `param`) if it is not a
// schema object, passes a limit, or the converter rejects it.
Result<std::string> json_schema_grammar(const std::string& schema_json, const std::string& param = "response_format");

}  // namespace llmpool::engine
