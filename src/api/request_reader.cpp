#include "api/request_reader.h"
#include "common/text.h"

#include <cmath>
#include <set>
#include <vector>

namespace llmpool::api {
namespace {

using nlohmann::json;

constexpr size_t kMaxKeyInPath = 64;

// One step of a JSON path: an object key or an array index.
struct PathPart {
  bool is_index = false;
  size_t index = 0;
  std::string key;
};

// The request paths whose values are containers the parsers read item by
// item (indices as "[]"). A deep value is reported at the first step that
// leaves them: the field that should not hold it (`max_tokens`), or a
// free-form JSON value such as a schema (`tools[0].function.parameters`).
const std::set<std::string, std::less<>> kContainerPaths = {
    "messages", "messages[]", "messages[].content", "messages[].content[]", "messages[].tool_calls",
    "messages[].tool_calls[]", "messages[].tool_calls[].function", "tools", "tools[]", "tools[].function",
    "tool_choice", "tool_choice.function", "response_format", "response_format.json_schema", "stop",
    "logit_bias", "stream_options", "ensemble", "prompt", "input", "tokens"};

std::string param_for_deep_value(const std::vector<PathPart>& parts) {
  if (!parts.empty() && parts.front().is_index) return "";  // the body is an array, not a request
  std::string normalised, actual;
  for (const PathPart& part : parts) {
    if (part.is_index) {
      normalised += "[]";
      actual = item_path(actual, part.index);
    } else {
      if (!normalised.empty()) normalised += '.';
      normalised += part.key;
      actual = member_path(actual, part.key);
    }
    if (!kContainerPaths.count(normalised)) break;
  }
  return actual;
}

// Walks a body that parse_json refused, without building it, and records
// the path of the first container that opens past the depth limit. Only
// runs on the error path; keys are kept cut to kMaxKeyInPath bytes.
class DeepValueLocator {
 public:
  explicit DeepValueLocator(int max_depth) : max_depth_(max_depth) {}

  bool null() { return scalar(); }
  bool boolean(bool) { return scalar(); }
  bool number_integer(json::number_integer_t) { return scalar(); }
  bool number_unsigned(json::number_unsigned_t) { return scalar(); }
  bool number_float(json::number_float_t, const json::string_t&) { return scalar(); }
  bool string(json::string_t&) { return scalar(); }
  bool binary(json::binary_t&) { return scalar(); }
  bool key(json::string_t& k) {
    if (!frames_.empty()) frames_.back().key = k.substr(0, kMaxKeyInPath + 1);
    return true;
  }
  bool start_object(std::size_t) { return open(false); }
  bool start_array(std::size_t) { return open(true); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

  bool found() const { return found_; }
  const std::vector<PathPart>& path() const { return path_; }

 private:
  struct Frame {
    bool is_array = false;
    size_t next_index = 0;
    std::string key;
  };

  PathPart child_part() const {
    const Frame& top = frames_.back();
    return top.is_array ? PathPart{true, top.next_index, {}} : PathPart{false, 0, top.key};
  }
  bool scalar() {
    if (!frames_.empty() && frames_.back().is_array) ++frames_.back().next_index;
    return true;
  }
  bool open(bool is_array) {
    if (!frames_.empty()) path_.push_back(child_part());
    if (static_cast<int>(frames_.size()) + 1 > max_depth_) {
      found_ = true;
      return false;
    }
    frames_.push_back(Frame{is_array, 0, {}});
    return true;
  }
  bool close() {
    frames_.pop_back();
    if (!frames_.empty()) {
      path_.pop_back();
      if (frames_.back().is_array) ++frames_.back().next_index;
    }
    return true;
  }

  int max_depth_;
  std::vector<Frame> frames_;
  std::vector<PathPart> path_;  // how each open frame but the root was entered
  bool found_ = false;
};

std::string excerpt_of(const json& value) {
  if (value.is_array() || value.is_object()) return json_excerpt(value);
  return std::string(json_type_name(value)) + " (" + json_excerpt(value) + ")";
}

std::string number_text(double v) { return json_excerpt(json(v)); }

}  // namespace

std::string member_path(std::string_view parent, std::string_view key) {
  std::string out(parent);
  if (!out.empty()) out += '.';
  out += cut_utf8(key, kMaxKeyInPath);
  return out;
}

std::string item_path(std::string_view parent, size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

Result<json> parse_body(std::string_view body) {
  JsonLimits limits;
  limits.max_depth = kMaxRequestDepth;
  Result<json> parsed = parse_json(body, limits, "the request body");
  if (!parsed) {
    DeepValueLocator locator(kMaxRequestDepth);
    (void)json::sax_parse(body.begin(), body.end(), &locator, json::input_format_t::json, /*strict=*/true);
    if (locator.found()) {
      std::string param = param_for_deep_value(locator.path());
      return Status::invalid_argument(
          "'" + param + "' is nested deeper than " + std::to_string(kMaxRequestDepth) + " levels", param);
    }
    return Status::invalid_argument(parsed.status().message(), "", "invalid_json");
  }
  if (!parsed->is_object()) return Status::invalid_argument("the request body must be a JSON object");
  return parsed;
}

Status FieldReader::error(std::string_view what) const {
  return Status::invalid_argument("'" + path_ + "' " + std::string(what), path_);
}

Status FieldReader::type_error(std::string_view expected) const {
  return error("must be " + std::string(expected) + ", got " + excerpt_of(*value_));
}

Status FieldReader::want_object() const {
  return value_->is_object() ? Status::ok() : type_error("an object");
}

Status FieldReader::want_array(size_t max_items, bool non_empty) const {
  if (!value_->is_array()) return type_error(non_empty ? "a non-empty array" : "an array");
  if (non_empty && value_->empty()) return error("must be a non-empty array");
  if (value_->size() > max_items)
    return error("may hold at most " + std::to_string(max_items) + " items, got " + std::to_string(value_->size()));
  return Status::ok();
}

Result<std::string> FieldReader::string(size_t max_bytes, bool non_empty) const {
  if (!value_->is_string()) return type_error(non_empty ? "a non-empty string" : "a string");
  const std::string& s = value_->get_ref<const std::string&>();
  if (non_empty && s.empty()) return error("must be a non-empty string");
  if (s.size() > max_bytes)
    return error("must be at most " + std::to_string(max_bytes) + " bytes, got " + std::to_string(s.size()));
  return s;
}

Result<int64_t> FieldReader::integer(int64_t lo, int64_t hi) const {
  if (!value_->is_number_integer()) return type_error("an integer");
  // The message only when it is needed: integers are read on every request.
  auto out_of_range = [&](const std::string& got) {
    return error("must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + got);
  };
  // Unsigned values above INT64_MAX do not fit get<int64_t>().
  if (value_->is_number_unsigned() && value_->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    return out_of_range(json_excerpt(*value_));
  int64_t v = value_->get<int64_t>();
  if (v < lo || v > hi) return out_of_range(std::to_string(v));
  return v;
}

Result<double> FieldReader::number(double lo, double hi) const {
  if (!value_->is_number()) return type_error("a number");
  double v = value_->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    return error("must be between " + number_text(lo) + " and " + number_text(hi) + ", got " +
                 json_excerpt(*value_));
  return v;
}

Result<bool> FieldReader::boolean() const {
  if (!value_->is_boolean()) return type_error("a boolean");
  return value_->get<bool>();
}

std::optional<FieldReader> FieldReader::field(std::string_view key) const {
  auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return std::nullopt;
  return FieldReader(*it, member_path(path_, key));
}

Result<FieldReader> FieldReader::required(std::string_view key) const {
  std::optional<FieldReader> f = field(key);
  if (!f) {
    std::string p = member_path(path_, key);
    return Status::invalid_argument("'" + p + "' is required", p);
  }
  return *f;
}

Result<std::string> FieldReader::required_string(std::string_view key, size_t max_bytes, bool non_empty) const {
  ASSIGN_OR_RETURN(FieldReader f, required(key));
  return f.string(max_bytes, non_empty);
}

FieldReader FieldReader::item(size_t index) const { return FieldReader((*value_)[index], item_path(path_, index)); }

FieldReader FieldReader::member(std::string_view key, const json& value) const {
  return FieldReader(value, member_path(path_, key));
}

Status FieldReader::optional_string(std::string_view key, size_t max_bytes, std::string* out) const {
  std::optional<FieldReader> f = field(key);
  if (!f) return Status::ok();
  ASSIGN_OR_RETURN(*out, f->string(max_bytes));
  return Status::ok();
}

Status FieldReader::optional_bool(std::string_view key, bool* out) const {
  std::optional<FieldReader> f = field(key);
  if (!f) return Status::ok();
  ASSIGN_OR_RETURN(*out, f->boolean());
  return Status::ok();
}

Status FieldReader::optional_number(std::string_view key, double lo, double hi, float* out, bool* present) const {
  std::optional<FieldReader> f = field(key);
  if (present) *present = f.has_value();
  if (!f) return Status::ok();
  ASSIGN_OR_RETURN(double v, f->number(lo, hi));
  *out = static_cast<float>(v);
  return Status::ok();
}

Status FieldReader::optional_int(std::string_view key, int64_t lo, int64_t hi, int64_t* out, bool* present) const {
  std::optional<FieldReader> f = field(key);
  if (present) *present = f.has_value();
  if (!f) return Status::ok();
  ASSIGN_OR_RETURN(*out, f->integer(lo, hi));
  return Status::ok();
}

}  // namespace llmpool::api
