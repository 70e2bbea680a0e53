// Remote providers: models served by another server over HTTP.
//
// RemoteProvider is the part every remote type shares: it reads the remote
// fields of the model's config, owns an HttpClient (one I/O thread), bounds
// the requests in flight (`max_concurrent`, with a FIFO of at most
// `max_queue` waiting), streams the upstream's answer through an
// UpstreamDecoder into Deltas, assembles the Completion and maps every
// failure to a Status. A subclass says only how a request looks on the wire
// (prepare) and how its answer is decoded (the decoder it returns).
//
// OpenAiProvider (type "openai") talks to any OpenAI-compatible server:
// vLLM, llama.cpp's llama-server, hosted APIs. `base_url` includes the API
// version prefix, e.g. http://127.0.0.1:8000/v1: requests go to
// base_url + "/chat/completions" (requests with messages) or
// base_url + "/completions" (requests with a prompt), always with
// "stream": true and stream_options.include_usage, so deltas are relayed as
// the upstream sends them. `upstream_model` names the model upstream (the
// model's own name when empty). With `api_key_env` set, the key is read from
// that environment variable when the provider is created and sent as
// "Authorization: Bearer <key>".
//
// Errors (on_done): the upstream's 4xx/5xx answers map as
// upstream_error_status() says (400 InvalidArgument keeping the upstream's
// message, param and code; 401 Unauthenticated; 403 PermissionDenied; 404
// NotFound; 429 ResourceExhausted; 5xx Unavailable); an upstream that cannot
// be reached is Unavailable, one that does not answer in time
// DeadlineExceeded, both naming the URL; a stream that stops before its end
// marker ([DONE]) is Unavailable("upstream stream ended early ...");
// ResourceExhausted when `max_concurrent` requests are in flight and
// `max_queue` more are waiting. A cancelled request ends with an ok
// Completion whose choices have FinishReason::kCancelled (as local models do).
//
// Thread-safety: all public methods may be called from any thread. The
// callbacks of a request run on the provider's HTTP I/O thread. Destroying
// the provider fails waiting requests with Unavailable and ends requests in
// flight (their on_done gets Unavailable).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "providers/http_client.h"
#include "providers/provider.h"

namespace llmpool::providers {

// Turns an upstream's (streamed) answer into Deltas and a Completion. One
// per request; driven by one thread at a time (not thread-safe).
class UpstreamDecoder {
 public:
  UpstreamDecoder(int32_t n, std::string url) : n_(n), url_(std::move(url)) {}
  virtual ~UpstreamDecoder() = default;

  // Receives each delta as it is decoded. May be empty.
  std::function<void(Delta)> on_delta;

  // The head of a 2xx answer, before its body.
  virtual void start(const HttpResponseHead& head) { (void)head; }
  // Body bytes, split anywhere. A non-ok Status is an error the upstream
  // reported inside the stream, or data that cannot be read; stop feeding.
  virtual Status feed(std::string_view bytes) = 0;
  // The body ended normally: decode what is still buffered.
  virtual Status finish() { return Status::ok(); }

  // True once the upstream's end marker arrived ([DONE]; "done": true).
  bool ended() const { return ended_; }
  // What the end marker is called, for messages.
  virtual const char* end_marker() const = 0;
  // Everything decoded so far: at least `n` choices, in index order;
  // choices that got no finish reason end with kStop.
  Completion completion() const;

 protected:
  // Appends `d` to its choice and passes it to on_delta.
  void deliver(Delta d);
  // Adds one usage report. Completion tokens add up (llama-server reports
  // each choice of n > 1 on its own); prompt tokens are shared, so the
  // largest report counts.
  void add_usage(const Usage& u);
  const std::string& url() const { return url_; }

  int32_t n_;
  bool ended_ = false;

 private:
  std::string url_;
  Completion completion_;
};

// Settings every remote type reads from its ModelConfig.
struct RemoteSettings {
  HttpUrl base;                  // base_url, without a trailing slash in its path
  std::string upstream_model;
  std::map<std::string, std::string> headers;  // Authorization when api_key_env is set
  int32_t connect_timeout_ms = 5000;
  int32_t read_timeout_ms = 120000;
  int32_t max_concurrent = 0;    // 0: unlimited
  int32_t max_queue = 64;

  // base path + `path`, as a full URL.
  std::string url(std::string_view path) const;
};

// Checks and reads the remote fields of `config`. InvalidArgument (param
// "base_url") for a missing or malformed base_url, Unimplemented for https,
// InvalidArgument (param "api_key_env") naming the variable when
// `api_key_env` is set but the variable is not (or is empty).
Result<RemoteSettings> read_remote_settings(const config::ModelConfig& config);

class RemoteProvider : public Provider {
 public:
  ~RemoteProvider() override;

  const ModelInfo& info() const override { return info_; }
  void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) override;
  // queued: waiting for a slot; active_sequences: requests upstream;
  // parallel: max_concurrent (0 when unlimited).
  ProviderStats stats() const override;

  const RemoteSettings& settings() const { return settings_; }

 protected:
  // One request as the upstream will see it.
  struct UpstreamCall {
    std::string path;    // appended to base_url: "/chat/completions"
    std::string body;    // JSON
    std::unique_ptr<UpstreamDecoder> decoder;
  };

  RemoteProvider(ModelInfo info, RemoteSettings settings);
  // Maps `request` to the upstream's API. InvalidArgument or Unimplemented
  // (with param) for what the upstream cannot do.
  virtual Result<UpstreamCall> prepare(const GenerateRequest& request) const = 0;

 private:
  struct Shared;
  struct Call;
  static void start(std::shared_ptr<Call> call, const std::shared_ptr<HttpClient>& client);
  static void finish(const std::shared_ptr<Call>& call, Status transport);
  static void release(const std::shared_ptr<Shared>& shared);
  static void schedule_sweep(const std::shared_ptr<Shared>& shared);

  ModelInfo info_;
  RemoteSettings settings_;
  std::shared_ptr<Shared> shared_;
};

// ---------------------------------------------------------------------------

// The request body for an OpenAI-compatible upstream: a /chat/completions
// body when `request` has messages, a /completions body when it has a
// prompt. Streams with usage; passes every sampling field the upstream
// understands, the llama.cpp/vLLM extras (top_k, min_p, repeat_penalty,
// repeat_last_n, ignore_eos) only when they differ from their defaults, so
// that strict hosted APIs do not reject them.
Result<nlohmann::json> openai_request_json(const GenerateRequest& request, const std::string& upstream_model);

// Decodes an OpenAI server-sent-event stream (or, from an upstream that
// ignores "stream", a whole JSON completion).
class OpenAiStreamDecoder : public UpstreamDecoder {
 public:
  OpenAiStreamDecoder(bool chat, int32_t n, std::string url) : UpstreamDecoder(n, std::move(url)), chat_(chat) {}
  void start(const HttpResponseHead& head) override;
  Status feed(std::string_view bytes) override;
  Status finish() override;
  const char* end_marker() const override { return "[DONE]"; }

 private:
  Status line(std::string_view text);
  Status event(const std::string& data);
  Status chunk(const nlohmann::json& j);
  Status whole(const nlohmann::json& j);

  bool chat_;
  bool whole_json_ = false;
  std::string buffer_;  // bytes of an unfinished line (or the whole JSON body)
  std::string data_;    // the current event's data lines
  bool has_data_ = false;
};

class OpenAiProvider : public RemoteProvider {
 public:
  // Reads the settings; connects lazily (nothing is sent until a request).
  static Result<ProviderPtr> create(const config::ModelConfig& config);

 protected:
  using RemoteProvider::RemoteProvider;
  Result<UpstreamCall> prepare(const GenerateRequest& request) const override;
};

}  // namespace llmpool::providers
