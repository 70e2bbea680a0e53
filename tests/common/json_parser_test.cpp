// parse_json (llmpool's own parser) against nlohmann's strict parser
// (parse_json_reference, and json::parse where the depth limit does not
// matter): the same texts accepted, the same DOM for each, type for type
// and floats to the bit, and the same kind of refusal.
#include "common/json_parser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/json.h"

namespace llmpool {
namespace {

using nlohmann::json;
using json_internal::parse_json_reference;
using json_internal::same_json;

// `text` for a failure message: printable ASCII as it is, the rest as \xNN, cut.
std::string shown(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  if (text.size() > 200) out += "...";
  return out;
}

// By how the message starts: nlohmann's syntax errors quote the input.
bool is_too_deep(const Status& s) { return s.message().rfind("the request body is nested deeper than", 0) == 0; }

// Counts the texts compared, so a test can say it compared some.
int g_compared = 0;

void expect_same(std::string_view text, int max_depth = 64) {
  ++g_compared;
  JsonLimits limits;
  limits.max_depth = max_depth;
  Result<json> mine = parse_json(text, limits);
  Result<json> ref = parse_json_reference(text, limits);
  // The one intended difference: any NUL byte is refused (nlohmann ends the
  // text at one after the value).
  const bool nul = text.find('\0') != std::string_view::npos;
  ASSERT_EQ(mine.is_ok(), ref.is_ok() && !nul) << "text: " << shown(text) << "\n mine: "
                                       << (mine ? mine->dump() : mine.status().message())
                                       << "\n nlohmann: " << (ref ? ref->dump() : ref.status().message());
  if (mine.is_ok()) {
    EXPECT_TRUE(same_json(*mine, *ref)) << shown(text) << ": " << mine->dump() << " vs " << ref->dump();
    EXPECT_EQ(mine->dump(), ref->dump()) << shown(text);
  } else if (!ref.is_ok()) {
    EXPECT_EQ(is_too_deep(mine.status()), is_too_deep(ref.status()))
        << shown(text) << ": " << mine.status().message() << " vs " << ref.status().message();
    EXPECT_NE(mine.status().message().find(is_too_deep(mine.status()) ? "levels" : "not valid JSON"),
              std::string::npos);
  }
  // nlohmann's plain json::parse (no depth limit) where the limit did not decide.
  if (ref.is_ok() || !is_too_deep(ref.status())) {
    json direct = json::parse(text, nullptr, /*allow_exceptions=*/false);
    EXPECT_EQ(direct.is_discarded() || nul, !mine.is_ok()) << shown(text);
    if (mine.is_ok() && !direct.is_discarded()) {
      EXPECT_TRUE(same_json(*mine, direct)) << shown(text);
    }
  }
}

std::string hex4(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04X", v);
  return buf;
}

const std::vector<std::string>& tricky() {
  static const std::vector<std::string> texts = {
      // numbers: the int64/uint64 edges, -0, floats, exponents, leading zeros
      "0", "-0", "0.0", "-0.0", "1", "-1", "1.0", "1E+2", "1e2", "1E2", "1e-2", "1e+0", "-1e-0", "0e0", "0E-0",
      "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
      "18446744073709551615", "18446744073709551616", "99999999999999999999", "-18446744073709551616",
      "100000000000000000000000000000", "00", "01", "-01", "012", "1.", ".5", "-.5", "+1", "1e", "1e+", "1e-", "1.e1",
      "-", "--1", "1.5e", "0x10", "1_000", "1e400", "-1e400", "1e309", "1.7976931348623157e308",
      "1.7976931348623159e308", "1e-400", "-1e-400", "4.9e-324", "2.4703282292062327e-324",
      "2.4703282292062328e-324", "2.2250738585072011e-308", "2.2250738585072014e-308", "0.1", "0.30000000000000004",
      "123456789012345678901234567890e-10", "3.141592653589793238462643383279", "1e0000000000000000000001",
      "0.000000000000000000000000000000000000000000001", "[1,-0,-0.0,1e2,18446744073709551616]",
      // literals
      "true", "false", "null", "True", "nul", "tru", "fals", "nulll", "truefalse", "NaN", "-NaN", "Infinity",
      "-Infinity", "undefined", "[true,false,null]", "[truex]", "[nan]",
      // strings and escapes
      R"("")", R"("a")", R"("\"\\\/\b\f\n\r\t")", R"("\u0000")", R"("\u001f")", R"("\u0041\u00e9\u20AC")",
      R"("\uD83D\uDE00")", R"("\ud83d\ude00")", R"("\uD800")", R"("\uDBFF")", R"("\uDC00")", R"("\uDFFF")",
      R"("\uD800\u0041")", R"("\uD800\uD800")", R"("\uDC00\uD800")", R"("\uD800x")", R"("\uD800\")", R"("\uD800\u")",
      R"("\uD800\uDC0")", R"("\u12")", R"("\u12G4")", R"("\x41")", R"("\a")", R"("\U0041")", R"("\)", R"("\")",
      R"("abc)", "\"", "\"\t\"", "\"\n\"", "\"\x01\"", "\"\x1f\"", "\"\x7f\"", std::string("\"\0\"", 3),
      "'single'", R"("a"")",
      // UTF-8: valid, overlong, surrogates, past U+10FFFF, cut, stray bytes
      "\"caf\xc3\xa9\"", "\"\xe2\x82\xac\"", "\"\xf0\x9f\x98\x80\"", "\"\xf4\x8f\xbf\xbf\"", "\"\xf4\x90\x80\x80\"",
      "\"\xc0\xaf\"", "\"\xc1\xbf\"", "\"\xe0\x80\xaf\"", "\"\xe0\x9f\xbf\"", "\"\xf0\x80\x80\xaf\"",
      "\"\xf0\x8f\xbf\xbf\"", "\"\xed\xa0\x80\"", "\"\xed\xbf\xbf\"", "\"\xed\x9f\xbf\"", "\"\xee\x80\x80\"",
      "\"\xf5\x80\x80\x80\"", "\"\xff\"", "\"\xfe\"", "\"\x80\"", "\"\xbf\"", "\"\xc3\"", "\"\xe2\x82\"",
      "\"\xf0\x9f\x98\"", "\"\xc3", "\"\xe2\x82", "\xc3\xa9", "[\"\xc3\xa9\",\"\xc3\"]",
      // containers: empty, nested, separators, duplicate keys
      "[]", "{}", "[[]]", "[{}]", "{\"a\":{}}", "[[],[[]],{}]", " [ ] ", "[1,]", "[,1]", "[1,,2]", "{\"a\":1,}",
      "{,}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{1:2}", "{null:1}", "{\"a\":1 \"b\":2}", "[1 2]", "[", "]", "{",
      "}", "[1", "{\"a\":1", "[\"a\":1]", "{\"a\",1}", "{\"a\":1,\"a\":2}", "{\"a\":[1,2],\"a\":{\"b\":3}}",
      "{\"a\":{\"x\":1},\"b\":2,\"a\":3}", "{\"\":0,\"\":1}", "{\"b\":1,\"a\":2,\"c\":3}",
      "{\"a\\u0000b\":1,\"a\":2}", "[[[1,[2,[3]]],{\"k\":[{}]}]]",
      // whitespace, trailing garbage, empty input, BOM, NUL, comments
      "", " ", "\t\n\r ", "\f1", "\v1", " 1 ", "\t[\n1\r,\n2 ]\r\n", "1 2", "{} {}", "[]]", "{}}", "1,", "\"a\"x",
      "\xa0" "1", "1\xa0", "\xef\xbb\xbf" "1", "\xef\xbb\xbf", "\xef\xbb\xbf \"x\"", " \xef\xbb\xbf" "1",
      "\xef\xbb" "1", "\xef" "1", "\xef\xbb\xbf\xef\xbb\xbf" "1", "[\xef\xbb\xbf" "1]", std::string("1\0", 2),
      std::string("1 \0 garbage", 11), std::string("{}\0{", 4), std::string("[1\0]", 4), std::string("\0", 1),
      std::string("\0" "1", 2), std::string("[1,\0" "2]", 6), "/* c */ 1", "1 // c", "# c\n1",
  };
  return texts;
}

TEST(JsonParserDiffTest, TrickyTexts) {
  for (const std::string& t : tricky()) expect_same(t);
}

TEST(JsonParserDiffTest, EveryByteAloneAndInAString) {
  for (int c = 0; c < 256; ++c) {
    const std::string b(1, static_cast<char>(c));
    expect_same(b);
    expect_same("\"" + b + "\"");
    expect_same("[" + b + "]");
    expect_same("\"\\" + b + "\"");
    expect_same("1" + b);
    expect_same("{\"a\"" + b + "1}");
  }
}

TEST(JsonParserDiffTest, EveryTwoByteSequenceInAString) {
  for (int a = 0x80; a < 256; ++a)
    for (int b = 0; b < 256; ++b) expect_same(std::string("\"") + static_cast<char>(a) + static_cast<char>(b) + "\"");
}

TEST(JsonParserDiffTest, ThreeAndFourByteSequencesAtTheirEdges) {
  const int seconds[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
  const int lasts[] = {0x7F, 0x80, 0xBF, 0xC0};
  for (int a = 0xE0; a < 0x100; ++a)
    for (int b : seconds)
      for (int c : lasts) {
        std::string s = std::string("\"") + static_cast<char>(a) + static_cast<char>(b) + static_cast<char>(c);
        expect_same(s + "\"");
        for (int d : lasts) expect_same(s + static_cast<char>(d) + "\"");
      }
}

TEST(JsonParserDiffTest, UnicodeEscapes) {
  const unsigned units[] = {0x0000, 0x0001, 0x001F, 0x0020, 0x007F, 0x0080, 0x07FF, 0x0800, 0x0FFF,
                            0xD7FF, 0xD800, 0xDB7F, 0xDBFF, 0xDC00, 0xDFFF, 0xE000, 0xFFFD, 0xFFFF};
  for (unsigned a : units) {
    expect_same("\"\\u" + hex4(a) + "\"");
    for (unsigned b : units) expect_same("\"\\u" + hex4(a) + "\\u" + hex4(b) + "\"");
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const unsigned hi = 0xD800 + rng() % 0x400, lo = 0xDC00 + rng() % 0x400;
    expect_same("\"\\u" + hex4(hi) + "\\u" + hex4(lo) + "\"");
  }
}

const char kAnswer[] =
    R"({"choices":[{"finish_reason":"stop","index":0,"message":{"content":"The quick brown fox jumps over the lazy",)"
    R"("role":"assistant"}}],"created":1796315637,"id":"chatcmpl-fake-18499-1","model":"fake",)"
    R"("object":"chat.completion","usage":{"completion_tokens":8,"prompt_tokens":7,"total_tokens":15}})";

const char kRequest[] =
    "\xef\xbb\xbf{ \"model\" : \"tiny\",\n \"messages\": [ {\"role\":\"system\",\"content\":\"Be brief.\\n\"},\n"
    "  {\"role\":\"user\",\"content\":\"caf\xc3\xa9 \\u20ac \\ud83d\\ude00 \\\"quoted\\\" \\/ \\t\"}],\n"
    " \"temperature\": 0.7, \"top_p\": 1e0, \"max_tokens\": -0, \"seed\": 18446744073709551615,\n"
    " \"n\": -9223372036854775808, \"stop\": [\"\\n\\n\", \"\"], \"stream\": false, \"user\": null,\n"
    " \"logit_bias\": {\"50256\": -100, \"50256\": -1.5e-3}, \"tools\": [{}, [], [[]]] }\r\n";

TEST(JsonParserDiffTest, EveryCutOfValidDocuments) {
  for (std::string_view doc : {std::string_view(kAnswer), std::string_view(kRequest)}) {
    expect_same(doc);
    for (size_t n = 0; n < doc.size(); ++n) {
      expect_same(doc.substr(0, n));
      std::string dropped(doc);
      dropped.erase(n, 1);
      expect_same(dropped);
    }
  }
}

TEST(JsonParserDiffTest, DepthAtAndBeyondTheLimit) {
  for (int limit : {0, 1, 2, 8, 64}) {
    for (int depth = std::max(0, limit - 2); depth <= limit + 2; ++depth) {
      const std::string open_a(static_cast<size_t>(depth), '['), close_a(static_cast<size_t>(depth), ']');
      expect_same(open_a + close_a, limit);
      expect_same(open_a + "1" + close_a, limit);
      expect_same(open_a + close_a.substr(0, close_a.size() / 2), limit);  // cut: too deep or unclosed
      expect_same(open_a + "x" + close_a, limit);  // a syntax error past the limit: too deep comes first
      std::string objects, mixed;
      for (int i = 0; i < depth; ++i) objects += "{\"k\":";
      expect_same(objects + "{}" + std::string(static_cast<size_t>(depth), '}'), limit);
      for (int i = 0; i < depth; ++i) mixed += i % 2 ? "{\"a\":1,\"b\":" : "[0,";
      for (int i = depth - 1; i >= 0; --i) mixed += i % 2 ? "}" : "]";
      expect_same(mixed, limit);
      expect_same("x" + open_a + close_a, limit);  // a syntax error before the limit: not too deep
    }
  }
  expect_same(std::string(100000, '['));
  expect_same(std::string(2000, '[') + std::string(2000, ']'), 5000);  // past the inline stack
}

// Random edits of the documents above (a deterministic seed): bytes
// replaced, inserted, deleted, and the structural bytes that matter most.
TEST(JsonParserDiffTest, RandomEdits) {
  std::mt19937 rng(12345);
  const std::string pieces[] = {"{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "\\ud800", "\\udc00", "0", "-", ".",
                                "e", "+", "1e400", " ", "\xc3", "\xa9", "\xed", "\xef\xbb\xbf", std::string("\0", 1)};
  std::vector<std::string> seeds = {kAnswer, kRequest};
  for (const std::string& t : tricky()) seeds.push_back(t);
  for (int i = 0; i < 20000; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = s.empty() ? 0 : rng() % (s.size() + 1);
      switch (rng() % 4) {
        case 0:
          if (at < s.size()) s[at] = static_cast<char>(rng() % 256);
          break;
        case 1: s.insert(at, 1, static_cast<char>(rng() % 256)); break;
        case 2:
          if (at < s.size()) s.erase(at, 1 + rng() % 3);
          break;
        default: s.insert(at, pieces[rng() % std::size(pieces)]); break;
      }
    }
    expect_same(s, 1 + static_cast<int>(rng() % 8));
  }
}

TEST(JsonParserDiffTest, ComparedManyTexts) {
  // Guards against a corpus that quietly became empty (run after the others
  // when the whole file runs; alone it compares the tricky texts itself).
  if (g_compared == 0)
    for (const std::string& t : tricky()) expect_same(t);
  EXPECT_GT(g_compared, 100);
}

// What nlohmann does at the edges, pinned down (the comparisons above
// would pass just as well if both parsers changed together).
TEST(JsonParserDiffTest, NlohmannsEdgesKept) {
  EXPECT_TRUE(parse_json("-0")->is_number_integer());  // strtoll("-0"): the integer 0
  EXPECT_TRUE(parse_json("0")->is_number_unsigned());
  EXPECT_TRUE(parse_json("-1")->is_number_integer());
  EXPECT_TRUE(parse_json("18446744073709551615")->is_number_unsigned());
  EXPECT_TRUE(parse_json("18446744073709551616")->is_number_float());  // past uint64: a double
  EXPECT_TRUE(parse_json("-9223372036854775809")->is_number_float());
  EXPECT_TRUE(std::signbit(parse_json("-0.0")->get<double>()));
  EXPECT_EQ(parse_json("1e-400")->get<double>(), 0.0);  // an underflow is kept, an overflow refused
  EXPECT_FALSE(parse_json("1e400").is_ok());
  EXPECT_EQ(*parse_json("{\"a\":1,\"a\":[2]}"), json::parse(R"({"a":[2]})"));  // the last one wins
  EXPECT_EQ(*parse_json("\xef\xbb\xbf[1]"), json::array({1}));                  // a BOM is skipped
  EXPECT_FALSE(parse_json(" \xef\xbb\xbf[1]").is_ok());                      // only at the start
  // nlohmann's lexer reads a NUL byte as the end of input, so after a whole
  // value it ignores whatever follows; here a NUL is refused wherever it is.
  EXPECT_TRUE(parse_json_reference(std::string_view("{}\0{\"x", 5)).is_ok());
  EXPECT_FALSE(parse_json(std::string_view("{}\0{\"x", 5)).is_ok());
  EXPECT_FALSE(parse_json(std::string_view("{} \0", 4)).is_ok());
  EXPECT_FALSE(parse_json(std::string_view("[1\0]", 4)).is_ok());
  EXPECT_FALSE(parse_json(std::string_view("\"a\0\"", 4)).is_ok());
}

TEST(JsonParserMessageTest, NamesTheProblemAndItsOffset) {
  auto m = [](std::string_view text) { return parse_json(text, kDefaultJsonLimits, "the body").status().message(); };
  EXPECT_EQ(m("{\"a\":tru}"), "the body is not valid JSON: invalid literal at byte offset 5");
  EXPECT_EQ(m("[1,2"), "the body is not valid JSON: unexpected end of input; expected ',' or ']' at byte offset 4");
  EXPECT_EQ(m("{\"a\" 1}"), "the body is not valid JSON: unexpected '1'; expected ':' at byte offset 5");
  EXPECT_EQ(m("{} x"), "the body is not valid JSON: unexpected 'x'; expected the end of the text after the value at "
                       "byte offset 3");
  EXPECT_EQ(m(""), "the body is not valid JSON: unexpected end of input; expected a value at byte offset 0");
  EXPECT_EQ(m("\"ab\x01\""), "the body is not valid JSON: a control character in a string (it must be escaped) at "
                             "byte offset 3");
  EXPECT_EQ(m("[1e400]"), "the body is not valid JSON: a number out of range at byte offset 1");
  EXPECT_EQ(m("[\"\\ud800\"]"),
            "the body is not valid JSON: a high surrogate \\u escape not followed by a low one at byte offset 2");
  EXPECT_EQ(m("\"\xc0\xaf\""), "the body is not valid JSON: invalid UTF-8 in a string at byte offset 1");
  EXPECT_EQ(m("[\x80]"), "the body is not valid JSON: unexpected byte 0x80; expected a value at byte offset 1");
  EXPECT_EQ(m("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]"),
            "the body is nested deeper than 64 levels");
}

// read_json: the same parser's events, in the text's order, with no DOM.
class Recorder : public JsonEvents {
 public:
  std::string log;
  size_t stop_after = SIZE_MAX;  // events before a method returns false

  bool begin_object() override { return add("{"); }
  bool begin_array() override { return add("["); }
  bool end_container() override { return add("}"); }
  bool key(std::string& k) override { return add("k:" + k); }
  bool string(std::string& v) override { return add("s:" + v); }
  bool boolean(bool v) override { return add(v ? "true" : "false"); }
  bool null() override { return add("null"); }
  bool integer(int64_t v) override { return add("i:" + std::to_string(v)); }
  bool unsigned_integer(uint64_t v) override { return add("u:" + std::to_string(v)); }
  bool number_float(double v) override { return add("f:" + std::to_string(v)); }

 private:
  bool add(const std::string& e) {
    log += e + " ";
    return --stop_after > 0;
  }
};

TEST(JsonEventsTest, ReportsEveryValueInTheTextsOrder) {
  Recorder r;
  ASSERT_TRUE(read_json(R"({"b":[1,-2,3.5,"x\n\u00e9",true,false,null,{}],"a":{"k":18446744073709551615},"b":[]})",
                        kDefaultJsonLimits, r));
  // Duplicate keys and member order stay as sent: a reader sees what the DOM hides.
  EXPECT_EQ(r.log, "{ k:b [ u:1 i:-2 f:3.500000 s:x\n\xc3\xa9 true false null { } } k:a { k:k u:18446744073709551615 } "
                   "k:b [ } } ");
}

TEST(JsonEventsTest, RefusesWhatParseJsonRefusesAndStopsWhenTheReaderSaysSo) {
  for (std::string_view bad : {"", "{", "[1,]", "{\"a\" 1}", "[1e400]", "\"\xc0\xaf\"", "{} x", "[\"\\ud800\"]"}) {
    Recorder r;
    EXPECT_FALSE(read_json(bad, kDefaultJsonLimits, r)) << bad;
    EXPECT_FALSE(parse_json(bad).is_ok()) << bad;
  }
  Recorder deep;
  EXPECT_FALSE(read_json(std::string(65, '[') + std::string(65, ']'), kDefaultJsonLimits, deep));
  EXPECT_EQ(deep.log.size(), 64u * 2);  // the 65th container is refused before it is reported
  Recorder big;
  EXPECT_FALSE(read_json("[1,2,3]", JsonLimits{64, 6}, big));
  EXPECT_EQ(big.log, "");
  Recorder stopped;
  stopped.stop_after = 3;
  EXPECT_FALSE(read_json("[1,2,3,4]", kDefaultJsonLimits, stopped));
  EXPECT_EQ(stopped.log, "[ u:1 u:2 ");
}

}  // namespace
}  // namespace llmpool
