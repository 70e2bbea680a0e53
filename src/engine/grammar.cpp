#include "engine/grammar.h"

#include "json-schema-to-grammar.h"  // llama.cpp common

namespace llmpool::engine {

Result<std::string> json_schema_grammar(const std::string& schema_json) {
  try {
    common_json schema = common_json::parse(schema_json);
    std::string grammar = json_schema_to_grammar(schema, true);
    if (grammar.empty()) return Status::invalid_argument("the JSON schema gave an empty grammar", "response_format");
    return grammar;
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("response_format.json_schema: ") + e.what(), "response_format");
  }
}

}  // namespace llmpool::engine
