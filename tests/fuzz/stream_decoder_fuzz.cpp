// Fuzz target: the upstream stream decoders (providers::OpenAiStreamDecoder
// for server-sent events or a whole JSON answer, providers::OllamaStreamDecoder
// for NDJSON), fed arbitrary bytes in arbitrary chunks.
//
// Input: byte 0 picks the decoder and its mode (bit 0: chat, bit 1: the
// upstream answered application/json instead of a stream, bit 2: Ollama,
// bits 3-5: n - 1); byte 1 seeds where the body is cut into chunks; the
// rest is the body. Besides not crashing, the decoder must not care where
// the body was cut: fed whole and fed in chunks it gives the same deltas, the
// same Status and the same Completion. A whole OpenAI answer must also come
// out the same whether the common-shape reader or the DOM reads it
// (OpenAiStreamDecoder::read_whole_with_dom).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "providers/ollama_provider.h"
#include "providers/openai_provider.h"

using namespace llmpool;
using namespace llmpool::providers;

namespace {

struct Outcome {
  std::string deltas;  // every delta, flattened
  StatusCode code = StatusCode::kOk;
  std::string message;
  bool ended = false;
  std::string completion;  // the Completion, flattened
};

void flatten(const TokenLogprob& lp, std::string* out) {
  *out += lp.token + '\x1f' + std::to_string(lp.logprob) + '\x1f';
  for (const auto& t : lp.top) *out += t.token + '\x1f' + std::to_string(t.logprob) + '\x1f';
}

std::string flatten(const Delta& d) {
  std::string s = std::to_string(d.index) + '\x1e' + d.text + '\x1e' + d.reasoning_content + '\x1e' +
                  (d.finish_reason ? finish_reason_name(*d.finish_reason) : "-") + '\x1e';
  for (const auto& t : d.tool_calls) s += std::to_string(t.index) + t.id + '\x1f' + t.name + '\x1f' + t.arguments;
  for (const auto& lp : d.logprobs) flatten(lp, &s);
  return s + '\x1d';
}

std::string flatten(const Completion& c) {
  std::string s = std::to_string(c.usage.prompt_tokens) + ',' + std::to_string(c.usage.completion_tokens) + ',' +
                  std::to_string(c.usage.cached_prompt_tokens) + '\x1d';
  for (const auto& ch : c.choices) {
    s += std::to_string(ch.index) + '\x1e' + ch.text + '\x1e' + ch.reasoning_content + '\x1e' +
         finish_reason_name(ch.finish_reason) + '\x1e';
    for (const auto& t : ch.tool_calls) s += t.id + '\x1f' + t.name + '\x1f' + t.arguments + '\x1f';
    for (const auto& lp : ch.logprobs) flatten(lp, &s);
    s += '\x1d';
  }
  return s;
}

std::unique_ptr<UpstreamDecoder> make_decoder(uint8_t mode, bool dom) {
  const bool chat = mode & 1;
  const int32_t n = 1 + ((mode >> 3) & 7);
  if (mode & 4) return std::make_unique<OllamaStreamDecoder>(chat, "http://upstream.test/api/chat");
  auto d = std::make_unique<OpenAiStreamDecoder>(chat, n, "http://upstream.test/v1/chat/completions");
  if (dom) d->read_whole_with_dom();
  return d;
}

// Decodes `body` cut at the offsets in `cuts` (ascending).
Outcome decode(uint8_t mode, std::string_view body, const std::vector<size_t>& cuts, bool dom = false) {
  Outcome out;
  auto decoder = make_decoder(mode, dom);
  decoder->on_delta = [&out](Delta d) { out.deltas += flatten(d); };
  HttpResponseHead head;
  head.status = 200;
  head.headers["content-type"] = (mode & 2) ? "application/json; charset=utf-8" : "text/event-stream";
  decoder->start(head);
  Status st = Status::ok();
  size_t at = 0;
  for (size_t i = 0; i <= cuts.size() && st.is_ok(); ++i) {
    size_t end = i < cuts.size() ? cuts[i] : body.size();
    st = decoder->feed(body.substr(at, end - at));
    at = end;
  }
  if (st.is_ok()) st = decoder->finish();
  out.code = st.code();
  out.message = st.message();
  if (!st.is_ok() && st.message().empty()) std::abort();  // an error always says what was wrong
  out.ended = decoder->ended();
  out.completion = flatten(decoder->completion());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t mode = data[0];
  uint32_t seed = data[1] * 2654435761u + 1;
  std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);

  std::vector<size_t> cuts;
  for (size_t at = 0;;) {
    seed = seed * 1103515245u + 12345u;
    at += 1 + (seed >> 16) % 24;  // chunks of 1 to 24 bytes
    if (at >= body.size()) break;
    cuts.push_back(at);
  }
  auto same = [](const Outcome& a, const Outcome& b) {
    return a.deltas == b.deltas && a.code == b.code && a.message == b.message && a.ended == b.ended &&
           a.completion == b.completion;
  };
  Outcome whole = decode(mode, body, {});
  if (!same(whole, decode(mode, body, cuts))) std::abort();
  if ((mode & 6) == 2 && !same(whole, decode(mode, body, {}, /*dom=*/true))) std::abort();
  return 0;
}
