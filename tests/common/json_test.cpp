#include "common/json.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace llmpool {
namespace {

std::string nested_arrays(int depth, const std::string& inner = "1") {
  return std::string(static_cast<size_t>(depth), '[') + inner + std::string(static_cast<size_t>(depth), ']');
}

TEST(ParseJsonTest, ParsesOrdinaryDocuments) {
  auto r = parse_json(R"({"a":[1,2,{"b":"c"}],"d":null,"e":1.5,"f":true})");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)["a"][2]["b"], "c");
  EXPECT_TRUE((*r)["d"].is_null());
}

TEST(ParseJsonTest, AcceptsNestingUpToTheLimit) {
  JsonLimits limits;
  limits.max_depth = 8;
  EXPECT_TRUE(parse_json(nested_arrays(8), limits).is_ok());
  auto deeper = parse_json(nested_arrays(9), limits);
  ASSERT_FALSE(deeper.is_ok());
  EXPECT_EQ(deeper.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(deeper.status().message().find("nested deeper than 8"), std::string::npos);
}

TEST(ParseJsonTest, RefusesAHundredThousandNestedArraysWithoutRecursing) {
  // The value that killed the server when an error message dump()ed it.
  std::string body = R"({"model":"tiny","max_tokens":)" + nested_arrays(100000) + "}";
  auto r = parse_json(body, kDefaultJsonLimits, "the request body", "max_tokens");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().param(), "max_tokens");
  EXPECT_LT(r.status().message().size(), 200u);
}

TEST(ParseJsonTest, DeepObjectsAreRefusedToo) {
  std::string s;
  for (int i = 0; i < 1000; ++i) s += R"({"a":)";
  s += "1";
  s += std::string(1000, '}');
  EXPECT_FALSE(parse_json(s).is_ok());
}

TEST(ParseJsonTest, SyntaxErrorsSayWhereAndQuoteLittle) {
  std::string big(10000, 'x');
  auto r = parse_json("{\"a\": " + big + "}", kDefaultJsonLimits, "the upstream's answer");
  ASSERT_FALSE(r.is_ok());
  const std::string& m = r.status().message();
  EXPECT_EQ(m.rfind("the upstream's answer is not valid JSON", 0), 0u) << m;
  EXPECT_LT(m.size(), 300u);
}

TEST(ParseJsonTest, RefusesTrailingGarbageAndEmptyInput) {
  EXPECT_FALSE(parse_json("{} {}").is_ok());
  EXPECT_FALSE(parse_json("").is_ok());
}

TEST(ParseJsonTest, EnforcesTheSizeLimit) {
  JsonLimits limits;
  limits.max_bytes = 10;
  EXPECT_TRUE(parse_json("[1,2,3]", limits).is_ok());
  auto r = parse_json("[1,2,3,4,5,6,7]", limits);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("limit is 10"), std::string::npos);
}

TEST(JsonExcerptTest, DescribesContainersWithoutTheirContent) {
  nlohmann::json deep = nlohmann::json::array({nlohmann::json::array({1})});
  EXPECT_EQ(json_excerpt(deep), "an array of 1 item");
  EXPECT_EQ(json_excerpt(nlohmann::json::object({{"a", 1}, {"b", 2}})), "an object with 2 keys");
}

TEST(JsonExcerptTest, CutsLongScalarsOnACharacterBoundary) {
  std::string s = "\"" + std::string(100, 'a') + "\"";
  auto e = json_excerpt(nlohmann::json(std::string(100, 'a')), 10);
  EXPECT_EQ(e, s.substr(0, 10) + "...");
  // A two-byte character straddling the cut is not split.
  std::string text = std::string(8, 'a') + "\xc3\xa9" + "bbb";
  auto u = json_excerpt(nlohmann::json(text), 10);
  EXPECT_EQ(u, "\"" + std::string(8, 'a') + "...");
  EXPECT_EQ(json_excerpt(nlohmann::json(42)), "42");
}

TEST(JsonTypeNameTest, NamesEveryKind) {
  EXPECT_STREQ(json_type_name(nlohmann::json(1)), "an integer");
  EXPECT_STREQ(json_type_name(nlohmann::json(1.5)), "a number");
  EXPECT_STREQ(json_type_name(nlohmann::json("x")), "a string");
  EXPECT_STREQ(json_type_name(nlohmann::json(nullptr)), "null");
  EXPECT_STREQ(json_type_name(nlohmann::json::array()), "an array");
  EXPECT_STREQ(json_type_name(nlohmann::json::object()), "an object");
  EXPECT_STREQ(json_type_name(nlohmann::json(true)), "a boolean");
}


// json_text must be dump(-1, ' ', false, replace), byte for byte.
std::string nlohmann_dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

TEST(JsonTextTest, WritesWhatNlohmannDumpWritesForEveryKind) {
  using nlohmann::json;
  std::string controls;
  for (int c = 0; c < 0x20; ++c) controls += static_cast<char>(c);
  const std::vector<json> values = {
      json(nullptr), json(true), json(false), json(0), json(-1), json(INT64_MIN), json(INT64_MAX),
      json(UINT64_MAX), json(0.1), json(-0.0), json(1e300), json(3.0), json(1.5e-7),
      json(std::numeric_limits<double>::quiet_NaN()), json(std::numeric_limits<double>::infinity()),
      json(""), json("plain ascii / with a slash"), json("quote \" backslash \\ and DEL \x7f"), json(controls),
      json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),                 // valid UTF-8
      json("cut \xe2\x82"), json("lone \x80 byte"), json("overlong \xc0\xaf"), json("\xff\xfe"),  // invalid
      json::array(), json::object(), json::array({1, "a", nullptr, json::array({json::object()})}),
      json::binary({1, 2, 3}), json::binary({4}, 7),
      json::parse(R"({"choices":[{"index":0,"message":{"role":"assistant","content":"Hi\nthere"}}],)"
                  R"("created":1796280175,"usage":{"total_tokens":15},"temperature":0.7,"ok":true})"),
  };
  for (const json& v : values) {
    EXPECT_EQ(json_text(v), nlohmann_dump(v)) << nlohmann_dump(v);
    json wrapped = {{"k", v}, {"a", json::array({v, v})}};
    EXPECT_EQ(json_text(wrapped), nlohmann_dump(wrapped)) << nlohmann_dump(wrapped);
  }
}

TEST(JsonTextTest, EscapesKeysAsNlohmannDoes) {
  nlohmann::json j = nlohmann::json::object();
  j["plain"] = 1;
  j["with \"quote\"\n"] = 2;
  j["caf\xc3\xa9"] = 3;
  j["bad \xc3"] = 4;
  j[""] = 5;
  EXPECT_EQ(json_text(j), nlohmann_dump(j));
}

// JsonWriter writes what json_text() writes for the DOM of the same values.
TEST(JsonWriterTest, WritesWhatJsonTextWritesForTheSameValues) {
  using nlohmann::json;
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("a").begin_array().integer(1).string("x\ty").null().boolean(true).boolean(false);
  w.begin_object().end_object().begin_array().end_array().number(0.7).number(3.0).number(-1e-7);
  w.number(std::numeric_limits<double>::infinity()).integer(INT64_MIN).end_array();
  w.key("b").value(json::parse(R"({"z":[1,{"y":2.5}],"k":"v"})")).key("c").raw(R"([1,"two"])");
  w.key("d").begin_object().key("e").string("").end_object().end_object();
  json dom = {{"a", json::array({1, "x\ty", nullptr, true, false, json::object(), json::array(), 0.7, 3.0, -1e-7,
                                  std::numeric_limits<double>::infinity(), INT64_MIN})},
              {"b", json::parse(R"({"z":[1,{"y":2.5}],"k":"v"})")},
              {"c", json::array({1, "two"})},
              {"d", {{"e", ""}}}};
  EXPECT_EQ(out, json_text(dom));
}

// Strings of bytes drawn from ASCII, controls, well-formed UTF-8 and broken
// pieces of it: escaped (or replaced) exactly as nlohmann's dump() does.
TEST(JsonWriterTest, EscapesEveryStringAsNlohmannDoes) {
  const std::vector<std::string> pieces = {
      "a",        " ",        "\"",       "\\",      "/",        "\x7f",     "\x00",     "\x1f",     "\n",
      "\xc3\xa9",  "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf", "\xf4\x8f\xbf\xbf",  // valid
      "\xc3",     "\xe2\x82",  "\x80",     "\xc0\xaf",  "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff",  // invalid
  };
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<size_t>(state >> 33);
  };
  for (int i = 0; i < 4000; ++i) {
    std::string s;
    const size_t n = next() % 8;
    for (size_t k = 0; k < n; ++k) s += pieces[next() % pieces.size()];
    std::string out;
    JsonWriter(out).string(s);
    ASSERT_EQ(out, nlohmann_dump(nlohmann::json(s))) << nlohmann_dump(nlohmann::json(s));
    std::string keyed;
    JsonWriter(keyed).begin_object().key(s).integer(1).end_object();
    ASSERT_EQ(keyed, nlohmann_dump(nlohmann::json{{s, 1}}));
  }
}

}  // namespace
}  // namespace llmpool
