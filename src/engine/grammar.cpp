#include "engine/grammar.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "json-schema-to-grammar.h"  // llama.cpp common: the converter and its common_json

namespace llmpool::engine {
namespace {

Status refuse(const std::string& param, const std::string& what) {
  return Status::invalid_argument("'" + param + "': the JSON schema " + what, param);
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The deepest nesting of `text`, counted outside strings, without parsing;
// stops counting once past `limit`.
int text_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

// The largest count in a pattern's `{m}`, `{m,}` or `{m,n}`; 0 when none.
int64_t largest_pattern_count(std::string_view pattern) {
  int64_t largest = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\') {
      ++i;  // an escaped character, such as \{
      continue;
    }
    if (pattern[i] != '{') continue;
    int64_t n = -1;
    for (size_t j = i + 1; j < pattern.size() && pattern[j] != '}'; ++j) {
      char c = pattern[j];
      if (std::isdigit(static_cast<unsigned char>(c))) {
        n = std::min<int64_t>((n < 0 ? 0 : n) * 10 + (c - '0'), INT64_MAX / 20);  // saturates far past any limit
      } else {
        largest = std::max(largest, n);
        n = -1;
        if (c != ',') break;
      }
    }
    largest = std::max(largest, n);
  }
  return largest;
}

std::optional<double> number_member(const common_json& node, const std::string& key) {
  if (!node.contains(key)) return std::nullopt;
  const common_json& v = node.at(key);
  if (!v.is_number()) return std::nullopt;  // the converter refuses other types itself
  return v.get<double>();
}

struct Counts {
  int64_t repetition_total = 0;
  size_t enum_values = 0;
  size_t properties = 0;
  size_t expanded = 0;
};

// The checks of one object of the schema (every object is treated as a
// schema: a false alarm only costs a limit real schemas are far below).
// `weight`: how many copies of it the converter builds.
Status check_schema_object(const common_json& node, size_t weight, const std::string& param,
                           const SchemaLimits& limits, Counts* counts) {
  if (node.size() > limits.max_object_members)
    return refuse(param, "has an object of " + std::to_string(node.size()) + " members; the limit is " +
                             std::to_string(limits.max_object_members));
  counts->expanded += weight;
  if (counts->expanded > limits.max_expanded_schemas)
    return refuse(param, "expands to more than " + std::to_string(limits.max_expanded_schemas) +
                             " schemas (the converter copies a schema once per entry of its `type` array)");
  for (const char* key : {"minItems", "maxItems", "minLength", "maxLength"}) {
    std::optional<double> v = number_member(node, key);
    if (!v) continue;
    if (*v > static_cast<double>(limits.max_repetition))
      return refuse(param, std::string("has ") + key + " " + number_text(*v) + "; the limit is " +
                               std::to_string(limits.max_repetition));
    if (*v > 0) counts->repetition_total += static_cast<int64_t>(*v) * static_cast<int64_t>(weight);
  }
  if (node.contains("pattern") && node.at("pattern").is_string()) {
    int64_t n = largest_pattern_count(node.at("pattern").get<std::string>());
    if (n > limits.max_repetition)
      return refuse(param, "has a pattern repeating " + std::to_string(n) + " times; the limit is " +
                               std::to_string(limits.max_repetition));
    counts->repetition_total += n * static_cast<int64_t>(weight);
  }
  if (counts->repetition_total > limits.max_repetition_total)
    return refuse(param, "repeats more than " + std::to_string(limits.max_repetition_total) +
                             " times in all (minItems, maxItems, minLength, maxLength and pattern counts added up)");
  for (const char* key : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
    std::optional<double> v = number_member(node, key);
    if (v && (!std::isfinite(*v) || std::fabs(*v) > limits.max_integer_bound))
      return refuse(param, std::string("has ") + key + " " + number_text(*v) + "; the limit is 2^53 either way");
  }
  if (node.contains("enum") && node.at("enum").is_array()) {
    counts->enum_values += node.at("enum").size() * weight;
    if (counts->enum_values > limits.max_enum_values)
      return refuse(param, "has more than " + std::to_string(limits.max_enum_values) + " enum values");
  }
  if (node.contains("properties") && node.at("properties").is_object()) {
    const common_json& properties = node.at("properties");
    // The converter's work is cubic in the optional ones (its chain of
    // "-rest" rules is rebuilt from each of them).
    std::set<std::string> required;
    if (node.contains("required") && node.at("required").is_array())
      for (const common_json& name : node.at("required"))
        if (name.is_string() && properties.contains(name.get<std::string>())) required.insert(name.get<std::string>());
    size_t optional = properties.size() - required.size();
    if (optional > limits.max_optional_properties)
      return refuse(param, "has an object of " + std::to_string(optional) + " optional properties; the limit is " +
                               std::to_string(limits.max_optional_properties));
    counts->properties += properties.size() * weight;
    if (counts->properties > limits.max_properties)
      return refuse(param, "has more than " + std::to_string(limits.max_properties) + " properties in all");
  }
  return Status::ok();
}

// Walks the schema without recursion.
Status check_schema_tree(const common_json& schema, const std::string& param, const SchemaLimits& limits) {
  struct Item {
    const common_json* node;
    size_t weight;
  };
  Counts counts;
  std::vector<Item> stack{{&schema, 1}};
  while (!stack.empty()) {
    Item item = stack.back();
    stack.pop_back();
    const common_json& node = *item.node;
    size_t child_weight = item.weight;
    if (node.is_object()) {
      if (Status st = check_schema_object(node, item.weight, param, limits, &counts); !st) return st;
      if (node.contains("type") && node.at("type").is_array() && node.at("type").size() > 1)
        child_weight = std::min(item.weight * node.at("type").size(), limits.max_expanded_schemas + 1);
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      const common_json& child = *it;
      if (child.is_object() || child.is_array()) stack.push_back({&child, child_weight});
    }
  }
  return Status::ok();
}

// The schema parsed, after every check.
Result<common_json> parse_checked(const std::string& text, const std::string& param, const SchemaLimits& limits) {
  if (text.size() > limits.max_bytes)
    return refuse(param, "is " + std::to_string(text.size()) + " bytes; the limit is " + std::to_string(limits.max_bytes));
  if (text_depth(text, limits.max_depth) > limits.max_depth)
    return refuse(param, "is nested deeper than " + std::to_string(limits.max_depth) + " levels");
  try {
    common_json schema = common_json::parse(text);
    if (!schema.is_object()) return Status::invalid_argument("'" + param + "' must be a JSON schema object", param);
    if (Status st = check_schema_tree(schema, param, limits); !st) return st;
    return schema;
  } catch (const std::exception&) {
    return Status::invalid_argument("'" + param + "' is not valid JSON", param);
  }
}

}  // namespace

Status check_json_schema(const std::string& schema_json, const std::string& param) {
  Result<common_json> schema = parse_checked(schema_json, param, kSchemaLimits);
  return schema ? Status::ok() : schema.status();
}

Result<std::string> json_schema_grammar(const std::string& schema_json, const std::string& param) {
  const SchemaLimits& limits = kSchemaLimits;
  Result<common_json> schema = parse_checked(schema_json, param, limits);
  if (!schema) return schema.status();
  try {
    std::string grammar = json_schema_to_grammar(*schema, true);
    if (grammar.empty()) return refuse(param, "gave an empty grammar");
    if (grammar.size() > limits.max_grammar_bytes)
      return refuse(param, "gives a grammar of " + std::to_string(grammar.size()) + " bytes; the limit is " +
                               std::to_string(limits.max_grammar_bytes));
    return grammar;
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return Status::invalid_argument("'" + param + "': " + what, param);
  }
}

}  // namespace llmpool::engine
