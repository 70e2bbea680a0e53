// The fabric's messages, as JSON (docs/fabric.md, "Wire format"). Every
// decoder reads untrusted bytes: the size is checked against
// `max_bytes` first, then the text goes through parse_json (depth 64), and
// every field is type-checked and bounded. Errors are InvalidArgument
// naming the field. Pure functions; thread-safe.
//
//   job     {"v":1,"id","tenant","model","endpoint","body","reply"?,"deadline_ms"?}
//           body: the OpenAI request body, JSON text; reply: the core subject
//           an interactive requester listens on; deadline_ms: Unix ms.
//   result  {"v":1,"id","status_code","body","worker"?}   body: response JSON text
//   event   {"v":1,"seq","kind":"start"|"chunk"|"alive"|"done","worker",
//            "chunk"?,"status_code"?,"body"?}           on a job's reply subject
//   heartbeat {"v":1,"id","tenant","models":[{"name","slots","free","pending"}],
//              "in_flight","paused","share","version","ts_ms"}
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace llmpool::fabric {

inline constexpr size_t kMaxIdLength = 256;
inline constexpr size_t kMaxModelLength = 256;
inline constexpr size_t kMaxSubjectLength = 512;

struct JobMessage {
  std::string id;
  std::string tenant;
  std::string model;
  std::string endpoint;  // /v1/chat/completions, /v1/completions
  std::string body;
  std::string reply;     // "" for batch jobs: the result goes to the results stream
  int64_t deadline_ms = 0;  // 0: none
};

struct ResultMessage {
  std::string id;
  int32_t status_code = 200;
  std::string body;
  std::string worker;
};

struct StreamEvent {
  enum class Kind { kStart, kChunk, kAlive, kDone };
  int64_t seq = 0;
  Kind kind = Kind::kAlive;
  std::string worker;
  nlohmann::json chunk;      // kChunk: an OpenAI stream chunk object
  int32_t status_code = 0;   // kDone
  std::string body;          // kDone: the whole response (or error) JSON text
};

struct ModelLoad {
  std::string name;
  int32_t slots = 0;
  int32_t free = 0;
  int64_t pending = 0;  // the consumer's queue lag (jobs not yet delivered)
  bool operator==(const ModelLoad&) const = default;
};

struct Heartbeat {
  std::string id;
  std::string tenant;
  std::vector<ModelLoad> models;
  int32_t in_flight = 0;
  bool paused = false;
  int32_t share = -1;  // the tenant's concurrency granted to this worker; -1: unlimited
  std::string version;
  int64_t ts_ms = 0;
};

std::string encode_job(const JobMessage& j);
Result<JobMessage> decode_job(std::string_view data, size_t max_bytes);
std::string encode_result(const ResultMessage& r);
Result<ResultMessage> decode_result(std::string_view data, size_t max_bytes);
std::string encode_event(const StreamEvent& e);
Result<StreamEvent> decode_event(std::string_view data, size_t max_bytes);
std::string encode_heartbeat(const Heartbeat& h);
Result<Heartbeat> decode_heartbeat(std::string_view data, size_t max_bytes);

// {"count":N} for ctrl.<t>.workers.scale (0 <= N <= 1e6; -1: unlimited).
Result<int32_t> decode_scale(std::string_view data);
// {"ids":[...]} for ctrl.<t>.jobs.cancel (at most 10,000 ids).
Result<std::vector<std::string>> decode_cancel(std::string_view data);
std::string encode_cancel(const std::vector<std::string>& ids);

// Unix time in milliseconds.
int64_t unix_ms();

}  // namespace llmpool::fabric
