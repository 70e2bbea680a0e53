#include "fabric/wire.h"

#include <chrono>

#include "common/json.h"

namespace llmpool::fabric {
namespace {

using nlohmann::json;

// A message's JSON object, read with every limit: size first, then depth.
Result<json> read_object(std::string_view data, size_t max_bytes, const char* what) {
  if (data.size() > max_bytes)
    return Status::invalid_argument(std::string(what) + " is " + std::to_string(data.size()) +
                                    " bytes, more than the limit of " + std::to_string(max_bytes));
  ASSIGN_OR_RETURN(json j, parse_json(data, JsonLimits{64, max_bytes}, what));
  if (!j.is_object()) return Status::invalid_argument(std::string(what) + " must be a JSON object, got " + json_excerpt(j));
  return j;
}

// Typed members; `required` members that are absent are errors.
class Fields {
 public:
  Fields(const json& j, const char* what) : j_(j), what_(what) {}

  Status str(const char* key, size_t max_len, std::string* out, bool required, bool non_empty = false) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null())
      return required ? err(key, "is required") : Status::ok();
    if (!it->is_string()) return err(key, std::string("must be a string, got ") + json_type_name(*it));
    const auto& s = it->get_ref<const std::string&>();
    if (s.size() > max_len) return err(key, "is longer than " + std::to_string(max_len) + " bytes");
    if (non_empty && s.empty()) return err(key, "must not be empty");
    *out = s;
    return Status::ok();
  }
  template <typename Int>
  Status integer(const char* key, int64_t lo, int64_t hi, Int* out, bool required) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return required ? err(key, "is required") : Status::ok();
    if (!it->is_number_integer()) return err(key, "must be an integer, got " + json_excerpt(*it));
    int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                    ? INT64_MAX
                    : it->get<int64_t>();
    if (v < lo || v > hi) return err(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    *out = static_cast<Int>(v);
    return Status::ok();
  }
  Status boolean(const char* key, bool* out) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return Status::ok();
    if (!it->is_boolean()) return err(key, "must be true or false");
    *out = it->get<bool>();
    return Status::ok();
  }
  Status err(const char* key, const std::string& what) const {
    return Status::invalid_argument(std::string(what_) + ": '" + key + "' " + what, key);
  }
  const json& j() const { return j_; }

 private:
  const json& j_;
  const char* what_;
};

Status check_version(const Fields& f) {
  int32_t v = 1;
  RETURN_IF_ERROR(f.integer("v", 1, 1000, &v, false));
  if (v != 1) return f.err("v", "is version " + std::to_string(v) + "; this build reads version 1");
  return Status::ok();
}

const char* kind_name(StreamEvent::Kind k) {
  switch (k) {
    case StreamEvent::Kind::kStart: return "start";
    case StreamEvent::Kind::kChunk: return "chunk";
    case StreamEvent::Kind::kAlive: return "alive";
    case StreamEvent::Kind::kDone: return "done";
  }
  return "alive";
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string encode_job(const JobMessage& m) {
  json j = {{"v", 1}, {"id", m.id}, {"tenant", m.tenant}, {"model", m.model}, {"endpoint", m.endpoint}, {"body", m.body}};
  if (!m.reply.empty()) j["reply"] = m.reply;
  if (m.deadline_ms > 0) j["deadline_ms"] = m.deadline_ms;
  return dump(j);
}

Result<JobMessage> decode_job(std::string_view data, size_t max_bytes) {
  ASSIGN_OR_RETURN(json j, read_object(data, max_bytes, "the job"));
  Fields f(j, "the job");
  RETURN_IF_ERROR(check_version(f));
  JobMessage m;
  RETURN_IF_ERROR(f.str("id", kMaxIdLength, &m.id, true, true));
  RETURN_IF_ERROR(f.str("tenant", 64, &m.tenant, false));
  RETURN_IF_ERROR(f.str("model", kMaxModelLength, &m.model, true, true));
  RETURN_IF_ERROR(f.str("endpoint", 64, &m.endpoint, true));
  if (m.endpoint != "/v1/chat/completions" && m.endpoint != "/v1/completions")
    return f.err("endpoint", "must be /v1/chat/completions or /v1/completions");
  RETURN_IF_ERROR(f.str("body", max_bytes, &m.body, true));
  RETURN_IF_ERROR(f.str("reply", kMaxSubjectLength, &m.reply, false));
  for (char c : m.reply)
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '*' || c == '>')
      return f.err("reply", "is not a plain NATS subject");
  RETURN_IF_ERROR(f.integer("deadline_ms", 0, INT64_MAX, &m.deadline_ms, false));
  return m;
}

std::string encode_result(const ResultMessage& r) {
  json j = {{"v", 1}, {"id", r.id}, {"status_code", r.status_code}, {"body", r.body}};
  if (!r.worker.empty()) j["worker"] = r.worker;
  return dump(j);
}

Result<ResultMessage> decode_result(std::string_view data, size_t max_bytes) {
  ASSIGN_OR_RETURN(json j, read_object(data, max_bytes, "the result"));
  Fields f(j, "the result");
  RETURN_IF_ERROR(check_version(f));
  ResultMessage r;
  RETURN_IF_ERROR(f.str("id", kMaxIdLength, &r.id, true, true));
  RETURN_IF_ERROR(f.integer("status_code", 100, 599, &r.status_code, true));
  RETURN_IF_ERROR(f.str("body", max_bytes, &r.body, true));
  RETURN_IF_ERROR(f.str("worker", 64, &r.worker, false));
  return r;
}

std::string encode_event(const StreamEvent& e) {
  json j = {{"v", 1}, {"seq", e.seq}, {"kind", kind_name(e.kind)}, {"worker", e.worker}};
  if (e.kind == StreamEvent::Kind::kChunk) j["chunk"] = e.chunk;
  if (e.kind == StreamEvent::Kind::kDone) {
    j["status_code"] = e.status_code;
    j["body"] = e.body;
  }
  return dump(j);
}

Result<StreamEvent> decode_event(std::string_view data, size_t max_bytes) {
  ASSIGN_OR_RETURN(json j, read_object(data, max_bytes, "the stream event"));
  Fields f(j, "the stream event");
  RETURN_IF_ERROR(check_version(f));
  StreamEvent e;
  RETURN_IF_ERROR(f.integer("seq", 0, INT64_MAX, &e.seq, true));
  std::string kind;
  RETURN_IF_ERROR(f.str("kind", 16, &kind, true));
  if (kind == "start") e.kind = StreamEvent::Kind::kStart;
  else if (kind == "chunk") e.kind = StreamEvent::Kind::kChunk;
  else if (kind == "alive") e.kind = StreamEvent::Kind::kAlive;
  else if (kind == "done") e.kind = StreamEvent::Kind::kDone;
  else return f.err("kind", "must be start, chunk, alive or done");
  RETURN_IF_ERROR(f.str("worker", 64, &e.worker, false));
  if (e.kind == StreamEvent::Kind::kChunk) {
    auto it = j.find("chunk");
    if (it == j.end() || !it->is_object()) return f.err("chunk", "must be an object");
    e.chunk = std::move(*it);
  }
  if (e.kind == StreamEvent::Kind::kDone) {
    RETURN_IF_ERROR(f.integer("status_code", 100, 599, &e.status_code, true));
    RETURN_IF_ERROR(f.str("body", max_bytes, &e.body, true));
  }
  return e;
}

std::string encode_heartbeat(const Heartbeat& h) {
  json models = json::array();
  for (const auto& m : h.models)
    models.push_back({{"name", m.name}, {"slots", m.slots}, {"free", m.free}, {"pending", m.pending}});
  return dump({{"v", 1},
               {"id", h.id},
               {"tenant", h.tenant},
               {"models", models},
               {"in_flight", h.in_flight},
               {"paused", h.paused},
               {"share", h.share},
               {"version", h.version},
               {"ts_ms", h.ts_ms}});
}

Result<Heartbeat> decode_heartbeat(std::string_view data, size_t max_bytes) {
  ASSIGN_OR_RETURN(json j, read_object(data, max_bytes, "the heartbeat"));
  Fields f(j, "the heartbeat");
  RETURN_IF_ERROR(check_version(f));
  Heartbeat h;
  RETURN_IF_ERROR(f.str("id", 64, &h.id, true, true));
  RETURN_IF_ERROR(f.str("tenant", 64, &h.tenant, false));
  RETURN_IF_ERROR(f.integer("in_flight", 0, 1 << 24, &h.in_flight, false));
  RETURN_IF_ERROR(f.boolean("paused", &h.paused));
  RETURN_IF_ERROR(f.integer("share", -1, 1 << 24, &h.share, false));
  RETURN_IF_ERROR(f.str("version", 64, &h.version, false));
  RETURN_IF_ERROR(f.integer("ts_ms", 0, INT64_MAX, &h.ts_ms, false));
  auto it = j.find("models");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->size() > 1024) return f.err("models", "must be an array of at most 1024 models");
    for (const auto& m : *it) {
      if (!m.is_object()) return f.err("models", "must hold objects");
      Fields mf(m, "the heartbeat's model");
      ModelLoad l;
      RETURN_IF_ERROR(mf.str("name", kMaxModelLength, &l.name, true, true));
      RETURN_IF_ERROR(mf.integer("slots", 0, 1 << 24, &l.slots, false));
      RETURN_IF_ERROR(mf.integer("free", 0, 1 << 24, &l.free, false));
      RETURN_IF_ERROR(mf.integer("pending", 0, INT64_MAX, &l.pending, false));
      h.models.push_back(std::move(l));
    }
  }
  return h;
}

Result<int32_t> decode_scale(std::string_view data) {
  ASSIGN_OR_RETURN(json j, read_object(data, 4096, "the scale message"));
  Fields f(j, "the scale message");
  int32_t n = 0;
  RETURN_IF_ERROR(f.integer("count", -1, 1000000, &n, true));
  return n;
}

Result<std::vector<std::string>> decode_cancel(std::string_view data) {
  ASSIGN_OR_RETURN(json j, read_object(data, 4u << 20, "the cancel message"));
  auto it = j.find("ids");
  if (it == j.end() || !it->is_array() || it->size() > 10000)
    return Status::invalid_argument("the cancel message: 'ids' must be an array of at most 10000 job ids", "ids");
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string() || v.get_ref<const std::string&>().size() > kMaxIdLength)
      return Status::invalid_argument("the cancel message: 'ids' must hold job ids (strings)", "ids");
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::string encode_cancel(const std::vector<std::string>& ids) { return dump({{"ids", ids}}); }

}  // namespace llmpool::fabric
