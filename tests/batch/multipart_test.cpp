#include "batch/multipart.h"

#include <gtest/gtest.h>

#include <string>

namespace llmpool::batch {
namespace {

const std::string kBoundary = "------------------------a1b2c3";

std::string part(const std::string& headers, const std::string& data) {
  return "--" + kBoundary + "\r\n" + headers + "\r\n\r\n" + data + "\r\n";
}

std::string upload_body(const std::string& content) {
  return part("Content-Disposition: form-data; name=\"purpose\"", "batch") +
         part("Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
              "Content-Type: application/octet-stream",
              content) +
         "--" + kBoundary + "--\r\n";
}

class MultipartTest : public ::testing::Test {};

TEST_F(MultipartTest, ReadsTheBoundaryQuotedOrNot) {
  EXPECT_EQ(*multipart_boundary("multipart/form-data; boundary=abc"), "abc");
  EXPECT_EQ(*multipart_boundary("Multipart/Form-Data;boundary=\"a b:c\""), "a b:c");
  EXPECT_EQ(*multipart_boundary("multipart/form-data; charset=utf-8; boundary=x-1"), "x-1");
}

TEST_F(MultipartTest, RefusesOtherTypesAndBadBoundaries) {
  EXPECT_FALSE(multipart_boundary("application/json").is_ok());
  EXPECT_FALSE(multipart_boundary("").is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data").is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=").is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=\"unterminated").is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'a')).is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=\"a\x01\"").is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=a; boundary=b").is_ok());
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=\"ends in space \"").is_ok());
}

TEST_F(MultipartTest, ParsesFieldsAndFileWithoutCopying) {
  const std::string body = upload_body("{\"a\":1}\n{\"b\":2}\n");
  auto parts = parse_multipart(body, kBoundary);
  ASSERT_TRUE(parts.is_ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "purpose");
  EXPECT_FALSE((*parts)[0].filename.has_value());
  EXPECT_EQ((*parts)[0].data, "batch");
  EXPECT_EQ((*parts)[1].name, "file");
  EXPECT_EQ((*parts)[1].filename.value_or(""), "in.jsonl");
  EXPECT_EQ((*parts)[1].content_type, "application/octet-stream");
  EXPECT_EQ((*parts)[1].data, "{\"a\":1}\n{\"b\":2}\n");
  EXPECT_GE((*parts)[1].data.data(), body.data());
  EXPECT_LT((*parts)[1].data.data(), body.data() + body.size());
}

TEST_F(MultipartTest, KeepsContentThatLooksLikeADelimiterButIsNot) {
  const std::string tricky = "line\r\n--" + kBoundary.substr(0, 10) + "\r\n--not-it\r\n\r\n";
  const std::string body = upload_body(tricky);  // the parts are views into it
  auto parts = parse_multipart(body, kBoundary);
  ASSERT_TRUE(parts.is_ok()) << parts.status().message();
  EXPECT_EQ((*parts)[1].data, tricky);
}

TEST_F(MultipartTest, KeepsBinaryContentWithNulBytes) {
  const std::string binary("a\0b\r\n\0", 6);
  const std::string body = upload_body(binary);  // the parts are views into it
  auto parts = parse_multipart(body, kBoundary);
  ASSERT_TRUE(parts.is_ok());
  EXPECT_EQ((*parts)[1].data, binary);
}

TEST_F(MultipartTest, IgnoresTheEpilogueAndAcceptsAnEmptyPart) {
  std::string body = part("Content-Disposition: form-data; name=\"x\"", "") + "--" + kBoundary + "--\r\nepilogue";
  auto parts = parse_multipart(body, kBoundary);
  ASSERT_TRUE(parts.is_ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data, "");
}

TEST_F(MultipartTest, RefusesEveryTruncationOfAValidBody) {
  const std::string body = upload_body("{\"custom_id\":\"1\"}\n");
  // Cut anywhere before the close delimiter is complete: always an error.
  const size_t close = body.rfind("--" + kBoundary + "--") + kBoundary.size() + 4;
  for (size_t n = 0; n < close; ++n) {
    auto parts = parse_multipart(std::string_view(body).substr(0, n), kBoundary);
    EXPECT_FALSE(parts.is_ok()) << "a body cut to " << n << " bytes was accepted";
    if (!parts.is_ok()) {
      EXPECT_EQ(parts.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST_F(MultipartTest, RefusesAPreamble) {
  auto parts = parse_multipart("preamble\r\n" + upload_body("x"), kBoundary);
  EXPECT_FALSE(parts.is_ok());
}

TEST_F(MultipartTest, RefusesHeadersOverTheLimit) {
  MultipartLimits limits;
  limits.max_header_bytes = 256;
  std::string body = part("Content-Disposition: form-data; name=\"x\"\r\nX-Pad: " + std::string(400, 'p'), "v") +
                     "--" + kBoundary + "--";
  auto parts = parse_multipart(body, kBoundary, limits);
  ASSERT_FALSE(parts.is_ok());
  EXPECT_NE(parts.status().message().find("headers are larger"), std::string::npos) << parts.status().message();
  // Headers that never end are refused at the limit, not searched to the end.
  std::string endless = "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"x\"\r\n" +
                        std::string(100000, 'h');
  EXPECT_FALSE(parse_multipart(endless, kBoundary, limits).is_ok());
}

TEST_F(MultipartTest, RefusesAPartOverTheLimit) {
  MultipartLimits limits;
  limits.max_part_bytes = 10;
  auto parts = parse_multipart(upload_body(std::string(11, 'x')), kBoundary, limits);
  ASSERT_FALSE(parts.is_ok());
  EXPECT_NE(parts.status().message().find("larger than 10 bytes"), std::string::npos);
  EXPECT_TRUE(parse_multipart(upload_body(std::string(10, 'x')), kBoundary, limits).is_ok());
}

TEST_F(MultipartTest, RefusesTooManyParts) {
  MultipartLimits limits;
  limits.max_parts = 3;
  std::string body;
  for (int i = 0; i < 4; ++i) body += part("Content-Disposition: form-data; name=\"f" + std::to_string(i) + "\"", "v");
  body += "--" + kBoundary + "--";
  EXPECT_FALSE(parse_multipart(body, kBoundary, limits).is_ok());
}

TEST_F(MultipartTest, RefusesMalformedPartHeaders) {
  const char* bad_headers[] = {
      "",                                                             // no Content-Disposition
      "Content-Disposition: attachment; name=\"x\"",                  // not form-data
      "Content-Disposition: form-data",                               // no name
      "Content-Disposition: form-data; name=\"\"",                    // empty name
      "Content-Disposition: form-data; name=\"x",                     // unterminated quote
      "Content-Disposition: form-data; name=\"x\"; name=\"y\"",       // a parameter twice
      "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"y\"",
      "Content-Disposition: form-data; name=\"x\"\r\nno colon here",
      "Content-Disposition: form-data; name=\"x\"\nX: bare LF",
      "Content-Disposition: form-data; name=\"x\"\r\n: empty name",
      "Content-Disposition: form-data; name=x y",
  };
  for (const char* h : bad_headers) {
    std::string body = part(h, "v") + "--" + kBoundary + "--";
    EXPECT_FALSE(parse_multipart(body, kBoundary).is_ok()) << "accepted headers: " << h;
  }
}

TEST_F(MultipartTest, RefusesADelimiterFollowedByGarbage) {
  std::string body = part("Content-Disposition: form-data; name=\"x\"", "v") + "--" + kBoundary + "XX";
  EXPECT_FALSE(parse_multipart(body, kBoundary).is_ok());
}

}  // namespace
}  // namespace llmpool::batch
