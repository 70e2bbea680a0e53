#include "common/status.h"

#include <gtest/gtest.h>

namespace llmpool {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.is_ok());
  EXPECT_EQ(s.to_string(), "OK");
}

TEST(StatusTest, CarriesCodeMessageParamAndErrorCode) {
  Status s = Status::invalid_argument("bad temperature", "temperature", "invalid_value");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.param(), "temperature");
  EXPECT_EQ(s.error_code(), "invalid_value");
  EXPECT_EQ(s.to_string(), "INVALID_ARGUMENT: bad temperature (param: temperature)");
}

TEST(StatusTest, ResultHoldsValueOrError) {
  Result<int> ok = 7;
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(*ok, 7);
  EXPECT_TRUE(ok.status().is_ok());

  Result<int> err = Status::not_found("nope");
  ASSERT_FALSE(err.is_ok());
  EXPECT_EQ(err.status().code(), StatusCode::kNotFound);
}

TEST(StatusTest, ResultFromOkStatusBecomesInternalError) {
  Result<int> r = Status::ok();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace llmpool
