// https upstreams: the HTTP client and the remote providers against a TLS
// server on loopback whose CA and certificates the test makes, relaying to
// the same kind of fake upstream the plain tests use.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "providers/http_client.h"
#include "providers/ollama_provider.h"
#include "providers/openai_provider.h"
#include "remote_test_util.h"
#include "tls_test_util.h"

namespace llmpool::providers {
namespace {

using namespace llmpool::providers::testing;
using nlohmann::json;

class RemoteTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new Identity(make_identity("llmpool test CA", nullptr, true));
    other_ca_ = new Identity(make_identity("some other CA", nullptr, true));
    good_ = new Identity(make_identity("localhost", ca_, false, "DNS:localhost,IP:127.0.0.1"));
    wrong_name_ = new Identity(make_identity("wrong.example", ca_, false, "DNS:wrong.example"));
  }
  static void TearDownTestSuite() {
    delete ca_;
    delete other_ca_;
    delete good_;
    delete wrong_name_;
  }

  void SetUp() override {
    fake_.post("/plain", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      api::HttpResponse r;
      r.body = "hello over tls";
      r.content_type = "text/plain";
      w->respond(r);
    });
    fake_.post("/v1/chat/completions", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
      fake_.record(req);
      w->start_stream(200, "text/event-stream");
      w->write(sse(chat_chunk(0, "Hel")));
      w->write(sse(chat_chunk(0, "lo")));
      w->write(sse(chat_chunk(0, "", "stop")));
      w->write("data: [DONE]\n\n");
      w->end();
    });
    // An upstream that answers whole, without streaming.
    fake_.post("/whole/v1/chat/completions", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.body = R"({"choices":[{"index":0,"message":{"role":"assistant","content":"whole answer"},)"
               R"("finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}})";
      w->respond(r);
    });
    fake_.post("/api/chat", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      w->start_stream(200, "application/x-ndjson");
      w->write(R"({"message":{"role":"assistant","content":"ol"},"done":false})" "\n");
      w->write(R"({"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"})" "\n");
      w->end();
    });
    fake_.start();
    ca_file_ = std::make_unique<TempFile>(ca_->cert_pem);
    other_ca_file_ = std::make_unique<TempFile>(other_ca_->cert_pem);
  }

  HttpClientOptions trusting(const std::string& ca_file) {
    HttpClientOptions o;
    o.tls.ca_file = ca_file;
    return o;
  }

  static HttpClientRequest post(const std::string& url) {
    HttpClientRequest r;
    r.url = url;
    r.body = "{}";
    r.connect_timeout_ms = 5000;
    r.read_timeout_ms = 5000;
    return r;
  }

  static Result<HttpClientResponse> fetch(HttpClient& client, const std::string& url) {
    std::promise<Result<HttpClientResponse>> p;
    client.fetch(post(url), nullptr, [&](Result<HttpClientResponse> r) { p.set_value(std::move(r)); });
    auto f = p.get_future();
    if (f.wait_for(30s) != std::future_status::ready) return Status::internal("no answer in time");
    return f.get();
  }

  config::ModelConfig model(const std::string& type, const std::string& base_url, const std::string& ca_file) {
    auto c = remote_config(type, base_url);
    c.ca_file = ca_file;
    return c;
  }

  static Identity* ca_;
  static Identity* other_ca_;
  static Identity* good_;
  static Identity* wrong_name_;
  FakeUpstream fake_;
  std::unique_ptr<TempFile> ca_file_;
  std::unique_ptr<TempFile> other_ca_file_;
};

Identity* RemoteTlsTest::ca_ = nullptr;
Identity* RemoteTlsTest::other_ca_ = nullptr;
Identity* RemoteTlsTest::good_ = nullptr;
Identity* RemoteTlsTest::wrong_name_ = nullptr;

TEST_F(RemoteTlsTest, VerifiedCertificateCarriesTheRequestByNameAndByAddress) {
  TlsRelay relay(*good_, fake_.port());
  HttpClient client(trusting(ca_file_->path()));
  for (const char* host : {"localhost", "127.0.0.1"}) {
    auto r = fetch(client, relay.url(host, "/plain"));
    ASSERT_TRUE(r.is_ok()) << host << ": " << r.status().to_string();
    EXPECT_EQ(r->head.status, 200);
    EXPECT_EQ(r->body, "hello over tls");
  }
  EXPECT_EQ(fake_.requests(), 2);
  // SNI carries the host name, and no IP address (RFC 6066).
  auto names = relay.server_names();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0], "localhost");
  EXPECT_EQ(names[1], "");
}

TEST_F(RemoteTlsTest, KeepAliveReusesTheTlsConnection) {
  TlsRelay relay(*good_, fake_.port());
  HttpClient client(trusting(ca_file_->path()));
  for (int i = 0; i < 3; ++i) {
    auto r = fetch(client, relay.url("127.0.0.1", "/plain"));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  EXPECT_EQ(relay.handshakes(), 1);
  EXPECT_EQ(client.idle_connections(), 1u);
}

TEST_F(RemoteTlsTest, PooledTlsAndPlainConnectionsStayApart) {
  TlsRelay relay(*good_, fake_.port());
  HttpClient client(trusting(ca_file_->path()));
  const std::string port = std::to_string(relay.port());
  ASSERT_TRUE(fetch(client, "https://127.0.0.1:" + port + "/plain").is_ok());
  ASSERT_EQ(client.idle_connections(), 1u);
  // Plain http to the same host and port must not ride the pooled TLS
  // connection: it opens its own, which the TLS server refuses.
  auto plain = fetch(client, "http://127.0.0.1:" + port + "/plain");
  EXPECT_FALSE(plain.is_ok() && plain->head.status == 200 && plain->body == "hello over tls");
  EXPECT_EQ(fake_.requests(), 1);
  // The TLS connection is still there for https.
  ASSERT_TRUE(fetch(client, "https://127.0.0.1:" + port + "/plain").is_ok());
  EXPECT_EQ(relay.handshakes(), 1);
  EXPECT_EQ(fake_.requests(), 2);
}

TEST_F(RemoteTlsTest, CertificateForAnotherNameFails) {
  TlsRelay relay(*wrong_name_, fake_.port());
  HttpClient client(trusting(ca_file_->path()));
  auto r = fetch(client, relay.url("localhost", "/plain"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("hostname mismatch"), std::string::npos) << r.status().message();
  r = fetch(client, relay.url("127.0.0.1", "/plain"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("IP address mismatch"), std::string::npos) << r.status().message();
  EXPECT_EQ(fake_.requests(), 0);
}

TEST_F(RemoteTlsTest, UnknownCaFails) {
  TlsRelay relay(*good_, fake_.port());
  {
    HttpClient client(trusting(other_ca_file_->path()));
    auto r = fetch(client, relay.url("localhost", "/plain"));
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(r.status().message().find("was refused: "), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("local issuer certificate"), std::string::npos) << r.status().message();
  }
  {
    HttpClient client;  // the system store does not know the test's CA
    auto r = fetch(client, relay.url("localhost", "/plain"));
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("was refused: "), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(fake_.requests(), 0);
}

TEST_F(RemoteTlsTest, AServerThatNeverAnswersTheHandshakeTimesOut) {
  // Listens, so the TCP connect succeeds, but never accepts or speaks TLS.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  HttpClient client(trusting(ca_file_->path()));
  HttpClientRequest r = post("https://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/plain");
  r.connect_timeout_ms = 300;
  r.label = "upstream for model 'm'";
  std::promise<Status> p;
  HttpStreamCallbacks cb;
  cb.on_done = [&](Status st) { p.set_value(std::move(st)); };
  client.stream(r, nullptr, cb);
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  Status st = f.get();
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.to_string();
  EXPECT_NE(st.message().find("setting up TLS"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("127.0.0.1"), std::string::npos) << st.message();
  ::close(fd);
}

TEST_F(RemoteTlsTest, InsecureSkipVerifyAcceptsAnyCertificate) {
  TlsRelay relay(*wrong_name_, fake_.port());
  HttpClientOptions o;
  o.tls.insecure_skip_verify = true;
  HttpClient client(o);
  auto r = fetch(client, relay.url("localhost", "/plain"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->body, "hello over tls");
}

TEST_F(RemoteTlsTest, CheckTlsOptionsNamesAnUnusableCaFile) {
  TlsOptions o;
  o.ca_file = ::testing::TempDir() + "llmpool-no-such-ca.pem";
  Status st = check_tls_options(o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.param(), "ca_file");
  EXPECT_NE(st.message().find("llmpool-no-such-ca.pem"), std::string::npos) << st.message();
  TempFile garbage("not a certificate\n");
  o.ca_file = garbage.path();
  EXPECT_FALSE(check_tls_options(o).is_ok());
  o.ca_file = ca_file_->path();
  EXPECT_TRUE(check_tls_options(o).is_ok());
}

TEST_F(RemoteTlsTest, OpenAiProviderStreamsAndTakesWholeAnswersOverTls) {
  TlsRelay relay(*good_, fake_.port());
  auto p = OpenAiProvider::create(model("openai", relay.url("localhost", "/v1"), ca_file_->path()));
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  Collector col;
  (*p)->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "Hello");
  EXPECT_EQ(col.deltas().size(), 3u);
  EXPECT_EQ(fake_.last_body()["messages"][0]["content"], "hi");

  auto whole = OpenAiProvider::create(model("openai", relay.url("127.0.0.1", "/whole/v1"), ca_file_->path()));
  ASSERT_TRUE(whole.is_ok());
  Collector col2;
  (*whole)->generate(chat_request("hi"), nullptr, col2.callbacks());
  auto r2 = col2.wait();
  ASSERT_TRUE(r2.is_ok()) << r2.status().to_string();
  EXPECT_EQ(r2->choices[0].text, "whole answer");
  EXPECT_EQ(r2->usage.completion_tokens, 2);
}

TEST_F(RemoteTlsTest, OllamaProviderOverTls) {
  TlsRelay relay(*good_, fake_.port());
  auto p = OllamaProvider::create(model("ollama", relay.url("localhost"), ca_file_->path()));
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  Collector col;
  (*p)->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "ol");
}

TEST_F(RemoteTlsTest, ProviderErrorsNameTheModelNotTheHost) {
  TlsRelay relay(*wrong_name_, fake_.port());
  auto p = OpenAiProvider::create(model("openai", relay.url("localhost", "/v1"), ca_file_->path()));
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  Collector col;
  (*p)->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("upstream for model 'remote'"), std::string::npos) << m;
  EXPECT_NE(m.find("hostname mismatch"), std::string::npos) << m;
  EXPECT_EQ(m.find("localhost"), std::string::npos) << m;
  EXPECT_EQ(m.find(std::to_string(relay.port())), std::string::npos) << m;
}

TEST_F(RemoteTlsTest, ProviderRefusesAMissingCaFile) {
  auto p = OpenAiProvider::create(model("openai", "https://localhost:1/v1", ::testing::TempDir() + "llmpool-none.pem"));
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().param(), "ca_file");
}

TEST_F(RemoteTlsTest, PlainHttpStillWorks) {
  auto p = OpenAiProvider::create(remote_config("openai", fake_.url("/v1")));
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  Collector col;
  (*p)->generate(chat_request("hi"), nullptr, col.callbacks());
  auto r = col.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->choices[0].text, "Hello");
}

}  // namespace
}  // namespace llmpool::providers
