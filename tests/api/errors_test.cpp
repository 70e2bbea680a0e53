#include "api/errors.h"

#include <gtest/gtest.h>

#include "api/router.h"

namespace llmpool::api {
namespace {

TEST(ErrorsTest, MapsEachCodeToOneHttpStatus) {
  EXPECT_EQ(http_status_for(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(http_status_for(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(http_status_for(StatusCode::kNotFound), 404);
  EXPECT_EQ(http_status_for(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(http_status_for(StatusCode::kUnavailable), 503);
  EXPECT_EQ(http_status_for(StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(http_status_for(StatusCode::kInternal), 500);
}

TEST(ErrorsTest, ErrorJsonHasTheOpenAiFields) {
  nlohmann::json j = error_json(Status::not_found("no model", "model", "model_not_found"));
  EXPECT_EQ(j["error"]["message"], "no model");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  nlohmann::json k = error_json(Status::internal("boom"));
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

TEST(ErrorsTest, RateLimitCarriesRetryAfter) {
  HttpResponse r = error_response(Status::resource_exhausted("queue full"));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["Retry-After"], "1");
}

TEST(ErrorsTest, InvalidUtf8IsReplacedNotThrown) {
  EXPECT_NO_THROW(dump_json({{"text", std::string("a\xE3\x81")}}));
}

TEST(RouterTest, UnknownPathIs404AndWrongMethodIs405) {
  HttpRouter router;
  router.add("GET", "/health", [](const HttpRequest&, Responder respond) { respond(HttpResponse{}); });
  HttpResponse got;
  HttpRequest req{"GET", "/nope", "/nope", {}, ""};
  router.dispatch(req, [&](HttpResponse r) { got = std::move(r); });
  EXPECT_EQ(got.status, 404);
  req = {"POST", "/health", "/health", {}, ""};
  router.dispatch(req, [&](HttpResponse r) { got = std::move(r); });
  EXPECT_EQ(got.status, 405);
  EXPECT_EQ(got.headers["Allow"], "GET");
}

TEST(RouterTest, ExceptionInAHandlerBecomesA500ErrorJson) {
  HttpRouter router;
  router.add("GET", "/boom", [](const HttpRequest&, Responder) { throw std::runtime_error("bad"); });
  HttpResponse got;
  router.dispatch({"GET", "/boom", "/boom", {}, ""}, [&](HttpResponse r) { got = std::move(r); });
  EXPECT_EQ(got.status, 500);
  EXPECT_EQ(nlohmann::json::parse(got.body)["error"]["type"], "server_error");
}

}  // namespace
}  // namespace llmpool::api
