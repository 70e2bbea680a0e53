// LocalModel: a GGUF model loaded in-process through llama.cpp, with the one
// engine thread that owns its llama_context.
//
// Requests reach the engine thread through a FIFO queue (submit() is
// thread-safe and never blocks on the model); the result is delivered by
// calling the request's callback on the engine thread, so the callback must
// be quick and must not call back into this model synchronously (post to
// an executor instead). This version runs one sequence at a time.
//
// Ownership: the caller owns the LocalModel. Destroying it closes the queue,
// fails the requests still waiting with Unavailable, lets the current one
// finish, and joins the engine thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/chat.h"
#include "common/status.h"

struct llama_model;
struct llama_context;

namespace llmpool::engine {

struct LocalModelSpec {
  std::string name;
  std::string path;        // GGUF file
  int32_t context = 4096;  // tokens
  int32_t threads = 0;     // 0: hardware concurrency
  int32_t max_queue = 64;  // waiting requests before ResourceExhausted
};

struct GenerationRequest {
  std::vector<ChatMessage> messages;  // formatted with the model's chat template
  SamplingParams sampling;
};

using GenerationCallback = std::function<void(Result<Completion>)>;

class LocalModel {
 public:
  // Loads the model and creates its context. Returns NotFound if the file
  // is missing and InvalidArgument if llama.cpp cannot load it. Blocks while
  // reading the file. Starts the engine thread.
  static Result<std::unique_ptr<LocalModel>> load(const LocalModelSpec& spec);

  ~LocalModel();
  LocalModel(const LocalModel&) = delete;
  LocalModel& operator=(const LocalModel&) = delete;

  // Queues a request. `done` is called exactly once, on the engine thread,
  // with the completion or an error: InvalidArgument with code
  // "context_length_exceeded" when the prompt does not fit the context,
  // ResourceExhausted when the queue is full, Unavailable when shutting down.
  void submit(GenerationRequest request, GenerationCallback done);

  const std::string& name() const { return spec_.name; }
  int32_t context_size() const { return n_ctx_; }
  uint64_t size_bytes() const { return size_bytes_; }

  // Formats `messages` with the model's chat template (ChatML when the model
  // has none), ending with the assistant's turn. Thread-safe (pure).
  Result<std::string> format_chat(const std::vector<ChatMessage>& messages) const;

 private:
  struct Job {
    GenerationRequest request;
    GenerationCallback done;
  };

  explicit LocalModel(LocalModelSpec spec);
  void run();
  Result<Completion> generate(const GenerationRequest& request);
  Result<std::vector<int32_t>> tokenize(const std::string& text) const;

  LocalModelSpec spec_;
  std::unique_ptr<llama_model, void (*)(llama_model*)> model_;
  std::unique_ptr<llama_context, void (*)(llama_context*)> ctx_;
  std::string chat_template_;
  int32_t n_ctx_ = 0;
  int32_t n_batch_ = 0;
  uint64_t size_bytes_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;   // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread thread_;
};

}  // namespace llmpool::engine
