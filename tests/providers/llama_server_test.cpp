// OpenAiProvider against a real llama-server (built from the same llama.cpp
// bundle) serving the tiny test model on a free loopback port. The server
// is started for the test and killed (and reaped) after it.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/weight_layouts.h"
#include "providers/http_client.h"
#include "providers/openai_provider.h"
#include "remote_test_util.h"

namespace llmpool::providers {
namespace {

using namespace llmpool::providers::testing;
using nlohmann::json;

const std::string kServer = std::string(LLAMA_CPP_BIN) + "/llama-server";
const std::string kTiny = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";

Result<HttpClientResponse> fetch(HttpClient& client, const std::string& method, const std::string& url,
                                 std::string body = {}) {
  HttpClientRequest r;
  r.method = method;
  r.url = url;
  r.body = std::move(body);
  r.connect_timeout_ms = 1000;
  r.read_timeout_ms = 30000;
  std::promise<Result<HttpClientResponse>> p;
  client.fetch(r, nullptr, [&](Result<HttpClientResponse> res) { p.set_value(std::move(res)); });
  return p.get_future().get();
}

class LlamaServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    port_ = closed_port();
    log_ = ::testing::TempDir() + "llama-server-" + std::to_string(::getpid()) + ".log";
    std::string port = std::to_string(port_);
    std::vector<std::string> args = {kServer, "-m", kTiny, "-t", "1", "-c", "2048", "-np", "2", "--host", "127.0.0.1",
                                     "--port", port};
    // Where llama.cpp's AMX kernels fail, llama-server runs on plain weights too.
    if (!engine::check_weight_layouts().extra_layouts) args.push_back("--no-repack");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(kServer.c_str(), argv.data());
      ::_exit(127);
    }
    if (pid_ < 0) {
      error_ = "fork failed";
      return;
    }
    HttpClient client;
    auto deadline = Clock::now() + 60s;
    while (Clock::now() < deadline) {
      int wstatus = 0;
      if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
        pid_ = -1;
        error_ = "llama-server exited during start-up; log:\n" + log_tail();
        return;
      }
      auto r = fetch(client, "GET", base() + "/health");
      if (r.is_ok() && r->head.status == 200) return;
      std::this_thread::sleep_for(100ms);
    }
    error_ = "llama-server did not become healthy in 60 s; log:\n" + log_tail();
  }

  static void TearDownTestSuite() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    auto deadline = Clock::now() + 5s;
    int wstatus = 0;
    while (::waitpid(pid_, &wstatus, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &wstatus, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid_ = -1;
  }

  void SetUp() override {
    ASSERT_TRUE(error_.empty()) << error_;
    auto c = remote_config("openai", base() + "/v1");
    c.name = "tiny";
    c.upstream_model = "tiny";
    c.read_timeout_ms = 30000;
    auto p = OpenAiProvider::create(c);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    provider_ = *p;
  }

  static std::string base() { return "http://127.0.0.1:" + std::to_string(port_); }

  static std::string log_tail() {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    return s.size() > 3000 ? s.substr(s.size() - 3000) : s;
  }

  // Greedy, exactly `max_tokens` tokens.
  static GenerateRequest greedy(const std::string& text, int32_t max_tokens) {
    GenerateRequest r = chat_request(text, max_tokens);
    r.model = "tiny";
    r.sampling.ignore_eos = true;
    return r;
  }

  Result<Completion> run(const GenerateRequest& req, Collector& col) {
    provider_->generate(req, nullptr, col.callbacks());
    return col.wait(60s);
  }

  static pid_t pid_;
  static uint16_t port_;
  static std::string log_;
  static std::string error_;
  ProviderPtr provider_;
};
pid_t LlamaServerTest::pid_ = -1;
uint16_t LlamaServerTest::port_ = 0;
std::string LlamaServerTest::log_;
std::string LlamaServerTest::error_;

TEST_F(LlamaServerTest, StreamedDeltasMakeTheSameTextAsANonStreamedAnswer) {
  Collector col;
  auto r = run(greedy("Tell me a story", 8), col);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices.size(), 1u);
  EXPECT_FALSE(r->choices[0].text.empty());
  EXPECT_EQ(col.text(), r->choices[0].text);
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(col.deltas().back().finish_reason, FinishReason::kLength);
  EXPECT_EQ(r->usage.completion_tokens, 8);
  EXPECT_GT(r->usage.prompt_tokens, 0);

  // llama-server's own non-streamed answer to the same request.
  HttpClient client;
  auto direct = fetch(client, "POST", base() + "/v1/chat/completions",
                      R"({"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}],)"
                      R"("max_tokens":8,"temperature":0,"ignore_eos":true})");
  ASSERT_TRUE(direct.is_ok()) << direct.status().to_string();
  ASSERT_EQ(direct->head.status, 200) << direct->body;
  json j = json::parse(direct->body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], r->choices[0].text);
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
}

TEST_F(LlamaServerTest, CompletesPrompts) {
  Collector col;
  GenerateRequest req;
  req.model = "tiny";
  req.prompt = "Once upon a time";
  req.sampling.temperature = 0.0f;
  req.sampling.max_tokens = 5;
  req.sampling.ignore_eos = true;
  auto r = run(req, col);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(col.text(), r->choices[0].text);
  EXPECT_EQ(r->usage.completion_tokens, 5);
  EXPECT_GT(r->usage.prompt_tokens, 0);
}

TEST_F(LlamaServerTest, StopsAtAStopString) {
  Collector first;
  auto full = run(greedy("Count with me", 12), first);
  ASSERT_TRUE(full.is_ok()) << full.status().to_string();
  // A piece from the middle of the greedy answer becomes the stop string.
  std::string stop;
  auto deltas = first.deltas();
  for (size_t i = 3; i < deltas.size() && stop.empty(); ++i)
    if (deltas[i].text.size() >= 2) stop = deltas[i].text;
  if (stop.empty()) GTEST_SKIP() << "no usable stop string in '" << full->choices[0].text << "'";
  const std::string& text = full->choices[0].text;

  Collector second;
  GenerateRequest req = greedy("Count with me", 12);
  req.sampling.stop = {stop};
  auto r = run(req, second);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, text.substr(0, text.find(stop))) << "stop '" << stop << "' in '" << text << "'";
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(second.text(), r->choices[0].text);
}

TEST_F(LlamaServerTest, TwoChoicesStreamSeparately) {
  Collector col;
  GenerateRequest req = greedy("Pick a color", 4);
  req.n = 2;
  req.sampling.temperature = 1.0f;
  req.sampling.seed = 3;
  auto r = run(req, col);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(r->choices[i].text.empty()) << i;
    EXPECT_EQ(col.text(i), r->choices[i].text) << i;
    EXPECT_EQ(r->choices[i].finish_reason, FinishReason::kLength) << i;
  }
  EXPECT_EQ(r->usage.completion_tokens, 8);  // llama-server reports each choice's 4
}

TEST_F(LlamaServerTest, RelaysLogprobs) {
  Collector col;
  GenerateRequest req = greedy("Hi", 3);
  req.sampling.top_logprobs = 2;
  auto r = run(req, col);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices[0].logprobs.size(), 3u);
  for (const auto& lp : r->choices[0].logprobs) {
    EXPECT_EQ(lp.top.size(), 2u);
    EXPECT_LE(lp.logprob, 0.0f);
  }
}

TEST_F(LlamaServerTest, OutOfRangeRequestIsInvalidArgumentWithTheUpstreamsMessage) {
  Collector col;
  GenerateRequest req = greedy("Hi", 3);
  req.n = 3;  // the server has 2 slots
  auto r = run(req, col);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  EXPECT_NE(r.status().message().find("'n'"), std::string::npos) << r.status().message();
  EXPECT_TRUE(col.deltas().empty());
}

TEST_F(LlamaServerTest, CancelMidStreamFreesTheServerSlot) {
  Collector col;
  auto cancel = std::make_shared<CancelToken>();
  provider_->generate(greedy("Go on forever", 900), cancel, col.callbacks());
  ASSERT_TRUE(col.wait_for_deltas(2, 60s));
  auto start = Clock::now();
  cancel->cancel();
  auto r = col.wait(10s);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kCancelled);
  EXPECT_LT(seconds_since(start), 2.0);

  // llama-server notices the closed connection and frees the slot.
  HttpClient client;
  bool idle = false;
  for (auto deadline = Clock::now() + 10s; Clock::now() < deadline && !idle;) {
    auto slots = fetch(client, "GET", base() + "/slots");
    ASSERT_TRUE(slots.is_ok()) << slots.status().to_string();
    json j = json::parse(slots->body, nullptr, false);
    idle = j.is_array();
    for (const auto& s : j) idle = idle && !s.value("is_processing", true);
    if (!idle) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(idle) << "a llama-server slot is still busy after the cancel";
}

}  // namespace
}  // namespace llmpool::providers
