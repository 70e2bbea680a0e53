// The fabric's link to NATS (docs/fabric.md): one connection with its
// JetStream context, the per-tenant streams, consumers and KV buckets
// created idempotently, and small RAII wrappers over nats.c handles.
//
// Connection::connect() reads `fabric.nats_url` (the caller applies
// --nats-url first), a creds file or a user and password from the
// environment variables the config names, and keeps reconnecting forever
// (backoff 100 ms doubling to 5 s, with jitter). It fails only when the
// settings are unusable; a server that is down at start is retried in the
// background (nats.c's RetryOnFailedConnect), so a worker may start before
// its server.
//
// Names: for tenant t (a subject token),
//   stream LLMPOOL_REQ_<t>  subjects llm.<t>.infer.requests.v1.>   work queue
//   stream LLMPOOL_RES_<t>  subject  llm.<t>.infer.results.v1      limits (results_max_age)
//   stream LLMPOOL_DLQ_<t>  subject  llm.<t>.infer.dead.v1         limits
//   KV     llmpool_scale_<t>   key "count": the tenant's fleet-wide concurrency
//   KV     llmpool_workers_<t> key <worker id>: live workers (TTL 3 heartbeats)
// A job for model m goes to llm.<t>.infer.requests.v1.<model_token(m)>, so
// each model has its own pull consumer ("worker_<token>").
//
// Thread-safety: Connection's methods are thread-safe (nats.c's are).
// The Connection owns the natsConnection and jsCtx; destroy it after every
// subscription made from it.
#pragma once

#include <nats/nats.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "config/config.h"

namespace llmpool::fabric {

// Status for a nats.c failure: `what` plus nats.c's text and, when given,
// the JetStream error code.
Status nats_status(natsStatus s, std::string_view what, jsErrCode js_err = static_cast<jsErrCode>(0));

struct MsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;
struct SubDeleter {
  void operator()(natsSubscription* s) const {
    natsSubscription_Unsubscribe(s);
    natsSubscription_Destroy(s);
  }
};
using SubPtr = std::unique_ptr<natsSubscription, SubDeleter>;
struct KvDeleter {
  void operator()(kvStore* kv) const { kvStore_Destroy(kv); }
};
using KvPtr = std::unique_ptr<kvStore, KvDeleter>;

// A model name as one subject token: itself when it is one, else its
// characters outside [a-z0-9_-] replaced by '_' and a hash appended.
std::string model_token(std::string_view model);

// The names above, for tenant `t` (already a subject token).
std::string request_stream(std::string_view t);
std::string result_stream(std::string_view t);
std::string dead_stream(std::string_view t);
std::string scale_bucket(std::string_view t);
std::string workers_bucket(std::string_view t);
// llm.<t>.infer.requests.v1.<model_token(model)>; InvalidArgument for a bad tenant.
Result<std::string> request_subject(std::string_view t, std::string_view model);
// The consumer name of `model`'s workers.
std::string consumer_name(std::string_view model);
// "" -> kDefaultTenant.
std::string tenant_or_default(std::string_view tenant);

class Connection {
 public:
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // `name` names the client on the server (monitoring).
  static Result<std::shared_ptr<Connection>> connect(const config::FabricConfig& cfg, const std::string& name);

  // Creates (or updates to these settings) tenant t's streams and KV
  // buckets. Idempotent; Unavailable when the server cannot be reached.
  Status ensure_tenant(std::string_view t);
  // Creates or updates the durable pull consumer of `model` on t's request stream.
  Status ensure_model_consumer(std::string_view t, std::string_view model);

  // Core NATS publish (fire and forget; buffered while reconnecting).
  Status publish(const std::string& subject, std::string_view data);
  // JetStream publish with Nats-Msg-Id = msg_id; waits for the stream's
  // ack. `duplicate` (may be null) says the stream dropped it as one.
  Status js_publish(const std::string& subject, std::string_view data, const std::string& msg_id,
                    bool* duplicate = nullptr, const std::vector<std::pair<std::string, std::string>>& headers = {});
  // A core subscription delivering on nats.c's thread.
  Result<SubPtr> subscribe(const std::string& subject, natsMsgHandler handler, void* closure);
  // A synchronous pull subscription bound to the durable `consumer` on `stream`.
  Result<SubPtr> pull_subscribe(const std::string& subject, const std::string& stream, const std::string& consumer);
  Result<KvPtr> kv(const std::string& bucket);
  // A fresh inbox subject.
  std::string new_inbox();
  bool connected() const;

  natsConnection* nc() const { return nc_; }
  jsCtx* js() const { return js_; }
  const config::FabricConfig& config() const { return cfg_; }

 private:
  explicit Connection(config::FabricConfig cfg) : cfg_(std::move(cfg)) {}
  Status add_or_update_stream(jsStreamConfig* sc);

  config::FabricConfig cfg_;
  natsOptions* opts_ = nullptr;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
};

using ConnectionPtr = std::shared_ptr<Connection>;

// A nats-server `authorization { users = [...] }` block giving each tenant
// (name, password) a user limited to llm.<t>.>, ctrl.<t>.>, its own KV
// buckets and the JetStream API (docs/fabric.md, "Tenant isolation").
std::string nats_authorization_config(const std::vector<std::pair<std::string, std::string>>& tenants);

// The connection queue models use in this process (set by `serve` when a
// fabric: block is configured; null otherwise). Thread-safe.
void set_process_connection(ConnectionPtr c);
ConnectionPtr process_connection();

}  // namespace llmpool::fabric
