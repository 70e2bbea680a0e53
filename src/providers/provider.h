// Provider: anything that can answer a chat request — a local GGUF model
// run by the engine, or (later) a remote OpenAI-compatible or Ollama server.
// The router and the API know models only through this interface.
//
// Implementations are thread-safe: chat() may be called from any thread at
// any time and never blocks on the model; `done` is called exactly once, on
// a thread the provider chooses, so it must be quick and must post any real
// work elsewhere.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/chat.h"
#include "common/status.h"

namespace llmpool::providers {

using ChatCallback = std::function<void(Result<Completion>)>;

struct ModelInfo {
  std::string name;
  std::vector<std::string> aliases;
  std::string type;                       // the config's provider `type:`
  std::vector<std::string> capabilities;
  int32_t context = 0;                    // tokens
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual const ModelInfo& info() const = 0;
  virtual void chat(ChatRequest request, ChatCallback done) = 0;
};

using ProviderPtr = std::shared_ptr<Provider>;

}  // namespace llmpool::providers
