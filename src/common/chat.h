// Plain request/response types shared by the API, the providers and the
// engine: what a generation request asks for, what it produces while it
// runs (Delta) and what it produced in the end (Completion).
// No behaviour here; validation happens where the request is parsed
// (api/openai.cpp), whose bounds are documented in docs/api.md.
// Thread-compatible values, except CancelToken which is thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"

namespace llmpool {

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text, as the model wrote it
};

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string r, std::string c) : role(std::move(r)), content(std::move(c)) {}

  std::string role;     // "system", "user", "assistant", "tool", "developer"
  std::string content;  // text; multi-part text content is joined
  std::vector<ToolCall> tool_calls;  // assistant messages that called tools
  std::string tool_call_id;          // tool messages: the call answered
  std::string reasoning_content;     // assistant messages: earlier thinking
};

// A function the model may call (OpenAI `tools` entry of type "function").
struct ToolSpec {
  std::string name;
  std::string description;
  std::string parameters;  // JSON schema text
};

// Sampling and stopping, as the OpenAI API defines them plus llama.cpp's
// usual extras. Defaults match llama-server's where OpenAI leaves them open.
struct SamplingParams {
  float temperature = 1.0f;   // <= 0 means greedy
  float top_p = 1.0f;
  // < 0: not set by the request, the model's default (a local model's
  // `top_k` / `min_p`, llama-server's 40 and 0.05 unless configured; a
  // remote model's upstream decides); 0 disables.
  int32_t top_k = -1;
  float min_p = -1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repeat_penalty = 1.0f;   // 1 disables
  int32_t penalty_last_n = 64;   // window for the three penalties
  std::vector<std::pair<int32_t, float>> logit_bias;  // token id -> bias
  std::optional<uint32_t> seed;       // unset: a random seed per request
  std::optional<int32_t> max_tokens;  // unset: until end of generation or context
  std::vector<std::string> stop;
  bool ignore_eos = false;     // keep generating past end-of-generation tokens
  int32_t top_logprobs = -1;   // -1: no logprobs; 0..20: logprobs with that many alternatives
  std::string json_schema;     // response_format json_schema: the schema, as JSON text
  bool json_object = false;    // response_format json_object
  // Speculative decoding for this request, where the model is configured
  // for it (the `speculative` extension field; it never changes the output
  // distribution, only the speed).
  bool speculative = true;
};

struct GenerateRequest {
  std::string model;
  std::vector<ChatMessage> messages;   // chat: formatted with the model's template
  std::optional<std::string> prompt;   // completions: raw text, used as is
  SamplingParams sampling;
  int32_t n = 1;                       // choices, sharing the prompt's KV
  int32_t priority = 0;                // higher first; FIFO within a priority
  std::vector<ToolSpec> tools;
  std::string tool_choice = "auto";    // auto, none, required
  bool parallel_tool_calls = true;
  bool parse_reasoning = true;         // thinking goes to reasoning_content, not content
  // Tokens the model may spend thinking before the engine closes its thinking
  // block and makes it answer; -1: no limit, 0: no thinking at all. Only
  // models whose template has a thinking block honour it.
  int32_t thinking_budget = -1;
  // The tenant the request runs for ("" without tenancy): set by the API
  // from the caller's credentials, never from the body. Routing, metrics,
  // usage and the fabric's subjects (llm.<tenant>.infer.requests.v1) use it.
  std::string tenant;
};

enum class FinishReason { kStop, kLength, kToolCalls, kCancelled };
const char* finish_reason_name(FinishReason reason);

class JsonWriter;  // common/json.h
// `calls` as the array OpenAI writes in a message's "tool_calls":
// [{"function":{"arguments","name"},"id","type":"function"}], members sorted
// as every body llmpool writes (answers and upstream requests alike).
void write_tool_calls(JsonWriter& w, const std::vector<ToolCall>& calls);

struct TopLogprob {
  std::string token;
  float logprob = 0.0f;
};

struct TokenLogprob {
  std::string token;
  float logprob = 0.0f;
  std::vector<TopLogprob> top;
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // prompt tokens whose KV was reused
};

struct Choice {
  int32_t index = 0;
  std::string text;                    // the answer (content), without thinking or tool calls
  std::string reasoning_content;       // the model's thinking, when it separates it
  std::vector<ToolCall> tool_calls;
  FinishReason finish_reason = FinishReason::kStop;
  std::vector<TokenLogprob> logprobs;  // when requested
};

struct Completion {
  std::vector<Choice> choices;
  Usage usage;
};

// A piece of one choice's output, delivered while it is generated. The
// text is whole UTF-8 characters and never part of a stop string.
// The last delta of a choice carries its finish reason.
struct ToolCallDelta {
  int32_t index = 0;        // which call of the choice
  std::string id;           // set on the call's first delta
  std::string name;         // set on the call's first delta
  std::string arguments;    // the next piece of the arguments' JSON text
};

struct Delta {
  int32_t index = 0;
  std::string text;
  std::string reasoning_content;
  std::vector<ToolCallDelta> tool_calls;
  std::vector<TokenLogprob> logprobs;
  std::optional<FinishReason> finish_reason;
};

// Embeddings of several inputs, in input order, L2-normalised.
struct Embeddings {
  std::vector<std::vector<float>> vectors;
  int32_t prompt_tokens = 0;
};
using EmbedCallback = std::function<void(Result<Embeddings>)>;

// Shared between the requester and the generator: the requester cancels
// (client gone, deadline); the generator polls cancelled() or subscribes a
// callback that runs as soon as cancel() is called:
//
//   auto sub = token->subscribe([w] { if (auto run = w.lock()) run->cancel(); });
//
// subscribe() runs the callback at once (on the caller's thread) when the
// token is already cancelled, else exactly once on the thread that first
// calls cancel(), and never after the Subscription was reset or destroyed:
// a reset that races a cancel waits until the callback, running on the
// other thread, has returned (a reset from inside the callback itself
// returns at once). No lock is held while a callback runs, so a callback
// may subscribe, reset subscriptions or cancel other tokens; it must not
// throw, and should be quick (it delays the canceller). So that a reset
// cannot wait forever, never reset a subscription while holding a lock
// that its callback takes. Subscribing needs
// the token to be owned by a shared_ptr (CancelTokenPtr): the Subscription
// keeps it alive. Thread-safe.
class CancelToken : public std::enable_shared_from_this<CancelToken> {
 public:
  // An RAII handle of one subscription. Movable, not copyable; empty when
  // default-built, moved from, reset, or returned for a token that was
  // already cancelled (the callback has run then).
  class Subscription {
   public:
    Subscription() = default;
    Subscription(Subscription&& other) noexcept { *this = std::move(other); }
    Subscription& operator=(Subscription&& other) noexcept;
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;
    ~Subscription() { reset(); }
    // Unsubscribes: afterwards the callback never starts, and is not running
    // on another thread.
    void reset();
    explicit operator bool() const { return token_ != nullptr; }

   private:
    friend class CancelToken;
    Subscription(std::shared_ptr<CancelToken> token, uint64_t id) : token_(std::move(token)), id_(id) {}
    std::shared_ptr<CancelToken> token_;
    uint64_t id_ = 0;
  };

  void cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // When cancel() was first called (steady clock); the epoch if never.
  std::chrono::steady_clock::time_point cancelled_at() const {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(at_ns_.load(std::memory_order_acquire)));
  }
  // See the class comment. The callback must not be empty.
  [[nodiscard]] Subscription subscribe(std::function<void()> callback);

 private:
  void unsubscribe(uint64_t id);

  std::atomic<bool> cancelled_{false};
  std::atomic<std::chrono::steady_clock::rep> at_ns_{0};
  std::mutex mu_;
  std::condition_variable callback_done_;
  std::vector<std::pair<uint64_t, std::function<void()>>> callbacks_;  // guarded by mu_
  uint64_t next_id_ = 1;                                                // guarded by mu_
  uint64_t running_ = 0;            // the callback cancel() runs now (0: none); guarded by mu_
  std::thread::id running_on_;      // the thread running cancel()'s callbacks; guarded by mu_
};
using CancelTokenPtr = std::shared_ptr<CancelToken>;

// How a generator reports back. on_delta may be empty (the caller wants
// only the end); on_done is called exactly once, after the last delta.
// Both run on the generator's thread: keep them quick, post real work.
struct GenerateCallbacks {
  std::function<void(Delta)> on_delta;
  std::function<void(Result<Completion>)> on_done;
};

}  // namespace llmpool
