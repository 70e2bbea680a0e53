#include "providers/ollama_provider.h"

#include "common/json.h"
#include "providers/factory.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <map>

namespace llmpool::providers {

using nlohmann::json;

namespace {

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

Result<json> ollama_request_json(const GenerateRequest& r, const std::string& upstream_model, bool stream) {
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
    std::map<std::string, std::string> call_names;  // tool call id -> function name, for tool messages
    for (size_t i = 0; i < r.messages.size(); ++i) {
      const ChatMessage& m = r.messages[i];
      json msg = {{"role", m.role == "developer" ? "system" : m.role}, {"content", m.content}};
      if (!m.tool_calls.empty()) {
        json calls = json::array();
        for (size_t k = 0; k < m.tool_calls.size(); ++k) {
          const ToolCall& c = m.tool_calls[k];
          // Ollama takes the arguments as an object, not as JSON text.
          const std::string param =
              "messages[" + std::to_string(i) + "].tool_calls[" + std::to_string(k) + "].function.arguments";
          Result<json> args = parse_json(c.arguments.empty() ? std::string_view("{}") : std::string_view(c.arguments),
                                         kDefaultJsonLimits, "'" + param + "'", param);
          if (!args) return args.status();
          if (!args->is_object())
            return Status::invalid_argument("'" + param + "' must be a JSON object for ollama upstreams", param);
          calls.push_back({{"function", {{"name", c.name}, {"arguments", std::move(args).value()}}}});
          call_names[c.id] = c.name;
        }
        msg["tool_calls"] = std::move(calls);
      }
      if (m.role == "tool") {
        auto name = call_names.find(m.tool_call_id);
        if (name != call_names.end()) msg["tool_name"] = name->second;
      }
      messages.push_back(std::move(msg));
    }
    j["messages"] = std::move(messages);
    if (!r.tools.empty() && r.tool_choice != "none") {
      if (r.tool_choice == "required")
        return Status::unimplemented(
            "ollama upstreams cannot be made to call a tool; 'tool_choice' must be auto or none", "tool_choice");
      ASSIGN_OR_RETURN(j["tools"], tools_json(r.tools));
    }
  }
  j["stream"] = stream;  // ollama streams unless told not to

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
    ASSIGN_OR_RETURN(j["format"], parse_json(s.json_schema, kDefaultJsonLimits, "'response_format.json_schema.schema'",
                                             "response_format"));
  } else if (s.json_object) {
    j["format"] = "json";
  }
  return j;
}

Status OllamaStreamDecoder::feed(std::string_view bytes) {
  RETURN_IF_ERROR(lines_.feed(bytes, [this](std::string_view l) {
    if (l.size() > max_event_bytes_) return event_too_large();
    return line(l);
  }));
  if (lines_.pending() > max_event_bytes_) return event_too_large();
  return Status::ok();
}

Status OllamaStreamDecoder::finish() {
  // A last line without its newline (or a whole non-streamed answer).
  return line(lines_.take_rest());
}

Status OllamaStreamDecoder::line(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  if (text.empty() || ended_) return Status::ok();
  ASSIGN_OR_RETURN(json j, read_upstream_json(text, max_event_bytes_, who(), "stream line"));
  auto err = j.find("error");
  if (err != j.end() && !err->is_null()) return upstream_error_status(500, text, who());

  Delta d;
  if (chat_) {
    auto m = j.find("message");
    if (m != j.end() && m->is_object()) {
      auto c = m->find("content");
      if (c != m->end() && c->is_string()) d.text = c->get<std::string>();
      auto thinking = m->find("thinking");
      if (thinking != m->end() && thinking->is_string()) d.reasoning_content = thinking->get<std::string>();
      RETURN_IF_ERROR(tool_calls(*m, &d.tool_calls));
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
                      : tool_calls_ > 0 ? FinishReason::kToolCalls  // Ollama says "stop" after tool calls
                                        : FinishReason::kStop;
    Usage u;
    u.prompt_tokens = count_field(j, "prompt_eval_count");
    u.completion_tokens = count_field(j, "eval_count");
    add_usage(u);
    ended_ = true;
  }
  if (!d.text.empty() || !d.reasoning_content.empty() || !d.tool_calls.empty() || d.finish_reason)
    return deliver(std::move(d));
  return Status::ok();
}

// Ollama sends each tool call whole, its arguments as an object, mostly
// without an id: calls are numbered across the stream and get ids of
// their own.
Status OllamaStreamDecoder::tool_calls(const json& m, std::vector<ToolCallDelta>* out) {
  auto tc = m.find("tool_calls");
  if (tc == m.end() || tc->is_null()) return Status::ok();
  if (!tc->is_array()) return Status::unavailable(who() + " sent 'tool_calls' that is " + json_type_name(*tc));
  for (const json& e : *tc) {
    if (!e.is_object()) continue;
    auto fn = e.find("function");
    if (fn == e.end() || !fn->is_object()) continue;
    ToolCallDelta t;
    t.index = tool_calls_++;
    auto id = e.find("id");
    t.id = id != e.end() && id->is_string() && !id->get<std::string>().empty() ? id->get<std::string>()
                                                                                : "call_" + std::to_string(t.index);
    auto name = fn->find("name");
    if (name != fn->end() && name->is_string()) t.name = name->get<std::string>();
    auto args = fn->find("arguments");
    if (args != fn->end() && args->is_string())
      t.arguments = args->get<std::string>();
    else if (args != fn->end() && !args->is_null())
      t.arguments = args->dump(-1, ' ', false, json::error_handler_t::replace);  // depth-bounded by parse_json
    else
      t.arguments = "{}";
    out->push_back(std::move(t));
  }
  return Status::ok();
}

Result<ProviderPtr> OllamaProvider::create(const config::ModelConfig& config) {
  Result<RemoteSettings> settings = read_remote_settings(config);
  if (!settings) return settings.status();
  return ProviderPtr(new OllamaProvider(model_info(config), std::move(settings).value()));
}

Result<RemoteProvider::UpstreamCall> OllamaProvider::prepare(const GenerateRequest& request, bool stream) const {
  Result<json> body = ollama_request_json(request, settings().upstream_model, stream);
  if (!body) return body.status();
  const bool chat = !request.prompt.has_value();
  UpstreamCall call;
  call.path = chat ? "/api/chat" : "/api/generate";
  call.body = body->dump(-1, ' ', false, json::error_handler_t::replace);
  call.decoder = std::make_unique<OllamaStreamDecoder>(chat, settings().label);
  return call;
}

}  // namespace llmpool::providers
