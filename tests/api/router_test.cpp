#include "api/router.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace llmpool::api {
namespace {

HttpRequest post(std::string body) {
  HttpRequest r;
  r.method = "POST";
  r.path = r.target = "/echo";
  r.body = std::move(body);
  return r;
}

// Waits until `writer` has its whole answer (an offloaded handler answers
// from another thread).
HttpResponse wait_for(const std::shared_ptr<BufferedResponseWriter>& writer) {
  for (int i = 0; i < 5000 && !writer->finished(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(writer->finished());
  return writer->response();
}

class HttpRouterOffloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_.add("POST", "/echo", [this](const HttpRequest& req, ResponseWriterPtr w) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !blocked_ || req.body.size() < 100; });
        threads_.push_back(std::this_thread::get_id());
      }
      HttpResponse r;
      r.body = std::to_string(req.body.size());
      w->respond(std::move(r));
    });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool blocked_ = false;
  std::vector<std::thread::id> threads_;
  HttpRouter router_;  // last: its pool joins before the members above go
};

TEST_F(HttpRouterOffloadTest, SmallBodiesAreHandledOnTheCallersThread) {
  router_.offload_large_bodies(1000, 1);
  auto w = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(post("small"), w);
  ASSERT_TRUE(w->finished());
  EXPECT_EQ(threads_.at(0), std::this_thread::get_id());
}

TEST_F(HttpRouterOffloadTest, LargeBodiesAreHandledOnTheRoutersThreadsFromACopy) {
  router_.offload_large_bodies(1000, 1);
  auto w = std::make_shared<BufferedResponseWriter>();
  {
    HttpRequest req = post(std::string(5000, 'x'));
    router_.dispatch(req, w);
  }  // the caller's request is gone before the handler may run
  HttpResponse r = wait_for(w);
  EXPECT_EQ(r.body, "5000");
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(threads_.size(), 1u);
  EXPECT_NE(threads_[0], std::this_thread::get_id());
}

// offload_bodies(): every request with a body runs on the router's threads
// (a handler that waits for Redis holds one of them, not an I/O thread);
// one without a body (/health) stays on the caller's thread.
TEST_F(HttpRouterOffloadTest, WithOffloadBodiesEveryBodyRunsOnTheRoutersThreads) {
  router_.offload_large_bodies(1000, 1);
  router_.offload_bodies(2);
  router_.add("GET", "/health", [this](const HttpRequest&, ResponseWriterPtr w) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads_.push_back(std::this_thread::get_id());
    }
    w->respond(HttpResponse{});
  });
  auto small = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(post("small"), small);
  EXPECT_EQ(wait_for(small).body, "5");
  auto large = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(post(std::string(5000, 'x')), large);
  EXPECT_EQ(wait_for(large).body, "5000");
  HttpRequest get;
  get.method = "GET";
  get.path = get.target = "/health";
  auto health = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(get, health);
  ASSERT_TRUE(health->finished());
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(threads_.size(), 3u);
  EXPECT_NE(threads_[0], std::this_thread::get_id());
  EXPECT_NE(threads_[1], std::this_thread::get_id());
  EXPECT_EQ(threads_[2], std::this_thread::get_id());
}

// With a filter, offload_bodies() moves exactly the requests it picks (serve:
// the HMAC-signed ones, a GET among them), whatever their body.
TEST_F(HttpRouterOffloadTest, WithAFilterOnlyThePickedRequestsRunOnTheRoutersThreads) {
  router_.offload_bodies(1, 16, [](const HttpRequest& r) { return !r.header("x-llmpool-signature").empty(); });
  router_.add("GET", "/v1/usage", [this](const HttpRequest&, ResponseWriterPtr w) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads_.push_back(std::this_thread::get_id());
    }
    w->respond(HttpResponse{});
  });
  auto plain = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(post("plain"), plain);
  ASSERT_TRUE(plain->finished()) << "an unsigned body stays on the caller's thread";
  HttpRequest signed_post = post("signed");
  signed_post.headers.emplace("x-llmpool-signature", "00");
  auto by_pool = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(signed_post, by_pool);
  EXPECT_EQ(wait_for(by_pool).body, "6");
  HttpRequest get;
  get.method = "GET";
  get.path = get.target = "/v1/usage";
  get.headers.emplace("x-llmpool-signature", "00");
  auto signed_get = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(get, signed_get);
  wait_for(signed_get);
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(threads_.size(), 3u);
  EXPECT_EQ(threads_[0], std::this_thread::get_id());
  EXPECT_NE(threads_[1], std::this_thread::get_id());
  EXPECT_NE(threads_[2], std::this_thread::get_id());
}

TEST_F(HttpRouterOffloadTest, AFullOffloadQueueAnswers503WithRetryAfter) {
  router_.offload_large_bodies(1000, 1, /*max_queued=*/1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocked_ = true;
  }
  // The first is taken by the pool's thread (which blocks), the second
  // waits in the queue, so one of the next two must be refused.
  std::vector<std::shared_ptr<BufferedResponseWriter>> writers;
  for (int i = 0; i < 4; ++i) {
    writers.push_back(std::make_shared<BufferedResponseWriter>());
    router_.dispatch(post(std::string(2000, 'x')), writers.back());
  }
  int refused = 0;
  for (auto& w : writers) {
    if (!w->finished()) continue;
    HttpResponse r = w->response();
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.headers["Retry-After"], "1");
    ++refused;
  }
  EXPECT_GE(refused, 2);
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocked_ = false;
  }
  cv_.notify_all();
  for (auto& w : writers) EXPECT_TRUE(wait_for(w).status == 200 || w->response().status == 503);
}

TEST_F(HttpRouterOffloadTest, WithoutOffloadEverythingRunsOnTheCallersThread) {
  auto w = std::make_shared<BufferedResponseWriter>();
  router_.dispatch(post(std::string(1 << 20, 'x')), w);
  ASSERT_TRUE(w->finished());
  EXPECT_EQ(threads_.at(0), std::this_thread::get_id());
}

}  // namespace
}  // namespace llmpool::api
