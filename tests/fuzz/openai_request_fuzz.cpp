// Fuzz target: the OpenAI request parsers (api::parse_request for
// /v1/chat/completions and /v1/completions, api::parse_embeddings_request).
// Any input must give a value or an error Status with a message; nothing may
// crash, hang, throw or read out of bounds. The whole input is the body;
// every body goes through all three parsers, and a body that is JSON is
// written back by json_text exactly as nlohmann's dump() writes it.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/openai.h"
#include "common/json.h"

using namespace llmpool;

namespace {

void check(const Status& s) {
  // An error always says what was wrong.
  if (!s.is_ok() && s.message().empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  for (auto endpoint : {api::Endpoint::kChat, api::Endpoint::kCompletions}) {
    auto r = api::parse_request(body, endpoint);
    check(r.status());
    if (r.is_ok()) {
      const auto& g = r.value().generate;
      // A parsed request stays inside the documented bounds.
      if (g.messages.size() > api::kMaxMessages || g.tools.size() > api::kMaxTools) std::abort();
      if (g.sampling.stop.size() > api::kMaxStopStrings) std::abort();
      if (g.n < 1 || g.n > api::kMaxChoices) std::abort();
      if (g.model.size() > api::kMaxModelNameLength) std::abort();
    }
  }
  if (auto j = parse_json(body); j.is_ok() &&
                                 json_text(*j) != j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
    std::abort();
  auto e = api::parse_embeddings_request(body);
  check(e.status());
  if (e.is_ok() && e.value().inputs.size() > api::kMaxEmbeddingInputs) std::abort();
  return 0;
}
