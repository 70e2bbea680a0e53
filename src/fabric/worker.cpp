#include "fabric/worker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>

#include "api/errors.h"
#include "api/openai.h"
#include "common/json.h"
#include "common/topic.h"
#include "fabric/connection.h"
#include "fabric/wire.h"
#include "providers/factory.h"

namespace llmpool::fabric {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr int kFetchWaitMs = 200;      // a pause takes effect within this (plus a loop)
constexpr auto kAliveEvery = std::chrono::seconds(1);
constexpr size_t kMaxCancelledIds = 100000;

bool transient(StatusCode c) {
  return c == StatusCode::kUnavailable || c == StatusCode::kDeadlineExceeded || c == StatusCode::kResourceExhausted ||
         c == StatusCode::kInternal;
}

std::string default_worker_id() {
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "worker");
  std::string id;
  for (char c : std::string(host)) id += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
  return id.substr(0, 40) + "-" + std::to_string(getpid());
}

struct Model;

struct Job {
  MsgPtr msg;
  JobMessage job;
  Model* model = nullptr;
  std::string tenant;
  uint64_t delivered = 1;
  CancelTokenPtr cancel = std::make_shared<CancelToken>();
  api::Endpoint endpoint = api::Endpoint::kChat;
  api::ResponseMeta meta;
  bool streamed = false;
  bool with_logprobs = false;
  bool include_usage = false;
  std::mutex mu;            // seq and chunk publishing
  int64_t seq = 0;
  int64_t chunks = 0;
  bool first_delta = true;
  std::atomic<bool> abandoned{false};  // NAKed at shutdown: its outcome is not published
  Clock::time_point last_progress = Clock::now();
  Clock::time_point last_alive = Clock::now();
};

struct Model {
  std::string tenant;
  std::string name;
  providers::ProviderPtr provider;
  int32_t slots = 1;
  SubPtr sub;
  SubPtr advisory;
  std::atomic<int32_t> in_flight{0};
  std::thread thread;
};

struct Tenant {
  std::string name;
  std::atomic<bool> paused{false};
  // Bumped by every pause/resume message: a KV read that started before
  // one must not undo it (sync_paused).
  std::atomic<uint64_t> pause_gen{0};
  std::atomic<int32_t> share{-1};
  std::atomic<int32_t> in_flight{0};
  KvPtr scale_kv;
  KvPtr workers_kv;
  std::vector<SubPtr> ctrl;
};

}  // namespace

struct Worker::Impl {
  config::Config cfg;
  config::FabricConfig fc;
  std::string id;
  ConnectionPtr conn;
  std::map<std::string, std::unique_ptr<Tenant>> tenants;
  std::vector<std::unique_ptr<Model>> models;
  std::map<std::string, providers::ProviderPtr> providers;  // by model name

  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> stopping{false};  // no more pulling
  bool finishing_done = false;        // guarded by mu: finisher threads end
  std::map<Job*, std::shared_ptr<Job>> running;  // guarded by mu
  std::deque<std::pair<std::shared_ptr<Job>, Result<Completion>>> finished;  // guarded by mu
  std::deque<std::string> cancelled_order;     // guarded by mu
  std::unordered_set<std::string> cancelled;   // guarded by mu
  std::atomic<bool> rescale{true};
  std::vector<std::thread> finishers;
  std::thread ticker;

  // ---- results --------------------------------------------------------

  void publish_event(Job& j, StreamEvent e) {
    if (j.job.reply.empty()) return;
    std::lock_guard<std::mutex> lock(j.mu);
    e.seq = e.kind == StreamEvent::Kind::kStart ? 0 : ++j.seq;
    if (e.kind == StreamEvent::Kind::kStart) j.seq = 0;
    e.worker = id;
    (void)conn->publish(j.job.reply, encode_event(e));
  }

  // Publishes the result, then acks. False when the result could not be
  // published: the job is left to AckWait's redelivery.
  bool deliver_result(Job& j, int32_t status_code, const std::string& body) {
    if (!j.job.reply.empty()) {
      StreamEvent e;
      e.kind = StreamEvent::Kind::kDone;
      e.status_code = status_code;
      e.body = body;
      publish_event(j, std::move(e));
      natsConnection_FlushTimeout(conn->nc(), 2000);
    } else {
      auto subject = TopicNamer::topic(j.tenant, "infer.results");
      std::string data = encode_result(ResultMessage{j.job.id, status_code, body, id});
      Status st = Status::unavailable("not tried");
      // Retried across a reconnect for up to half of AckWait; a duplicate
      // from an earlier delivery is dropped by the stream (Nats-Msg-Id).
      auto give_up = Clock::now() + std::chrono::milliseconds(fc.ack_wait_ms / 2);
      for (int attempt = 0; Clock::now() < give_up; ++attempt) {
        st = conn->js_publish(*subject, data, j.job.id);
        if (st) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 << std::min(attempt, 4), 1000)));
      }
      if (!st) {
        spdlog::warn("fabric: result of job {} not published ({}); it is redelivered", j.job.id, st.message());
        return false;
      }
    }
    for (int attempt = 0; attempt < 5; ++attempt) {
      jsErrCode err = static_cast<jsErrCode>(0);
      if (natsMsg_AckSync(j.msg.get(), nullptr, &err) == NATS_OK) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200 * (attempt + 1)));
    }
    spdlog::warn("fabric: job {} not acked; its redelivery's result is dropped as a duplicate", j.job.id);
    return true;
  }

  void dead_letter(natsMsg* msg, const std::string& tenant, const std::string& job_id, const std::string& reason,
                   uint64_t deliveries) {
    auto subject = TopicNamer::topic(tenant, "infer.dead");
    json j = {{"v", 1},
              {"id", job_id},
              {"reason", reason},
              {"deliveries", deliveries},
              {"worker", id},
              {"job", std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg))}};
    std::string key = "dead:" + (job_id.empty() ? std::to_string(natsMsg_GetSequence(msg)) : job_id);
    Status st = conn->js_publish(*subject, j.dump(-1, ' ', false, json::error_handler_t::replace), key, nullptr,
                                 {{"Llmpool-Dead-Reason", reason.substr(0, 200)}});
    if (!st) spdlog::error("fabric: job {} not copied to the dead-letter stream: {}", job_id, st.message());
    else spdlog::warn("fabric: job {} moved to the dead-letter stream: {}", job_id, reason);
  }

  void release(Job& j) {
    j.model->in_flight--;
    tenants.at(j.tenant)->in_flight--;
    std::lock_guard<std::mutex> lock(mu);
    running.erase(&j);
    cv.notify_all();
  }

  void finish(const std::shared_ptr<Job>& jp, Result<Completion> result) {
    Job& j = *jp;
    if (j.abandoned) return release(j);
    if (result.is_ok()) {
      std::string body;
      api::append_completion(body, j.endpoint, j.meta, *result, j.with_logprobs);
      (void)deliver_result(j, 200, body);
      return release(j);
    }
    const Status& st = result.status();
    if (transient(st.code()) && j.chunks == 0 && !j.cancel->cancelled()) {
      if (static_cast<int64_t>(j.delivered) < fc.max_deliver) {
        natsMsg_NakWithDelay(j.msg.get(), fc.nak_delay_ms, nullptr);
        spdlog::info("fabric: job {} failed ({}), delivery {} of {}: redelivered", j.job.id, st.message(), j.delivered,
                     fc.max_deliver);
        return release(j);
      }
      std::string reason = "failed on all " + std::to_string(fc.max_deliver) + " deliveries; last: " + st.message();
      dead_letter(j.msg.get(), j.tenant, j.job.id, reason, j.delivered);
      natsMsg_Term(j.msg.get(), nullptr);
      if (!j.job.reply.empty()) {
        StreamEvent e;
        e.kind = StreamEvent::Kind::kDone;
        e.status_code = 503;
        e.body = api::dump_json(api::error_json(Status::unavailable(reason)));
        publish_event(j, std::move(e));
      }
      return release(j);
    }
    (void)deliver_result(j, api::http_status_for(st.code()), api::dump_json(api::error_json(st)));
    release(j);
  }

  void finisher_loop() {
    for (;;) {
      std::pair<std::shared_ptr<Job>, Result<Completion>> item{nullptr, Status::internal("none")};
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return finishing_done || !finished.empty(); });
        if (finished.empty()) return;
        item = std::move(finished.front());
        finished.pop_front();
      }
      finish(item.first, std::move(item.second));
    }
  }

  void enqueue_finished(std::shared_ptr<Job> j, Result<Completion> r) {
    std::lock_guard<std::mutex> lock(mu);
    finished.emplace_back(std::move(j), std::move(r));
    cv.notify_all();
  }

  // ---- jobs -----------------------------------------------------------

  void start_job(Model& m, natsMsg* raw) {
    auto j = std::make_shared<Job>();
    j->msg.reset(raw);
    j->model = &m;
    j->tenant = m.tenant;
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, raw) == NATS_OK) {
      j->delivered = meta->NumDelivered;
      jsMsgMetaData_Destroy(meta);
    }
    m.in_flight++;
    tenants.at(m.tenant)->in_flight++;
    {
      std::lock_guard<std::mutex> lock(mu);
      running[j.get()] = j;
    }
    std::string_view data(natsMsg_GetData(raw), natsMsg_GetDataLength(raw));
    auto decoded = decode_job(data, fc.max_message_bytes);
    if (!decoded) {
      const char* hid = nullptr;
      std::string job_id = natsMsgHeader_Get(raw, "Nats-Msg-Id", &hid) == NATS_OK && hid ? hid : "";
      dead_letter(raw, m.tenant, job_id, "unreadable job: " + decoded.status().message(), j->delivered);
      natsMsg_Term(raw, nullptr);
      return release(*j);
    }
    j->job = std::move(decoded).value();
    bool was_cancelled = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      was_cancelled = cancelled.count(j->job.id) > 0;
    }
    if (was_cancelled) {
      Status st = Status::invalid_argument("the job was cancelled before it started", "", "cancelled");
      (void)deliver_result(*j, 499, api::dump_json(api::error_json(st)));
      return release(*j);
    }
    if (j->job.deadline_ms > 0 && unix_ms() > j->job.deadline_ms) {
      Status st = Status::deadline_exceeded("the job's deadline passed before a worker took it");
      (void)deliver_result(*j, 504, api::dump_json(api::error_json(st)));
      return release(*j);
    }
    j->endpoint = j->job.endpoint == "/v1/completions" ? api::Endpoint::kCompletions : api::Endpoint::kChat;
    auto parsed = api::parse_request(j->job.body, j->endpoint);
    if (!parsed) {
      (void)deliver_result(*j, api::http_status_for(parsed.status().code()),
                           api::dump_json(api::error_json(parsed.status())));
      return release(*j);
    }
    GenerateRequest req = std::move(parsed->generate);
    req.model = m.name;
    req.tenant = j->tenant;
    j->streamed = parsed->stream && !j->job.reply.empty();
    j->include_usage = parsed->include_usage;
    j->with_logprobs = req.sampling.top_logprobs >= 0;
    j->meta = api::ResponseMeta{api::new_completion_id(j->endpoint == api::Endpoint::kChat ? "chatcmpl" : "cmpl"),
                                m.name, unix_ms() / 1000};
    publish_event(*j, StreamEvent{0, StreamEvent::Kind::kStart, "", {}, 0, ""});
    GenerateCallbacks cb;
    std::weak_ptr<Job> weak = j;
    if (j->streamed) {
      cb.on_delta = [this, weak](Delta d) {
        auto jp = weak.lock();
        if (!jp) return;
        StreamEvent e;
        e.kind = StreamEvent::Kind::kChunk;
        bool first;
        {
          std::lock_guard<std::mutex> lock(jp->mu);
          first = jp->first_delta;
          jp->first_delta = false;
          jp->chunks++;
        }
        e.chunk = api::chunk_json(jp->endpoint, jp->meta, d, first, jp->with_logprobs);
        publish_event(*jp, std::move(e));
      };
    }
    cb.on_done = [this, j](Result<Completion> r) { enqueue_finished(j, std::move(r)); };
    m.provider->generate(std::move(req), j->cancel, std::move(cb));
  }

  void fetch_loop(Model& m) {
    Tenant& t = *tenants.at(m.tenant);
    while (!stopping) {
      int32_t want = m.slots - m.in_flight.load();
      int32_t share = t.share.load();
      if (share >= 0) want = std::min(want, share - t.in_flight.load());
      if (t.paused || want <= 0 || !m.sub) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(50));
        continue;
      }
      natsMsgList list{nullptr, 0};
      natsStatus s = natsSubscription_Fetch(&list, m.sub.get(), want, kFetchWaitMs, nullptr);
      if (s != NATS_OK && s != NATS_TIMEOUT) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      for (int i = 0; i < list.Count; ++i) {
        natsMsg* msg = list.Msgs[i];
        list.Msgs[i] = nullptr;  // the job owns it now
        start_job(m, msg);
      }
      natsMsgList_Destroy(&list);
    }
  }

  // ---- control --------------------------------------------------------

  struct CtrlClosure {
    Impl* impl;
    Tenant* tenant;
    int what;  // 0 scale, 1 pause, 2 resume, 3 cancel
  };
  std::vector<std::unique_ptr<CtrlClosure>> closures;

  static void on_ctrl(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
    MsgPtr msg(raw);
    auto* c = static_cast<CtrlClosure*>(closure);
    std::string_view data(natsMsg_GetData(raw), natsMsg_GetDataLength(raw));
    c->impl->control(*c->tenant, c->what, data);
  }

  void control(Tenant& t, int what, std::string_view data) {
    switch (what) {
      case 0: {
        auto n = decode_scale(data);
        if (!n) return spdlog::warn("fabric: tenant {}: bad scale message: {}", t.name, n.status().message());
        std::string v = std::to_string(*n);
        uint64_t rev = 0;
        if (kvStore_PutString(&rev, t.scale_kv.get(), "count", v.c_str()) != NATS_OK)
          spdlog::warn("fabric: tenant {}: scale not stored", t.name);
        spdlog::info("fabric: tenant {}: fleet concurrency set to {}", t.name, *n);
        rescale = true;
        cv.notify_all();
        return;
      }
      case 1:
      case 2: {
        // Every worker gets the message and stores the state, so that a
        // worker started (or reconnected) later pauses too (sync_paused).
        const bool pause = what == 1;
        ++t.pause_gen;
        t.paused = pause;
        uint64_t rev = 0;
        if (kvStore_PutString(&rev, t.scale_kv.get(), "paused", pause ? "1" : "0") != NATS_OK)
          spdlog::warn("fabric: tenant {}: pause state not stored", t.name);
        spdlog::info("fabric: tenant {}: {}", t.name, pause ? "paused" : "resumed");
        if (!pause) cv.notify_all();
        return;
      }
      case 3: {
        auto ids = decode_cancel(data);
        if (!ids) return spdlog::warn("fabric: tenant {}: bad cancel message: {}", t.name, ids.status().message());
        std::vector<std::shared_ptr<Job>> to_cancel;
        {
          std::lock_guard<std::mutex> lock(mu);
          std::unordered_set<std::string> set(ids->begin(), ids->end());
          for (const auto& id : *ids) {
            if (!cancelled.insert(id).second) continue;
            cancelled_order.push_back(id);
            if (cancelled_order.size() > kMaxCancelledIds) {
              cancelled.erase(cancelled_order.front());
              cancelled_order.pop_front();
            }
          }
          for (auto& [p, j] : running)
            if (j->tenant == t.name && set.count(j->job.id)) to_cancel.push_back(j);
        }
        for (auto& j : to_cancel) j->cancel->cancel();
        return;
      }
    }
  }

  // The server's MAX_DELIVERIES advisory: the job is copied to the
  // dead-letter stream and deleted from the work queue.
  struct AdvisoryClosure {
    Impl* impl;
    Model* model;
  };
  std::vector<std::unique_ptr<AdvisoryClosure>> advisory_closures;

  static void on_advisory(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
    MsgPtr msg(raw);
    auto* c = static_cast<AdvisoryClosure*>(closure);
    auto j = parse_json(std::string_view(natsMsg_GetData(raw), natsMsg_GetDataLength(raw)), JsonLimits{16, 64 << 10},
                        "the advisory");
    if (!j || !j->is_object()) return;
    auto seq = j->find("stream_seq");
    if (seq == j->end() || !seq->is_number_unsigned()) return;
    c->impl->dead_from_advisory(*c->model, seq->get<uint64_t>());
  }

  void dead_from_advisory(Model& m, uint64_t seq) {
    std::string stream = request_stream(m.tenant);
    natsMsg* raw = nullptr;
    jsErrCode err = static_cast<jsErrCode>(0);
    if (js_GetMsg(&raw, conn->js(), stream.c_str(), seq, nullptr, &err) != NATS_OK) return;  // another worker did it
    MsgPtr msg(raw);
    auto job = decode_job(std::string_view(natsMsg_GetData(raw), natsMsg_GetDataLength(raw)), fc.max_message_bytes);
    dead_letter(raw, m.tenant, job ? job->id : std::string(),
                "delivered " + std::to_string(fc.max_deliver) + " times without an answer (workers stopped on it)",
                static_cast<uint64_t>(fc.max_deliver));
    (void)js_DeleteMsg(conn->js(), stream.c_str(), seq, nullptr, &err);
  }

  // ---- heartbeat and share -----------------------------------------------

  void heartbeat(Tenant& t) {
    Heartbeat h;
    h.id = id;
    h.tenant = t.name;
    h.paused = t.paused;
    h.share = t.share;
    h.in_flight = t.in_flight;
    h.version = LLMPOOL_VERSION_STRING;
    h.ts_ms = unix_ms();
    for (const auto& m : models) {
      if (m->tenant != t.name) continue;
      ModelLoad l{m->name, m->slots, std::max(0, m->slots - m->in_flight.load()), 0};
      jsConsumerInfo* ci = nullptr;
      if (m->sub && natsSubscription_GetConsumerInfo(&ci, m->sub.get(), nullptr, nullptr) == NATS_OK) {
        l.pending = static_cast<int64_t>(ci->NumPending);
        jsConsumerInfo_Destroy(ci);
      }
      h.models.push_back(std::move(l));
    }
    std::string data = encode_heartbeat(h);
    if (auto subject = TopicNamer::control(t.name, "workers.heartbeat")) (void)conn->publish(*subject, data);
    uint64_t rev = 0;
    if (t.workers_kv) kvStore_PutString(&rev, t.workers_kv.get(), id.c_str(), data.c_str());
  }

  // The tenant's stored pause state (scale bucket, key "paused"): read at
  // start, before any pull, and with every heartbeat, so a worker that was
  // not running (or not connected) when pause or resume was sent follows
  // it within a heartbeat. A message that arrives during the read wins.
  void sync_paused(Tenant& t) {
    if (!t.scale_kv) return;
    const uint64_t gen = t.pause_gen.load();
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, t.scale_kv.get(), "paused") != NATS_OK) return;  // never set, or unreachable: as it is
    const bool stored = std::string_view(kvEntry_ValueString(e)) == "1";
    kvEntry_Destroy(e);
    if (t.pause_gen.load() != gen || stored == t.paused.load()) return;
    t.paused = stored;
    spdlog::info("fabric: tenant {}: {} (stored state)", t.name, stored ? "paused" : "resumed");
    if (!stored) cv.notify_all();
  }

  // The share algorithm (docs/fabric.md): N from the scale bucket's
  // "count" (absent: unlimited); the live workers are the workers bucket's
  // keys (TTL 3 heartbeats), sorted; the worker at index i of W gets
  // N / W, plus one when i < N % W. The shares add up to N.
  void recompute_share(Tenant& t) {
    if (!t.scale_kv || !t.workers_kv) return;
    int32_t n = -1;
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, t.scale_kv.get(), "count") == NATS_OK) {
      try {
        n = std::stoi(std::string(kvEntry_ValueString(e)));
      } catch (const std::exception&) {
        n = -1;
      }
      kvEntry_Destroy(e);
    }
    if (n < 0) {
      t.share = -1;
      return;
    }
    std::vector<std::string> ids{id};
    kvKeysList keys{nullptr, 0};
    if (kvStore_Keys(&keys, t.workers_kv.get(), nullptr) == NATS_OK) {
      for (int i = 0; i < keys.Count; ++i)
        if (keys.Keys[i] != id) ids.push_back(keys.Keys[i]);
      kvKeysList_Destroy(&keys);
    }
    std::sort(ids.begin(), ids.end());
    int32_t w = static_cast<int32_t>(ids.size());
    int32_t i = static_cast<int32_t>(std::find(ids.begin(), ids.end(), id) - ids.begin());
    int32_t share = n / w + (i < n % w ? 1 : 0);
    if (share != t.share) spdlog::info("fabric: tenant {}: this worker's share is {} of {} ({} workers)", t.name, share, n, w);
    t.share = share;
    cv.notify_all();
  }

  void ticker_loop() {
    auto next_beat = Clock::now();
    const auto progress_every = std::chrono::milliseconds(std::max<int64_t>(fc.ack_wait_ms / 3, 200));
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return finishing_done; });
        if (finishing_done) return;
      }
      auto now = Clock::now();
      std::vector<std::shared_ptr<Job>> jobs;
      {
        std::lock_guard<std::mutex> lock(mu);
        for (auto& [p, j] : running) jobs.push_back(j);
      }
      for (auto& j : jobs) {
        if (now - j->last_progress >= progress_every) {
          natsMsg_InProgress(j->msg.get(), nullptr);
          j->last_progress = now;
        }
        if (!j->job.reply.empty() && now - j->last_alive >= kAliveEvery) {
          j->last_alive = now;
          publish_event(*j, StreamEvent{0, StreamEvent::Kind::kAlive, "", {}, 0, ""});
        }
      }
      if (now >= next_beat || rescale.exchange(false)) {
        for (auto& [name, t] : tenants) {
          heartbeat(*t);
          sync_paused(*t);
          recompute_share(*t);
        }
        if (now >= next_beat) next_beat = now + std::chrono::milliseconds(fc.heartbeat_ms);
      }
    }
  }

  Status setup() {
    for (const auto& tn : fc.tenants) {
      RETURN_IF_ERROR(conn->ensure_tenant(tn));
      auto t = std::make_unique<Tenant>();
      t->name = tn;
      ASSIGN_OR_RETURN(t->scale_kv, conn->kv(scale_bucket(tn)));
      ASSIGN_OR_RETURN(t->workers_kv, conn->kv(workers_bucket(tn)));
      sync_paused(*t);
      tenants[tn] = std::move(t);
    }
    for (const auto& mc : cfg.models) {
      if (mc.type == "queue") continue;
      auto it = providers.find(mc.name);
      if (it == providers.end()) {
        ASSIGN_OR_RETURN(auto p, providers::create_provider(mc));
        it = providers.emplace(mc.name, std::move(p)).first;
      }
      for (const auto& tn : fc.tenants) {
        RETURN_IF_ERROR(conn->ensure_model_consumer(tn, mc.name));
        auto m = std::make_unique<Model>();
        m->tenant = tn;
        m->name = mc.name;
        m->provider = it->second;
        m->slots = fc.slots > 0 ? fc.slots : (mc.max_concurrent > 0 ? mc.max_concurrent : mc.parallel);
        ASSIGN_OR_RETURN(std::string subject, request_subject(tn, mc.name));
        ASSIGN_OR_RETURN(m->sub, conn->pull_subscribe(subject, request_stream(tn), consumer_name(mc.name)));
        models.push_back(std::move(m));
      }
    }
    for (auto& [tn, t] : tenants) {
      const char* whats[] = {"workers.scale", "workers.pause", "workers.resume", "jobs.cancel"};
      for (int w = 0; w < 4; ++w) {
        ASSIGN_OR_RETURN(std::string subject, TopicNamer::control(tn, whats[w]));
        closures.push_back(std::make_unique<CtrlClosure>(CtrlClosure{this, t.get(), w}));
        ASSIGN_OR_RETURN(SubPtr sub, conn->subscribe(subject, &Impl::on_ctrl, closures.back().get()));
        t->ctrl.push_back(std::move(sub));
      }
    }
    for (auto& m : models) {
      std::string subject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + request_stream(m->tenant) + "." +
                            consumer_name(m->name);
      advisory_closures.push_back(std::make_unique<AdvisoryClosure>(AdvisoryClosure{this, m.get()}));
      auto sub = conn->subscribe(subject, &Impl::on_advisory, advisory_closures.back().get());
      if (sub) m->advisory = std::move(sub).value();
      else spdlog::warn("fabric: no MAX_DELIVERIES advisories for {}: {}", m->name, sub.status().message());
    }
    return Status::ok();
  }
};

Worker::Worker(config::Config cfg) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->fc = impl_->cfg.fabric;
  impl_->id = impl_->fc.worker_id.empty() ? default_worker_id() : impl_->fc.worker_id;
}

Worker::~Worker() { drain(0); }

const std::string& Worker::id() const { return impl_->id; }

Status Worker::start(const std::atomic<bool>& stop) {
  Impl& w = *impl_;
  ASSIGN_OR_RETURN(w.conn, Connection::connect(w.fc, "llmpool-worker " + w.id));
  // Until the server answers: streams and consumers are created once it does.
  for (int attempt = 0;; ++attempt) {
    Status st = w.setup();
    if (st) break;
    if (st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kPermissionDenied || stop) return st;
    if (attempt % 10 == 0) spdlog::warn("fabric: waiting for NATS: {}", st.message());
    w.tenants.clear();
    w.models.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  for (int i = 0; i < 2; ++i) w.finishers.emplace_back([&w] { w.finisher_loop(); });
  w.ticker = std::thread([&w] { w.ticker_loop(); });
  for (auto& m : w.models) m->thread = std::thread([&w, mp = m.get()] { w.fetch_loop(*mp); });
  spdlog::info("fabric: worker {} serving {} consumer(s) on {}", w.id, w.models.size(), w.fc.nats_url);
  return Status::ok();
}

void Worker::drain(int64_t grace_ms) {
  Impl& w = *impl_;
  if (!w.conn) return;
  w.stopping = true;
  w.cv.notify_all();
  for (auto& m : w.models)
    if (m->thread.joinable()) m->thread.join();
  auto deadline = Clock::now() + std::chrono::milliseconds(grace_ms);
  std::vector<std::shared_ptr<Job>> late;
  {
    std::unique_lock<std::mutex> lock(w.mu);
    w.cv.wait_until(lock, deadline, [&] { return w.running.empty(); });
    for (auto& [p, j] : w.running) late.push_back(j);
  }
  // What did not finish in time goes back to the queue at once. Cancelled
  // outside the lock: a provider may end the job from inside cancel().
  for (auto& j : late) {
    j->abandoned = true;
    natsMsg_Nak(j->msg.get(), nullptr);
    j->cancel->cancel();
  }
  late.clear();
  {
    std::unique_lock<std::mutex> lock(w.mu);
    // Results of cancelled jobs are not published: they were NAKed.
    w.cv.wait_for(lock, std::chrono::seconds(5), [&] { return w.running.empty() && w.finished.empty(); });
    w.finishing_done = true;
  }
  w.cv.notify_all();
  for (auto& t : w.finishers)
    if (t.joinable()) t.join();
  if (w.ticker.joinable()) w.ticker.join();
  for (auto& [n, t] : w.tenants) {
    if (t->workers_kv) kvStore_Delete(t->workers_kv.get(), w.id.c_str());
    t->ctrl.clear();
  }
  for (auto& m : w.models) {
    m->advisory.reset();
    m->sub.reset();
  }
  w.providers.clear();
  w.models.clear();
  natsConnection_FlushTimeout(w.conn->nc(), 2000);
  w.conn.reset();
}

}  // namespace llmpool::fabric
