#include "api/openai.h"

#include <cmath>
#include <cstring>
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

// `user`, `reasoning_effort` and the extension `ensemble` object.
Status read_route_hints(const json& j, router::RouteHints* h) {
  auto user = j.find("user");
  if (user != j.end() && !user->is_null()) {
    if (!user->is_string()) return bad("user", "'user' must be a string");
    if (user->get_ref<const std::string&>().size() > kMaxUserLength)
      return bad("user", "'user' must be at most " + std::to_string(kMaxUserLength) + " bytes");
    h->user = user->get<std::string>();
  }
  auto effort = j.find("reasoning_effort");
  if (effort != j.end() && !effort->is_null()) {
    if (!effort->is_string()) return bad("reasoning_effort", "'reasoning_effort' must be a string: minimal, low, medium or high");
    auto e = router::parse_reasoning_effort(effort->get<std::string>());
    if (!e) return e.status();
    h->reasoning_effort = *e;
  }
  auto ens = j.find("ensemble");
  if (ens == j.end() || ens->is_null()) return Status::ok();
  if (!ens->is_object()) return bad("ensemble", "'ensemble' must be an object {strategy, k, judge}");
  for (auto it = ens->begin(); it != ens->end(); ++it)
    if (it.key() != "strategy" && it.key() != "k" && it.key() != "judge")
      return bad("ensemble." + it.key(), "'ensemble." + it.key() + "' is not a field (known: strategy, k, judge)");
  auto strategy = ens->find("strategy");
  if (strategy == ens->end() || !strategy->is_string())
    return bad("ensemble.strategy", "'ensemble.strategy' is required: fastest, voting, weighted, consensus or judge");
  auto kind = ensemble::parse_strategy(strategy->get<std::string>());
  if (!kind)
    return bad("ensemble.strategy", "'ensemble.strategy' must be fastest, voting, weighted, consensus or judge; got '" +
                                        strategy->get<std::string>().substr(0, 32) + "'");
  h->strategy = *kind;
  auto k = ens->find("k");
  if (k != ens->end() && !k->is_null()) {
    if (!k->is_number_integer() || k->get<int64_t>() < 1 || k->get<int64_t>() > kMaxChoices)
      return bad("ensemble.k", "'ensemble.k' must be an integer between 1 and " + std::to_string(kMaxChoices));
    h->k = k->get<int32_t>();
  }
  auto judge = ens->find("judge");
  if (judge != ens->end() && !judge->is_null()) {
    if (!judge->is_string() || judge->get_ref<const std::string&>().empty() ||
        judge->get_ref<const std::string&>().size() > kMaxModelNameLength)
      return bad("ensemble.judge", "'ensemble.judge' must be a model name");
    h->judge = judge->get<std::string>();
  }
  return Status::ok();
}

}  // namespace

Result<ApiRequest> parse_request(std::string_view body, Endpoint endpoint) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded())
    return Status::invalid_argument("the request body is not valid JSON", "", "invalid_json");
  if (!j.is_object()) return bad("", "the request body must be a JSON object");

  ApiRequest out;
  GenerateRequest& req = out.generate;
  auto model = j.find("model");
  if (model == j.end() || model->is_null()) return bad("model", "'model' is required");
  if (!model->is_string() || model->get<std::string>().empty())
    return bad("model", "'model' must be a non-empty string");
  req.model = model->get<std::string>();
  if (req.model.size() > kMaxModelNameLength) return bad("model", "'model' is too long");

  if (endpoint == Endpoint::kChat) {
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
      ChatMessage msg;
      msg.role = role->get<std::string>();
      auto calls = m.find("tool_calls");
      auto content = m.find("content");
      bool has_calls = calls != m.end() && !calls->is_null();
      if (content == m.end() && !has_calls) return bad(p + ".content", "'" + p + ".content' is required");
      if (content != m.end()) {
        Result<std::string> text = read_content(*content, p + ".content");
        if (!text) return text.status();
        msg.content = std::move(text).value();
      }
      if (has_calls) {
        if (msg.role != "assistant" || !calls->is_array())
          return bad(p + ".tool_calls", "'" + p + ".tool_calls' must be an array, on assistant messages only");
        for (size_t c = 0; c < calls->size(); ++c) {
          const json& call = (*calls)[c];
          std::string cp = p + ".tool_calls[" + std::to_string(c) + "]";
          if (!call.is_object() || !call.contains("function") || !call["function"].is_object() ||
              !call["function"].contains("name") || !call["function"]["name"].is_string())
            return bad(cp, "'" + cp + "' must be {id, type: function, function: {name, arguments}}");
          const json& fn = call["function"];
          ToolCall tc;
          tc.id = call.value("id", std::string());
          tc.name = fn["name"].get<std::string>();
          if (fn.contains("arguments")) {
            if (fn["arguments"].is_string()) tc.arguments = fn["arguments"].get<std::string>();
            else tc.arguments = fn["arguments"].dump();
          }
          msg.tool_calls.push_back(std::move(tc));
        }
      }
      auto tcid = m.find("tool_call_id");
      if (tcid != m.end() && !tcid->is_null()) {
        if (!tcid->is_string()) return bad(p + ".tool_call_id", "'" + p + ".tool_call_id' must be a string");
        msg.tool_call_id = tcid->get<std::string>();
      }
      auto rc = m.find("reasoning_content");
      if (rc != m.end() && rc->is_string()) msg.reasoning_content = rc->get<std::string>();
      req.messages.push_back(std::move(msg));
    }

    auto tools = j.find("tools");
    if (tools != j.end() && !tools->is_null()) {
      if (!tools->is_array()) return bad("tools", "'tools' must be an array");
      if (tools->size() > kMaxTools) return bad("tools", "'tools' may hold at most " + std::to_string(kMaxTools) + " tools");
      for (size_t t = 0; t < tools->size(); ++t) {
        const json& tool = (*tools)[t];
        std::string tp = "tools[" + std::to_string(t) + "]";
        if (!tool.is_object() || tool.value("type", std::string()) != "function" || !tool.contains("function") ||
            !tool["function"].is_object())
          return bad(tp, "'" + tp + "' must be {\"type\": \"function\", \"function\": {...}}");
        const json& fn = tool["function"];
        if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
          return bad(tp + ".function.name", "'" + tp + ".function.name' is required");
        ToolSpec spec;
        spec.name = fn["name"].get<std::string>();
        if (fn.contains("description") && fn["description"].is_string()) spec.description = fn["description"];
        if (fn.contains("parameters")) {
          if (!fn["parameters"].is_object())
            return bad(tp + ".function.parameters", "'" + tp + ".function.parameters' must be a JSON schema object");
          spec.parameters = fn["parameters"].dump();
        } else {
          spec.parameters = R"({"type":"object","properties":{}})";
        }
        req.tools.push_back(std::move(spec));
      }
    }
    auto choice = j.find("tool_choice");
    if (choice != j.end() && !choice->is_null()) {
      if (choice->is_string()) {
        std::string c = choice->get<std::string>();
        if (c != "auto" && c != "none" && c != "required")
          return bad("tool_choice", "'tool_choice' must be auto, none, required or a function; got '" + c + "'");
        req.tool_choice = c;
      } else if (choice->is_object() && choice->contains("function") && (*choice)["function"].is_object() &&
                 (*choice)["function"].contains("name") && (*choice)["function"]["name"].is_string()) {
        // A named function: only that tool, and it must be called.
        std::string name = (*choice)["function"]["name"];
        std::vector<ToolSpec> only;
        for (auto& t : req.tools)
          if (t.name == name) only.push_back(t);
        if (only.empty()) return bad("tool_choice", "'tool_choice' names '" + name + "', which is not in 'tools'");
        req.tools = std::move(only);
        req.tool_choice = "required";
      } else {
        return bad("tool_choice", "'tool_choice' must be auto, none, required or {type: function, function: {name}}");
      }
      if (req.tool_choice == "required" && req.tools.empty())
        return bad("tool_choice", "'tool_choice' is required but no 'tools' are given");
    }
    auto ptc = j.find("parallel_tool_calls");
    if (ptc != j.end() && !ptc->is_null()) {
      if (!ptc->is_boolean()) return bad("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
      req.parallel_tool_calls = ptc->get<bool>();
    }
  } else {
    auto prompt = j.find("prompt");
    if (prompt == j.end() || prompt->is_null()) return bad("prompt", "'prompt' is required");
    if (prompt->is_string()) {
      req.prompt = prompt->get<std::string>();
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      req.prompt = (*prompt)[0].get<std::string>();
    } else if (prompt->is_array()) {
      return Status::unimplemented(
          "'prompt' as a list of several prompts or of token ids is not supported; send one string", "prompt");
    } else {
      return bad("prompt", "'prompt' must be a string");
    }
  }

  SamplingParams& s = req.sampling;
  Status st;
  if (!(st = read_number(j, "temperature", 0.0, 2.0, &s.temperature))) return st;
  if (!(st = read_number(j, "top_p", 0.0, 1.0, &s.top_p))) return st;
  if (!(st = read_number(j, "min_p", 0.0, 1.0, &s.min_p))) return st;
  if (!(st = read_number(j, "presence_penalty", -2.0, 2.0, &s.presence_penalty))) return st;
  if (!(st = read_number(j, "frequency_penalty", -2.0, 2.0, &s.frequency_penalty))) return st;
  if (!(st = read_number(j, "repeat_penalty", 0.0, 10.0, &s.repeat_penalty))) return st;
  if (s.repeat_penalty == 0.0f) return bad("repeat_penalty", "'repeat_penalty' must be greater than 0");
  int64_t v = 0;
  bool present = false;
  if (!(st = read_int(j, "top_k", 0, 1 << 20, &v, &present))) return st;
  if (present) s.top_k = static_cast<int32_t>(v);
  if (!(st = read_int(j, "repeat_last_n", 0, 1 << 20, &v, &present))) return st;
  if (present) s.penalty_last_n = static_cast<int32_t>(v);
  if (!(st = read_int(j, "seed", INT64_MIN, INT64_MAX, &v, &present))) return st;
  if (present) s.seed = static_cast<uint32_t>(static_cast<uint64_t>(v));
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!(st = read_int(j, key, 1, kMaxTokensLimit, &v, &present))) return st;
    if (present) s.max_tokens = static_cast<int32_t>(v);  // the newer name wins when both are set
  }
  if (!(st = read_int(j, "n", 1, kMaxChoices, &v, &present))) return st;
  if (present) req.n = static_cast<int32_t>(v);
  if (!(st = read_int(j, "priority", -100, 100, &v, &present))) return st;
  if (present) req.priority = static_cast<int32_t>(v);
  if (!(st = read_int(j, "thinking_budget", -1, kMaxTokensLimit, &v, &present))) return st;
  if (present) req.thinking_budget = static_cast<int32_t>(v);

  auto temp = j.find("temperature");
  out.hints.temperature_set = temp != j.end() && !temp->is_null();
  if (Status hs = read_route_hints(j, &out.hints); !hs) return hs;

  auto read_bool = [&](const char* key, bool* dst) -> Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return Status::ok();
    if (!it->is_boolean()) return bad(key, std::string("'") + key + "' must be a boolean");
    *dst = it->get<bool>();
    return Status::ok();
  };
  if (!(st = read_bool("stream", &out.stream))) return st;
  if (!(st = read_bool("ignore_eos", &s.ignore_eos))) return st;
  auto so = j.find("stream_options");
  if (so != j.end() && !so->is_null()) {
    if (!so->is_object()) return bad("stream_options", "'stream_options' must be an object");
    auto iu = so->find("include_usage");
    if (iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean())
        return bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
      out.include_usage = iu->get<bool>();
    }
  }

  // logprobs: chat has a boolean plus top_logprobs; completions an integer.
  if (endpoint == Endpoint::kChat) {
    bool want = false;
    if (!(st = read_bool("logprobs", &want))) return st;
    if (!(st = read_int(j, "top_logprobs", 0, kMaxTopLogprobs, &v, &present))) return st;
    if (present && !want) return bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (want) s.top_logprobs = present ? static_cast<int32_t>(v) : 0;
  } else {
    if (!(st = read_int(j, "logprobs", 0, kMaxTopLogprobs, &v, &present))) return st;
    if (present) s.top_logprobs = static_cast<int32_t>(v);
  }

  auto bias = j.find("logit_bias");
  if (bias != j.end() && !bias->is_null()) {
    if (!bias->is_object()) return bad("logit_bias", "'logit_bias' must be an object of token id -> bias");
    if (bias->size() > kMaxLogitBias) return bad("logit_bias", "'logit_bias' has too many entries");
    for (auto it = bias->begin(); it != bias->end(); ++it) {
      int64_t tok = 0;
      try {
        size_t used = 0;
        tok = std::stoll(it.key(), &used);
        if (used != it.key().size() || tok < 0 || tok > INT32_MAX) throw std::invalid_argument("id");
      } catch (const std::exception&) {
        return bad("logit_bias", "'logit_bias' keys must be token ids, got '" + it.key() + "'");
      }
      if (!it.value().is_number() || !std::isfinite(it.value().get<double>()) ||
          it.value().get<double>() < -100.0 || it.value().get<double>() > 100.0)
        return bad("logit_bias", "'logit_bias' values must be numbers between -100 and 100");
      s.logit_bias.emplace_back(static_cast<int32_t>(tok), it.value().get<float>());
    }
  }

  auto rf = j.find("response_format");
  if (rf != j.end() && !rf->is_null()) {
    if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
      return bad("response_format", "'response_format' must be an object with a 'type'");
    std::string type = (*rf)["type"];
    if (type == "json_object") {
      s.json_object = true;
    } else if (type == "json_schema") {
      auto js = rf->find("json_schema");
      if (js == rf->end() || !js->is_object() || !js->contains("schema") || !(*js)["schema"].is_object())
        return bad("response_format", "'response_format.json_schema.schema' must be a JSON schema object");
      s.json_schema = (*js)["schema"].dump();
    } else if (type != "text") {
      return bad("response_format",
                 "'response_format.type' must be text, json_object or json_schema; got '" + type + "'");
    }
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
  return out;
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(c);
  return b;
}

// Chat logprobs: {"content":[{token, logprob, bytes, top_logprobs:[...]}]}
json chat_logprobs(const std::vector<TokenLogprob>& lps) {
  json content = json::array();
  for (const auto& lp : lps) {
    json top = json::array();
    for (const auto& t : lp.top)
      top.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_of(t.token)}});
    content.push_back(
        {{"token", lp.token}, {"logprob", lp.logprob}, {"bytes", bytes_of(lp.token)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// Completions logprobs: {tokens, token_logprobs, top_logprobs, text_offset}
json text_logprobs(const std::vector<TokenLogprob>& lps) {
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  size_t offset = 0;
  for (const auto& lp : lps) {
    tokens.push_back(lp.token);
    values.push_back(lp.logprob);
    json top = json::object();
    for (const auto& t : lp.top) top[t.token] = t.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += lp.token.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json logprobs_json(Endpoint endpoint, const std::vector<TokenLogprob>& lps) {
  return endpoint == Endpoint::kChat ? chat_logprobs(lps) : text_logprobs(lps);
}

const char* object_name(Endpoint endpoint, bool chunk) {
  if (endpoint == Endpoint::kCompletions) return "text_completion";
  return chunk ? "chat.completion.chunk" : "chat.completion";
}

json envelope(Endpoint endpoint, const ResponseMeta& meta, bool chunk, json choices) {
  return {{"id", meta.id},
          {"object", object_name(endpoint, chunk)},
          {"created", meta.created},
          {"model", meta.model},
          {"system_fingerprint", "llmpool"},
          {"choices", std::move(choices)}};
}

}  // namespace

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens}}}};
}

json completion_json(Endpoint endpoint, const ResponseMeta& meta, const Completion& c, bool with_logprobs) {
  json choices = json::array();
  for (const auto& ch : c.choices) {
    json choice = {{"index", ch.index}, {"finish_reason", finish_reason_name(ch.finish_reason)}};
    if (endpoint == Endpoint::kChat) {
      json message = {{"role", "assistant"}, {"content", ch.text}};
      if (!ch.reasoning_content.empty()) message["reasoning_content"] = ch.reasoning_content;
      if (!ch.tool_calls.empty()) {
        json calls = json::array();
        for (const auto& c : ch.tool_calls)
          calls.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
        message["tool_calls"] = calls;
        if (ch.text.empty()) message["content"] = nullptr;
      }
      choice["message"] = std::move(message);
    } else
      choice["text"] = ch.text;
    choice["logprobs"] = with_logprobs ? logprobs_json(endpoint, ch.logprobs) : json();
    choices.push_back(std::move(choice));
  }
  json out = envelope(endpoint, meta, false, std::move(choices));
  out["usage"] = usage_json(c.usage);
  return out;
}

json chunk_json(Endpoint endpoint, const ResponseMeta& meta, const Delta& d, bool first, bool with_logprobs) {
  json choice = {{"index", d.index},
                 {"finish_reason", d.finish_reason ? json(finish_reason_name(*d.finish_reason)) : json()}};
  if (endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!d.text.empty() || first) delta["content"] = d.text;
    if (!d.reasoning_content.empty()) delta["reasoning_content"] = d.reasoning_content;
    if (!d.tool_calls.empty()) {
      json calls = json::array();
      for (const auto& c : d.tool_calls) {
        json call = {{"index", c.index}, {"function", {{"arguments", c.arguments}}}};
        if (!c.id.empty()) call["id"] = c.id;
        if (!c.name.empty()) {
          call["type"] = "function";
          call["function"]["name"] = c.name;
        }
        calls.push_back(std::move(call));
      }
      delta["tool_calls"] = std::move(calls);
    }
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = d.text;
  }
  choice["logprobs"] = with_logprobs && !d.logprobs.empty() ? logprobs_json(endpoint, d.logprobs) : json();
  return envelope(endpoint, meta, true, json::array({std::move(choice)}));
}

json usage_chunk_json(Endpoint endpoint, const ResponseMeta& meta, const Usage& usage) {
  json out = envelope(endpoint, meta, true, json::array());
  out["usage"] = usage_json(usage);
  return out;
}

Result<EmbeddingsRequest> parse_embeddings_request(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded())
    return Status::invalid_argument("the request body is not valid JSON", "", "invalid_json");
  if (!j.is_object()) return bad("", "the request body must be a JSON object");
  EmbeddingsRequest out;
  auto model = j.find("model");
  if (model == j.end() || !model->is_string() || model->get<std::string>().empty())
    return bad("model", "'model' is required and must be a non-empty string");
  out.model = model->get<std::string>();
  if (out.model.size() > kMaxModelNameLength) return bad("model", "'model' is too long");
  auto input = j.find("input");
  if (input == j.end() || input->is_null()) return bad("input", "'input' is required");
  if (input->is_string()) {
    out.inputs.push_back(input->get<std::string>());
  } else if (input->is_array()) {
    if (input->empty()) return bad("input", "'input' must not be an empty array");
    if (input->size() > kMaxEmbeddingInputs)
      return bad("input", "'input' may hold at most " + std::to_string(kMaxEmbeddingInputs) + " entries");
    for (const auto& e : *input) {
      if (e.is_string()) {
        out.inputs.push_back(e.get<std::string>());
      } else if (e.is_number_integer() || e.is_array()) {
        return Status::unimplemented("'input' as token ids is not supported; send strings", "input");
      } else {
        return bad("input", "'input' must be a string or an array of strings");
      }
    }
  } else {
    return bad("input", "'input' must be a string or an array of strings");
  }
  auto fmt = j.find("encoding_format");
  if (fmt != j.end() && !fmt->is_null()) {
    if (!fmt->is_string() || (*fmt != "float" && *fmt != "base64"))
      return bad("encoding_format", "'encoding_format' must be 'float' or 'base64'");
    out.base64 = *fmt == "base64";
  }
  int64_t v = 0;
  bool present = false;
  if (Status st = read_int(j, "dimensions", 1, 1 << 16, &v, &present); !st) return st;
  if (present) out.dimensions = static_cast<int32_t>(v);
  return out;
}

namespace {
std::string base64_floats(const std::vector<float>& v) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(v.size() * sizeof(float), '\0');
  for (size_t i = 0; i < v.size(); ++i) {  // little-endian float32, as the OpenAI API sends
    uint32_t bits;
    std::memcpy(&bits, &v[i], sizeof(bits));
    for (int b = 0; b < 4; ++b) bytes[i * 4 + static_cast<size_t>(b)] = static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) n |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}
}  // namespace

json embeddings_json(const std::string& model, const Embeddings& e, bool base64) {
  json data = json::array();
  for (size_t i = 0; i < e.vectors.size(); ++i) {
    data.push_back({{"object", "embedding"},
                    {"index", i},
                    {"embedding", base64 ? json(base64_floats(e.vectors[i])) : json(e.vectors[i])}});
  }
  return {{"object", "list"},
          {"data", data},
          {"model", model},
          {"usage", {{"prompt_tokens", e.prompt_tokens}, {"total_tokens", e.prompt_tokens}}}};
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
