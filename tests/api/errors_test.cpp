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

// A 503 (no model can take it now, shutting down) is a refusal too: a
// client told when to come back does not hammer an overloaded server.
TEST(ErrorsTest, UnavailableCarriesRetryAfter) {
  HttpResponse r = error_response(Status::unavailable("no model can take this request"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.headers["Retry-After"], "1");
}

TEST(ErrorsTest, InvalidUtf8IsReplacedNotThrown) {
  EXPECT_NO_THROW(dump_json({{"text", std::string("a\xE3\x81")}}));
}

TEST(RouterTest, UnknownPathIs404AndWrongMethodIs405) {
  HttpRouter router;
  router.add("GET", "/health", [](const HttpRequest&, ResponseWriterPtr w) { w->respond(HttpResponse{}); });
  auto w = std::make_shared<BufferedResponseWriter>();
  router.dispatch({"GET", "/nope", "/nope", {}, "", nullptr}, w);
  EXPECT_EQ(w->response().status, 404);
  w = std::make_shared<BufferedResponseWriter>();
  router.dispatch({"POST", "/health", "/health", {}, "", nullptr}, w);
  EXPECT_EQ(w->response().status, 405);
  EXPECT_EQ(w->response().headers["Allow"], "GET");
}

TEST(RouterTest, ExceptionInAHandlerBecomesA500ErrorJson) {
  HttpRouter router;
  router.add("GET", "/boom", [](const HttpRequest&, ResponseWriterPtr) { throw std::runtime_error("bad"); });
  auto w = std::make_shared<BufferedResponseWriter>();
  router.dispatch({"GET", "/boom", "/boom", {}, "", nullptr}, w);
  EXPECT_EQ(w->response().status, 500);
  EXPECT_TRUE(w->finished());
  EXPECT_EQ(nlohmann::json::parse(w->response().body)["error"]["type"], "server_error");
}

}  // namespace
}  // namespace llmpool::api
