// The one way llmpool reads JSON it did not write itself: client request
// bodies, upstream answers and stream events, files. The nesting depth and
// the size are checked while parsing, so no recursive routine (dump(),
// schema conversion, a visitor) ever sees a value deeper than the limit.
// Error messages name what was read and where the text went wrong; they
// never quote the input beyond a short flat excerpt (json_excerpt).
//
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace llmpool {

struct JsonLimits {
  // Objects and arrays nested deeper than this are refused. 64 is far
  // beyond any OpenAI request or JSON schema a client sends in practice.
  int max_depth = 64;
  // 0: no limit beyond the caller's (the HTTP body limit, say).
  size_t max_bytes = 0;
};

inline constexpr JsonLimits kDefaultJsonLimits{};

// Parses `text` as one JSON value. InvalidArgument (param `param`) when it
// is not JSON, is nested deeper than limits.max_depth or is larger than
// limits.max_bytes; the message starts with `what` ("the request body",
// "the upstream's answer") and gives the byte offset of the problem.
Result<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits = kDefaultJsonLimits,
                                  std::string_view what = "the request body", std::string param = {});

// What read_json hands a reader in place of a DOM, in the text's order.
// Strings and keys come unescaped and checked; the reader may move from
// them. A method that returns false stops the parse there. Objects and
// arrays both end in end_container().
class JsonEvents {
 public:
  virtual ~JsonEvents() = default;
  virtual bool begin_object() = 0;
  virtual bool begin_array() = 0;
  virtual bool end_container() = 0;
  virtual bool key(std::string& k) = 0;
  virtual bool string(std::string& v) = 0;
  virtual bool boolean(bool v) = 0;
  virtual bool null() = 0;
  virtual bool integer(int64_t v) = 0;             // negative integers that fit int64
  virtual bool unsigned_integer(uint64_t v) = 0;   // other integers that fit uint64
  virtual bool number_float(double v) = 0;         // every other number (finite)
};

// Reads `text` with parse_json's parser, checks and limits, building no
// DOM: `events` gets each value as it is read. True when the text is valid
// JSON within the limits and no method stopped it; false says nothing more
// (a reader that needs the reason parses again with parse_json).
bool read_json(std::string_view text, const JsonLimits& limits, JsonEvents& events);

// A short, flat description of `value` for error messages: a scalar as JSON,
// cut to `max_chars` with "..."; an array or object by its kind and size
// ("an array of 3 items"). Never recursive.
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 48);

// "a string", "a number", "an integer", "a boolean", "null", "an array", "an object".
const char* json_type_name(const nlohmann::json& value);

// `value` as compact JSON text: byte for byte what
// value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
// writes (invalid UTF-8 becomes U+FFFD), in a fraction of its time: only
// strings with invalid UTF-8 and binary values go through nlohmann's
// serializer. Recursive, as dump() is: for values that
// parse_json's depth limit or our own code bounded.
std::string json_text(const nlohmann::json& value);

// Writes JSON text straight into a string, with no DOM: the same bytes
// json_text() gives for the same values, members in the order they are
// written (a DOM's are sorted by key, so writers that must match one write
// theirs sorted). Strings are escaped as nlohmann escapes them; invalid
// UTF-8 becomes U+FFFD, as json_text() does. Nesting through begin_*() is
// at most 63 deep (value() writes any DOM it is given, as json_text()).
//
//   JsonWriter w(out);
//   w.begin_object().key("id").string(id).key("n").integer(3).end_object();
class JsonWriter {
 public:
  explicit JsonWriter(std::string& out);
  ~JsonWriter();
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  // An object's member name; its value is what is written next.
  JsonWriter& key(std::string_view name);
  JsonWriter& string(std::string_view s);
  JsonWriter& integer(int64_t v);
  JsonWriter& number(double v);  // nlohmann's shortest form ("0.7", "1.0"); null when not finite
  JsonWriter& boolean(bool v);
  JsonWriter& null();
  JsonWriter& value(const nlohmann::json& v);
  // A value that is already JSON text (written by this writer or json_text()).
  JsonWriter& raw(std::string_view json_text);

 private:
  struct Fallback;
  void separate();
  void dom(const nlohmann::json& v);
  void member_name(std::string_view name);  // quoted, then ':'
  void text(std::string_view s);            // quoted
  void quoted(std::string_view s);
  bool short_plain(std::string_view s, char then);
  template <typename Int>
  void digits(Int v);
  void float_text(double v);
  Fallback& fallback();

  std::string& out_;
  uint64_t empty_ = 1;  // bit d: nothing written yet in the container at depth d
  int depth_ = 0;
  bool after_key_ = false;
  std::unique_ptr<Fallback> fallback_;
};

}  // namespace llmpool
