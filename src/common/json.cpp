#include "common/json.h"
#include "common/json_parser.h"
#include "common/text.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

namespace llmpool {
namespace {

using json = nlohmann::json;

// parse_json_reference's SAX handler: nlohmann's own DOM builder, refusing
// values nested deeper than the limit the moment the parser opens one, so
// a deep value is never built at all.
class BoundedDomParser {
 public:
  BoundedDomParser(json& root, int max_depth) : dom_(root, /*allow_exceptions=*/false), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return dom_.number_float(v, s); }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) { return enter() && dom_.start_object(n); }
  bool key(json::string_t& v) { return dom_.key(v); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    error_position_ = position;
    error_ = ex.what();
    // nlohmann's messages look like "[json.exception.parse_error.101] parse
    // error at line 1, column 5: syntax error while parsing value - ...":
    // keep the part after the id, which quotes at most the last token.
    auto pos = error_.find("] ");
    if (pos != std::string::npos) error_ = error_.substr(pos + 2);
    if (error_.size() > 160) error_ = error_.substr(0, 160) + "...";
    return false;
  }

  bool too_deep() const { return too_deep_; }
  size_t error_position() const { return error_position_; }
  const std::string& error() const { return error_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  int max_depth_;
  int depth_ = 0;
  bool too_deep_ = false;
  size_t error_position_ = 0;
  std::string error_;
};

}  // namespace

// nlohmann's serializer, for what JsonWriter leaves to it (strings with
// invalid UTF-8, binary values), appending to the writer's text.
struct JsonWriter::Fallback {
  explicit Fallback(std::string& out)
      : serializer(nlohmann::detail::output_adapter<char>(out), ' ', json::error_handler_t::replace) {}
  nlohmann::detail::serializer<json> serializer;
};

JsonWriter::JsonWriter(std::string& out) : out_(out) {}
JsonWriter::~JsonWriter() = default;

JsonWriter::Fallback& JsonWriter::fallback() {
  if (!fallback_) fallback_ = std::make_unique<Fallback>(out_);
  return *fallback_;
}

void JsonWriter::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  const uint64_t bit = uint64_t{1} << depth_;
  if (!(empty_ & bit)) out_ += ',';
  empty_ &= ~bit;
}

JsonWriter& JsonWriter::begin_object() {
  separate();
  out_ += '{';
  empty_ |= uint64_t{1} << ++depth_;
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  --depth_;
  out_ += '}';
  return *this;
}

JsonWriter& JsonWriter::begin_array() {
  separate();
  out_ += '[';
  empty_ |= uint64_t{1} << ++depth_;
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  --depth_;
  out_ += ']';
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view name) {
  separate();
  after_key_ = true;
  member_name(name);
  return *this;
}

JsonWriter& JsonWriter::string(std::string_view s) {
  separate();
  text(s);
  return *this;
}

JsonWriter& JsonWriter::integer(int64_t v) {
  separate();
  digits(v);
  return *this;
}

void JsonWriter::member_name(std::string_view name) {
  if (short_plain(name, ':')) return;
  quoted(name);
  out_ += ':';
}

void JsonWriter::text(std::string_view s) {
  if (!short_plain(s, '\0')) quoted(s);
}

template <typename Int>
void JsonWriter::digits(Int v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, end);
}

JsonWriter& JsonWriter::number(double v) {
  separate();
  float_text(v);
  return *this;
}

// What nlohmann's serializer writes for a double: null when it is not
// finite, else its shortest round-trip form from nlohmann's own to_chars
// (which also adds the ".0" that marks an integral value as a float).
void JsonWriter::float_text(double v) {
  if (!std::isfinite(v)) {
    out_ += "null";
    return;
  }
  char buf[64];
  char* end = nlohmann::detail::to_chars(buf, buf + sizeof(buf), v);
  out_.append(buf, end);
}

// A short string that needs no escaping, quoted and followed by `then`
// (when not NUL) in one append: most keys and many values. False, with
// nothing written, for any other.
bool JsonWriter::short_plain(std::string_view s, char then) {
  char buf[64];
  if (s.size() > sizeof(buf) - 3) return false;
  for (char c : s)
    if (!json_internal::kPlainStringByte[static_cast<unsigned char>(c)]) return false;
  buf[0] = '"';
  std::memcpy(buf + 1, s.data(), s.size());
  buf[s.size() + 1] = '"';
  buf[s.size() + 2] = then;
  out_.append(buf, s.size() + (then ? 3 : 2));
  return true;
}

JsonWriter& JsonWriter::boolean(bool v) {
  separate();
  out_ += v ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  separate();
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::value(const json& v) {
  separate();
  dom(v);
  return *this;
}

JsonWriter& JsonWriter::raw(std::string_view text) {
  separate();
  out_ += text;
  return *this;
}

void JsonWriter::dom(const json& v) {
  switch (v.type()) {
    case json::value_t::object: {
      out_ += '{';
      bool first = true;
      for (const auto& [key, member] : v.get_ref<const json::object_t&>()) {
        if (!first) out_ += ',';
        first = false;
        member_name(key);
        dom(member);
      }
      out_ += '}';
      return;
    }
    case json::value_t::array: {
      out_ += '[';
      bool first = true;
      for (const json& item : v.get_ref<const json::array_t&>()) {
        if (!first) out_ += ',';
        first = false;
        dom(item);
      }
      out_ += ']';
      return;
    }
    case json::value_t::string:
      text(v.get_ref<const std::string&>());
      return;
    case json::value_t::boolean:
      out_ += v.get<bool>() ? "true" : "false";
      return;
    case json::value_t::null:
      out_ += "null";
      return;
    case json::value_t::number_integer:
      digits(v.get<json::number_integer_t>());
      return;
    case json::value_t::number_unsigned:
      digits(v.get<json::number_unsigned_t>());
      return;
    case json::value_t::number_float:
      float_text(v.get<double>());
      return;
    default:  // binary, discarded
      fallback().serializer.dump(v, false, false, 0);
      return;
  }
}

// `s` quoted and escaped as nlohmann escapes it (the short forms, the other
// controls as u00xx escapes in lower case, DEL and well-formed UTF-8 as they
// are). A string with invalid UTF-8 goes to nlohmann's serializer, whose
// replacement of the bad bytes by U+FFFD this does not repeat.
void JsonWriter::quoted(std::string_view s) {
  const size_t mark = out_.size();
  out_ += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  const auto* run = p;  // start of the bytes not written yet that need no escape
  while (p < end) {
    const unsigned char c = *p;
    if (json_internal::kPlainStringByte[c]) {
      ++p;
      continue;
    }
    if (c >= 0x80) {
      const size_t n = json_internal::utf8_length(p, end);
      if (n == 0) {
        out_.resize(mark);
        fallback().serializer.dump(json(std::string(s)), false, false, 0);
        return;
      }
      p += n;
      continue;
    }
    out_.append(reinterpret_cast<const char*>(run), static_cast<size_t>(p - run));
    run = ++p;
    switch (c) {
      case '"': out_ += "\\\""; break;
      case '\\': out_ += "\\\\"; break;
      case '\b': out_ += "\\b"; break;
      case '\f': out_ += "\\f"; break;
      case '\n': out_ += "\\n"; break;
      case '\r': out_ += "\\r"; break;
      case '\t': out_ += "\\t"; break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        const char u[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
        out_.append(u, sizeof(u));
      }
    }
  }
  out_.append(reinterpret_cast<const char*>(run), static_cast<size_t>(end - run));
  out_ += '"';
}

std::string json_text(const json& value) {
  std::string out;
  out.reserve(512);  // an answer's size: no regrowing while it is written
  JsonWriter(out).value(value);
  return out;
}

namespace {

Status too_large(std::string_view text, const JsonLimits& limits, std::string_view what, std::string param) {
  return Status::invalid_argument(std::string(what) + " is " + std::to_string(text.size()) + " bytes; the limit is " +
                                      std::to_string(limits.max_bytes),
                                  std::move(param));
}

Status too_deep(const JsonLimits& limits, std::string_view what, std::string param) {
  return Status::invalid_argument(
      std::string(what) + " is nested deeper than " + std::to_string(limits.max_depth) + " levels", std::move(param));
}

}  // namespace

Result<json> parse_json(std::string_view text, const JsonLimits& limits, std::string_view what, std::string param) {
  if (limits.max_bytes > 0 && text.size() > limits.max_bytes) return too_large(text, limits, what, std::move(param));
  json root;
  json_internal::JsonParseError error;
  bool ok = false;
  try {
    ok = json_internal::parse_json_dom(text, limits.max_depth, root, error);
  } catch (const std::exception&) {  // allocating failed (std::bad_alloc, std::length_error)
    return Status::invalid_argument(std::string(what) + " is not valid JSON", std::move(param));
  }
  if (ok) return root;
  if (error.too_deep) return too_deep(limits, what, std::move(param));
  return Status::invalid_argument(std::string(what) + " is not valid JSON: " + error.reason + " at byte offset " +
                                      std::to_string(error.offset),
                                  std::move(param));
}

bool read_json(std::string_view text, const JsonLimits& limits, JsonEvents& events) {
  if (limits.max_bytes > 0 && text.size() > limits.max_bytes) return false;
  json_internal::JsonParseError error;
  try {
    return json_internal::parse_json_events(text, limits.max_depth, events, error);
  } catch (const std::exception&) {  // allocating failed (std::bad_alloc, std::length_error)
    return false;
  }
}

namespace json_internal {

Result<json> parse_json_reference(std::string_view text, const JsonLimits& limits, std::string_view what,
                                  std::string param) {
  if (limits.max_bytes > 0 && text.size() > limits.max_bytes) return too_large(text, limits, what, std::move(param));
  json root;
  BoundedDomParser sax(root, limits.max_depth);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json, /*strict=*/true);
  } catch (const std::exception&) {  // the DOM builder's own errors (none expected)
    return Status::invalid_argument(std::string(what) + " is not valid JSON", std::move(param));
  }
  if (sax.too_deep()) return too_deep(limits, what, std::move(param));
  if (!ok) {
    std::string msg = std::string(what) + " is not valid JSON";
    if (!sax.error().empty()) msg += ": " + sax.error();
    return Status::invalid_argument(std::move(msg), std::move(param));
  }
  return root;
}

}  // namespace json_internal

std::string json_excerpt(const json& value, size_t max_chars) {
  switch (value.type()) {
    case json::value_t::array:
      return "an array of " + std::to_string(value.size()) + (value.size() == 1 ? " item" : " items");
    case json::value_t::object:
      return "an object with " + std::to_string(value.size()) + (value.size() == 1 ? " key" : " keys");
    case json::value_t::binary:
      return "binary data";
    default:
      break;
  }
  return cut_utf8(value.dump(-1, ' ', false, json::error_handler_t::replace), max_chars);  // a scalar: flat
}

const char* json_type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::binary: return "binary data";
    case json::value_t::discarded: return "nothing";
  }
  return "unknown";
}

}  // namespace llmpool
