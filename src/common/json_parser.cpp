#include "common/json_parser.h"

#include <array>
#include <cerrno>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace llmpool::json_internal {
namespace {

using json = nlohmann::json;
using Byte = unsigned char;

constexpr bool is_space(Byte c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
constexpr bool is_digit(Byte c) { return c >= '0' && c <= '9'; }

// A stack whose first kInline entries live inline, the rest (a caller's
// max_depth past it) on the heap: no allocation for the depths requests and
// answers have.
template <class T>
class InlineStack {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& top() { return size_ <= kInline ? inline_[size_ - 1] : spill_.back(); }
  void push(T v) {
    if (size_ < kInline) {
      inline_[size_] = v;
    } else {
      spill_.push_back(v);
    }
    ++size_;
  }
  void pop() {
    if (size_ > kInline) spill_.pop_back();
    --size_;
  }

 private:
  static constexpr size_t kInline = 32;
  std::array<T, kInline> inline_;  // no initialiser: written before read
  std::vector<T> spill_;
  size_t size_ = 0;
};

// Builds nlohmann's DOM from the parser's events, each value in place: a
// string is unescaped straight into its node.
class DomSink {
 public:
  explicit DomSink(json& root) : slot_(&root) {}

  bool begin_object() { return open(json::value_t::object); }
  bool begin_array() { return open(json::value_t::array); }
  bool end_container() {
    open_.pop();
    return true;
  }
  // An array's next element: its slot.
  void element() { slot_ = &open_.top()->get_ptr<json::array_t*>()->emplace_back(); }
  // A key seen before keeps its place and gets the new value (the last one
  // wins, as in nlohmann's DOM builder).
  bool key(std::string& k) {
    slot_ = &(*open_.top()->get_ptr<json::object_t*>())[std::move(k)];
    k.clear();  // moved from: valid but unspecified
    return true;
  }
  std::string& string_buffer(std::string&) {
    *slot_ = json(json::value_t::string);
    return *slot_->get_ptr<json::string_t*>();
  }
  bool string(std::string&) { return true; }
  bool boolean(bool v) { return put(v); }
  bool null() { return put(nullptr); }
  bool integer(int64_t v) { return put(v); }
  bool unsigned_integer(uint64_t v) { return put(static_cast<json::number_unsigned_t>(v)); }
  bool number_float(double v) { return put(v); }

 private:
  template <class T>
  bool put(T v) {
    *slot_ = v;
    return true;
  }
  bool open(json::value_t t) {
    *slot_ = json(t);
    open_.push(slot_);
    return true;
  }

  json* slot_;  // where the next value goes
  InlineStack<json*> open_;
};

// Hands each event on to a JsonEvents (common/json.h; a virtual call each).
class EventsSink {
 public:
  explicit EventsSink(JsonEvents& e) : e_(e) {}
  bool begin_object() { return e_.begin_object(); }
  bool begin_array() { return e_.begin_array(); }
  bool end_container() { return e_.end_container(); }
  void element() {}
  bool key(std::string& k) { return e_.key(k); }
  std::string& string_buffer(std::string& scratch) { return scratch; }
  bool string(std::string& v) { return e_.string(v); }
  bool boolean(bool v) { return e_.boolean(v); }
  bool null() { return e_.null(); }
  bool integer(int64_t v) { return e_.integer(v); }
  bool unsigned_integer(uint64_t v) { return e_.unsigned_integer(v); }
  bool number_float(double v) { return e_.number_float(v); }

 private:
  JsonEvents& e_;
};

// The grammar and its checks, once: what the values are is the sink's
// business (DomSink builds the DOM; EventsSink hands them to a reader). A
// sink method that returns false stops the parse, with no reason set.
template <class Sink>
class Parser {
 public:
  Parser(std::string_view text, int max_depth, JsonParseError& error, Sink& sink)
      : begin_(reinterpret_cast<const Byte*>(text.data())),
        p_(begin_),
        end_(begin_ + text.size()),
        max_depth_(max_depth),
        error_(error),
        sink_(sink) {}

  bool run() {
    // nlohmann skips a UTF-8 byte order mark at the very start (and refuses
    // a text that starts with its first byte but not the rest).
    if (p_ < end_ && *p_ == 0xEF) {
      if (end_ - p_ < 3 || p_[1] != 0xBB || p_[2] != 0xBF) return fail(p_, "an incomplete UTF-8 byte order mark");
      p_ += 3;
    }
    for (;;) {
      switch (value()) {
        case Step::kFailed: return false;
        case Step::kOpened: continue;  // the new container's first member is next
        case Step::kDone: break;
      }
      // After a value: close the containers it ends, or find the next slot.
      for (;;) {
        if (open_.empty()) return finish();
        skip_space();
        const bool array = open_.top() != 0;
        const int c = peek();
        if (c == ',') {
          ++p_;
          if (array) {
            sink_.element();
          } else if (!member()) {
            return false;
          }
          break;
        }
        if (c == (array ? ']' : '}')) {
          ++p_;
          open_.pop();
          if (!sink_.end_container()) return false;
          continue;
        }
        return fail_expected(array ? "',' or ']'" : "',' or '}'");
      }
    }
  }

 private:
  enum class Step { kFailed, kDone, kOpened };

  // The next byte, or -1 at the end of the text.
  int peek() const { return p_ < end_ ? *p_ : -1; }

  void skip_space() {
    if (p_ < end_ && *p_ > ' ') return;  // compact JSON: no space at all
    const Byte* p = p_;
    while (p < end_ && is_space(*p)) ++p;
    p_ = p;
  }

  // Past the bytes a string holds as they are, from p_.
  void skip_plain() {
    const Byte* p = p_;
    while (p < end_ && kPlainStringByte[*p]) ++p;
    p_ = p;
  }

  // One value: a scalar whole (kDone), an empty container whole (kDone), or
  // a container opened, its first member next (kOpened).
  Step value() {
    skip_space();
    switch (peek()) {
      case '{': {
        if (!enter()) return Step::kFailed;
        ++p_;
        if (!sink_.begin_object()) return Step::kFailed;
        skip_space();
        if (peek() == '}') {
          ++p_;
          return sink_.end_container() ? Step::kDone : Step::kFailed;
        }
        open_.push(0);
        return member() ? Step::kOpened : Step::kFailed;
      }
      case '[': {
        if (!enter()) return Step::kFailed;
        ++p_;
        if (!sink_.begin_array()) return Step::kFailed;
        skip_space();
        if (peek() == ']') {
          ++p_;
          return sink_.end_container() ? Step::kDone : Step::kFailed;
        }
        open_.push(1);
        sink_.element();
        return Step::kOpened;
      }
      case '"': {
        std::string& out = sink_.string_buffer(text_);
        if (!string(out)) return Step::kFailed;
        return sink_.string(out) ? Step::kDone : Step::kFailed;
      }
      case 't':
        if (!literal("true", 4)) return Step::kFailed;
        return sink_.boolean(true) ? Step::kDone : Step::kFailed;
      case 'f':
        if (!literal("false", 5)) return Step::kFailed;
        return sink_.boolean(false) ? Step::kDone : Step::kFailed;
      case 'n':
        if (!literal("null", 4)) return Step::kFailed;
        return sink_.null() ? Step::kDone : Step::kFailed;
      case '-':
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7':
      case '8':
      case '9': return number() ? Step::kDone : Step::kFailed;
      default: fail_expected("a value"); return Step::kFailed;
    }
  }

  // A container opens one level deeper: refused past the limit, as the
  // SAX handler of before refused it in start_object/start_array.
  bool enter() {
    if (open_.size() + 1 > static_cast<size_t>(max_depth_ < 0 ? 0 : max_depth_)) {
      error_.too_deep = true;
      error_.offset = static_cast<size_t>(p_ - begin_);
      return false;
    }
    return true;
  }

  // `"key" :` of an object (at or before its opening quote), handed to the
  // sink; its value is next.
  bool member() {
    skip_space();
    if (peek() != '"') return fail_expected("a string (an object's key)");
    if (!string(text_)) return false;
    skip_space();
    if (peek() != ':') return fail_expected("':'");
    ++p_;
    return sink_.key(text_);
  }

  bool literal(const char* word, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n ||
        std::char_traits<char>::compare(reinterpret_cast<const char*>(p_), word, n) != 0)
      return fail(p_, "invalid literal");
    p_ += n;
    return true;
  }

  // A string from its opening quote to past its closing one, unescaped into `out`.
  bool string(std::string& out) {
    const Byte* quote = p_++;
    const Byte* run = p_;
    skip_plain();
    out.assign(reinterpret_cast<const char*>(run), static_cast<size_t>(p_ - run));
    for (;;) {
      if (p_ == end_) return fail(quote, "a string without its closing quote");
      const Byte c = *p_;
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        if (!escape(out)) return false;
      } else if (c < 0x20) {
        return fail(p_, "a control character in a string (it must be escaped)");
      } else if (!utf8(out)) {
        return false;
      }
      run = p_;
      skip_plain();
      out.append(reinterpret_cast<const char*>(run), static_cast<size_t>(p_ - run));
    }
  }

  // One escape, at its backslash.
  bool escape(std::string& out) {
    const Byte* at = p_++;
    switch (peek()) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        ++p_;
        int cp = hex4();
        if (cp < 0) return fail(at, "'\\u' not followed by 4 hex digits");
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(at, "a low surrogate \\u escape without a high one before it");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
            return fail(at, "a high surrogate \\u escape not followed by a low one");
          }
          p_ += 2;
          const int low = hex4();
          if (low < 0) return fail(p_, "'\\u' not followed by 4 hex digits");
          if (low < 0xDC00 || low > 0xDFFF) return fail(at, "a high surrogate \\u escape not followed by a low one");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, static_cast<uint32_t>(cp));
        return true;  // p_ is past the digits already
      }
      default: return fail(at, "an invalid escape in a string");
    }
    ++p_;
    return true;
  }

  // Four hex digits (either case) at p_, moved past: the code unit, or -1.
  int hex4() {
    if (end_ - p_ < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; ++i) {
      const Byte c = *p_++;
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else {
        return -1;
      }
      v = v << 4 | d;
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      const char b[] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      out.append(b, 2);
    } else if (cp < 0x10000) {
      const char b[] = {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                        static_cast<char>(0x80 | (cp & 0x3F))};
      out.append(b, 3);
    } else {
      const char b[] = {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                        static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
      out.append(b, 4);
    }
  }

  // One UTF-8 character at p_ (its first byte is past ASCII), checked
  // (utf8_length) and copied.
  bool utf8(std::string& out) {
    const size_t n = utf8_length(p_, end_);
    if (n == 0) return fail(p_, "invalid UTF-8 in a string");
    out.append(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }

  // A number to the sink: an integer that fits int64 (negative) or uint64
  // (not) as one, anything else as a double, as nlohmann's lexer does: its
  // strtoll/strtoull, then strtod on an overflow or a fraction or exponent
  // (so "-0" is the integer 0, "-0.0" the double -0.0). A double that is
  // not finite (1e400) is refused, as nlohmann's parser refuses it.
  bool number() {
    const Byte* start = p_;
    const bool negative = *p_ == '-';
    if (negative) ++p_;
    if (p_ == end_ || !is_digit(*p_)) return fail(p_, "a '-' not followed by a digit");
    uint64_t magnitude = 0;
    bool overflow = false;
    if (*p_ == '0') {
      ++p_;
    } else {
      const Byte* p = p_;
      // 19 digits always fit uint64; past them every digit is checked.
      const Byte* safe = end_ - p > 19 ? p + 19 : end_;
      while (p < safe && is_digit(*p)) magnitude = magnitude * 10 + static_cast<uint64_t>(*p++ - '0');
      while (p < end_ && is_digit(*p)) {
        const auto d = static_cast<uint64_t>(*p++ - '0');
        if (magnitude > (std::numeric_limits<uint64_t>::max() - d) / 10) overflow = true;
        magnitude = magnitude * 10 + d;
      }
      p_ = p;
    }
    bool integer = true;
    if (p_ < end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail(p_, "a decimal point not followed by a digit");
      while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail(p_, "an exponent without digits");
      while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    if (integer && !overflow) {
      if (!negative) return sink_.unsigned_integer(magnitude);
      constexpr uint64_t kMinMagnitude = uint64_t{1} << 63;  // -INT64_MIN
      if (magnitude <= kMinMagnitude)
        return sink_.integer(magnitude == kMinMagnitude ? std::numeric_limits<int64_t>::min()
                                                        : -static_cast<int64_t>(magnitude));
    }
    double v;
    if (!to_double(start, p_, v)) return fail(start, "a number out of range");
    return sink_.number_float(v);
  }

  // The text [first, last) of a JSON number as the nearest double (strtod's
  // result: both are correctly rounded); false when that is not finite.
  // from_chars knows no locale; strtod, for what it calls out of range
  // (an underflow, which nlohmann keeps: 1e-400 is 0.0), gets the number
  // with the locale's decimal point, as nlohmann's lexer writes it.
  static bool to_double(const Byte* first, const Byte* last, double& v) {
    const char* f = reinterpret_cast<const char*>(first);
    const char* l = reinterpret_cast<const char*>(last);
    const auto [end, ec] = std::from_chars(f, l, v, std::chars_format::general);
    if (ec == std::errc() && end == l) return std::isfinite(v);
    std::string text(f, l);
    const char point = *std::localeconv()->decimal_point;
    for (char& c : text)
      if (c == '.') c = point;
    v = std::strtod(text.c_str(), nullptr);
    return std::isfinite(v);
  }

  // After the value: only space, then the end of the text. A NUL byte is
  // refused like any other (nlohmann's lexer reads it as the end of input
  // and ignores what follows: `{}\0{...}` would pass as `{}`).
  bool finish() {
    skip_space();
    if (p_ == end_) return true;
    return fail_expected("the end of the text after the value");
  }

  bool fail(const Byte* at, std::string reason) {
    error_.offset = static_cast<size_t>(at - begin_);
    error_.reason = std::move(reason);
    return false;
  }

  // "unexpected 'x'; expected <what>", at p_.
  bool fail_expected(const char* what) {
    std::string found;
    if (p_ == end_) {
      found = "end of input";
    } else if (*p_ >= 0x20 && *p_ < 0x7F) {
      found = std::string("'") + static_cast<char>(*p_) + "'";
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      found = std::string("byte 0x") + kHex[*p_ >> 4] + kHex[*p_ & 0xF];
    }
    return fail(p_, "unexpected " + found + "; expected " + what);
  }

  const Byte* const begin_;
  const Byte* p_;
  const Byte* const end_;
  const int max_depth_;
  JsonParseError& error_;
  Sink& sink_;
  InlineStack<char> open_;  // the open containers, innermost last: 1 for an array (not bool: vector<bool>)
  std::string text_;        // the key or string being read; the sink may take it
};

}  // namespace

bool same_json(const json& a, const json& b) {
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case json::value_t::object: {
      const auto& x = a.get_ref<const json::object_t&>();
      const auto& y = b.get_ref<const json::object_t&>();
      if (x.size() != y.size()) return false;
      for (auto i = x.begin(), j = y.begin(); i != x.end(); ++i, ++j)
        if (i->first != j->first || !same_json(i->second, j->second)) return false;
      return true;
    }
    case json::value_t::array: {
      const auto& x = a.get_ref<const json::array_t&>();
      const auto& y = b.get_ref<const json::array_t&>();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!same_json(x[i], y[i])) return false;
      return true;
    }
    case json::value_t::number_float: {
      const double x = a.get<double>(), y = b.get<double>();
      return std::memcmp(&x, &y, sizeof(x)) == 0;
    }
    default: return a == b;
  }
}

bool parse_json_dom(std::string_view text, int max_depth, json& out, JsonParseError& error) {
  error = JsonParseError{};
  DomSink sink(out);
  return Parser<DomSink>(text, max_depth, error, sink).run();
}

bool parse_json_events(std::string_view text, int max_depth, JsonEvents& events, JsonParseError& error) {
  error = JsonParseError{};
  EventsSink sink(events);
  return Parser<EventsSink>(text, max_depth, error, sink).run();
}

}  // namespace llmpool::json_internal
