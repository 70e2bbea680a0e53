#include "api/request_parts.h"

#include <charconv>
#include <set>

#include "engine/grammar.h"

namespace llmpool::api {
namespace {

using nlohmann::json;

// A JSON schema a client sent, as text, within engine::kSchemaLimits. The
// value is depth-bounded by the body's parse, so dump() is safe on it.
Result<std::string> schema_text(const FieldReader& schema) {
  if (!schema.value().is_object()) return schema.type_error("a JSON schema object");
  std::string text = schema.value().dump(-1, ' ', false, json::error_handler_t::replace);
  RETURN_IF_ERROR(engine::check_json_schema(text, schema.path()));
  return text;
}

const std::set<std::string, std::less<>> kRoles = {"system", "developer", "user", "assistant", "tool"};

// A string field limited only by the body size.
constexpr size_t kUnbounded = SIZE_MAX;

Result<std::string> read_content(const FieldReader& content) {
  if (content.value().is_string()) return content.value().get<std::string>();
  if (!content.value().is_array()) return content.type_error("a string or an array of content parts");
  RETURN_IF_ERROR(content.want_array(kMaxContentParts));
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    FieldReader part = content.item(i);
    RETURN_IF_ERROR(part.want_object());
    ASSIGN_OR_RETURN(std::string type, part.required_string("type", 64));
    if (type != "text")
      return Status::unimplemented("content part type " + json_excerpt(json(type)) + " is not supported; only 'text' is",
                                   member_path(part.path(), "type"));
    ASSIGN_OR_RETURN(std::string piece, part.required_string("text", kUnbounded));
    text += piece;
  }
  return text;
}

Result<ToolCall> read_tool_call(const FieldReader& call) {
  RETURN_IF_ERROR(call.want_object());
  ToolCall tc;
  RETURN_IF_ERROR(call.optional_string("id", kMaxToolCallIdLength, &tc.id));
  if (auto type = call.field("type")) {
    ASSIGN_OR_RETURN(std::string t, type->string(64));
    if (t != "function") return type->error("must be 'function'");
  }
  ASSIGN_OR_RETURN(FieldReader fn, call.required("function"));
  RETURN_IF_ERROR(fn.want_object());
  ASSIGN_OR_RETURN(tc.name, fn.required_string("name", kMaxToolNameLength, /*non_empty=*/true));
  if (auto args = fn.field("arguments")) {
    // JSON text, as OpenAI sends it; an object is taken as the arguments
    // themselves (its depth is bounded by the body's).
    if (args->value().is_string()) tc.arguments = args->value().get<std::string>();
    else if (args->value().is_object()) tc.arguments = args->value().dump(-1, ' ', false, json::error_handler_t::replace);
    else return args->type_error("a string (JSON text) or an object");
  }
  return tc;
}

Result<ChatMessage> read_message(const FieldReader& m) {
  RETURN_IF_ERROR(m.want_object());
  ChatMessage msg;
  ASSIGN_OR_RETURN(FieldReader role, m.required("role"));
  ASSIGN_OR_RETURN(msg.role, role.string(64));
  if (!kRoles.count(msg.role))
    return role.error("must be one of system, developer, user, assistant, tool; got " + json_excerpt(role.value()));
  std::optional<FieldReader> calls = m.field("tool_calls");
  auto content = m.value().find("content");
  if (content == m.value().end() && !calls) return Status::invalid_argument(
      "'" + member_path(m.path(), "content") + "' is required", member_path(m.path(), "content"));
  if (std::optional<FieldReader> c = m.field("content")) {
    ASSIGN_OR_RETURN(msg.content, read_content(*c));
  }
  if (calls) {
    RETURN_IF_ERROR(calls->want_array(kMaxToolCallsPerMessage));
    if (msg.role != "assistant") return calls->error("is allowed on assistant messages only");
    for (size_t c = 0; c < calls->size(); ++c) {
      ASSIGN_OR_RETURN(ToolCall tc, read_tool_call(calls->item(c)));
      msg.tool_calls.push_back(std::move(tc));
    }
  }
  RETURN_IF_ERROR(m.optional_string("tool_call_id", kMaxToolCallIdLength, &msg.tool_call_id));
  RETURN_IF_ERROR(m.optional_string("reasoning_content", kUnbounded, &msg.reasoning_content));
  return msg;
}

Result<ToolSpec> read_tool(const FieldReader& tool) {
  RETURN_IF_ERROR(tool.want_object());
  ASSIGN_OR_RETURN(FieldReader type, tool.required("type"));
  ASSIGN_OR_RETURN(std::string t, type.string(64));
  if (t != "function") return type.error("must be 'function', got " + json_excerpt(type.value()));
  ASSIGN_OR_RETURN(FieldReader fn, tool.required("function"));
  RETURN_IF_ERROR(fn.want_object());
  ToolSpec spec;
  ASSIGN_OR_RETURN(spec.name, fn.required_string("name", kMaxToolNameLength, /*non_empty=*/true));
  RETURN_IF_ERROR(fn.optional_string("description", kMaxToolDescriptionLength, &spec.description));
  if (std::optional<FieldReader> params = fn.field("parameters")) {
    ASSIGN_OR_RETURN(spec.parameters, schema_text(*params));
  } else {
    spec.parameters = R"({"type":"object","properties":{}})";
  }
  return spec;
}

Status read_tool_choice(const FieldReader& choice, GenerateRequest* req) {
  if (choice.value().is_string()) {
    ASSIGN_OR_RETURN(std::string c, choice.string(64));
    if (c != "auto" && c != "none" && c != "required")
      return choice.error("must be auto, none, required or a function; got " + json_excerpt(choice.value()));
    req->tool_choice = c;
  } else if (choice.value().is_object()) {
    if (auto type = choice.field("type")) {
      ASSIGN_OR_RETURN(std::string t, type->string(64));
      if (t != "function") return type->error("must be 'function'");
    }
    ASSIGN_OR_RETURN(FieldReader fn, choice.required("function"));
    RETURN_IF_ERROR(fn.want_object());
    ASSIGN_OR_RETURN(std::string name, fn.required_string("name", kMaxToolNameLength, /*non_empty=*/true));
    // A named function: only that tool, and it must be called.
    std::vector<ToolSpec> only;
    for (auto& t : req->tools)
      if (t.name == name) only.push_back(t);
    if (only.empty()) return choice.error("names " + json_excerpt(json(name)) + ", which is not in 'tools'");
    req->tools = std::move(only);
    req->tool_choice = "required";
  } else {
    return choice.type_error("auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
  }
  if (req->tool_choice == "required" && req->tools.empty())
    return choice.error("is required but no 'tools' are given");
  return Status::ok();
}

}  // namespace

Status read_messages(const FieldReader& body, std::vector<ChatMessage>* out) {
  ASSIGN_OR_RETURN(FieldReader messages, body.required("messages"));
  RETURN_IF_ERROR(messages.want_array(kMaxMessages, /*non_empty=*/true));
  for (size_t i = 0; i < messages.size(); ++i) {
    ASSIGN_OR_RETURN(ChatMessage msg, read_message(messages.item(i)));
    out->push_back(std::move(msg));
  }
  return Status::ok();
}

Status read_tools(const FieldReader& body, GenerateRequest* req) {
  if (std::optional<FieldReader> tools = body.field("tools")) {
    RETURN_IF_ERROR(tools->want_array(kMaxTools));
    for (size_t t = 0; t < tools->size(); ++t) {
      ASSIGN_OR_RETURN(ToolSpec spec, read_tool(tools->item(t)));
      req->tools.push_back(std::move(spec));
    }
  }
  if (std::optional<FieldReader> choice = body.field("tool_choice")) RETURN_IF_ERROR(read_tool_choice(*choice, req));
  return body.optional_bool("parallel_tool_calls", &req->parallel_tool_calls);
}

Status read_prompt(const FieldReader& body, GenerateRequest* req) {
  ASSIGN_OR_RETURN(FieldReader prompt, body.required("prompt"));
  const json& p = prompt.value();
  if (p.is_string()) {
    req->prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    req->prompt = p[0].get<std::string>();
  } else if (p.is_array()) {
    return Status::unimplemented(
        "'prompt' as a list of several prompts or of token ids is not supported; send one string", "prompt");
  } else {
    return prompt.type_error("a string");
  }
  return Status::ok();
}

Status read_sampling(const FieldReader& body, GenerateRequest* req) {
  SamplingParams& s = req->sampling;
  RETURN_IF_ERROR(body.optional_number("temperature", 0.0, 2.0, &s.temperature));
  RETURN_IF_ERROR(body.optional_number("top_p", 0.0, 1.0, &s.top_p));
  RETURN_IF_ERROR(body.optional_number("min_p", 0.0, 1.0, &s.min_p));
  RETURN_IF_ERROR(body.optional_number("presence_penalty", -2.0, 2.0, &s.presence_penalty));
  RETURN_IF_ERROR(body.optional_number("frequency_penalty", -2.0, 2.0, &s.frequency_penalty));
  RETURN_IF_ERROR(body.optional_number("repeat_penalty", 0.0, 10.0, &s.repeat_penalty));
  if (s.repeat_penalty == 0.0f) return Status::invalid_argument("'repeat_penalty' must be greater than 0", "repeat_penalty");

  int64_t v = 0;
  bool present = false;
  RETURN_IF_ERROR(body.optional_int("top_k", 0, 1 << 20, &v, &present));
  if (present) s.top_k = static_cast<int32_t>(v);
  RETURN_IF_ERROR(body.optional_int("repeat_last_n", 0, 1 << 20, &v, &present));
  if (present) s.penalty_last_n = static_cast<int32_t>(v);
  RETURN_IF_ERROR(body.optional_int("seed", INT64_MIN, INT64_MAX, &v, &present));
  if (present) s.seed = static_cast<uint32_t>(static_cast<uint64_t>(v));
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    RETURN_IF_ERROR(body.optional_int(key, 1, kMaxTokensLimit, &v, &present));
    if (present) s.max_tokens = static_cast<int32_t>(v);  // the newer name wins when both are set
  }
  RETURN_IF_ERROR(body.optional_int("n", 1, kMaxChoices, &v, &present));
  if (present) req->n = static_cast<int32_t>(v);
  RETURN_IF_ERROR(body.optional_int("priority", -100, 100, &v, &present));
  if (present) req->priority = static_cast<int32_t>(v);
  RETURN_IF_ERROR(body.optional_int("thinking_budget", -1, kMaxTokensLimit, &v, &present));
  if (present) req->thinking_budget = static_cast<int32_t>(v);
  RETURN_IF_ERROR(body.optional_bool("ignore_eos", &s.ignore_eos));
  RETURN_IF_ERROR(body.optional_bool("speculative", &s.speculative));

  std::optional<FieldReader> bias = body.field("logit_bias");
  if (!bias) return Status::ok();
  if (!bias->value().is_object()) return bias->type_error("an object of token id -> bias");
  if (bias->value().size() > kMaxLogitBias)
    return bias->error("may hold at most " + std::to_string(kMaxLogitBias) + " entries");
  for (auto it = bias->value().begin(); it != bias->value().end(); ++it) {
    FieldReader entry = bias->member(it.key(), it.value());
    const std::string& key = it.key();
    int64_t tok = -1;
    auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), tok);
    if (ec != std::errc() || end != key.data() + key.size() || tok < 0 || tok > INT32_MAX)
      return entry.error("is not a token id (keys must be token ids 0-2147483647)");
    ASSIGN_OR_RETURN(double b, entry.number(-100.0, 100.0));
    s.logit_bias.emplace_back(static_cast<int32_t>(tok), static_cast<float>(b));
  }
  return Status::ok();
}

Status read_output_format(const FieldReader& body, Endpoint endpoint, SamplingParams* s) {
  int64_t v = 0;
  bool present = false;
  if (endpoint == Endpoint::kChat) {
    bool want = false;
    RETURN_IF_ERROR(body.optional_bool("logprobs", &want));
    RETURN_IF_ERROR(body.optional_int("top_logprobs", 0, kMaxTopLogprobs, &v, &present));
    if (present && !want) return Status::invalid_argument("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (want) s->top_logprobs = present ? static_cast<int32_t>(v) : 0;
  } else {
    RETURN_IF_ERROR(body.optional_int("logprobs", 0, kMaxTopLogprobs, &v, &present));
    if (present) s->top_logprobs = static_cast<int32_t>(v);
  }

  std::optional<FieldReader> rf = body.field("response_format");
  if (!rf) return Status::ok();
  RETURN_IF_ERROR(rf->want_object());
  ASSIGN_OR_RETURN(FieldReader type_field, rf->required("type"));
  ASSIGN_OR_RETURN(std::string type, type_field.string(64));
  if (type == "json_object") {
    s->json_object = true;
  } else if (type == "json_schema") {
    ASSIGN_OR_RETURN(FieldReader js, rf->required("json_schema"));
    RETURN_IF_ERROR(js.want_object());
    ASSIGN_OR_RETURN(FieldReader schema, js.required("schema"));
    ASSIGN_OR_RETURN(s->json_schema, schema_text(schema));
  } else if (type != "text") {
    return type_field.error("must be text, json_object or json_schema; got " + json_excerpt(type_field.value()));
  }
  return Status::ok();
}

Status read_stop(const FieldReader& body, SamplingParams* s) {
  std::optional<FieldReader> stop = body.field("stop");
  if (!stop) return Status::ok();
  auto add = [s](const FieldReader& f) -> Status {
    ASSIGN_OR_RETURN(std::string e, f.string(kMaxStopLength, /*non_empty=*/true));
    s->stop.push_back(std::move(e));
    return Status::ok();
  };
  if (stop->value().is_string()) return add(*stop);
  if (!stop->value().is_array()) return stop->type_error("a string or an array of strings");
  RETURN_IF_ERROR(stop->want_array(kMaxStopStrings));
  for (size_t i = 0; i < stop->size(); ++i) RETURN_IF_ERROR(add(stop->item(i)));
  return Status::ok();
}

Status read_stream(const FieldReader& body, ApiRequest* out) {
  RETURN_IF_ERROR(body.optional_bool("stream", &out->stream));
  std::optional<FieldReader> so = body.field("stream_options");
  if (!so) return Status::ok();
  RETURN_IF_ERROR(so->want_object());
  return so->optional_bool("include_usage", &out->include_usage);
}

Status read_route_hints(const FieldReader& body, router::RouteHints* h) {
  h->temperature_set = body.field("temperature").has_value();
  RETURN_IF_ERROR(body.optional_string("user", kMaxUserLength, &h->user));
  if (std::optional<FieldReader> effort = body.field("reasoning_effort")) {
    if (!effort->value().is_string()) return effort->type_error("a string: minimal, low, medium or high");
    ASSIGN_OR_RETURN(h->reasoning_effort, router::parse_reasoning_effort(effort->value().get<std::string>()));
  }
  std::optional<FieldReader> ens = body.field("ensemble");
  if (!ens) return Status::ok();
  if (!ens->value().is_object()) return ens->type_error("an object {strategy, k, judge}");
  for (auto it = ens->value().begin(); it != ens->value().end(); ++it)
    if (it.key() != "strategy" && it.key() != "k" && it.key() != "judge")
      return ens->member(it.key(), it.value()).error("is not a field (known: strategy, k, judge)");
  std::optional<FieldReader> strategy = ens->field("strategy");
  if (!strategy || !strategy->value().is_string())
    return Status::invalid_argument("'ensemble.strategy' is required: fastest, voting, weighted, consensus or judge",
                                    "ensemble.strategy");
  auto kind = ensemble::parse_strategy(strategy->value().get<std::string>());
  if (!kind)
    return strategy->error("must be fastest, voting, weighted, consensus or judge; got " +
                           json_excerpt(strategy->value()));
  h->strategy = *kind;
  int64_t k = 0;
  bool present = false;
  RETURN_IF_ERROR(ens->optional_int("k", 1, kMaxChoices, &k, &present));
  if (present) h->k = static_cast<int32_t>(k);
  if (std::optional<FieldReader> judge = ens->field("judge")) {
    ASSIGN_OR_RETURN(std::string name, judge->string(kMaxModelNameLength, /*non_empty=*/true));
    h->judge = std::move(name);
  }
  return Status::ok();
}

}  // namespace llmpool::api
