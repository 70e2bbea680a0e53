#include "providers/ollama_provider.h"

#include "providers/factory.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>

namespace llmpool::providers {

using nlohmann::json;

namespace {

constexpr size_t kMaxLineBytes = 16u << 20;

double clean(float f) {  // 0.7f as 0.7 on the wire
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  if (ec != std::errc()) return f;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

int32_t count_field(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_integer()) return 0;  // Ollama omits prompt_eval_count for a cached prompt
  return static_cast<int32_t>(std::clamp<int64_t>(it->get<int64_t>(), 0, INT32_MAX));
}

}  // namespace

Result<json> ollama_request_json(const GenerateRequest& r, const std::string& upstream_model) {
  const SamplingParams& s = r.sampling;
  if (r.n > 1) return Status::unimplemented("ollama upstreams give one choice per request; 'n' must be 1", "n");
  if (!s.logit_bias.empty())
    return Status::unimplemented("'logit_bias' is not supported by ollama upstreams", "logit_bias");
  if (s.top_logprobs >= 0) return Status::unimplemented("'logprobs' is not supported by ollama upstreams", "logprobs");
  if (s.ignore_eos) return Status::unimplemented("'ignore_eos' is not supported by ollama upstreams", "ignore_eos");

  json j;
  j["model"] = upstream_model;
  if (r.prompt) {
    j["prompt"] = *r.prompt;
    j["raw"] = true;  // a completions prompt is used as is, without the model's template
  } else {
    json messages = json::array();
    for (const auto& m : r.messages)
      messages.push_back({{"role", m.role == "developer" ? "system" : m.role}, {"content", m.content}});
    j["messages"] = std::move(messages);
  }
  j["stream"] = true;

  json o = json::object();
  o["temperature"] = clean(s.temperature);
  if (s.top_p != 1.0f) o["top_p"] = clean(s.top_p);
  if (s.top_k > 0) o["top_k"] = s.top_k;
  if (s.min_p > 0.0f) o["min_p"] = clean(s.min_p);
  if (s.seed) o["seed"] = *s.seed;
  if (s.max_tokens) o["num_predict"] = *s.max_tokens;
  if (!s.stop.empty()) o["stop"] = s.stop;
  if (s.repeat_penalty != 1.0f) o["repeat_penalty"] = clean(s.repeat_penalty);
  if (s.penalty_last_n != 64) o["repeat_last_n"] = s.penalty_last_n;
  if (s.presence_penalty != 0.0f) o["presence_penalty"] = clean(s.presence_penalty);
  if (s.frequency_penalty != 0.0f) o["frequency_penalty"] = clean(s.frequency_penalty);
  j["options"] = std::move(o);

  if (!s.json_schema.empty()) {
    json schema = json::parse(s.json_schema, nullptr, false);
    if (schema.is_discarded())
      return Status::invalid_argument("'response_format.json_schema.schema' is not valid JSON", "response_format");
    j["format"] = std::move(schema);
  } else if (s.json_object) {
    j["format"] = "json";
  }
  return j;
}

Status OllamaStreamDecoder::feed(std::string_view bytes) {
  buffer_.append(bytes);
  size_t start = 0;
  for (size_t nl; (nl = buffer_.find('\n', start)) != std::string::npos; start = nl + 1) {
    Status st = line(std::string_view(buffer_.data() + start, nl - start));
    if (!st) {
      buffer_.clear();
      return st;
    }
  }
  buffer_.erase(0, start);
  if (buffer_.size() > kMaxLineBytes)
    return Status::unavailable("upstream " + url() + " sent a stream line longer than 16 MiB");
  return Status::ok();
}

Status OllamaStreamDecoder::finish() {
  // A last line without its newline (or a whole non-streamed answer).
  std::string rest = std::move(buffer_);
  buffer_.clear();
  return line(rest);
}

Status OllamaStreamDecoder::line(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  if (text.empty() || ended_) return Status::ok();
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    std::string head(text.substr(0, 200));
    return Status::unavailable("upstream " + url() + " sent an unreadable stream line: " + head);
  }
  auto err = j.find("error");
  if (err != j.end() && !err->is_null()) return upstream_error_status(500, text, url());

  Delta d;
  if (chat_) {
    auto m = j.find("message");
    if (m != j.end() && m->is_object()) {
      auto c = m->find("content");
      if (c != m->end() && c->is_string()) d.text = c->get<std::string>();
    }
  } else {
    auto r = j.find("response");
    if (r != j.end() && r->is_string()) d.text = r->get<std::string>();
  }
  auto done = j.find("done");
  if (done != j.end() && done->is_boolean() && done->get<bool>()) {
    auto reason = j.find("done_reason");
    d.finish_reason = reason != j.end() && reason->is_string() && reason->get<std::string>() == "length"
                          ? FinishReason::kLength
                          : FinishReason::kStop;
    Usage u;
    u.prompt_tokens = count_field(j, "prompt_eval_count");
    u.completion_tokens = count_field(j, "eval_count");
    add_usage(u);
    ended_ = true;
  }
  if (!d.text.empty() || d.finish_reason) deliver(std::move(d));
  return Status::ok();
}

Result<ProviderPtr> OllamaProvider::create(const config::ModelConfig& config) {
  Result<RemoteSettings> settings = read_remote_settings(config);
  if (!settings) return settings.status();
  return ProviderPtr(new OllamaProvider(model_info(config), std::move(settings).value()));
}

Result<RemoteProvider::UpstreamCall> OllamaProvider::prepare(const GenerateRequest& request) const {
  Result<json> body = ollama_request_json(request, settings().upstream_model);
  if (!body) return body.status();
  const bool chat = !request.prompt.has_value();
  UpstreamCall call;
  call.path = chat ? "/api/chat" : "/api/generate";
  call.body = body->dump(-1, ' ', false, json::error_handler_t::replace);
  call.decoder = std::make_unique<OllamaStreamDecoder>(chat, settings().url(call.path));
  return call;
}

}  // namespace llmpool::providers
