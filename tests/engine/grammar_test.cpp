// JSON schema -> grammar: the limits checked before llama.cpp's converter
// runs, and converter failures as InvalidArgument values. No model needed.
#include "engine/grammar.h"

#include <gtest/gtest.h>

namespace llmpool::engine {
namespace {

Status grammar_error(const std::string& schema, const std::string& param = "response_format") {
  Result<std::string> g = json_schema_grammar(schema, param);
  EXPECT_FALSE(g.is_ok()) << schema.substr(0, 200);
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.status().param(), param);
  return g.status();
}

std::string nested_schema(size_t depth) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += R"({"type":"object","properties":{"a":)";
  s += R"({"type":"string"})";
  for (size_t i = 0; i < depth; ++i) s += "}}";
  return s;
}

TEST(JsonSchemaGrammarTest, ConvertsASchemaWithinTheLimits) {
  Result<std::string> g = json_schema_grammar(
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":20},
          "tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":5},
          "n":{"type":"integer","minimum":-5,"maximum":500}},"required":["name"]})");
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
  EXPECT_NE(g->find("root ::="), std::string::npos);
  EXPECT_TRUE(json_schema_grammar(nested_schema(15)).is_ok());
}

TEST(JsonSchemaGrammarTest, RefusesDeepSchemasWhileParsing) {
  Status s = grammar_error(R"({"items":)" + std::string(20000, '[') + std::string(20000, ']') + "}",
                           "tools[0].function.parameters");
  EXPECT_NE(s.message().find("deeper than 32"), std::string::npos) << s.message();
  EXPECT_FALSE(grammar_error(nested_schema(16)).is_ok());  // 33 levels
}

TEST(JsonSchemaGrammarTest, RefusesRepetitionCountsPastTheLimit) {
  for (const char* schema : {R"({"type":"array","minItems":1001})", R"({"type":"array","maxItems":1e12})",
                             R"({"type":"string","minLength":5000})", R"({"type":"string","maxLength":2147483648})",
                             R"({"type":"string","pattern":"^(ab){3,20000}$"})", R"({"pattern":"^x{7000,}$"})"}) {
    Status s = grammar_error(schema);
    EXPECT_NE(s.message().find("limit is 1000"), std::string::npos) << schema << " -> " << s.message();
  }
  // Many counts just under the limit add up past the total.
  std::string many = R"({"type":"object","properties":{)";
  for (int i = 0; i < 20; ++i) many += std::string(i ? "," : "") + "\"p" + std::to_string(i) + R"(":{"type":"string","maxLength":900})";
  many += "}}";
  EXPECT_NE(grammar_error(many).message().find("in all"), std::string::npos);
  // An escaped brace is not a count.
  EXPECT_TRUE(json_schema_grammar(R"({"type":"string","pattern":"^a\\{99999\\}$"})").is_ok());
}

TEST(JsonSchemaGrammarTest, RefusesHugeEnumsPropertiesAndTypeArrayCopies) {
  std::string big_enum = R"({"enum":[)";
  for (int i = 0; i < 1001; ++i) big_enum += std::string(i ? "," : "") + std::to_string(i);
  EXPECT_NE(grammar_error(big_enum + "]}").message().find("enum"), std::string::npos);

  std::string wide = R"({"type":"object","properties":{)";
  for (int i = 0; i < 129; ++i) wide += std::string(i ? "," : "") + "\"p" + std::to_string(i) + R"(":{"type":"string"})";
  EXPECT_NE(grammar_error(wide + "}}").message().find("129 optional properties"), std::string::npos);
  // Required names count once, and only when they are properties.
  EXPECT_TRUE(json_schema_grammar(wide + R"(},"required":["p0","p0"]})").is_ok());
  EXPECT_NE(grammar_error(wide + R"(},"required":["nope"]})").message().find("129 optional"), std::string::npos);

  // `type` arrays nested 20 deep: 2^20 copies in the converter.
  std::string copies;
  for (int i = 0; i < 20; ++i) copies += R"({"type":["array","null"],"items":)";
  copies += R"({"type":"string"})" + std::string(20, '}');
  Status s = grammar_error(copies);
  EXPECT_NE(s.message().find("expands"), std::string::npos) << s.message();
}

TEST(JsonSchemaGrammarTest, ConvertsTheWidestObjectAllowed) {
  // 128 optional properties beside 600 required ones: the converter's work
  // grows with the cube of the optional count, which is why it is limited.
  std::string wide = R"({"type":"object","properties":{)", required;
  for (int i = 0; i < 728; ++i) {
    wide += std::string(i ? "," : "") + "\"p" + std::to_string(i) + R"(":{"type":"string"})";
    if (i >= 128) required += std::string(required.empty() ? "" : ",") + "\"p" + std::to_string(i) + "\"";
  }
  Result<std::string> g = json_schema_grammar(wide + "},\"required\":[" + required + "]}");
  ASSERT_TRUE(g.is_ok()) << g.status().to_string();
}

TEST(JsonSchemaGrammarTest, RefusesIntegerBoundsThatOverflowTheConverter) {
  for (const char* schema : {R"({"type":"integer","minimum":-9223372036854775808,"maximum":-1})",
                             R"({"type":"integer","exclusiveMinimum":9223372036854775807})",
                             R"({"type":"integer","maximum":1e300})"}) {
    Status s = grammar_error(schema);
    EXPECT_NE(s.message().find("2^53"), std::string::npos) << s.message();
  }
}

TEST(JsonSchemaGrammarTest, RefusesOversizedAndMalformedSchemasAsValues) {
  std::string big = R"({"type":"object","description":")" + std::string(70 << 10, 'x') + R"("})";
  EXPECT_NE(grammar_error(big).message().find("bytes"), std::string::npos);
  EXPECT_FALSE(grammar_error("not json").is_ok());
  EXPECT_FALSE(grammar_error("[1,2]").is_ok());
  EXPECT_FALSE(grammar_error(R"({"type":"unknown-type"})").is_ok());
  EXPECT_FALSE(grammar_error(R"({"$ref":"https://example.com/schema"})").is_ok());
  EXPECT_FALSE(grammar_error(R"({"type":"array","minItems":-1})").is_ok());
}

TEST(JsonSchemaGrammarTest, CheckJsonSchemaAppliesTheSameLimits) {
  EXPECT_TRUE(check_json_schema(R"({"type":"object"})", "response_format.json_schema.schema").is_ok());
  Status bad = check_json_schema(R"({"maxItems":100000})", "tools[2].function.parameters");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.param(), "tools[2].function.parameters");
  EXPECT_FALSE(check_json_schema("[]", "p").is_ok());
  // Brackets inside strings are not nesting.
  EXPECT_TRUE(check_json_schema(R"({"description":")" + std::string(100, '[') + R"("})", "p").is_ok());
  std::string members = "{";
  for (int i = 0; i < 1025; ++i) members += std::string(i ? "," : "") + "\"k" + std::to_string(i) + "\":1";
  EXPECT_NE(check_json_schema(members + "}", "p").message().find("1025 members"), std::string::npos);
}

}  // namespace
}  // namespace llmpool::engine
