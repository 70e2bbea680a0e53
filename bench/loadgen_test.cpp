// Unit tests of the load generator's parts: URL and response parsing, the
// chunked and SSE decoders (fed in every possible split), the workload, the
// reading of answers and the statistics, and one exchange with a loopback
// server on port 0.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>

#include "http_client.h"
#include "workload.h"

namespace llmpool::bench {
namespace {

TEST(ParseUrlTest, SplitsHostPortAndPath) {
  std::string error;
  auto url = parse_url("http://127.0.0.1:8080/v1/", &error);
  ASSERT_TRUE(url) << error;
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, "8080");
  EXPECT_EQ(url->path, "/v1");

  url = parse_url("http://localhost", &error);
  ASSERT_TRUE(url) << error;
  EXPECT_EQ(url->port, "80");
  EXPECT_EQ(url->path, "");

  url = parse_url("http://[::1]:9000", &error);
  ASSERT_TRUE(url) << error;
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, "9000");
}

TEST(ParseUrlTest, RejectsOtherSchemesAndBadPorts) {
  std::string error;
  EXPECT_FALSE(parse_url("https://example.com", &error));
  EXPECT_FALSE(parse_url("http://h:99999", &error));
  EXPECT_FALSE(parse_url("http://h:8x", &error));
  EXPECT_FALSE(parse_url("http://:80", &error));
}

TEST(ResponseHeadTest, ParsesStatusAndLowerCasesNames) {
  auto head = parse_response_head("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding:  chunked ");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-type"), "text/event-stream");
  EXPECT_EQ(head->header("transfer-encoding"), "chunked");
  EXPECT_EQ(head->header("missing"), "");
  EXPECT_FALSE(parse_response_head("SMTP ready"));
  EXPECT_FALSE(parse_response_head("HTTP/1.1 2x0 OK"));
}

const std::string kChunked = "7\r\nhello, \r\n6;ext=1\r\nworld!\r\n0\r\nTrailer: x\r\n\r\n";

TEST(ChunkedDecoderTest, DecodesWhateverTheSplit) {
  for (size_t split = 0; split <= kChunked.size(); ++split) {
    ChunkedDecoder d;
    std::string out;
    ASSERT_TRUE(d.feed(std::string_view(kChunked).substr(0, split), &out));
    ASSERT_TRUE(d.feed(std::string_view(kChunked).substr(split), &out));
    EXPECT_EQ(out, "hello, world!") << "split at " << split;
    EXPECT_TRUE(d.done());
  }
  ChunkedDecoder byte_by_byte;
  std::string out;
  for (char c : kChunked) ASSERT_TRUE(byte_by_byte.feed(std::string_view(&c, 1), &out));
  EXPECT_EQ(out, "hello, world!");
  EXPECT_TRUE(byte_by_byte.done());
}

TEST(ChunkedDecoderTest, RejectsBadSizeAndMissingCrlf) {
  ChunkedDecoder bad_size;
  std::string out;
  EXPECT_FALSE(bad_size.feed("zz\r\nabc", &out));
  EXPECT_FALSE(bad_size.error().empty());
  ChunkedDecoder no_crlf;
  EXPECT_FALSE(no_crlf.feed("3\r\nabcXY", &out));
}

TEST(SseParserTest, SplitsEventsWhateverTheSplit) {
  const std::string stream =
      ": comment\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata:line2\n\ndata: [DONE]\n\n";
  for (size_t split = 0; split <= stream.size(); ++split) {
    SseParser p;
    std::vector<std::string> got;
    auto on = [&](const std::string& d) { got.push_back(d); };
    p.feed(std::string_view(stream).substr(0, split), on);
    p.feed(std::string_view(stream).substr(split), on);
    ASSERT_EQ(got.size(), 3u) << "split at " << split;
    EXPECT_EQ(got[0], "{\"a\":1}");
    EXPECT_EQ(got[1], "line1\nline2");
    EXPECT_EQ(got[2], "[DONE]");
  }
}

TEST(ParseMixTest, ReadsClassesAndRejectsNonsense) {
  std::string error;
  auto mix = parse_mix("long:1500:0.25, short:64:0.75:16", &error);
  ASSERT_TRUE(mix) << error;
  ASSERT_EQ(mix->size(), 2u);
  EXPECT_EQ((*mix)[0].name, "long");
  EXPECT_EQ((*mix)[0].prompt_tokens, 1500);
  EXPECT_DOUBLE_EQ((*mix)[0].share, 0.25);
  EXPECT_EQ((*mix)[0].max_tokens, 0);
  EXPECT_EQ((*mix)[1].name, "short");
  EXPECT_EQ((*mix)[1].max_tokens, 16);
  EXPECT_FALSE(parse_mix("long:1500", &error));
  EXPECT_FALSE(parse_mix("long:x:1", &error));
  EXPECT_FALSE(parse_mix("long:10:0", &error));
  EXPECT_FALSE(parse_mix("a:10:1,a:20:1", &error));
  EXPECT_FALSE(parse_mix("", &error));
}

TEST(AssignClassesTest, FollowsSharesExactlyAndInterleaves) {
  std::vector<LoadClass> classes = {{"long", 1500, 0.25, 0}, {"short", 64, 0.75, 0}};
  std::vector<int> a = assign_classes(classes, 8, 42);
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(std::count(a.begin(), a.end(), 0), 2);
  EXPECT_EQ(std::count(a.begin(), a.end(), 1), 6);
  EXPECT_EQ(a, assign_classes(classes, 8, 42));
  std::vector<int> b = assign_classes(classes, 10, 42);
  EXPECT_EQ(std::count(b.begin(), b.end(), 0) + std::count(b.begin(), b.end(), 1), 10);
  EXPECT_TRUE(assign_classes(classes, 0, 1).empty());
}

TEST(MakePromptTest, IsDeterministicDistinctAndSized) {
  std::string a = make_prompt(100, 0.75, 7, "Request 1", false);
  EXPECT_EQ(a, make_prompt(100, 0.75, 7, "Request 1", false));
  EXPECT_EQ(a.rfind("Request 1. ", 0), 0u);
  std::string b = make_prompt(100, 0.75, 7, "Request 2", false);
  EXPECT_NE(a.substr(11, 40), b.substr(11, 40));
  size_t words = std::count(a.begin(), a.end(), ' ') + 1;
  EXPECT_EQ(words, 75u + 2u);  // the tag is two words
  EXPECT_EQ(a.back(), '.');
}

TEST(MakePromptTest, SharedPrefixPutsTheTagLast) {
  std::string a = make_prompt(50, 0.75, 7, "Request 1", true);
  std::string b = make_prompt(50, 0.75, 7, "Request 2", true);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a.substr(0, a.size() - 3), b.substr(0, b.size() - 3));
  EXPECT_NE(a, b);
}

TEST(MakeRequestBodyTest, AsksForGreedyStreamWithUsageAndIgnoreEos) {
  auto chat = nlohmann::json::parse(make_request_body(Endpoint::kChat, "m", "hi", 32, 5, true));
  EXPECT_EQ(chat["model"], "m");
  EXPECT_EQ(chat["max_tokens"], 32);
  EXPECT_EQ(chat["temperature"], 0);
  EXPECT_EQ(chat["ignore_eos"], true);
  EXPECT_EQ(chat["stream"], true);
  EXPECT_EQ(chat["stream_options"]["include_usage"], true);
  ASSERT_EQ(chat["messages"].size(), 1u);
  EXPECT_EQ(chat["messages"][0]["role"], "user");
  EXPECT_EQ(chat["messages"][0]["content"], "hi");
  auto with_system = nlohmann::json::parse(make_request_body(Endpoint::kChat, "m", "hi", 32, 5, true, "Be brief."));
  ASSERT_EQ(with_system["messages"].size(), 2u);
  EXPECT_EQ(with_system["messages"][0]["role"], "system");
  EXPECT_EQ(with_system["messages"][0]["content"], "Be brief.");
  EXPECT_EQ(with_system["messages"][1]["content"], "hi");
  auto plain = nlohmann::json::parse(make_request_body(Endpoint::kCompletions, "m", "hi", 32, 5, false));
  EXPECT_EQ(plain["prompt"], "hi");
  EXPECT_EQ(plain["stream"], false);
  EXPECT_FALSE(plain.contains("stream_options"));
  EXPECT_FALSE(plain.contains("messages"));
}

TEST(MakeRequestBodyTest, SampledBodiesCarryTemperatureAndTopP) {
  auto sampled = nlohmann::json::parse(make_request_body(Endpoint::kChat, "m", "hi", 8, 5, true, "", {0.8, 0.95}));
  EXPECT_DOUBLE_EQ(sampled["temperature"].get<double>(), 0.8);
  EXPECT_DOUBLE_EQ(sampled["top_p"].get<double>(), 0.95);
  auto greedy = nlohmann::json::parse(make_request_body(Endpoint::kChat, "m", "hi", 8, 5, true));
  EXPECT_FALSE(greedy.contains("top_p"));
}

TEST(MakeChatBodyTest, SendsTheWholeHistory) {
  nlohmann::json history = nlohmann::json::array({{{"role", "system"}, {"content", "S"}},
                                                  {{"role", "user"}, {"content", "one"}},
                                                  {{"role", "assistant"}, {"content", "answer"}},
                                                  {{"role", "user"}, {"content", "two"}}});
  auto body = nlohmann::json::parse(make_chat_body("m", history, 16, 3, true));
  EXPECT_EQ(body["messages"], history);
  EXPECT_EQ(body["max_tokens"], 16);
  EXPECT_EQ(body["ignore_eos"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
}

ResponseHead head(int status, const std::string& type) {
  ResponseHead h;
  h.status = status;
  h.headers["content-type"] = type;
  return h;
}

std::string chunk(const std::string& content) {
  return "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":" +
         nlohmann::json(content).dump() + "}}]}\n\n";
}

TEST(ResponseReaderTest, TimestampsEachDeltaAndReadsUsage) {
  const auto t0 = Clock::now();
  auto at = [&](int ms) { return t0 + std::chrono::milliseconds(ms); };
  ResponseReader r(Endpoint::kChat, t0, 0, 3);
  r.on_head(head(200, "text/event-stream; charset=utf-8"));
  EXPECT_TRUE(r.on_body(chunk("") + chunk("a"), at(100)));  // an empty delta is not a token
  EXPECT_TRUE(r.on_body(chunk("b"), at(150)));
  EXPECT_TRUE(r.on_body(chunk("c"), at(210)));
  EXPECT_FALSE(r.on_body(
      "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
      "\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
      at(220)));
  RequestOutcome o = r.finish("", at(221));
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_TRUE(o.streamed);
  EXPECT_NEAR(o.ttft_s, 0.100, 1e-9);
  ASSERT_EQ(o.delta_times.size(), 3u);
  EXPECT_NEAR(o.delta_times[2], 0.210, 1e-9);
  EXPECT_EQ(o.prompt_tokens, 12);
  EXPECT_EQ(o.completion_tokens, 3);
  EXPECT_EQ(o.cached_tokens, -1);
  EXPECT_EQ(o.text, "abc");
  EXPECT_TRUE(o.notes.empty());
}

TEST(ResponseReaderTest, ReadsCachedPromptTokens) {
  const auto t0 = Clock::now();
  ResponseReader r(Endpoint::kChat, t0, 0, 1);
  r.on_head(head(200, "text/event-stream"));
  EXPECT_FALSE(r.on_body(chunk("a") +
                             "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":1,"
                             "\"prompt_tokens_details\":{\"cached_tokens\":39}}}\n\ndata: [DONE]\n\n",
                         t0));
  RequestOutcome o = r.finish("", t0);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.cached_tokens, 39);
  PhaseStats s = aggregate({o}, 1.0);
  EXPECT_DOUBLE_EQ(s.cached_tokens_mean, 39);
}

TEST(ResponseReaderTest, CountsAJsonAnswerAsOneDeltaAtTheEnd) {
  const auto t0 = Clock::now();
  ResponseReader r(Endpoint::kChat, t0, 1, 16);
  r.on_head(head(200, "application/json"));
  r.on_body(R"({"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"x y"}}],)",
            t0);
  r.on_body(R"("usage":{"prompt_tokens":20,"completion_tokens":16,"total_tokens":36}})", t0);
  RequestOutcome o = r.finish("", t0 + std::chrono::seconds(2));
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_FALSE(o.streamed);
  EXPECT_NEAR(o.ttft_s, 2.0, 1e-9);
  EXPECT_EQ(o.output_tokens(), 16);
  EXPECT_EQ(o.cls, 1);
  EXPECT_EQ(o.notes, std::vector<std::string>{"answer not streamed"});
}

TEST(ResponseReaderTest, FailsWithTheServersErrorMessage) {
  const auto t0 = Clock::now();
  ResponseReader r(Endpoint::kChat, t0, 0, 16);
  r.on_head(head(501, "application/json"));
  r.on_body(R"({"error":{"message":"stream is not supported yet","type":"not_supported_error"}})", t0);
  RequestOutcome o = r.finish("", t0);
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.error, "HTTP 501: stream is not supported yet");
}

TEST(ResponseReaderTest, FailsOnAnErrorEventAndNotesAMissingDone) {
  const auto t0 = Clock::now();
  ResponseReader bad(Endpoint::kChat, t0, 0, 16);
  bad.on_head(head(200, "text/event-stream"));
  bad.on_body(chunk("a") + "data: {\"error\":{\"message\":\"context full\"}}\n\n", t0);
  RequestOutcome o = bad.finish("", t0);
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.error, "error event in stream: context full");

  ResponseReader cut(Endpoint::kChat, t0, 0, 1);
  cut.on_head(head(200, "text/event-stream"));
  cut.on_body(chunk("a"), t0);
  o = cut.finish("", t0);
  EXPECT_TRUE(o.ok);
  EXPECT_EQ(o.output_tokens(), 1);
  EXPECT_EQ(o.notes, (std::vector<std::string>{"stream ended without [DONE]", "no usage in answer"}));
}

TEST(ResponseReaderTest, ReadsCompletionsText) {
  const auto t0 = Clock::now();
  ResponseReader r(Endpoint::kCompletions, t0, 0, 1);
  r.on_head(head(200, "text/event-stream"));
  r.on_body("data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"hi\"}]}\n\ndata: [DONE]\n\n", t0);
  RequestOutcome o = r.finish("", t0);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.delta_times.size(), 1u);
}

TEST(StatsTest, PercentilesInterpolate) {
  Summary s = summarize({4, 1, 3, 2});
  EXPECT_EQ(s.n, 4u);
  EXPECT_DOUBLE_EQ(s.p50, 2.5);
  EXPECT_DOUBLE_EQ(s.p99, 3.97);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.max, 4);
  EXPECT_EQ(summarize({}).n, 0u);
}

TEST(StatsTest, AggregatesOkRequestsAndCountsFailures) {
  RequestOutcome a;
  a.ok = true;
  a.ttft_s = 0.1;
  a.e2e_s = 0.4;
  a.delta_times = {0.1, 0.2, 0.4};
  a.completion_tokens = 3;
  a.prompt_tokens = 10;
  a.max_tokens = 4;
  RequestOutcome b;
  b.ok = false;
  b.error = "boom";
  PhaseStats s = aggregate({a, b}, 2.0);
  EXPECT_EQ(s.ok, 1);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.errors["boom"], 1);
  EXPECT_EQ(s.output_tokens, 3);
  EXPECT_DOUBLE_EQ(s.output_tok_s, 1.5);
  EXPECT_EQ(s.short_outputs, 1);
  EXPECT_EQ(s.itl_ms.n, 2u);
  EXPECT_NEAR(s.itl_ms.max, 200, 1e-9);
  EXPECT_NEAR(s.decode_tok_s.p50, 2 / 0.3, 1e-9);
  EXPECT_DOUBLE_EQ(s.prompt_tokens_mean, 10);
}

// A one-shot loopback server: accepts one connection, reads the request head
// and body, writes `pieces` 20 ms apart, waits `hold_ms`, closes.
class OneShotServer {
 public:
  explicit OneShotServer(std::vector<std::string> pieces, int hold_ms = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, hold_ms, pieces = std::move(pieces)] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      while (request_.find("\r\n\r\n") == std::string::npos || !body_complete()) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        request_.append(buf, static_cast<size_t>(n));
      }
      for (const std::string& p : pieces) {
        ::send(c, p.data(), p.size(), MSG_NOSIGNAL);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
      ::close(c);
    });
  }
  ~OneShotServer() {
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  const std::string& request() const { return request_; }

 private:
  bool body_complete() const {
    size_t end = request_.find("\r\n\r\n");
    size_t cl = request_.find("Content-Length: ");
    if (cl == std::string::npos) return true;
    return request_.size() - (end + 4) >= std::stoul(request_.substr(cl + 16));
  }
  int fd_ = -1;
  int port_ = 0;
  std::string request_;
  std::thread thread_;
};

TEST(HeaderCountsTest, CountsValuesPerWindowByStartTime) {
  auto outcome = [](double start_s, bool ok, std::string header) {
    RequestOutcome r;
    r.start_s = start_s;
    r.ok = ok;
    r.header = std::move(header);
    return r;
  };
  std::vector<RequestOutcome> outcomes = {outcome(0.1, true, "a"), outcome(4.9, true, "b"),
                                          outcome(5.0, true, "a"), outcome(12.0, false, "b"),
                                          outcome(13.0, true, "")};
  HeaderCounts c = count_header(outcomes, "x-llmpool-model", 5.0);
  ASSERT_EQ(c.windows.size(), 3u);
  EXPECT_EQ(c.windows[0].counts, (std::map<std::string, int>{{"a", 1}, {"b", 1}}));
  EXPECT_EQ(c.windows[1].counts, (std::map<std::string, int>{{"a", 1}}));
  EXPECT_EQ(c.windows[2].counts, (std::map<std::string, int>{{"(failed)", 1}, {"(none)", 1}}));
  EXPECT_DOUBLE_EQ(c.windows[2].start_s, 10.0);
  EXPECT_DOUBLE_EQ(c.windows[2].end_s, 15.0);
  EXPECT_EQ(c.total, (std::map<std::string, int>{{"a", 2}, {"b", 1}, {"(failed)", 1}, {"(none)", 1}}));
  nlohmann::json j = to_json(c);
  EXPECT_EQ(j["header"], "x-llmpool-model");
  EXPECT_EQ(j["windows"][1]["counts"]["a"], 1);
}

TEST(HttpPostTest, StreamsAChunkedSseAnswerFromALoopbackServer) {
  std::string events = chunk("a") + chunk("b") + "data: [DONE]\n\n";
  auto as_chunk = [](const std::string& s) {
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", s.size());
    return size + s + "\r\n";
  };
  OneShotServer server({
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
      as_chunk(chunk("a")),
      as_chunk(chunk("b")).substr(0, 10),
      as_chunk(chunk("b")).substr(10) + as_chunk("data: [DONE]\n\n") + "0\r\n\r\n",
  });
  std::string error;
  HttpPost post;
  post.url = *parse_url("http://127.0.0.1:" + std::to_string(server.port()), &error);
  post.path = "/v1/chat/completions";
  post.body = R"({"x":1})";
  post.timeout_s = 10;
  const auto t0 = Clock::now();
  ResponseReader reader(Endpoint::kChat, t0, 0, 2);
  HttpHandlers h;
  h.on_head = [&](const ResponseHead& head) { reader.on_head(head); };
  h.on_body = [&](std::string_view b, Clock::time_point at) { return reader.on_body(b, at); };
  EXPECT_EQ(http_post(post, h), "");
  RequestOutcome o = reader.finish("", Clock::now());
  ASSERT_TRUE(o.ok) << o.error;
  ASSERT_EQ(o.delta_times.size(), 2u);
  // The second delta arrived in a later write, about 20 ms after the first.
  EXPECT_GT(o.delta_times[1] - o.delta_times[0], 0.010);
  EXPECT_NE(server.request().find("POST /v1/chat/completions HTTP/1.1\r\n"), std::string::npos);
  EXPECT_NE(server.request().find("\r\n\r\n{\"x\":1}"), std::string::npos);
}

TEST(HttpPostTest, ReadsAContentLengthJsonAnswerAndStopsAtItsEnd) {
  const std::string body =
      R"({"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}],)"
      R"("usage":{"prompt_tokens":5,"completion_tokens":2}})";
  // The server keeps the connection open after the body: the client must
  // stop at Content-Length, not wait for the close.
  OneShotServer server({"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body.substr(0, 30),
                        body.substr(30)},
                       /*hold_ms=*/1500);
  std::string error;
  HttpPost post;
  post.url = *parse_url("http://127.0.0.1:" + std::to_string(server.port()), &error);
  post.path = "/v1/chat/completions";
  post.timeout_s = 10;
  const auto t0 = Clock::now();
  ResponseReader reader(Endpoint::kChat, t0, 0, 2);
  HttpHandlers h;
  h.on_head = [&](const ResponseHead& head) { reader.on_head(head); };
  h.on_body = [&](std::string_view b, Clock::time_point at) { return reader.on_body(b, at); };
  EXPECT_EQ(http_post(post, h), "");
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1000));
  RequestOutcome o = reader.finish("", Clock::now());
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_FALSE(o.streamed);
  EXPECT_EQ(o.output_tokens(), 2);
  EXPECT_EQ(o.prompt_tokens, 5);
}

TEST(HttpPostTest, FailsOnAMalformedContentLength) {
  OneShotServer server({"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n"});
  std::string error;
  HttpPost post;
  post.url = *parse_url("http://127.0.0.1:" + std::to_string(server.port()), &error);
  post.path = "/";
  post.timeout_s = 10;
  EXPECT_NE(http_post(post, {}).find("bad Content-Length"), std::string::npos);
}

TEST(HttpPostTest, ReportsAConnectionRefused) {
  // Bind then close a socket to get a port that nobody listens on.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  std::string error;
  HttpPost post;
  post.url = *parse_url("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), &error);
  post.path = "/";
  post.timeout_s = 5;
  EXPECT_NE(http_post(post, {}).find("connect"), std::string::npos);
}

}  // namespace
}  // namespace llmpool::bench
