#include "fabric/connection.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "common/topic.h"

namespace llmpool::fabric {
namespace {

constexpr int64_t kNsPerMs = 1000000;

std::mutex g_process_mu;
ConnectionPtr g_process_connection;  // guarded by g_process_mu

// 100 ms doubling to 5 s, +-20 % jitter: a restarted server is not hit by
// every client at the same moment.
int64_t reconnect_delay(natsConnection*, int attempts, void*) {
  int64_t d = 100;
  for (int i = 1; i < attempts && d < 5000; ++i) d *= 2;
  if (d > 5000) d = 5000;
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> jitter(-d / 5, d / 5);
  return d + jitter(rng);
}

void on_disconnected(natsConnection*, void* closure) {
  spdlog::warn("fabric: disconnected from NATS ({}); reconnecting", static_cast<const char*>(closure));
}
void on_reconnected(natsConnection*, void* closure) {
  spdlog::info("fabric: reconnected to NATS ({})", static_cast<const char*>(closure));
}

}  // namespace

Status nats_status(natsStatus s, std::string_view what, jsErrCode js_err) {
  std::string msg = std::string(what) + ": " + natsStatus_GetText(s);
  if (js_err != 0) msg += " (JetStream error " + std::to_string(static_cast<int>(js_err)) + ")";
  if (s == NATS_TIMEOUT) return Status::deadline_exceeded(msg);
  if (s == NATS_NOT_PERMITTED) return Status::permission_denied(msg);
  return Status::unavailable(msg);
}

std::string model_token(std::string_view model) {
  if (is_subject_token(model)) return std::string(model);
  std::string out;
  for (char c : model.substr(0, 40)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    out += ok ? c : (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : '_');
  }
  uint64_t h = 1469598103934665603ull;  // FNV-1a: stable across processes and builds
  for (unsigned char c : model) h = (h ^ c) * 1099511628211ull;
  char buf[24];
  std::snprintf(buf, sizeof buf, "-%016llx", static_cast<unsigned long long>(h));
  return out + buf;
}

// The tenant as it is ([a-z0-9_-], TopicNamer): stream names may hold '-',
// and mapping it to '_' would give tenants a-b and a_b the same streams.
std::string request_stream(std::string_view t) { return "LLMPOOL_REQ_" + std::string(t); }
std::string result_stream(std::string_view t) { return "LLMPOOL_RES_" + std::string(t); }
std::string dead_stream(std::string_view t) { return "LLMPOOL_DLQ_" + std::string(t); }
std::string scale_bucket(std::string_view t) { return "llmpool_scale_" + std::string(t); }
std::string workers_bucket(std::string_view t) { return "llmpool_workers_" + std::string(t); }
std::string consumer_name(std::string_view model) { return "worker_" + model_token(model); }
std::string tenant_or_default(std::string_view tenant) {
  return tenant.empty() ? std::string(kDefaultTenant) : std::string(tenant);
}

Result<std::string> request_subject(std::string_view t, std::string_view model) {
  ASSIGN_OR_RETURN(std::string base, TopicNamer::topic(t, "infer.requests"));
  return base + "." + model_token(model);
}

Result<std::shared_ptr<Connection>> Connection::connect(const config::FabricConfig& cfg, const std::string& name) {
  std::shared_ptr<Connection> c(new Connection(cfg));
  natsStatus s = natsOptions_Create(&c->opts_);
  if (s != NATS_OK) return nats_status(s, "fabric: options");
  natsOptions_SetURL(c->opts_, cfg.nats_url.c_str());
  natsOptions_SetName(c->opts_, name.c_str());
  natsOptions_SetMaxReconnect(c->opts_, -1);  // forever
  natsOptions_SetCustomReconnectDelay(c->opts_, reconnect_delay, nullptr);
  natsOptions_SetReconnectBufSize(c->opts_, 64 << 20);
  natsOptions_SetTimeout(c->opts_, 2000);
  natsOptions_SetPingInterval(c->opts_, 2000);
  natsOptions_SetMaxPingsOut(c->opts_, 3);
  static const char* kUrlTag = "fabric";
  natsOptions_SetDisconnectedCB(c->opts_, on_disconnected, const_cast<char*>(kUrlTag));
  natsOptions_SetReconnectedCB(c->opts_, on_reconnected, const_cast<char*>(kUrlTag));
  natsOptions_SetRetryOnFailedConnect(c->opts_, true, nullptr, nullptr);
  if (!cfg.creds_file.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(cfg.creds_file, ec))
      return Status::invalid_argument("fabric.creds_file: no such file: " + cfg.creds_file);
    s = natsOptions_SetUserCredentialsFromFiles(c->opts_, cfg.creds_file.c_str(), nullptr);
    if (s != NATS_OK) return nats_status(s, "fabric.creds_file " + cfg.creds_file);
  } else if (!cfg.user_env.empty()) {
    const char* user = std::getenv(cfg.user_env.c_str());
    const char* pass = cfg.password_env.empty() ? nullptr : std::getenv(cfg.password_env.c_str());
    if (user && *user) natsOptions_SetUserInfo(c->opts_, user, pass ? pass : "");
  }
  s = natsConnection_Connect(&c->nc_, c->opts_);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) return nats_status(s, "fabric: cannot connect to " + cfg.nats_url);
  if (s == NATS_NOT_YET_CONNECTED) spdlog::warn("fabric: {} is not reachable yet; retrying in the background", cfg.nats_url);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;
  s = natsConnection_JetStream(&c->js_, c->nc_, &jo);
  if (s != NATS_OK) return nats_status(s, "fabric: JetStream context");
  return c;
}

Connection::~Connection() {
  if (js_) jsCtx_Destroy(js_);
  if (nc_) {
    natsConnection_FlushTimeout(nc_, 1000);
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
  if (opts_) natsOptions_Destroy(opts_);
}

bool Connection::connected() const { return nc_ && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED; }

Status Connection::add_or_update_stream(jsStreamConfig* sc) {
  jsErrCode err = static_cast<jsErrCode>(0);
  jsStreamInfo* si = nullptr;
  natsStatus s = js_AddStream(&si, js_, sc, nullptr, &err);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return Status::ok();
  }
  if (err == JSStreamNameExistErr) {  // exists with other settings: bring it to these
    err = static_cast<jsErrCode>(0);
    s = js_UpdateStream(&si, js_, sc, nullptr, &err);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(si);
      return Status::ok();
    }
  }
  return nats_status(s, std::string("fabric: stream ") + sc->Name, err);
}

Status Connection::ensure_tenant(std::string_view t) {
  if (!is_subject_token(t)) return Status::invalid_argument("fabric: tenant is not a subject token");
  const int64_t dup = cfg_.dedupe_window_ms * kNsPerMs;
  auto stream = [&](const std::string& name, const std::string& subject, jsRetentionPolicy retention, int64_t max_age_ms) {
    const char* subjects[] = {subject.c_str()};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name.c_str();
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = retention;
    sc.Storage = js_FileStorage;
    sc.Duplicates = dup;
    sc.MaxAge = max_age_ms * kNsPerMs;
    sc.MaxMsgSize = static_cast<int32_t>(cfg_.max_message_bytes);
    return add_or_update_stream(&sc);
  };
  ASSIGN_OR_RETURN(std::string requests, TopicNamer::topic(t, "infer.requests"));
  RETURN_IF_ERROR(stream(request_stream(t), requests + ".>", js_WorkQueuePolicy, 0));
  ASSIGN_OR_RETURN(std::string results, TopicNamer::topic(t, "infer.results"));
  RETURN_IF_ERROR(stream(result_stream(t), results, js_LimitsPolicy, cfg_.results_max_age_ms));
  ASSIGN_OR_RETURN(std::string dead, TopicNamer::topic(t, "infer.dead"));
  RETURN_IF_ERROR(stream(dead_stream(t), dead, js_LimitsPolicy, 0));
  for (int which = 0; which < 2; ++which) {
    std::string bucket = which == 0 ? scale_bucket(t) : workers_bucket(t);
    kvStore* kv = nullptr;
    if (js_KeyValue(&kv, js_, bucket.c_str()) == NATS_OK) {
      kvStore_Destroy(kv);
      continue;
    }
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = bucket.c_str();
    kc.History = 1;
    kc.StorageType = js_FileStorage;
    if (which == 1) kc.TTL = 3 * cfg_.heartbeat_ms * kNsPerMs;
    natsStatus s = js_CreateKeyValue(&kv, js_, &kc);
    if (s != NATS_OK) {
      // Another process may have created it between the two calls.
      if (js_KeyValue(&kv, js_, bucket.c_str()) != NATS_OK) return nats_status(s, "fabric: KV bucket " + bucket);
    }
    kvStore_Destroy(kv);
  }
  return Status::ok();
}

Status Connection::ensure_model_consumer(std::string_view t, std::string_view model) {
  std::string stream = request_stream(t);
  std::string durable = consumer_name(model);
  ASSIGN_OR_RETURN(std::string subject, request_subject(t, model));
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = durable.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = cfg_.ack_wait_ms * kNsPerMs;
  cc.MaxDeliver = cfg_.max_deliver;
  cc.MaxAckPending = cfg_.max_ack_pending;
  cc.FilterSubject = subject.c_str();
  cc.MaxWaiting = 512;
  jsErrCode err = static_cast<jsErrCode>(0);
  jsConsumerInfo* ci = nullptr;
  natsStatus s = js_AddConsumer(&ci, js_, stream.c_str(), &cc, nullptr, &err);
  if (s != NATS_OK) {
    err = static_cast<jsErrCode>(0);
    s = js_UpdateConsumer(&ci, js_, stream.c_str(), &cc, nullptr, &err);
  }
  if (s != NATS_OK) return nats_status(s, "fabric: consumer " + durable + " on " + stream, err);
  jsConsumerInfo_Destroy(ci);
  return Status::ok();
}

Status Connection::publish(const std::string& subject, std::string_view data) {
  natsStatus s = natsConnection_Publish(nc_, subject.c_str(), data.data(), static_cast<int>(data.size()));
  if (s != NATS_OK) return nats_status(s, "fabric: publish on " + subject);
  return Status::ok();
}

Status Connection::js_publish(const std::string& subject, std::string_view data, const std::string& msg_id,
                              bool* duplicate, const std::vector<std::pair<std::string, std::string>>& headers) {
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
  if (s != NATS_OK) return nats_status(s, "fabric: message");
  MsgPtr msg(raw);
  for (const auto& [k, v] : headers) natsMsgHeader_Set(msg.get(), k.c_str(), v.c_str());
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = msg_id.c_str();
  jsPubAck* ack = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  s = js_PublishMsg(&ack, js_, msg.get(), &po, &err);
  if (s != NATS_OK) return nats_status(s, "fabric: publish on " + subject, err);
  if (duplicate) *duplicate = ack->Duplicate;
  jsPubAck_Destroy(ack);
  return Status::ok();
}

Result<SubPtr> Connection::subscribe(const std::string& subject, natsMsgHandler handler, void* closure) {
  natsSubscription* sub = nullptr;
  natsStatus s = natsConnection_Subscribe(&sub, nc_, subject.c_str(), handler, closure);
  if (s != NATS_OK) return nats_status(s, "fabric: subscribe " + subject);
  natsSubscription_SetPendingLimits(sub, 1 << 20, 1 << 30);
  return SubPtr(sub);
}

Result<SubPtr> Connection::pull_subscribe(const std::string& subject, const std::string& stream,
                                          const std::string& consumer) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Consumer = consumer.c_str();
  natsSubscription* sub = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_PullSubscribe(&sub, js_, subject.c_str(), consumer.c_str(), nullptr, &so, &err);
  if (s != NATS_OK) return nats_status(s, "fabric: pull consumer " + consumer, err);
  return SubPtr(sub);
}

Result<KvPtr> Connection::kv(const std::string& bucket) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, js_, bucket.c_str());
  if (s != NATS_OK) return nats_status(s, "fabric: KV bucket " + bucket);
  return KvPtr(kv);
}

std::string Connection::new_inbox() {
  natsInbox* inbox = nullptr;
  natsInbox_Create(&inbox);
  std::string out = inbox ? std::string(inbox) : std::string();
  natsInbox_Destroy(inbox);
  return out;
}

std::string nats_authorization_config(const std::vector<std::pair<std::string, std::string>>& tenants) {
  auto quoted = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "\"" : ", \"") + s + "\"";
    return out;
  };
  std::string out = "authorization {\n  users = [\n";
  for (const auto& [t, password] : tenants) {
    std::vector<std::string> own = {"llm." + t + ".>", "ctrl." + t + ".>", "$KV." + scale_bucket(t) + ".>",
                                    "$KV." + workers_bucket(t) + ".>"};
    // The JetStream API only for the tenant's own streams (the KV buckets
    // are streams KV_<bucket>): manage them and their consumers, pull,
    // read messages, ack and answer flow control. STREAM.NAMES and INFO
    // name no stream; they tell names and counts, nothing of the contents.
    std::vector<std::string> publish = own;
    publish.insert(publish.end(), {"$JS.API.INFO", "$JS.API.STREAM.NAMES", "_INBOX.>"});
    for (const std::string& st : {request_stream(t), result_stream(t), dead_stream(t), "KV_" + scale_bucket(t),
                                  "KV_" + workers_bucket(t)}) {
      publish.insert(publish.end(),
                     {"$JS.API.STREAM.*." + st, "$JS.API.STREAM.MSG.*." + st, "$JS.API.DIRECT.GET." + st,
                      "$JS.API.DIRECT.GET." + st + ".>", "$JS.API.CONSUMER.*." + st, "$JS.API.CONSUMER.*." + st + ".>",
                      "$JS.API.CONSUMER.DURABLE.CREATE." + st + ".>", "$JS.API.CONSUMER.MSG.NEXT." + st + ".>",
                      "$JS.ACK." + st + ".>", "$JS.FC." + st + ".>"});
    }
    std::vector<std::string> subscribe = own;
    subscribe.insert(subscribe.end(),
                     {"_INBOX.>", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + request_stream(t) + ".>"});
    out += "    { user: \"" + t + "\", password: \"" + password + "\", permissions: {\n";
    out += "        publish: { allow: [" + quoted(publish) + "] }\n";
    out += "        subscribe: { allow: [" + quoted(subscribe) + "] }\n      } }\n";
  }
  out += "  ]\n}\n";
  return out;
}

void set_process_connection(ConnectionPtr c) {
  std::lock_guard<std::mutex> lock(g_process_mu);
  g_process_connection = std::move(c);
}

ConnectionPtr process_connection() {
  std::lock_guard<std::mutex> lock(g_process_mu);
  return g_process_connection;
}

}  // namespace llmpool::fabric
