#include "api/openai.h"

#include <cstring>

#include "api/request_parts.h"
#include "api/request_reader.h"
#include "common/json.h"
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

// The answers are written straight to text, with no DOM, members sorted by
// name as json_text() writes a DOM's. The envelope: choices, created, id,
// llmpool (when given), model, object, system_fingerprint; the caller adds
// "usage" and closes the object.
template <typename WriteChoices>
void write_envelope(JsonWriter& w, Endpoint endpoint, const ResponseMeta& meta, bool chunk, std::string_view llmpool,
                    WriteChoices&& choices) {
  w.begin_object().key("choices").begin_array();
  choices();
  w.end_array().key("created").integer(meta.created).key("id").string(meta.id);
  if (!llmpool.empty()) w.key("llmpool").raw(llmpool);
  w.key("model").string(meta.model).key("object").string(object_name(endpoint, chunk));
  w.key("system_fingerprint").string("llmpool");
}

void write_usage(JsonWriter& w, const Usage& u) {
  w.begin_object().key("completion_tokens").integer(u.completion_tokens).key("prompt_tokens").integer(u.prompt_tokens);
  w.key("prompt_tokens_details").begin_object().key("cached_tokens").integer(u.cached_prompt_tokens).end_object();
  w.key("total_tokens").integer(int64_t{u.prompt_tokens} + u.completion_tokens).end_object();
}

}  // namespace

void append_completion(std::string& out, Endpoint endpoint, const ResponseMeta& meta, const Completion& c,
                       bool with_logprobs, std::string_view llmpool) {
  size_t size = out.size() + 320 + meta.id.size() + meta.model.size() + llmpool.size();  // no regrowing
  for (const auto& ch : c.choices) size += 96 + ch.text.size() + ch.reasoning_content.size();
  out.reserve(size);
  JsonWriter w(out);
  write_envelope(w, endpoint, meta, /*chunk=*/false, llmpool, [&] {
    for (const auto& ch : c.choices) {
      w.begin_object().key("finish_reason").string(finish_reason_name(ch.finish_reason)).key("index").integer(ch.index);
      w.key("logprobs");
      if (with_logprobs)
        w.value(logprobs_json(endpoint, ch.logprobs));
      else
        w.null();
      if (endpoint == Endpoint::kChat) {
        w.key("message").begin_object().key("content");
        if (ch.text.empty() && !ch.tool_calls.empty())
          w.null();  // a message that only calls tools, as OpenAI sends it
        else
          w.string(ch.text);
        if (!ch.reasoning_content.empty()) w.key("reasoning_content").string(ch.reasoning_content);
        w.key("role").string("assistant");
        if (!ch.tool_calls.empty()) {
          w.key("tool_calls");
          write_tool_calls(w, ch.tool_calls);
        }
        w.end_object();
      } else {
        w.key("text").string(ch.text);
      }
      w.end_object();
    }
  });
  w.key("usage");
  write_usage(w, c.usage);
  w.end_object();
}

void append_chunk(std::string& out, Endpoint endpoint, const ResponseMeta& meta, const Delta& d, bool first,
                  bool with_logprobs, std::string_view llmpool) {
  out.reserve(out.size() + 256 + meta.id.size() + meta.model.size() + llmpool.size() + d.text.size() +
              d.reasoning_content.size());  // no regrowing
  JsonWriter w(out);
  write_envelope(w, endpoint, meta, /*chunk=*/true, llmpool, [&] {
    w.begin_object();
    if (endpoint == Endpoint::kChat) {
      w.key("delta").begin_object();
      if (!d.text.empty() || first) w.key("content").string(d.text);
      if (!d.reasoning_content.empty()) w.key("reasoning_content").string(d.reasoning_content);
      if (first) w.key("role").string("assistant");
      if (!d.tool_calls.empty()) {
        w.key("tool_calls").begin_array();
        for (const auto& c : d.tool_calls) {
          // {"function":{"arguments","name"?},"id"?,"index","type"?}
          w.begin_object().key("function").begin_object().key("arguments").string(c.arguments);
          if (!c.name.empty()) w.key("name").string(c.name);
          w.end_object();
          if (!c.id.empty()) w.key("id").string(c.id);
          w.key("index").integer(c.index);
          if (!c.name.empty()) w.key("type").string("function");
          w.end_object();
        }
        w.end_array();
      }
      w.end_object();
    }
    w.key("finish_reason");
    if (d.finish_reason)
      w.string(finish_reason_name(*d.finish_reason));
    else
      w.null();
    w.key("index").integer(d.index).key("logprobs");
    if (with_logprobs && !d.logprobs.empty())
      w.value(logprobs_json(endpoint, d.logprobs));
    else
      w.null();
    if (endpoint != Endpoint::kChat) w.key("text").string(d.text);
    w.end_object();
  });
  w.end_object();
}

void append_usage_chunk(std::string& out, Endpoint endpoint, const ResponseMeta& meta, const Usage& usage) {
  JsonWriter w(out);
  write_envelope(w, endpoint, meta, /*chunk=*/true, {}, [] {});
  w.key("usage");
  write_usage(w, usage);
  w.end_object();
}

json completion_json(Endpoint endpoint, const ResponseMeta& meta, const Completion& c, bool with_logprobs) {
  std::string text;
  append_completion(text, endpoint, meta, c, with_logprobs);
  return parse_json(text).value();
}

json chunk_json(Endpoint endpoint, const ResponseMeta& meta, const Delta& d, bool first, bool with_logprobs) {
  std::string text;
  append_chunk(text, endpoint, meta, d, first, with_logprobs);
  return parse_json(text).value();
}

json usage_chunk_json(Endpoint endpoint, const ResponseMeta& meta, const Usage& usage) {
  std::string text;
  append_usage_chunk(text, endpoint, meta, usage);
  return parse_json(text).value();
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
