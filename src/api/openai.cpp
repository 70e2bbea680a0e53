#include "api/openai.h"

#include <cmath>
#include <random>
#include <set>

namespace llmpool::api {
namespace {

using nlohmann::json;

Status bad(std::string param, std::string message) {
  return Status::invalid_argument(std::move(message), std::move(param));
}

// Reads an optional number field within [lo, hi]. Returns an error naming
// the field when present but not a number or out of range.
Status read_number(const json& j, const char* key, double lo, double hi, float* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_number()) return bad(key, std::string("'") + key + "' must be a number");
  double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    return bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " +
                        json(hi).dump() + ", got " + it->dump());
  *out = static_cast<float>(v);
  return Status::ok();
}

Status read_int(const json& j, const char* key, int64_t lo, int64_t hi, int64_t* out, bool* present) {
  auto it = j.find(key);
  if (present) *present = false;
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_number_integer())
    return bad(key, std::string("'") + key + "' must be an integer, got " + it->dump());
  // Unsigned values above INT64_MAX are out of range too.
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi))
    return bad(key, std::string("'") + key + "' must be at most " + std::to_string(hi));
  int64_t v = it->get<int64_t>();
  if (v < lo || v > hi)
    return bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
                        std::to_string(hi) + ", got " + std::to_string(v));
  *out = v;
  if (present) *present = true;
  return Status::ok();
}

Result<std::string> read_content(const json& content, const std::string& param) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    return bad(param, "'" + param + "' must be a string or an array of content parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    std::string p = param + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      return bad(p, "'" + p + "' must be an object with a 'type'");
    if (part["type"] != "text")
      return Status::unimplemented("content part type '" + part["type"].get<std::string>() +
                                       "' is not supported; only 'text' is",
                                   p + ".type");
    if (!part.contains("text") || !part["text"].is_string())
      return bad(p + ".text", "'" + p + ".text' must be a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

const std::set<std::string> kRoles = {"system", "developer", "user", "assistant", "tool"};

}  // namespace

Result<ChatRequest> parse_chat_request(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded())
    return Status::invalid_argument("the request body is not valid JSON", "", "invalid_json");
  if (!j.is_object()) return bad("", "the request body must be a JSON object");

  ChatRequest req;
  auto model = j.find("model");
  if (model == j.end() || model->is_null()) return bad("model", "'model' is required");
  if (!model->is_string() || model->get<std::string>().empty())
    return bad("model", "'model' must be a non-empty string");
  req.model = model->get<std::string>();
  if (req.model.size() > kMaxModelNameLength) return bad("model", "'model' is too long");

  auto messages = j.find("messages");
  if (messages == j.end() || messages->is_null()) return bad("messages", "'messages' is required");
  if (!messages->is_array() || messages->empty())
    return bad("messages", "'messages' must be a non-empty array");
  if (messages->size() > kMaxMessages)
    return bad("messages", "'messages' has more than " + std::to_string(kMaxMessages) + " entries");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return bad(p, "'" + p + "' must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return bad(p + ".role", "'" + p + ".role' is required and must be a string");
    if (!kRoles.count(role->get<std::string>()))
      return bad(p + ".role", "'" + p + ".role' must be one of system, developer, user, assistant, tool; got '" +
                                  role->get<std::string>() + "'");
    auto content = m.find("content");
    if (content == m.end()) return bad(p + ".content", "'" + p + ".content' is required");
    Result<std::string> text = read_content(*content, p + ".content");
    if (!text) return text.status();
    req.messages.push_back({role->get<std::string>(), std::move(text).value()});
  }

  SamplingParams& s = req.sampling;
  Status st;
  if (!(st = read_number(j, "temperature", 0.0, 2.0, &s.temperature))) return st;
  if (!(st = read_number(j, "top_p", 0.0, 1.0, &s.top_p))) return st;
  if (!(st = read_number(j, "min_p", 0.0, 1.0, &s.min_p))) return st;
  int64_t v = 0;
  bool present = false;
  if (!(st = read_int(j, "top_k", 0, 1 << 20, &v, &present))) return st;
  if (present) s.top_k = static_cast<int32_t>(v);
  if (!(st = read_int(j, "seed", INT64_MIN, INT64_MAX, &v, &present))) return st;
  if (present) s.seed = static_cast<uint32_t>(static_cast<uint64_t>(v));
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!(st = read_int(j, key, 1, kMaxTokensLimit, &v, &present))) return st;
    if (present) s.max_tokens = static_cast<int32_t>(v);  // the newer name wins when both are set
  }
  if (!(st = read_int(j, "n", 1, 128, &v, &present))) return st;
  if (present && v != 1) return Status::unimplemented("'n' greater than 1 is not supported yet", "n");

  auto stream = j.find("stream");
  if (stream != j.end() && !stream->is_null()) {
    if (!stream->is_boolean()) return bad("stream", "'stream' must be a boolean");
    if (stream->get<bool>()) return Status::unimplemented("streaming is not supported yet", "stream");
  }

  auto stop = j.find("stop");
  if (stop != j.end() && !stop->is_null()) {
    if (stop->is_string()) {
      s.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > kMaxStopStrings)
        return bad("stop", "'stop' may hold at most " + std::to_string(kMaxStopStrings) + " strings");
      for (const json& e : *stop) {
        if (!e.is_string()) return bad("stop", "'stop' must be a string or an array of strings");
        s.stop.push_back(e.get<std::string>());
      }
    } else {
      return bad("stop", "'stop' must be a string or an array of strings");
    }
    for (const auto& e : s.stop) {
      if (e.empty()) return bad("stop", "'stop' strings must not be empty");
      if (e.size() > kMaxStopLength) return bad("stop", "'stop' strings must be at most 256 bytes");
    }
  }
  return req;
}

json chat_completion_json(const std::string& id, const std::string& model, int64_t created,
                          const Completion& c) {
  json message = {{"role", "assistant"}, {"content", c.text}};
  json choice = {{"index", 0},
                 {"message", message},
                 {"logprobs", nullptr},
                 {"finish_reason", finish_reason_name(c.finish_reason)}};
  json usage = {{"prompt_tokens", c.usage.prompt_tokens},
                {"completion_tokens", c.usage.completion_tokens},
                {"total_tokens", c.usage.prompt_tokens + c.usage.completion_tokens}};
  return {{"id", id},           {"object", "chat.completion"}, {"created", created},
          {"model", model},     {"choices", json::array({choice})},
          {"usage", usage},     {"system_fingerprint", "llmpool"}};
}

json model_json(const providers::ModelInfo& info, int64_t created) {
  return {{"id", info.name},
          {"object", "model"},
          {"created", created},
          {"owned_by", "llmpool"},
          {"aliases", info.aliases},
          {"capabilities", info.capabilities},
          {"provider", info.type},
          {"context_length", info.context}};
}

std::string new_completion_id(std::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  id += '-';
  uint64_t a = rng(), b = rng();
  for (int i = 0; i < 16; ++i) id += kHex[(a >> (i * 4)) & 15];
  for (int i = 0; i < 8; ++i) id += kHex[(b >> (i * 4)) & 15];
  return id;
}

}  // namespace llmpool::api
