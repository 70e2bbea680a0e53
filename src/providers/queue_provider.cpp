#include "providers/queue_provider.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/text.h"
#include "common/topic.h"
#include "fabric/connection.h"
#include "fabric/fleet.h"
#include "fabric/wire.h"
#include "providers/factory.h"
#include "providers/openai_provider.h"

namespace llmpool::providers {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Call {
  std::string id;
  std::string tenant;
  std::string subject;   // where the job is published
  std::string job;       // the encoded job
  GenerateCallbacks cb;
  CancelTokenPtr cancel;
  CancelToken::Subscription cancel_sub;
  std::atomic<bool> cancel_requested{false};
  bool chat = true;
  int32_t n = 1;

  std::mutex mu;  // orders event handling, timer checks and the callbacks
  bool done = false;
  bool started = false;
  std::string worker;
  int64_t next_seq = 1;
  int64_t chunks = 0;
  Clock::time_point last_event;
  Clock::time_point deadline;
  std::unique_ptr<OpenAiStreamDecoder> stream;  // streamed requests: chunk -> Delta
};

}  // namespace

struct QueueProvider::Shared {
  fabric::ConnectionPtr conn;
  std::string name;
  std::string upstream_model;
  std::string who;     // "workers for model 'x'", for messages
  std::string node = random_hex(16);
  int64_t timeout_ms = 0;
  int64_t heartbeat_ms = 2000;
  size_t max_bytes = 1 << 20;

  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;                                  // guarded by mu
  std::map<std::string, std::shared_ptr<Call>> calls;     // guarded by mu
  std::deque<std::shared_ptr<Call>> to_send;              // guarded by mu
  std::map<std::string, fabric::SubPtr> subs;             // tenant -> reply subscription; sender thread only
  std::set<std::string> ensured;                          // sender thread only
  std::thread sender;
  std::thread timer;

  // Ends `call` (its mu held) with `result`, once.
  void finish(Call& call, Result<Completion> result) {
    if (call.done) return;
    call.done = true;
    {
      std::lock_guard<std::mutex> lock(mu);
      calls.erase(call.id);
    }
    call.cb.on_done(std::move(result));
  }

  void send_cancel(const Call& call) {
    auto subject = TopicNamer::control(call.tenant, "jobs.cancel");
    if (subject) (void)conn->publish(*subject, fabric::encode_cancel({call.id}));
  }

  Completion cancelled_completion(const Call& call) {
    Completion c = call.stream ? call.stream->completion() : Completion{};
    if (c.choices.empty())
      for (int32_t i = 0; i < call.n; ++i) c.choices.push_back(Choice{i, "", "", {}, FinishReason::kCancelled, {}});
    for (auto& ch : c.choices) ch.finish_reason = FinishReason::kCancelled;
    return c;
  }

  static void on_event(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
    fabric::MsgPtr msg(raw);
    static_cast<Shared*>(closure)->event(natsMsg_GetSubject(raw),
                                         std::string_view(natsMsg_GetData(raw), natsMsg_GetDataLength(raw)));
  }

  void event(const std::string& subject, std::string_view data) {
    std::string id = subject.substr(subject.rfind('.') + 1);
    std::shared_ptr<Call> call;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = calls.find(id);
      if (it == calls.end()) return;  // finished, or another node's
      call = it->second;
    }
    auto ev = fabric::decode_event(data, max_bytes);
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->done) return;
    if (!ev) return finish(*call, Status::unavailable(who + " sent an unreadable stream event: " + ev.status().message()));
    call->last_event = Clock::now();
    using Kind = fabric::StreamEvent::Kind;
    switch (ev->kind) {
      case Kind::kStart:
        // One `start` per delivery: a second one after deltas went out is a
        // redelivery (to another worker, or to the same worker id restarted),
        // whose deltas would repeat the answer from its beginning.
        if (call->chunks > 0)
          return finish(*call, Status::unavailable("the worker '" + call->worker +
                                                   "' serving this stream stopped mid-stream and the job was "
                                                   "redelivered; a stream cannot be resumed, so it ended early"));
        call->started = true;
        call->worker = ev->worker;
        call->next_seq = ev->seq + 1;
        return;
      case Kind::kAlive:
      case Kind::kChunk: {
        if (ev->worker != call->worker) return;  // a previous delivery's stragglers
        // One worker numbers its events 1, 2, ... after `start`; core NATS
        // keeps one publisher's order, so a gap is a loss.
        if (ev->seq != call->next_seq)
          return finish(*call, Status::unavailable(who + ": stream events lost (expected #" +
                                                   std::to_string(call->next_seq) + ", got #" + std::to_string(ev->seq) +
                                                   "); the stream ended early"));
        ++call->next_seq;
        if (ev->kind == Kind::kAlive) return;
        ++call->chunks;
        if (!call->stream) return;
        std::string sse = "data: " + ev->chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
        if (Status st = call->stream->feed(sse); !st) return finish(*call, st);
        return;
      }
      case Kind::kDone: {
        if (ev->status_code != 200)
          return finish(*call, upstream_error_status(ev->status_code, ev->body, who));
        OpenAiStreamDecoder whole(call->chat, call->n, who, max_bytes);
        HttpResponseHead head;
        head.status = 200;
        head.headers["content-type"] = "application/json";
        whole.start(head);
        Status st = whole.feed(ev->body);
        if (st) st = whole.finish();
        if (!st) return finish(*call, st);
        return finish(*call, whole.completion());
      }
    }
  }

  void send_loop() {
    for (;;) {
      std::shared_ptr<Call> call;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stopping || !to_send.empty(); });
        if (stopping) return;
        call = to_send.front();
        to_send.pop_front();
      }
      Status st = Status::ok();
      if (!ensured.count(call->tenant)) {
        st = conn->ensure_tenant(call->tenant);
        if (st) ensured.insert(call->tenant);
      }
      if (st && !subs.count(call->tenant)) {
        std::string prefix = *TopicNamer::topic(call->tenant, "infer.stream") + "." + node + ".*";
        auto sub = conn->subscribe(prefix, &Shared::on_event, this);
        if (sub) subs[call->tenant] = std::move(sub).value();
        else st = sub.status();
      }
      if (st) st = conn->js_publish(call->subject, call->job, call->id);
      if (!st) {
        std::lock_guard<std::mutex> lock(call->mu);
        finish(*call, Status::unavailable(who + ": the job could not be queued: " + st.message()));
      }
    }
  }

  void timer_loop() {
    for (;;) {
      std::vector<std::shared_ptr<Call>> snapshot;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping; });
        if (stopping) return;
        for (const auto& [id, c] : calls) snapshot.push_back(c);
      }
      auto now = Clock::now();
      const auto silence = std::chrono::milliseconds(3 * heartbeat_ms);
      for (const auto& call : snapshot) {
        std::lock_guard<std::mutex> lock(call->mu);
        if (call->done) continue;
        if (call->cancel_requested) {
          send_cancel(*call);
          finish(*call, cancelled_completion(*call));
        } else if (now >= call->deadline) {
          send_cancel(*call);
          finish(*call, Status::deadline_exceeded(who + ": no result within " + std::to_string(timeout_ms) + " ms"));
        } else if (call->started && now - call->last_event > silence) {
          if (call->chunks > 0) {
            finish(*call, Status::unavailable("the worker '" + call->worker +
                                              "' serving this stream stopped answering mid-stream (no event for " +
                                              std::to_string(3 * heartbeat_ms) + " ms); the stream ended early"));
          } else {
            call->started = false;  // it is redelivered to another worker after AckWait
          }
        }
      }
    }
  }
};

Result<ProviderPtr> QueueProvider::create(const config::ModelConfig& config) {
  fabric::ConnectionPtr conn = fabric::process_connection();
  if (!conn)
    return Status::unavailable("model '" + config.name +
                               "' is of type queue, but this process has no fabric connection (configure fabric:)");
  auto shared = std::make_shared<Shared>();
  shared->conn = conn;
  shared->name = config.name;
  shared->upstream_model = config.upstream_model.empty() ? config.name : config.upstream_model;
  shared->who = "workers for model '" + config.name + "'";
  shared->timeout_ms = config.deadline_ms > 0 ? config.deadline_ms : conn->config().request_timeout_ms;
  shared->heartbeat_ms = conn->config().heartbeat_ms;
  shared->max_bytes = conn->config().max_message_bytes;
  shared->sender = std::thread([s = shared.get()] { s->send_loop(); });
  shared->timer = std::thread([s = shared.get()] { s->timer_loop(); });
  return ProviderPtr(new QueueProvider(model_info(config), std::move(shared)));
}

QueueProvider::~QueueProvider() {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->stopping = true;
  }
  shared_->cv.notify_all();
  shared_->sender.join();
  shared_->timer.join();
  shared_->subs.clear();  // no event handler runs after this
  std::map<std::string, std::shared_ptr<Call>> calls;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    calls = shared_->calls;
  }
  for (auto& [id, call] : calls) {
    std::lock_guard<std::mutex> lock(call->mu);
    shared_->finish(*call, Status::unavailable(shared_->who + ": the model was unloaded"));
  }
}

void QueueProvider::generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) {
  const std::string tenant = fabric::tenant_or_default(request.tenant);
  if (auto fleet = fabric::process_fleet(); fleet && fleet->settled() &&
                                            fleet->model(tenant, shared_->upstream_model).workers == 0) {
    return callbacks.on_done(Status::unavailable("no live worker serves model '" + info_.name + "' (no heartbeat in " +
                                                 std::to_string(3 * shared_->heartbeat_ms) + " ms)"));
  }
  auto body = openai_request_json(request, shared_->upstream_model);
  if (!body) return callbacks.on_done(body.status());
  const bool streamed = static_cast<bool>(callbacks.on_delta);
  (*body)["stream"] = streamed;
  if (!streamed) body->erase("stream_options");
  // llmpool's own extension fields, which a worker reads like any client's
  // (not sent to third-party upstreams, which may refuse unknown fields).
  if (request.priority != 0) (*body)["priority"] = request.priority;
  if (request.thinking_budget >= 0) (*body)["thinking_budget"] = request.thinking_budget;
  if (!request.sampling.speculative) (*body)["speculative"] = false;
  auto subject = fabric::request_subject(tenant, shared_->upstream_model);
  if (!subject) return callbacks.on_done(subject.status());
  auto call = std::make_shared<Call>();
  call->id = "job-" + random_hex(24);
  call->tenant = tenant;
  call->subject = *subject;
  call->chat = !request.prompt.has_value();
  call->n = request.n;
  call->cb = std::move(callbacks);
  call->cancel = cancel;
  call->last_event = Clock::now();
  call->deadline = Clock::now() + std::chrono::milliseconds(shared_->timeout_ms);
  if (streamed) {
    call->stream = std::make_unique<OpenAiStreamDecoder>(call->chat, call->n, shared_->who, shared_->max_bytes);
    call->stream->on_delta = call->cb.on_delta;
  }
  fabric::JobMessage job;
  job.id = call->id;
  job.tenant = tenant;
  job.model = shared_->upstream_model;
  job.endpoint = call->chat ? "/v1/chat/completions" : "/v1/completions";
  job.body = body->dump(-1, ' ', false, json::error_handler_t::replace);
  job.reply = *TopicNamer::topic(tenant, "infer.stream") + "." + shared_->node + "." + call->id;
  job.deadline_ms = fabric::unix_ms() + shared_->timeout_ms;
  call->job = fabric::encode_job(job);
  if (call->job.size() > shared_->max_bytes)
    return call->cb.on_done(Status::invalid_argument("the request is larger than fabric.max_message_bytes (" +
                                                     std::to_string(shared_->max_bytes) + " bytes)"));
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->stopping) return call->cb.on_done(Status::unavailable(shared_->who + ": shutting down"));
    shared_->calls[call->id] = call;
    shared_->to_send.push_back(call);
  }
  if (cancel) {
    std::weak_ptr<Call> weak = call;
    auto sub = cancel->subscribe([weak] {
      if (auto c = weak.lock()) c->cancel_requested = true;
    });
    std::lock_guard<std::mutex> lock(call->mu);
    call->cancel_sub = std::move(sub);
  }
  shared_->cv.notify_all();
}

ProviderStats QueueProvider::stats() const {
  ProviderStats s;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    s.active_sequences = static_cast<int64_t>(shared_->calls.size());
  }
  if (auto fleet = fabric::process_fleet()) {
    for (const auto& t : shared_->conn->config().tenants) {
      fabric::ModelFleet f = fleet->model(t, shared_->upstream_model);
      s.parallel += f.slots;
      s.queued += f.pending;
    }
  }
  return s;
}

}  // namespace llmpool::providers
