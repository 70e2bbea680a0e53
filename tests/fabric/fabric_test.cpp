// The fabric against a real nats-server -js (started per test on a free
// loopback port, store in a temp dir) and real `llmpool worker` processes
// serving a model of type openai that points at the in-process fake
// upstream (bench/fake_openai.h, no inference).
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <optional>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "common/json.h"
#include "common/topic.h"
#include "fabric/connection.h"
#include "fabric/fleet.h"
#include "fabric/job_runner.h"
#include "fabric/wire.h"
#include "fabric_test_util.h"
#include "fake_openai.h"
#include "providers/factory.h"

namespace llmpool::fabric {
namespace {

using namespace std::chrono_literals;
using testing::Child;
using testing::eventually;
using testing::NatsServer;

std::string chat_body(const std::string& model, int i) {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":"job )" + std::to_string(i) +
         R"("}],"max_tokens":8})";
}

struct Collected {
  std::mutex mu;
  std::map<std::string, int> seen;  // id -> times the sink got it
  std::map<std::string, int> status;
  size_t distinct() {
    std::lock_guard<std::mutex> lock(mu);
    return seen.size();
  }
};

class FabricTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("fabric");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    workers_.clear();
    set_process_fleet(nullptr);
    set_process_connection(nullptr);
    runner_.reset();
    conn_.reset();
    fakes_.clear();
    nats_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void start_nats(const std::string& extra = "") {
    nats_ = std::make_unique<NatsServer>(dir_ / "nats", extra);
    ASSERT_TRUE(nats_->start()) << "nats-server did not start; see " << (dir_ / "nats/nats.log");
  }

  // An OpenAI-compatible fake upstream; returns its base URL (…/v1).
  std::string start_fake(fake::Behaviour b) {
    fake::OpenAiFake::Options o;
    o.behaviour = b;
    fakes_.push_back(std::make_unique<fake::OpenAiFake>(o));
    EXPECT_TRUE(fakes_.back()->start().is_ok());
    return fakes_.back()->url("/v1");
  }

  config::FabricConfig fabric_config() {
    config::FabricConfig f;
    f.enabled = true;
    f.nats_url = nats_->url();
    f.ack_wait_ms = 2000;
    f.heartbeat_ms = 300;
    f.nak_delay_ms = 100;
    f.max_deliver = max_deliver_;
    return f;
  }

  // A worker config serving `models` (name -> base_url).
  std::string write_worker_config(const std::map<std::string, std::string>& models, int slots = 4) {
    std::string path = (dir_ / ("worker-" + std::to_string(configs_++) + ".yaml")).string();
    std::ofstream out(path);
    out << "log_level: warn\nserver:\n  shutdown_grace_ms: 5000\nmodels:\n";
    for (const auto& [name, url] : models)
      out << "  - name: " << name << "\n    type: openai\n    base_url: " << url << "\n    max_concurrent: " << slots << "\n";
    out << "fabric:\n  nats_url: " << nats_->url() << "\n  ack_wait: 2s\n  heartbeat: 300ms\n  nak_delay: 100ms\n"
        << "  max_deliver: " << max_deliver_ << "\n";
    return path;
  }

  Child& spawn_worker(const std::string& config, const std::string& id) {
    workers_.emplace_back(std::vector<std::string>{LLMPOOL_BIN, "worker", "--config", config, "--id", id},
                          (dir_ / (id + ".log")).string());
    workers_.back().start();
    return workers_.back();
  }

  // A fake upstream answering `tokens` tokens, `token_ms` apart, and `n`
  // workers (w0, w1, ...) serving it as model "echo"; returns their config.
  std::string echo_workers(int64_t token_ms, int32_t tokens, int n) {
    fake::Behaviour b;
    b.token_ms = token_ms;
    b.tokens = tokens;
    std::string config = write_worker_config({{"echo", start_fake(b)}});
    for (int i = 0; i < n; ++i) spawn_worker(config, "w" + std::to_string(i));
    return config;
  }

  void connect() {
    auto c = Connection::connect(fabric_config(), "fabric-test");
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    conn_ = *c;
    ASSERT_TRUE(eventually([&] { return conn_->connected(); }, 10s));
    ASSERT_TRUE(conn_->ensure_tenant("default").is_ok());
  }

  void start_runner(Collected* got, std::vector<std::string> tenants = {"default"}) {
    runner_ = std::make_unique<FabricJobRunner>(conn_, std::move(tenants));
    runner_->set_result_sink([got](const batch::JobResult& r) {
      std::lock_guard<std::mutex> lock(got->mu);
      got->seen[r.id]++;
      got->status[r.id] = r.status_code;
      return Status::ok();
    });
  }

  uint64_t stream_msgs(const std::string& stream) {
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, conn_->js(), stream.c_str(), nullptr, nullptr) != NATS_OK) return UINT64_MAX;
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }

  std::filesystem::path dir_;
  std::unique_ptr<NatsServer> nats_;
  std::vector<std::unique_ptr<fake::OpenAiFake>> fakes_;
  std::deque<Child> workers_;
  ConnectionPtr conn_;
  std::unique_ptr<FabricJobRunner> runner_;
  int configs_ = 0;
  int max_deliver_ = 50;
};

TEST_F(FabricTest, ResubmittedJobIdIsDroppedAsDuplicate) {
  start_nats();
  connect();
  Collected got;
  start_runner(&got);
  batch::Job job{"batch_1:0", "", "echo", "/v1/chat/completions", chat_body("echo", 0)};
  ASSERT_TRUE(runner_->submit(job).is_ok());
  ASSERT_TRUE(runner_->submit(job).is_ok());
  EXPECT_EQ(stream_msgs(request_stream("default")), 1u);
  echo_workers(0, 16, 1);
  ASSERT_TRUE(eventually([&] { return got.distinct() == 1; }, 20s));
  std::this_thread::sleep_for(500ms);  // a second result would have come by now
  EXPECT_EQ(stream_msgs(result_stream("default")), 1u);
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.seen["batch_1:0"], 1);
  EXPECT_EQ(got.status["batch_1:0"], 200);
}

TEST_F(FabricTest, ThousandJobsUnderRandomSigkillsYieldExactlyOneResultEach) {
  start_nats();
  connect();
  echo_workers(10, 4, 3);
  Collected got;
  start_runner(&got);
  constexpr int kJobs = 1000;
  for (int i = 0; i < kJobs; ++i)
    ASSERT_TRUE(runner_->submit({"kill:" + std::to_string(i), "", "echo", "/v1/chat/completions", chat_body("echo", i)}).is_ok());

  std::atomic<bool> done{false};
  int kills = 0;
  std::thread killer([&] {
    std::mt19937 rng(42);
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 350));
      if (done) break;
      Child& w = workers_[rng() % workers_.size()];
      w.stop(SIGKILL);
      ++kills;
      w.start();
    }
  });
  bool all = eventually([&] { return got.distinct() == kJobs; }, 100s);
  done = true;
  killer.join();
  ASSERT_TRUE(all) << "results: " << got.distinct() << " of " << kJobs << " after " << kills << " kills";
  EXPECT_GT(kills, 3);
  EXPECT_EQ(stream_msgs(result_stream("default")), static_cast<uint64_t>(kJobs));
  std::lock_guard<std::mutex> lock(got.mu);
  for (const auto& [id, n] : got.seen) {
    EXPECT_EQ(n, 1) << id;
    EXPECT_EQ(got.status[id], 200) << id;
  }
}

TEST_F(FabricTest, NatsServerRestartMidRunLosesNothing) {
  start_nats();
  connect();
  echo_workers(10, 4, 2);
  Collected got;
  start_runner(&got);
  constexpr int kJobs = 300;
  for (int i = 0; i < kJobs; ++i)
    ASSERT_TRUE(runner_->submit({"rs:" + std::to_string(i), "", "echo", "/v1/chat/completions", chat_body("echo", i)}).is_ok());
  ASSERT_TRUE(eventually([&] { return got.distinct() >= 30; }, 30s));
  nats_->stop();
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(nats_->start());
  ASSERT_TRUE(eventually([&] { return got.distinct() == kJobs; }, 90s)) << got.distinct() << " of " << kJobs;
  EXPECT_EQ(stream_msgs(result_stream("default")), static_cast<uint64_t>(kJobs));
}

TEST_F(FabricTest, PauseStopsPullingAndResumeRestartsIt) {
  start_nats();
  connect();
  auto fleet = FleetView::start(conn_, {"default"}, 300);
  ASSERT_TRUE(fleet.is_ok());
  std::string config = echo_workers(0, 16, 1);
  ASSERT_TRUE(eventually([&] { return (*fleet)->model("default", "echo").workers == 1; }, 20s));
  ASSERT_TRUE(conn_->publish("ctrl.default.workers.pause", "{}").is_ok());
  ASSERT_TRUE(eventually(
      [&] {
        auto l = (*fleet)->list();
        return l.size() == 1 && l[0].last.paused;
      },
      3s));
  Collected got;
  start_runner(&got);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(runner_->submit({"p:" + std::to_string(i), "", "echo", "/v1/chat/completions", chat_body("echo", i)}).is_ok());
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(got.distinct(), 0u) << "a paused worker pulled jobs";
  EXPECT_EQ(stream_msgs(request_stream("default")), 10u);
  // A worker started while the tenant is paused reads the stored state and
  // comes up paused: it pulls nothing either.
  spawn_worker(config, "w1");
  ASSERT_TRUE(eventually(
      [&] {
        auto l = (*fleet)->list();
        return l.size() == 2 && l[0].last.paused && l[1].last.paused;
      },
      20s));
  std::this_thread::sleep_for(1000ms);
  EXPECT_EQ(got.distinct(), 0u) << "a worker started during a pause pulled jobs";
  ASSERT_TRUE(conn_->publish("ctrl.default.workers.resume", "{}").is_ok());
  EXPECT_TRUE(eventually([&] { return got.distinct() == 10; }, 5s)) << got.distinct();
}

TEST_F(FabricTest, ScaleSharesTheTenantsConcurrencyAcrossWorkers) {
  start_nats();
  connect();
  auto fleet = FleetView::start(conn_, {"default"}, 300);
  ASSERT_TRUE(fleet.is_ok());
  echo_workers(0, 16, 2);
  ASSERT_TRUE(eventually([&] { return (*fleet)->model("default", "echo").workers == 2; }, 20s));
  ASSERT_TRUE(conn_->publish("ctrl.default.workers.scale", R"({"count":3})").is_ok());
  EXPECT_TRUE(eventually(
      [&] {
        int total = 0;
        for (const auto& w : (*fleet)->list()) total += w.last.share;
        return total == 3;
      },
      5s));
  ASSERT_TRUE(conn_->publish("ctrl.default.workers.scale", R"({"count":"x"})").is_ok());  // refused, logged
  std::this_thread::sleep_for(700ms);
  int total = 0;
  for (const auto& w : (*fleet)->list()) total += w.last.share;
  EXPECT_EQ(total, 3);
}

TEST_F(FabricTest, PoisonJobLandsInDeadLetterStreamAfterMaxDeliver) {
  max_deliver_ = 3;
  start_nats();
  connect();
  fake::Behaviour broken;
  broken.error_rate = 1.0;
  broken.error_status = 503;
  std::string config = write_worker_config({{"broken", start_fake(broken)}});
  spawn_worker(config, "w0");
  Collected got;
  start_runner(&got);
  ASSERT_TRUE(runner_->submit({"poison:0", "", "broken", "/v1/chat/completions", chat_body("broken", 0)}).is_ok());
  ASSERT_TRUE(eventually([&] { return stream_msgs(dead_stream("default")) == 1; }, 30s));
  natsMsg* raw = nullptr;
  ASSERT_EQ(js_GetMsg(&raw, conn_->js(), dead_stream("default").c_str(), 1, nullptr, nullptr), NATS_OK);
  MsgPtr msg(raw);
  auto dead = parse_json(std::string_view(natsMsg_GetData(raw), natsMsg_GetDataLength(raw)));
  ASSERT_TRUE(dead.is_ok());
  EXPECT_EQ((*dead)["id"], "poison:0");
  EXPECT_EQ((*dead)["deliveries"], 3);
  EXPECT_NE((*dead)["reason"].get<std::string>().find("all 3 deliveries"), std::string::npos) << (*dead)["reason"];
  EXPECT_EQ(stream_msgs(result_stream("default")), 0u);
  EXPECT_EQ(fakes_[0]->counts().errors, 3);

  // An unreadable job goes there at once, with its reason.
  ASSERT_TRUE(conn_->js_publish(*request_subject("default", "broken"), "{not json", "garbage:1").is_ok());
  ASSERT_TRUE(eventually([&] { return stream_msgs(dead_stream("default")) == 2; }, 10s));
  ASSERT_EQ(js_GetMsg(&raw, conn_->js(), dead_stream("default").c_str(), 2, nullptr, nullptr), NATS_OK);
  MsgPtr msg2(raw);
  auto dead2 = parse_json(std::string_view(natsMsg_GetData(raw), natsMsg_GetDataLength(raw)));
  ASSERT_TRUE(dead2.is_ok());
  EXPECT_EQ((*dead2)["id"], "garbage:1");
  EXPECT_NE((*dead2)["reason"].get<std::string>().find("unreadable job"), std::string::npos);
}

TEST_F(FabricTest, BadRequestBodyYieldsAnErrorResultNotARetry) {
  start_nats();
  connect();
  echo_workers(0, 16, 1);
  Collected got;
  start_runner(&got);
  ASSERT_TRUE(runner_->submit({"bad:0", "", "echo", "/v1/chat/completions", R"({"model":"echo","messages":"no"})"}).is_ok());
  ASSERT_TRUE(eventually([&] { return got.distinct() == 1; }, 20s));
  std::lock_guard<std::mutex> lock(got.mu);
  EXPECT_EQ(got.status["bad:0"], 400);
}

// Tenant isolation is the server's: acme's user cannot publish or
// subscribe on globex's subjects.
struct ErrorSeen {
  std::atomic<int> not_permitted{0};
};
void on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
  if (err == NATS_NOT_PERMITTED) static_cast<ErrorSeen*>(closure)->not_permitted++;
}

TEST_F(FabricTest, NatsServerRefusesATenantsCredentialsOnAnotherTenantsSubjects) {
  start_nats(nats_authorization_config({{"acme", "acme-secret"}, {"globex", "globex-secret"}}));
  ErrorSeen seen;
  natsOptions* opts = nullptr;
  ASSERT_EQ(natsOptions_Create(&opts), NATS_OK);
  natsOptions_SetURL(opts, nats_->url().c_str());
  natsOptions_SetUserInfo(opts, "acme", "acme-secret");
  natsOptions_SetErrorHandler(opts, on_error, &seen);
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_Connect(&nc, opts), NATS_OK);
  // Its own subjects work.
  natsSubscription* own = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&own, nc, "ctrl.acme.workers.heartbeat"), NATS_OK);
  ASSERT_EQ(natsConnection_PublishString(nc, "ctrl.acme.workers.heartbeat", "{}"), NATS_OK);
  natsMsg* m = nullptr;
  EXPECT_EQ(natsSubscription_NextMsg(&m, own, 5000), NATS_OK);
  natsMsg_Destroy(m);
  EXPECT_EQ(seen.not_permitted, 0);
  // Another tenant's are refused by the server.
  natsSubscription* other = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&other, nc, "llm.globex.infer.requests.v1.>"), NATS_OK);
  natsConnection_FlushTimeout(nc, 2000);
  EXPECT_TRUE(eventually([&] { return seen.not_permitted >= 1; }, 5s)) << "subscribe was not refused";
  ASSERT_EQ(natsConnection_PublishString(nc, "ctrl.globex.workers.pause", "{}"), NATS_OK);
  natsConnection_FlushTimeout(nc, 2000);
  EXPECT_TRUE(eventually([&] { return seen.not_permitted >= 2; }, 5s)) << "publish was not refused";
  // And a wrong password is no way in.
  natsOptions_SetUserInfo(opts, "globex", "acme-secret");
  natsConnection* bad = nullptr;
  EXPECT_NE(natsConnection_Connect(&bad, opts), NATS_OK);
  natsSubscription_Destroy(other);
  natsSubscription_Destroy(own);
  natsConnection_Destroy(nc);
  natsOptions_Destroy(opts);

  // The fabric itself runs as acme (JetStream streams, KV) with those credentials.
  setenv("LLMPOOL_TEST_NATS_USER", "acme", 1);
  setenv("LLMPOOL_TEST_NATS_PASSWORD", "acme-secret", 1);
  config::FabricConfig f = fabric_config();
  f.user_env = "LLMPOOL_TEST_NATS_USER";
  f.password_env = "LLMPOOL_TEST_NATS_PASSWORD";
  f.tenants = {"acme"};
  auto c = Connection::connect(f, "acme");
  ASSERT_TRUE(c.is_ok());
  EXPECT_TRUE((*c)->ensure_tenant("acme").is_ok());
  EXPECT_TRUE((*c)->js_publish(*request_subject("acme", "m"), "{}", "acme-1").is_ok());
  EXPECT_FALSE((*c)->js_publish(*request_subject("globex", "m"), "{}", "globex-1").is_ok());

  // The JetStream API is acme's for acme's streams only: managing globex's
  // streams or pulling from its consumers is refused by the server.
  natsOptions* gopts = nullptr;
  ASSERT_EQ(natsOptions_Create(&gopts), NATS_OK);
  natsOptions_SetURL(gopts, nats_->url().c_str());
  natsOptions_SetErrorHandler(gopts, on_error, &seen);
  natsOptions_SetUserInfo(gopts, "acme", "acme-secret");
  natsConnection* anc = nullptr;
  ASSERT_EQ(natsConnection_Connect(&anc, gopts), NATS_OK);
  const int before = seen.not_permitted;
  for (const std::string& subject :
       {"$JS.API.STREAM.DELETE." + request_stream("globex"), "$JS.API.STREAM.PURGE." + result_stream("globex"),
        "$JS.API.STREAM.MSG.GET." + request_stream("globex"),
        "$JS.API.CONSUMER.MSG.NEXT." + request_stream("globex") + "." + consumer_name("m"),
        "$JS.API.STREAM.DELETE.KV_" + scale_bucket("globex")}) {
    natsMsg* reply = nullptr;
    EXPECT_NE(natsConnection_RequestString(&reply, anc, subject.c_str(), "{}", 500), NATS_OK) << subject;
    natsMsg_Destroy(reply);
  }
  EXPECT_TRUE(eventually([&] { return seen.not_permitted >= before + 5; }, 5s)) << "the JetStream API was not refused";
  natsConnection_Destroy(anc);
  natsOptions_Destroy(gopts);

  // A worker and a batch job run as acme end to end with these permissions
  // (streams, consumers, pulls, acks, KV reads and key listings).
  fake::Behaviour b;
  b.tokens = 4;
  std::string config = write_worker_config({{"echo", start_fake(b)}});
  std::ofstream(config, std::ios::app) << "  tenants: [acme]\n  user_env: LLMPOOL_TEST_NATS_USER\n"
                                       << "  password_env: LLMPOOL_TEST_NATS_PASSWORD\n";
  spawn_worker(config, "acme-w0");
  conn_ = *c;
  Collected got;
  start_runner(&got, {"acme"});
  ASSERT_TRUE(runner_->submit({"acme-job", "acme", "echo", "/v1/chat/completions", chat_body("echo", 0)}).is_ok());
  ASSERT_TRUE(eventually([&] { return got.distinct() == 1; }, 30s)) << "no result; see " << (dir_ / "acme-w0.log");
  runner_.reset();  // before `got` goes: no sink call after this
  EXPECT_EQ(got.status["acme-job"], 200);
}

// ---- queue models ---------------------------------------------------------

class QueueProviderTest : public FabricTest {
 protected:
  providers::ProviderPtr queue_model(const std::string& upstream) {
    set_process_connection(conn_);
    auto fleet = FleetView::start(conn_, {"default"}, 300);
    EXPECT_TRUE(fleet.is_ok());
    fleet_ = *fleet;
    set_process_fleet(fleet_);
    config::ModelConfig m;
    m.name = "q-" + upstream;
    m.type = "queue";
    m.upstream_model = upstream;
    auto p = providers::create_provider(m);
    EXPECT_TRUE(p.is_ok()) << p.status().message();
    return p.is_ok() ? *p : nullptr;
  }

  struct Outcome {
    std::mutex mu;
    std::vector<std::string> deltas;
    std::optional<Result<Completion>> done;
    bool finished() {
      std::lock_guard<std::mutex> lock(mu);
      return done.has_value();
    }
    size_t delta_count() {
      std::lock_guard<std::mutex> lock(mu);
      return deltas.size();
    }
  };

  void run(providers::Provider& p, bool streamed, Outcome* out, CancelTokenPtr cancel = nullptr) {
    GenerateRequest r;
    r.messages = {ChatMessage("user", "hello")};
    r.sampling.max_tokens = 64;
    GenerateCallbacks cb;
    if (streamed)
      cb.on_delta = [out](Delta d) {
        std::lock_guard<std::mutex> lock(out->mu);
        out->deltas.push_back(d.text);
      };
    cb.on_done = [out](Result<Completion> c) {
      std::lock_guard<std::mutex> lock(out->mu);
      out->done = std::move(c);
    };
    p.generate(std::move(r), cancel ? cancel : std::make_shared<CancelToken>(), std::move(cb));
  }

  FleetViewPtr fleet_;
};

TEST_F(QueueProviderTest, StreamsDeltasInOrderAndEndsWithTheWholeAnswer) {
  start_nats();
  connect();
  fake::Behaviour b;
  b.token_ms = 5;
  b.tokens = 8;
  spawn_worker(write_worker_config({{"echo", start_fake(b)}}), "w0");
  auto p = queue_model("echo");
  ASSERT_TRUE(p);
  ASSERT_TRUE(eventually([&] { return fleet_->model("default", "echo").workers == 1; }, 20s));
  Outcome out;
  run(*p, true, &out);
  ASSERT_TRUE(eventually([&] { return out.finished(); }, 20s));
  ASSERT_TRUE(out.done->is_ok()) << out.done->status().message();
  std::string joined;
  for (const auto& d : out.deltas) joined += d;
  ASSERT_EQ((*out.done)->choices.size(), 1u);
  EXPECT_GE(out.deltas.size(), 8u);
  EXPECT_EQ(joined, (*out.done)->choices[0].text);
  EXPECT_FALSE(joined.empty());

  Outcome whole;
  run(*p, false, &whole);
  ASSERT_TRUE(eventually([&] { return whole.finished(); }, 20s));
  ASSERT_TRUE(whole.done->is_ok());
  EXPECT_EQ((*whole.done)->choices[0].text, joined);
}

TEST_F(QueueProviderTest, WorkerDyingMidStreamEndsTheStreamWithAClearError) {
  start_nats();
  connect();
  fake::Behaviour slow;
  slow.token_ms = 200;
  slow.tokens = 60;
  Child& w = spawn_worker(write_worker_config({{"echo", start_fake(slow)}}), "w0");
  auto p = queue_model("echo");
  ASSERT_TRUE(eventually([&] { return fleet_->model("default", "echo").workers == 1; }, 20s));
  Outcome out;
  run(*p, true, &out);
  ASSERT_TRUE(eventually([&] { return out.delta_count() >= 2; }, 20s));
  w.stop(SIGKILL);
  ASSERT_TRUE(eventually([&] { return out.finished(); }, 10s));
  ASSERT_FALSE(out.done->is_ok());
  EXPECT_EQ(out.done->status().code(), StatusCode::kUnavailable);
  EXPECT_NE(out.done->status().message().find("stopped answering mid-stream"), std::string::npos)
      << out.done->status().message();
}

TEST_F(QueueProviderTest, NonStreamedJobOfAKilledWorkerIsCompletedByAnother) {
  start_nats();
  connect();
  echo_workers(100, 15, 2);
  auto p = queue_model("echo");
  ASSERT_TRUE(eventually([&] { return fleet_->model("default", "echo").workers == 2; }, 20s));
  Outcome out;
  run(*p, false, &out);
  std::string busy;
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& w : fleet_->list())
          if (w.last.in_flight > 0) busy = w.last.id;
        return !busy.empty();
      },
      10s));
  workers_[busy == "w0" ? 0 : 1].stop(SIGKILL);
  ASSERT_TRUE(eventually([&] { return out.finished(); }, 30s));
  ASSERT_TRUE(out.done->is_ok()) << out.done->status().message();
  EXPECT_FALSE((*out.done)->choices[0].text.empty());
}

// The test plays the worker: it pulls the job itself and sends the events.
// A second `start` after deltas went out is a redelivery; under the same
// worker id (a worker restarted with its configured id) the stream must end,
// not run the answer again from its beginning.
TEST_F(QueueProviderTest, ARedeliveryToTheSameWorkerIdEndsAStreamInsteadOfRepeatingIt) {
  start_nats();
  connect();
  ASSERT_TRUE(conn_->ensure_model_consumer("default", "echo").is_ok());
  auto p = queue_model("echo");
  ASSERT_TRUE(p);
  Heartbeat hb;
  hb.id = "wx";
  hb.tenant = "default";
  hb.models = {{"echo", 4, 4, 0}};
  std::atomic<bool> beating{true};
  std::thread beat([&] {
    while (beating) {
      hb.ts_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
      (void)conn_->publish("ctrl.default.workers.heartbeat", encode_heartbeat(hb));
      std::this_thread::sleep_for(100ms);
    }
  });
  ASSERT_TRUE(eventually([&] { return fleet_->model("default", "echo").workers == 1; }, 10s));
  Outcome out;
  run(*p, true, &out);
  auto sub = conn_->pull_subscribe(*request_subject("default", "echo"), request_stream("default"), consumer_name("echo"));
  ASSERT_TRUE(sub.is_ok()) << sub.status().message();
  natsMsgList list{nullptr, 0};
  ASSERT_EQ(natsSubscription_Fetch(&list, sub->get(), 1, 5000, nullptr), NATS_OK);
  ASSERT_EQ(list.Count, 1);
  auto job = decode_job(std::string_view(natsMsg_GetData(list.Msgs[0]), natsMsg_GetDataLength(list.Msgs[0])), 1 << 20);
  natsMsgList_Destroy(&list);
  ASSERT_TRUE(job.is_ok()) << job.status().message();
  auto send = [&](StreamEvent e) { ASSERT_TRUE(conn_->publish(job->reply, encode_event(e)).is_ok()); };
  StreamEvent start;
  start.kind = StreamEvent::Kind::kStart;
  start.worker = "wx";
  StreamEvent chunk;
  chunk.kind = StreamEvent::Kind::kChunk;
  chunk.worker = "wx";
  chunk.seq = 1;
  chunk.chunk = nlohmann::json::parse(
      R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"echo","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]})");
  send(start);
  send(chunk);
  ASSERT_TRUE(eventually([&] { return out.delta_count() >= 1; }, 10s));
  send(start);  // delivered again, to the same id
  send(chunk);
  ASSERT_TRUE(eventually([&] { return out.finished(); }, 10s)) << "the stream went on from the beginning";
  beating = false;
  beat.join();
  ASSERT_FALSE(out.done->is_ok());
  EXPECT_NE(out.done->status().message().find("redelivered"), std::string::npos) << out.done->status().message();
  EXPECT_EQ(out.delta_count(), 1u);
}

TEST_F(QueueProviderTest, NoLiveWorkerFailsAtOnceAndCancelEndsTheRequest) {
  start_nats();
  connect();
  auto p = queue_model("nobody");
  ASSERT_TRUE(eventually([&] { return fleet_->settled(); }, 5s));
  Outcome out;
  run(*p, false, &out);
  ASSERT_TRUE(eventually([&] { return out.finished(); }, 2s));
  ASSERT_FALSE(out.done->is_ok());
  EXPECT_NE(out.done->status().message().find("no live worker"), std::string::npos);

  fake::Behaviour slow;
  slow.token_ms = 200;
  slow.tokens = 60;
  spawn_worker(write_worker_config({{"nobody", start_fake(slow)}}), "w0");
  ASSERT_TRUE(eventually([&] { return fleet_->model("default", "nobody").workers == 1; }, 20s));
  Outcome cancelled;
  auto token = std::make_shared<CancelToken>();
  run(*p, true, &cancelled, token);
  ASSERT_TRUE(eventually([&] { return cancelled.delta_count() >= 1; }, 20s));
  token->cancel();
  ASSERT_TRUE(eventually([&] { return cancelled.finished(); }, 5s));
  ASSERT_TRUE(cancelled.done->is_ok());
  EXPECT_EQ((*cancelled.done)->choices[0].finish_reason, FinishReason::kCancelled);
  // The worker was told: its upstream request ends early.
  EXPECT_TRUE(eventually([&] { return fakes_[0]->counts().cancelled == 1; }, 5s));
}

}  // namespace
}  // namespace llmpool::fabric
