// Reading client request bodies: the one bounded parse (parse_body) and a
// typed field reader (FieldReader) that knows the JSON path of the value it
// reads, so every error names the exact field (`tools[0].function.name`,
// `messages[2].tool_calls[0].id`, `logit_bias.123`) in its `param`.
//
// Nothing here throws: values are only read after their type was checked,
// and error messages quote a bad value by json_excerpt (short and flat),
// never by dump(). Pure functions and plain values; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/status.h"

// TODO(merge main): status.h gains these macros; drop this shim then.
#ifndef RETURN_IF_ERROR
namespace llmpool::shim {
inline const Status& status_of(const Status& s) { return s; }
template <typename T>
const Status& status_of(const Result<T>& r) { return r.status(); }
}  // namespace llmpool::shim
#define RETURN_IF_ERROR(expr)                                                  \
  do {                                                                         \
    auto&& llmpool_status_or_ = (expr);                                        \
    if (!llmpool_status_or_.is_ok()) return ::llmpool::shim::status_of(llmpool_status_or_); \
  } while (0)
#define LLMPOOL_SHIM_CONCAT_INNER_(a, b) a##b
#define LLMPOOL_SHIM_CONCAT_(a, b) LLMPOOL_SHIM_CONCAT_INNER_(a, b)
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL_(LLMPOOL_SHIM_CONCAT_(llmpool_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                            \
  if (!tmp.is_ok()) return tmp.status();        \
  lhs = std::move(tmp).value()
#endif

namespace llmpool::api {

// Nesting deeper than this is refused while the body is parsed.
inline constexpr int kMaxRequestDepth = 64;

// Parses a request body with llmpool::parse_json (depth kMaxRequestDepth;
// the size is bounded by the HTTP server's body limit). InvalidArgument:
// code `invalid_json` for text that is not JSON; for a body nested too deep,
// `param` names the field that holds the deep value (`max_tokens`,
// `tools[0].function.parameters`, `response_format.json_schema.schema`);
// param "" for a body that is not an object.
Result<nlohmann::json> parse_body(std::string_view body);

// A view of one JSON value and its path. The value must outlive the reader.
class FieldReader {
 public:
  // `path` is the value's JSON path; "" for the body itself.
  explicit FieldReader(const nlohmann::json& value, std::string path = {}) : value_(&value), path_(std::move(path)) {}

  const nlohmann::json& value() const { return *value_; }
  const std::string& path() const { return path_; }

  // InvalidArgument "'<path>' <what>", param path.
  Status error(std::string_view what) const;
  // InvalidArgument "'<path>' must be <expected>, got <type> (<excerpt>)".
  Status type_error(std::string_view expected) const;

  // The value as a type; InvalidArgument naming the path otherwise.
  Status want_object() const;
  // An array of at most `max_items` (and at least one when `non_empty`).
  Status want_array(size_t max_items, bool non_empty = false) const;
  Result<std::string> string(size_t max_bytes, bool non_empty = false) const;
  Result<int64_t> integer(int64_t lo, int64_t hi) const;
  Result<double> number(double lo, double hi) const;  // finite, within [lo, hi]
  Result<bool> boolean() const;

  // Object members. `field` is empty when the key is absent or null (OpenAI
  // clients send null for "not set"); `required` says "'<path>' is required".
  // The value must be an object (want_object first).
  std::optional<FieldReader> field(std::string_view key) const;
  Result<FieldReader> required(std::string_view key) const;
  // Array items; the value must be an array (want_array first).
  size_t size() const { return value_->size(); }
  FieldReader item(size_t index) const;
  // A child reader for an object member already in hand (iteration).
  FieldReader member(std::string_view key, const nlohmann::json& value) const;

  // A required string member.
  Result<std::string> required_string(std::string_view key, size_t max_bytes, bool non_empty = false) const;

  // Optional scalar members: absent or null leaves *out as it is.
  Status optional_string(std::string_view key, size_t max_bytes, std::string* out) const;
  Status optional_bool(std::string_view key, bool* out) const;
  Status optional_number(std::string_view key, double lo, double hi, float* out, bool* present = nullptr) const;
  Status optional_int(std::string_view key, int64_t lo, int64_t hi, int64_t* out, bool* present = nullptr) const;

 private:
  const nlohmann::json* value_;
  std::string path_;
};

// "a" + key -> "a.key" ("key" at the root); keys in paths are cut to 64
// bytes, so a path stays short whatever the client sent.
std::string member_path(std::string_view parent, std::string_view key);
std::string item_path(std::string_view parent, size_t index);

}  // namespace llmpool::api
