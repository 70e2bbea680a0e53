#include "api/openai.h"

#include <cstring>

#include "api/request_parts.h"
#include "api/request_reader.h"
#include "common/text.h"

namespace llmpool::api {

using nlohmann::json;

Result<ApiRequest> parse_request(std::string_view body, Endpoint endpoint) {
  ASSIGN_OR_RETURN(json j, parse_body(body));
  FieldReader reader(j);
  ApiRequest out;
  GenerateRequest& req = out.generate;
  ASSIGN_OR_RETURN(req.model, reader.required_string("model", kMaxModelNameLength, /*non_empty=*/true));
  if (endpoint == Endpoint::kChat) {
    RETURN_IF_ERROR(read_messages(reader, &req.messages));
    RETURN_IF_ERROR(read_tools(reader, &req));
  } else {
    RETURN_IF_ERROR(read_prompt(reader, &req));
  }
  RETURN_IF_ERROR(read_sampling(reader, &req));
  RETURN_IF_ERROR(read_route_hints(reader, &out.hints));
  RETURN_IF_ERROR(read_stream(reader, &out));
  RETURN_IF_ERROR(read_output_format(reader, endpoint, &req.sampling));
  RETURN_IF_ERROR(read_stop(reader, &req.sampling));
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

// The objects of every answer are built member by member: an initializer
// list builds each member as a two-item array first and then takes it apart
// (several allocations per member, on every request). The same JSON.
json envelope(Endpoint endpoint, const ResponseMeta& meta, bool chunk, json choices) {
  json out = json::object();
  out["id"] = meta.id;
  out["object"] = object_name(endpoint, chunk);
  out["created"] = meta.created;
  out["model"] = meta.model;
  out["system_fingerprint"] = "llmpool";
  out["choices"] = std::move(choices);
  return out;
}

}  // namespace

json usage_json(const Usage& u) {
  json out = json::object();  // member by member, as envelope()
  out["prompt_tokens"] = u.prompt_tokens;
  out["completion_tokens"] = u.completion_tokens;
  out["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  json details = json::object();
  details["cached_tokens"] = u.cached_prompt_tokens;
  out["prompt_tokens_details"] = std::move(details);
  return out;
}

json completion_json(Endpoint endpoint, const ResponseMeta& meta, const Completion& c, bool with_logprobs) {
  json choices = json::array();
  for (const auto& ch : c.choices) {
    json choice = json::object();  // member by member, as envelope()
    choice["index"] = ch.index;
    choice["finish_reason"] = finish_reason_name(ch.finish_reason);
    if (endpoint == Endpoint::kChat) {
      json message = json::object();
      message["role"] = "assistant";
      message["content"] = ch.text;
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
  ASSIGN_OR_RETURN(json j, parse_body(body));
  FieldReader reader(j);
  EmbeddingsRequest out;
  ASSIGN_OR_RETURN(out.model, reader.required_string("model", kMaxModelNameLength, /*non_empty=*/true));
  ASSIGN_OR_RETURN(FieldReader input, reader.required("input"));
  if (input.value().is_string()) {
    out.inputs.push_back(input.value().get<std::string>());
  } else if (input.value().is_array()) {
    RETURN_IF_ERROR(input.want_array(kMaxEmbeddingInputs, /*non_empty=*/true));
    for (size_t i = 0; i < input.size(); ++i) {
      FieldReader e = input.item(i);
      if (e.value().is_number_integer() || e.value().is_array())
        return Status::unimplemented("'input' as token ids is not supported; send strings", "input");
      ASSIGN_OR_RETURN(std::string text, e.string(SIZE_MAX));
      out.inputs.push_back(std::move(text));
    }
  } else {
    return input.type_error("a string or an array of strings");
  }
  if (std::optional<FieldReader> fmt = reader.field("encoding_format")) {
    ASSIGN_OR_RETURN(std::string f, fmt->string(16));
    if (f != "float" && f != "base64") return fmt->error("must be 'float' or 'base64'");
    out.base64 = f == "base64";
  }
  int64_t v = 0;
  bool present = false;
  RETURN_IF_ERROR(reader.optional_int("dimensions", 1, 1 << 16, &v, &present));
  if (present) out.dimensions = static_cast<int32_t>(v);
  return out;
}

Result<TokenizeRequest> parse_tokenize_request(std::string_view body) {
  ASSIGN_OR_RETURN(json j, parse_body(body));
  FieldReader reader(j);
  TokenizeRequest out;
  RETURN_IF_ERROR(reader.optional_string("model", kMaxModelNameLength, &out.model));
  ASSIGN_OR_RETURN(out.content, reader.required_string("content", SIZE_MAX));
  RETURN_IF_ERROR(reader.optional_bool("add_special", &out.add_special));
  return out;
}

Result<DetokenizeRequest> parse_detokenize_request(std::string_view body) {
  ASSIGN_OR_RETURN(json j, parse_body(body));
  FieldReader reader(j);
  DetokenizeRequest out;
  RETURN_IF_ERROR(reader.optional_string("model", kMaxModelNameLength, &out.model));
  ASSIGN_OR_RETURN(FieldReader tokens, reader.required("tokens"));
  RETURN_IF_ERROR(tokens.want_array(kMaxDetokenizeTokens));
  out.tokens.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    ASSIGN_OR_RETURN(int64_t t, tokens.item(i).integer(INT32_MIN, INT32_MAX));
    out.tokens.push_back(static_cast<int32_t>(t));
  }
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

std::string new_completion_id(std::string_view prefix) { return std::string(prefix) + "-" + random_hex(24); }

}  // namespace llmpool::api
