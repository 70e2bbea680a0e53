// The HTTP client and the remote providers against upstreams on loopback
// that this file writes itself: well-behaved ones, and ones that are slow,
// fail, or cut their streams. Timing bounds are generous on purpose.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>

#include "providers/http_client.h"
#include "providers/ollama_provider.h"
#include "providers/openai_provider.h"
#include "remote_test_util.h"

namespace llmpool::providers {
namespace {

using namespace llmpool::providers::testing;
using nlohmann::json;

// Waits for the one on_done of an HttpClient request.
struct Done {
  std::promise<Status> promise;
  std::future<Status> future = promise.get_future();
  std::string body;
  HttpResponseHead head;
  std::mutex mu;
  std::condition_variable cv;

  HttpStreamCallbacks callbacks() {
    HttpStreamCallbacks cb;
    cb.on_head = [this](const HttpResponseHead& h) { head = h; };
    cb.on_body = [this](std::string_view b) {
      std::lock_guard<std::mutex> lock(mu);
      body.append(b);
      cv.notify_all();
      return true;
    };
    cb.on_done = [this](Status st) { promise.set_value(std::move(st)); };
    return cb;
  }
  Status wait(std::chrono::seconds timeout = 30s) {
    if (future.wait_for(timeout) != std::future_status::ready) return Status::internal("on_done did not come");
    return future.get();
  }
  bool wait_body(const std::string& text) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 10s, [&] { return body.find(text) != std::string::npos; });
  }
};

HttpClientRequest post(const std::string& url, int32_t read_timeout_ms = 5000) {
  HttpClientRequest r;
  r.url = url;
  r.body = "{}";
  r.connect_timeout_ms = 2000;
  r.read_timeout_ms = read_timeout_ms;
  return r;
}

// ---------------------------------------------------------------------------
// HttpClient

class HttpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_.post("/plain", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.body = "hello";
      r.content_type = "text/plain";
      w->respond(r);
    });
    // Sends "one", waits for release, sends "two".
    fake_.post("/gated", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/plain");
      w->write("one");
      fake_.spawn([this, w] {
        fake_.hold(w->cancel_token());
        w->write("two");
        w->end();
      });
    });
    // Six pieces, 100 ms apart: never silent for long, but long in total.
    fake_.post("/trickle", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      fake_.spawn([w] {
        w->start_stream(200, "text/plain");
        for (int i = 0; i < 6; ++i) {
          std::this_thread::sleep_for(100ms);
          w->write(std::to_string(i));
        }
        w->end();
      });
    });
    // Answers nothing until released or the client goes away.
    fake_.post("/silent", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      fake_.spawn([this, w] {
        fake_.hold(w->cancel_token());
        api::HttpResponse r;
        r.body = "late";
        w->respond(r);
      });
    });
    fake_.post("/record", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      api::HttpResponse r;
      r.body = "ok";
      w->respond(r);
    });
    fake_.start();
  }

  FakeUpstream fake_;
};

// The request head is written by the client itself: the caller's headers go
// out as given, but the framing (Content-Length, Transfer-Encoding,
// Connection) is the client's alone, and a header that could split the
// request is refused before anything is sent.
TEST_F(HttpClientTest, SendsTheCallersHeadersButNotItsFraming) {
  HttpClient client;
  auto fetch = [&](HttpClientRequest r) {
    std::promise<Result<HttpClientResponse>> p;
    client.fetch(std::move(r), nullptr, [&](Result<HttpClientResponse> x) { p.set_value(std::move(x)); });
    return p.get_future().get();
  };
  HttpClientRequest r = post(fake_.url("/record"));
  r.body = "{\"a\":1}";
  r.headers = {{"Authorization", "Bearer k"}, {"User-Agent", "mine"}, {"Content-Length", "999"},
               {"Transfer-Encoding", "chunked"}, {"Connection", "close"}};
  auto got = fetch(r);
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(got->body, "ok");
  EXPECT_EQ(fake_.last_header("authorization"), "Bearer k");
  EXPECT_EQ(fake_.last_header("user-agent"), "mine");
  EXPECT_EQ(fake_.last_header("content-length"), "7");
  EXPECT_EQ(fake_.last_header("transfer-encoding"), "");
  EXPECT_EQ(fake_.last_header("connection"), "");
  EXPECT_EQ(fake_.last_header("content-type"), "application/json");
  EXPECT_EQ(fake_.last_body(), nlohmann::json::parse(R"({"a":1})"));
  EXPECT_EQ(client.idle_connections(), 1u);  // kept alive, whatever the caller asked
  const int before = fake_.requests();
  const std::vector<std::pair<std::string, std::string>> hostile = {
      {"X-A", "v\r\nX-Evil: 1"}, {"X-B\r\nX-Evil", "1"}, {"X C", "v"}, {"", "v"}, {"X-D", std::string("a\0b", 3)}};
  for (const auto& bad : hostile) {
    HttpClientRequest b = post(fake_.url("/record"));
    b.headers = {bad};
    auto res = fetch(b);
    ASSERT_FALSE(res.is_ok());
    EXPECT_EQ(res.status().code(), StatusCode::kInvalidArgument) << res.status().to_string();
  }
  EXPECT_EQ(fake_.requests(), before);
}

TEST_F(HttpClientTest, StreamsTheBodyAsItArrives) {
  HttpClient client;
  Done done;
  client.stream(post(fake_.url("/gated")), nullptr, done.callbacks());
  // "one" arrives while the server still holds "two" back.
  ASSERT_TRUE(done.wait_body("one"));
  fake_.release();
  Status st = done.wait();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_EQ(done.head.status, 200);
  EXPECT_EQ(done.body, "onetwo");
}

TEST_F(HttpClientTest, ReusesKeepAliveConnections) {
  HttpClient client;
  for (int i = 0; i < 3; ++i) {
    std::promise<Result<HttpClientResponse>> p;
    client.fetch(post(fake_.url("/plain")), nullptr, [&](Result<HttpClientResponse> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->body, "hello");
    EXPECT_EQ(r->head.header("content-type"), "text/plain");
    EXPECT_EQ(client.idle_connections(), 1u);  // the same connection, back in the pool
  }
}

TEST_F(HttpClientTest, ReplacesPooledConnectionsTheServerClosed) {
  // Says keep-alive, then closes every connection after one answer.
  RawServer raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
  HttpClient client;
  for (int i = 0; i < 3; ++i) {
    std::promise<Result<HttpClientResponse>> p;
    client.fetch(post(raw.url("/")), nullptr, [&](Result<HttpClientResponse> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    ASSERT_TRUE(r.is_ok()) << "request " << i << ": " << r.status().to_string();
    EXPECT_EQ(r->body, "ok");
    std::this_thread::sleep_for(50ms);  // let the close arrive
  }
  EXPECT_EQ(raw.connections(), 3);
}

TEST_F(HttpClientTest, ReadTimeoutIsTheLongestSilenceNotTheTotal) {
  HttpClient client;
  Done done;
  client.stream(post(fake_.url("/trickle"), 400), nullptr, done.callbacks());
  Status st = done.wait();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_EQ(done.body, "012345");
}

TEST_F(HttpClientTest, SilentServerTimesOut) {
  HttpClient client;
  Done done;
  auto start = Clock::now();
  client.stream(post(fake_.url("/silent"), 300), nullptr, done.callbacks());
  Status st = done.wait();
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.to_string();
  EXPECT_NE(st.message().find(fake_.url("/silent")), std::string::npos) << st.message();
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_TRUE(fake_.wait_client_gone(1));  // the connection was closed
}

TEST_F(HttpClientTest, NothingListeningIsUnavailableNamingTheUrl) {
  HttpClient client;
  Done done;
  uint16_t port = closed_port();
  client.stream(post("http://127.0.0.1:" + std::to_string(port) + "/v1/x"), nullptr, done.callbacks());
  Status st = done.wait();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("127.0.0.1:" + std::to_string(port)), std::string::npos) << st.message();
}

TEST_F(HttpClientTest, HttpsToAPlainServerFailsTheHandshakeClearly) {
  HttpClient client;
  Done done;
  client.stream(post("https://127.0.0.1:" + std::to_string(fake_.port()) + "/plain"), nullptr, done.callbacks());
  Status st = done.wait();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_NE(st.message().find("TLS"), std::string::npos) << st.message();
}

TEST_F(HttpClientTest, TheLabelReplacesTheUrlInMessages) {
  HttpClient client;
  Done done;
  uint16_t port = closed_port();
  HttpClientRequest r = post("http://127.0.0.1:" + std::to_string(port) + "/v1/x");
  r.label = "upstream for model 'm'";
  client.stream(r, nullptr, done.callbacks());
  Status st = done.wait();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("upstream for model 'm'"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("127.0.0.1"), std::string::npos) << st.message();
}

TEST_F(HttpClientTest, CancelClosesTheConnectionPromptly) {
  HttpClient client;
  Done done;
  auto cancel = std::make_shared<CancelToken>();
  client.stream(post(fake_.url("/gated")), cancel, done.callbacks());
  ASSERT_TRUE(done.wait_body("one"));
  auto start = Clock::now();
  cancel->cancel();
  Status st = done.wait();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_NE(st.message().find("cancelled"), std::string::npos);
  EXPECT_LT(seconds_since(start), 2.0);
  EXPECT_TRUE(fake_.wait_client_gone(1));
}

TEST_F(HttpClientTest, DestructorEndsRequestsInFlight) {
  Done done;
  {
    HttpClient client;
    client.stream(post(fake_.url("/silent")), nullptr, done.callbacks());
    ASSERT_TRUE(fake_.wait_holding(1));
  }
  ASSERT_EQ(done.future.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(done.future.get().code(), StatusCode::kUnavailable);
}

TEST_F(HttpClientTest, MayBeDestroyedInsideItsOwnCallback) {
  auto client = std::make_shared<HttpClient>();
  std::promise<Status> p;
  HttpStreamCallbacks cb;
  cb.on_done = [&p, keep = client](Status st) mutable {
    keep.reset();  // the last owner: the client goes away on its own I/O thread
    p.set_value(std::move(st));
  };
  client->stream(post(fake_.url("/silent")), nullptr, std::move(cb));
  ASSERT_TRUE(fake_.wait_holding(1));
  client.reset();
  fake_.release();
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  Status fst = f.get();
  EXPECT_TRUE(fst.is_ok()) << fst.to_string();
}

// A front that calls the client from its handlers, as llmpool serve does:
// the exchange borrows the server's I/O loop (providers/io_loop.h).
class FrontServer : public fake::FakeServer {
 public:
  void start(int io_threads = 1) {
    Status st = FakeServer::start("127.0.0.1", 0, io_threads);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
};

Result<HttpClientResponse> get_answer(HttpClient& client, const std::string& url) {
  std::promise<Result<HttpClientResponse>> p;
  client.fetch(post(url), nullptr, [&](Result<HttpClientResponse> r) { p.set_value(std::move(r)); });
  auto f = p.get_future();
  if (f.wait_for(30s) != std::future_status::ready) return Status::internal("no answer");
  return f.get();
}

TEST_F(HttpClientTest, ARequestMadeOnAServerThreadRunsOnThatThread) {
  HttpClient client;
  FrontServer front;
  front.post("/relay", [&](const api::HttpRequest&, api::ResponseWriterPtr w) {
    const auto handler_thread = std::this_thread::get_id();
    client.fetch(post(fake_.url("/plain")), nullptr, [w, handler_thread](Result<HttpClientResponse> r) {
      api::HttpResponse out;
      out.content_type = "text/plain";
      out.body = (r ? r->body : r.status().to_string()) +
                 (std::this_thread::get_id() == handler_thread ? " same" : " other");
      w->respond(out);
    });
  });
  front.start(2);
  for (int i = 0; i < 4; ++i) {  // connections land on both loops
    auto r = get_answer(client, front.url("/relay"));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->body, "hello same");
  }
  // The front's connections to the upstream are pooled per loop, the test
  // thread's apart from them.
  EXPECT_GE(client.idle_connections(), 2u);
}

TEST_F(HttpClientTest, ConnectionsPooledOnAServersLoopOutliveTheServer) {
  HttpClient client;
  {
    FrontServer front;
    front.post("/relay", [&](const api::HttpRequest&, api::ResponseWriterPtr w) {
      client.fetch(post(fake_.url("/plain")), nullptr, [w](Result<HttpClientResponse> r) {
        api::HttpResponse out;
        out.body = r ? r->body : r.status().to_string();
        w->respond(out);
      });
    });
    front.start();
    auto r = get_answer(client, front.url("/relay"));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->body, "hello");
  }
  // The server and its loop's thread are gone; the pooled connection bound
  // to that loop is never handed out again, and closes with the client.
  auto r = get_answer(client, fake_.url("/plain"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->body, "hello");
}

TEST_F(HttpClientTest, ARequestOnAServersLoopEndsWhenTheServerStops) {
  HttpClient client;
  Done done;
  auto front = std::make_unique<FrontServer>();
  front->post("/relay", [&](const api::HttpRequest&, api::ResponseWriterPtr w) {
    // The upstream never answers; neither does this handler.
    client.stream(post(fake_.url("/silent"), 60000), nullptr, done.callbacks());
    (void)w;
  });
  front->start();
  std::thread caller([&] { (void)get_answer(client, front->url("/relay")); });
  ASSERT_TRUE(fake_.wait_holding(1));
  const auto start = Clock::now();
  front->stop();  // no grace: the loop closes, the exchange on it ends
  Status st = done.wait(10s);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_LT(seconds_since(start), 8.0);
  fake_.release();
  caller.join();
  front.reset();
}

TEST_F(HttpClientTest, PostAfterRunsLater) {
  HttpClient client;
  std::promise<void> p;
  auto start = Clock::now();
  client.post_after(100ms, [&] { p.set_value(); });
  ASSERT_EQ(p.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_GE(seconds_since(start), 0.09);
}

// ---------------------------------------------------------------------------
// OpenAiProvider

class OpenAiProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A well-behaved chat stream: two pieces, a finish, usage, [DONE].
    fake_.post("/ok/v1/chat/completions", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      w->start_stream(200, "text/event-stream");
      w->write(sse({{"choices", {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", nullptr}}}}}}}));
      w->write(sse(chat_chunk(0, "Hel")));
      w->write(sse(chat_chunk(0, "lo")));
      w->write(sse(chat_chunk(0, "", "stop")));
      w->write(sse({{"choices", json::array()}, {"usage", {{"prompt_tokens", 5}, {"completion_tokens", 2}}}}));
      w->write("data: [DONE]\n\n");
      w->end();
    });
    fake_.post("/ok/v1/completions", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      w->start_stream(200, "text/event-stream");
      w->write(sse({{"choices", {{{"index", 0}, {"text", "upon"}, {"finish_reason", nullptr}}}}}));
      w->write(sse({{"choices", {{{"index", 0}, {"text", " a"}, {"finish_reason", "length"}}}},
                    {"usage", {{"prompt_tokens", 1}, {"completion_tokens", 2}}}}));
      w->write("data: [DONE]\n\n");
      w->end();
    });
    // Errors with the usual bodies.
    for (int code : {400, 401, 403, 404, 429, 500, 503}) {
      fake_.post("/e" + std::to_string(code) + "/v1/chat/completions",
                 [code](const api::HttpRequest&, api::ResponseWriterPtr w) {
                   api::HttpResponse r;
                   r.status = code;
                   r.body = json{{"error",
                                  {{"message", "upstream says " + std::to_string(code)},
                                   {"type", "invalid_request_error"},
                                   {"param", "temperature"},
                                   {"code", "bad_value"}}}}
                                .dump();
                   w->respond(r);
                 });
    }
    // Two pieces, then the end of the HTTP body without [DONE].
    fake_.post("/cut/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/event-stream");
      w->write(sse(chat_chunk(0, "a")));
      w->write(sse(chat_chunk(0, "b")));
      w->end();
    });
    // One piece, then silence until released or the client goes away.
    fake_.post("/stall/v1/chat/completions", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/event-stream");
      w->write(sse(chat_chunk(0, "first")));
      fake_.spawn([this, w] {
        fake_.hold(w->cancel_token());
        w->write(sse(chat_chunk(0, "", "stop")));
        w->write("data: [DONE]\n\n");
        w->end();
      });
    });
    // No answer at all until released.
    fake_.post("/slow/v1/chat/completions", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      fake_.spawn([this, w] {
        bool released = fake_.hold(w->cancel_token());
        if (!released) return w->respond(api::HttpResponse{503, "application/json", "{}", {}});
        w->start_stream(200, "text/event-stream");
        w->write(sse(chat_chunk(0, "done", "stop")));
        w->write("data: [DONE]\n\n");
        w->end();
      });
    });
    fake_.post("/inerror/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/event-stream");
      w->write(sse(chat_chunk(0, "a")));
      w->write(sse({{"error", {{"code", 500}, {"message", "the model crashed"}}}}));
      w->end();
    });
    // Tool calls, streamed in pieces as OpenAI sends them.
    fake_.post("/tools/v1/chat/completions", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      auto call = [](json piece) {
        return sse({{"choices", {{{"index", 0}, {"delta", {{"tool_calls", json::array({std::move(piece)})}}}}}}});
      };
      w->start_stream(200, "text/event-stream");
      w->write(call({{"index", 0}, {"id", "call_a"}, {"type", "function"},
                     {"function", {{"name", "get_weather"}, {"arguments", ""}}}}));
      w->write(call({{"index", 0}, {"function", {{"arguments", "{\"city\":"}}}}));
      w->write(call({{"index", 0}, {"function", {{"arguments", "\"Paris\"}"}}}}));
      w->write(sse(chat_chunk(0, "", "tool_calls")));
      w->write("data: [DONE]\n\n");
      w->end();
    });
    fake_.post("/toolsjson/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.body = R"({"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[)"
               R"({"id":"c9","type":"function","function":{"name":"get_time","arguments":"{}"}}]},)"
               R"("finish_reason":"tool_calls"}]})";
      w->respond(r);
    });
    // Hostile upstreams: a 100,000-deep JSON event, an endless data: line,
    // data: lines that never end their event, a deep whole answer.
    fake_.post("/deep/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/event-stream");
      w->write("data: " + std::string(100000, '[') + std::string(100000, ']') + "\n\n");
      w->write("data: [DONE]\n\n");
      w->end();
    });
    fake_.post("/deepwhole/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.body = "{\"choices\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
      w->respond(r);
    });
    fake_.post("/deeperror/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.status = 500;
      r.body = std::string(30000, '[') + std::string(30000, ']');
      w->respond(r);
    });
    fake_.post("/endless/v1/chat/completions", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/event-stream");
      w->write("data: ");
      fake_.spawn([w] {
        const std::string piece(64 * 1024, 'x');
        for (int i = 0; i < 64 && !w->cancel_token()->cancelled(); ++i) w->write(piece);  // 4 MiB at most
        w->end();
      });
    });
    fake_.post("/manylines/v1/chat/completions", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "text/event-stream");
      fake_.spawn([w] {
        std::string piece;
        for (int i = 0; i < 8192; ++i) piece += "data: x\n";
        for (int i = 0; i < 64 && !w->cancel_token()->cancelled(); ++i) w->write(piece);  // 4 MiB at most
        w->end();
      });
    });
    // Answers as asked: SSE for "stream": true, else one JSON object with a
    // Content-Type that does not say JSON (some servers send text/plain).
    fake_.post("/asked/v1/chat/completions", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      if (json::parse(req.body).value("stream", false)) {
        w->start_stream(200, "text/event-stream");
        w->write(sse(chat_chunk(0, "streamed", "stop")));
        w->write("data: [DONE]\n\n");
        w->end();
        return;
      }
      api::HttpResponse r;
      r.content_type = "text/plain";
      r.body = R"({"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"length"}],)"
               R"("usage":{"prompt_tokens":4,"completion_tokens":1}})";
      w->respond(r);
    });
    fake_.post("/json/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.body = R"({"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],)"
               R"("usage":{"prompt_tokens":4,"completion_tokens":1}})";
      w->respond(r);
    });
    fake_.start();
  }

  ProviderPtr make(const std::string& prefix, int32_t read_timeout_ms = 5000, int32_t max_concurrent = 0,
                   int32_t max_queue = 64) {
    auto c = remote_config("openai", fake_.url(prefix + "/v1"));
    c.read_timeout_ms = read_timeout_ms;
    c.max_concurrent = max_concurrent;
    c.max_queue = max_queue;
    auto p = OpenAiProvider::create(c);
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    return p.is_ok() ? *p : nullptr;
  }

  FakeUpstream fake_;
};

TEST_F(OpenAiProviderTest, RelaysDeltasAndAssemblesTheCompletion) {
  ::setenv("LLMPOOL_FAKE_KEY", "sk-fake", 1);
  auto c = remote_config("openai", fake_.url("/ok/v1"));
  c.api_key_env = "LLMPOOL_FAKE_KEY";
  auto p = OpenAiProvider::create(c);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  Collector col;
  GenerateRequest req = chat_request("hi", 16);
  req.sampling.stop = {"\n"};
  (*p)->generate(req, nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices.size(), 1u);
  EXPECT_EQ(r->choices[0].text, "Hello");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(col.text(), "Hello");
  auto deltas = col.deltas();
  ASSERT_EQ(deltas.size(), 3u);
  EXPECT_FALSE(deltas[1].finish_reason.has_value());
  EXPECT_EQ(deltas.back().finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->usage.prompt_tokens, 5);
  EXPECT_EQ(r->usage.completion_tokens, 2);
  EXPECT_EQ(col.done_calls(), 1);

  json body = fake_.last_body();
  EXPECT_EQ(body["model"], "upstream-name");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["max_tokens"], 16);
  EXPECT_EQ(body["temperature"], 0.0);
  EXPECT_EQ(body["stop"], json::array({"\n"}));
  EXPECT_EQ(body["messages"][0]["content"], "hi");
  EXPECT_EQ(fake_.last_header("authorization"), "Bearer sk-fake");

  auto s = (*p)->stats();
  EXPECT_EQ(s.requests_done, 1);
  EXPECT_EQ(s.generated_tokens, 2);
  EXPECT_EQ(s.active_sequences, 0);
}

TEST_F(OpenAiProviderTest, SendsPromptsToCompletions) {
  auto p = make("/ok");
  Collector col;
  GenerateRequest req;
  req.prompt = "Once";
  p->generate(req, nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "upon a");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(fake_.last_body()["prompt"], "Once");
}

TEST_F(OpenAiProviderTest, MapsUpstreamErrorsWithTheirMessages) {
  const std::map<int, StatusCode> expected = {
      {400, StatusCode::kInvalidArgument},   {401, StatusCode::kUnauthenticated},
      {403, StatusCode::kPermissionDenied},  {404, StatusCode::kNotFound},
      {429, StatusCode::kResourceExhausted}, {500, StatusCode::kUnavailable},
      {503, StatusCode::kUnavailable}};
  for (const auto& [code, status] : expected) {
    auto p = make("/e" + std::to_string(code));
    Collector col;
    p->generate(chat_request("hi"), nullptr, col.callbacks());
    auto r = col.wait();
    ASSERT_FALSE(r.is_ok()) << code;
    EXPECT_EQ(r.status().code(), status) << code << ": " << r.status().to_string();
    EXPECT_NE(r.status().message().find("upstream says " + std::to_string(code)), std::string::npos)
        << r.status().message();
    if (code == 400) {
      EXPECT_EQ(r.status().param(), "temperature");
      EXPECT_EQ(r.status().error_code(), "bad_value");
    }
  }
}

TEST_F(OpenAiProviderTest, StreamEndingWithoutDoneIsUnavailable) {
  auto p = make("/cut");
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("upstream stream ended early"), std::string::npos) << r.status().message();
  EXPECT_EQ(col.text(), "ab");  // what came before the cut was relayed
}

TEST_F(OpenAiProviderTest, ConnectionDroppedInTheMiddleOfAChunkIsUnavailable) {
  // Chunked encoding announces 0x40 bytes, sends fewer, and hangs up.
  RawServer raw(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "39\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n\r\n"
      "40\r\ndata: {\"choices\":[{\"ind");
  auto c = remote_config("openai", raw.url("/v1"));
  auto p = OpenAiProvider::create(c);
  ASSERT_TRUE(p.is_ok());
  Collector col;
  (*p)->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait(10s);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_NE(r.status().message().find("upstream stream ended early"), std::string::npos) << r.status().message();
  EXPECT_EQ(col.text(), "x");
}

TEST_F(OpenAiProviderTest, SilentUpstreamTimesOut) {
  auto p = make("/slow", 300);
  Collector col;
  auto start = Clock::now();
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait(10s);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().to_string();
  // Clients see the model's name, not the upstream's address.
  EXPECT_NE(r.status().message().find("upstream for model 'remote'"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("127.0.0.1"), std::string::npos) << r.status().message();
  EXPECT_LT(seconds_since(start), 5.0);
}

TEST_F(OpenAiProviderTest, StalledStreamTimesOut) {
  auto p = make("/stall", 300);
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait(10s);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().to_string();
  EXPECT_NE(r.status().message().find("stalled"), std::string::npos) << r.status().message();
  EXPECT_EQ(col.text(), "first");
}

TEST_F(OpenAiProviderTest, NothingListeningIsUnavailable) {
  auto url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/v1";
  auto p = OpenAiProvider::create(remote_config("openai", url));
  ASSERT_TRUE(p.is_ok());
  Collector col;
  (*p)->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait(10s);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("upstream for model 'remote'"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find("127.0.0.1"), std::string::npos) << r.status().message();
}

TEST_F(OpenAiProviderTest, ErrorInsideTheStreamEndsIt) {
  auto p = make("/inerror");
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("the model crashed"), std::string::npos);
}

TEST_F(OpenAiProviderTest, AcceptsAnUpstreamThatDoesNotStream) {
  auto p = make("/json");
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "whole");
  EXPECT_EQ(col.text(), "whole");
  EXPECT_EQ(r->usage.prompt_tokens, 4);
}

// A caller that takes no deltas (a client that does not stream) gets the
// upstream's whole answer: no SSE to write and parse per token.
TEST_F(OpenAiProviderTest, AsksForAWholeAnswerWhenTheCallerTakesNoDeltas) {
  auto p = make("/asked");
  Collector col;
  p->generate(chat_request("hi", 8), nullptr, col.callbacks_without_deltas());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "whole");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(r->usage.prompt_tokens, 4);
  EXPECT_EQ(r->usage.completion_tokens, 1);
  json body = fake_.last_body();
  EXPECT_FALSE(body.contains("stream"));
  EXPECT_FALSE(body.contains("stream_options"));
  EXPECT_EQ(body["max_tokens"], 8);

  Collector streamed;  // the same model streams for a caller that takes deltas
  p->generate(chat_request("hi", 8), nullptr, streamed.callbacks());
  auto s = streamed.wait();
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  EXPECT_EQ(streamed.text(), "streamed");
  EXPECT_EQ(fake_.last_body()["stream"], true);
}

TEST_F(OpenAiProviderTest, CancelMidStreamEndsPromptly) {
  auto p = make("/stall");
  Collector col;
  auto cancel = std::make_shared<CancelToken>();
  p->generate(chat_request("hi"), cancel, col.callbacks());
  ASSERT_TRUE(col.wait_for_deltas(1));
  auto start = Clock::now();
  cancel->cancel();
  auto r = col.wait(10s);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_LT(seconds_since(start), 2.0);
  ASSERT_EQ(r->choices.size(), 1u);
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(r->choices[0].text, "first");
  EXPECT_TRUE(fake_.wait_client_gone(1));  // the upstream saw the connection go
  EXPECT_EQ(p->stats().active_sequences, 0);
}

TEST_F(OpenAiProviderTest, BoundsRequestsInFlight) {
  auto p = make("/slow", 10000, /*max_concurrent=*/1, /*max_queue=*/1);
  Collector first, second, third;
  p->generate(chat_request("1"), nullptr, first.callbacks());
  ASSERT_TRUE(fake_.wait_holding(1));
  p->generate(chat_request("2"), nullptr, second.callbacks());
  auto s = p->stats();
  EXPECT_EQ(s.active_sequences, 1);
  EXPECT_EQ(s.queued, 1);
  EXPECT_EQ(s.parallel, 1);
  p->generate(chat_request("3"), nullptr, third.callbacks());
  auto r3 = third.wait(1s);
  ASSERT_FALSE(r3.is_ok());
  EXPECT_EQ(r3.status().code(), StatusCode::kResourceExhausted) << r3.status().to_string();
  EXPECT_FALSE(second.done());
  fake_.release();
  auto r1 = first.wait();
  auto r2 = second.wait();
  ASSERT_TRUE(r1.is_ok()) << r1.status().to_string();
  ASSERT_TRUE(r2.is_ok()) << r2.status().to_string();
  EXPECT_EQ(r2->choices[0].text, "done");
  s = p->stats();
  EXPECT_EQ(s.queued, 0);
  EXPECT_EQ(s.active_sequences, 0);
  EXPECT_EQ(s.requests_done, 2);
}

TEST_F(OpenAiProviderTest, CancelledWaitingRequestEndsPromptly) {
  auto p = make("/slow", 10000, 1, 4);
  Collector first, second;
  p->generate(chat_request("1"), nullptr, first.callbacks());
  ASSERT_TRUE(fake_.wait_holding(1));
  auto cancel = std::make_shared<CancelToken>();
  p->generate(chat_request("2"), cancel, second.callbacks());
  EXPECT_EQ(p->stats().queued, 1);
  cancel->cancel();
  auto r = second.wait(2s);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(p->stats().queued, 0);
  EXPECT_FALSE(first.done());
  fake_.release();
  EXPECT_TRUE(first.wait().is_ok());
}

TEST_F(OpenAiProviderTest, DestroyingTheProviderEndsEverything) {
  Collector running, waiting;
  {
    auto p = make("/slow", 10000, 1, 4);
    p->generate(chat_request("1"), nullptr, running.callbacks());
    ASSERT_TRUE(fake_.wait_holding(1));
    p->generate(chat_request("2"), nullptr, waiting.callbacks());
  }
  auto r1 = running.wait(1s);
  auto r2 = waiting.wait(1s);
  EXPECT_EQ(r1.status().code(), StatusCode::kUnavailable) << r1.status().to_string();
  EXPECT_EQ(r2.status().code(), StatusCode::kUnavailable) << r2.status().to_string();
  EXPECT_EQ(running.done_calls(), 1);
  EXPECT_EQ(waiting.done_calls(), 1);
}

TEST_F(OpenAiProviderTest, ForwardsToolsAndRelaysStreamedToolCalls) {
  auto p = make("/tools");
  Collector col;
  GenerateRequest req = chat_request("weather?");
  ToolSpec tool;
  tool.name = "get_weather";
  tool.parameters = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  req.tools = {tool};
  req.tool_choice = "required";  // what a client's named function becomes
  ChatMessage earlier;
  earlier.role = "assistant";
  earlier.tool_calls = {{"call_0", "get_weather", R"({"city":"Rome"})"}};
  ChatMessage result;
  result.role = "tool";
  result.tool_call_id = "call_0";
  result.content = "rain";
  req.messages.push_back(earlier);
  req.messages.push_back(result);
  p->generate(req, nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r->choices[0].tool_calls[0].id, "call_a");
  EXPECT_EQ(r->choices[0].tool_calls[0].name, "get_weather");
  EXPECT_EQ(r->choices[0].tool_calls[0].arguments, R"({"city":"Paris"})");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kToolCalls);
  auto deltas = col.deltas();
  ASSERT_EQ(deltas.size(), 4u);
  EXPECT_EQ(deltas[0].tool_calls[0].name, "get_weather");
  EXPECT_EQ(deltas[2].tool_calls[0].arguments, "\"Paris\"}");

  json body = fake_.last_body();
  EXPECT_EQ(body["tools"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(body["tools"][0]["function"]["parameters"]["type"], "object");
  EXPECT_EQ(body["tool_choice"]["function"]["name"], "get_weather");
  EXPECT_EQ(body["messages"][1]["tool_calls"][0]["id"], "call_0");
  EXPECT_EQ(body["messages"][1]["tool_calls"][0]["function"]["arguments"], R"({"city":"Rome"})");
  EXPECT_EQ(body["messages"][2]["role"], "tool");
  EXPECT_EQ(body["messages"][2]["tool_call_id"], "call_0");
}

TEST_F(OpenAiProviderTest, ReadsToolCallsOfAnUpstreamThatDoesNotStream) {
  auto p = make("/toolsjson");
  Collector col;
  p->generate(chat_request("time?"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r->choices[0].tool_calls[0].id, "c9");
  EXPECT_EQ(r->choices[0].tool_calls[0].name, "get_time");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kToolCalls);
}

TEST_F(OpenAiProviderTest, HostileStreamsFailThatRequestCleanly) {
  const std::map<std::string, std::string> expected = {{"/deep", "nested deeper than"},
                                                       {"/deepwhole", "nested deeper than"},
                                                       {"/endless", "larger than"},
                                                       {"/manylines", "larger than"}};
  for (const auto& [prefix, why] : expected) {
    auto p = make(prefix);
    Collector col;
    p->generate(chat_request("hi"), nullptr, col.callbacks());
    auto r = col.wait();
    ASSERT_FALSE(r.is_ok()) << prefix;
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << prefix << ": " << r.status().to_string();
    EXPECT_NE(r.status().message().find(why), std::string::npos) << prefix << ": " << r.status().message();
    EXPECT_NE(r.status().message().find("upstream for model 'remote'"), std::string::npos) << r.status().message();
    EXPECT_LT(r.status().message().size(), 600u) << prefix;
    EXPECT_EQ(col.done_calls(), 1);
    EXPECT_EQ(p->stats().active_sequences, 0);
  }
  // A deep error answer still maps by its status, its message cut short.
  auto p = make("/deeperror");
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_LT(r.status().message().size(), 700u);
  // The upstream server and the next request are unharmed.
  auto ok = make("/ok");
  Collector col2;
  ok->generate(chat_request("hi"), nullptr, col2.callbacks());
  auto r2 = col2.wait();
  ASSERT_TRUE(r2.is_ok()) << r2.status().to_string();
  EXPECT_EQ(r2->choices[0].text, "Hello");
}

// ---------------------------------------------------------------------------
// OllamaProvider

class OllamaProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_.post("/api/chat", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      w->start_stream(200, "application/x-ndjson");
      w->write(R"({"model":"m","message":{"role":"assistant","content":"Hel"},"done":false})" "\n");
      w->write(R"({"model":"m","message":{"role":"assistant","content":"lo"},"done":false})" "\n");
      w->write(R"({"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"length",)"
               R"("total_duration":123,"prompt_eval_count":7,"eval_count":3})" "\n");
      w->end();
    });
    fake_.post("/api/generate", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      w->start_stream(200, "application/x-ndjson");
      w->write(R"({"response":"a","done":false})" "\n" R"({"response":"b","done":false})" "\n");
      w->write(R"({"response":"","done":true,"done_reason":"stop","eval_count":2})" "\n");
      w->end();
    });
    fake_.post("/whole/api/chat", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      api::HttpResponse r;
      r.body = R"({"message":{"role":"assistant","content":"all at once"},"done":true,"done_reason":"stop",)"
               R"("prompt_eval_count":6,"eval_count":3})";
      w->respond(r);
    });
    fake_.post("/missing/api/chat", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->respond(api::HttpResponse{404, "application/json", R"({"error":"model \"nope\" not found, try pulling it first"})", {}});
    });
    fake_.post("/tools/api/chat", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      w->start_stream(200, "application/x-ndjson");
      w->write(R"({"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather",)"
               R"("arguments":{"city":"Paris"}}}]},"done":false})" "\n");
      w->write(R"({"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"})" "\n");
      w->end();
    });
    fake_.post("/deep/api/chat", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "application/x-ndjson");
      w->write(std::string(100000, '[') + std::string(100000, ']') + "\n");
      w->end();
    });
    fake_.post("/endless/api/chat", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "application/x-ndjson");
      fake_.spawn([w] {
        const std::string piece(64 * 1024, ' ');
        for (int i = 0; i < 64 && !w->cancel_token()->cancelled(); ++i) w->write(piece);
        w->end();
      });
    });
    fake_.post("/cut/api/chat", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "application/x-ndjson");
      w->write(R"({"message":{"content":"x"},"done":false})" "\n");
      w->end();
    });
    fake_.start();
  }

  ProviderPtr make(const std::string& prefix) {
    auto p = OllamaProvider::create(remote_config("ollama", fake_.url(prefix)));
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    return p.is_ok() ? *p : nullptr;
  }

  FakeUpstream fake_;
};

TEST_F(OllamaProviderTest, ChatStreamsDeltasAndFinalCounts) {
  auto p = make("");
  Collector col;
  GenerateRequest req = chat_request("hi", 3);
  req.sampling.seed = 5;
  p->generate(req, nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "Hello");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(r->usage.prompt_tokens, 7);
  EXPECT_EQ(r->usage.completion_tokens, 3);
  auto deltas = col.deltas();
  ASSERT_EQ(deltas.size(), 3u);
  EXPECT_EQ(deltas[0].text, "Hel");
  EXPECT_EQ(deltas[2].finish_reason, FinishReason::kLength);

  json body = fake_.last_body();
  EXPECT_EQ(body["model"], "upstream-name");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["options"]["num_predict"], 3);
  EXPECT_EQ(body["options"]["seed"], 5);
  EXPECT_EQ(body["options"]["temperature"], 0.0);
  EXPECT_EQ(body["messages"][0]["content"], "hi");
}

TEST_F(OllamaProviderTest, AsksForAWholeAnswerWhenTheCallerTakesNoDeltas) {
  auto p = make("/whole");
  Collector col;
  p->generate(chat_request("hi", 3), nullptr, col.callbacks_without_deltas());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "all at once");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->usage.prompt_tokens, 6);
  EXPECT_EQ(r->usage.completion_tokens, 3);
  EXPECT_EQ(fake_.last_body()["stream"], false);
}

TEST_F(OllamaProviderTest, GenerateForPrompts) {
  auto p = make("");
  Collector col;
  GenerateRequest req;
  req.prompt = "x";
  p->generate(req, nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "ab");
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->usage.completion_tokens, 2);
  EXPECT_EQ(fake_.last_body()["raw"], true);
}

TEST_F(OllamaProviderTest, UnknownModelIsNotFound) {
  auto p = make("/missing");
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("not found, try pulling it first"), std::string::npos);
}

TEST_F(OllamaProviderTest, StreamWithoutDoneIsUnavailable) {
  auto p = make("/cut");
  Collector col;
  p->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("upstream stream ended early"), std::string::npos);
  EXPECT_EQ(col.text(), "x");
}

TEST_F(OllamaProviderTest, ForwardsToolsAndReadsToolCalls) {
  auto p = make("/tools");
  Collector col;
  GenerateRequest req = chat_request("weather?");
  ToolSpec tool;
  tool.name = "get_weather";
  tool.parameters = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  req.tools = {tool};
  p->generate(req, nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices[0].tool_calls.size(), 1u);
  EXPECT_EQ(r->choices[0].tool_calls[0].name, "get_weather");
  EXPECT_EQ(json::parse(r->choices[0].tool_calls[0].arguments), json::parse(R"({"city":"Paris"})"));
  EXPECT_FALSE(r->choices[0].tool_calls[0].id.empty());
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kToolCalls);
  ASSERT_FALSE(col.deltas().empty());
  EXPECT_EQ(col.deltas()[0].tool_calls.size(), 1u);
  EXPECT_EQ(fake_.last_body()["tools"][0]["function"]["name"], "get_weather");
}

TEST_F(OllamaProviderTest, HostileLinesFailThatRequestCleanly) {
  for (const auto& [prefix, why] : std::map<std::string, std::string>{{"/deep", "nested deeper than"},
                                                                       {"/endless", "larger than"}}) {
    auto p = make(prefix);
    Collector col;
    p->generate(chat_request("hi"), nullptr, col.callbacks());
    auto r = col.wait();
    ASSERT_FALSE(r.is_ok()) << prefix;
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
    EXPECT_NE(r.status().message().find(why), std::string::npos) << prefix << ": " << r.status().message();
  }
}

TEST_F(OllamaProviderTest, SeveralChoicesAreUnimplemented) {
  auto p = make("");
  Collector col;
  GenerateRequest req = chat_request("hi");
  req.n = 2;
  p->generate(req, nullptr, col.callbacks());
  auto r = col.wait(1s);
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(r.status().param(), "n");
}

}  // namespace
}  // namespace llmpool::providers
