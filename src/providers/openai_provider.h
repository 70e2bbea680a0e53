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
// Tools: `tools`, `tool_choice` (a choice of "required" with one tool, which
// is what a client's named function becomes, is sent as that function),
// `parallel_tool_calls`, assistant messages with tool_calls and tool
// messages (tool_call_id) are forwarded; the upstream's tool calls come
// back streamed (delta.tool_calls pieces, relayed as Delta::tool_calls and
// assembled into Choice::tool_calls) or whole (message.tool_calls).
//
// https base_urls are verified (see http_client.h); `ca_file` and
// `tls_insecure_skip_verify` in the model's config set TlsOptions.
//
// Everything the upstream sends is read with parse_json (nesting depth 64).
// One stream event (SSE data lines up to their blank line, or one NDJSON
// line) may be at most kMaxUpstreamEventBytes; a bigger one, an endless
// line or data lines that never end their event, fails the request with
// Unavailable ("... larger than ..."), as does JSON that is too deep or
// unreadable.
//
// Errors (on_done): the upstream's 4xx/5xx answers map as
// upstream_error_status() says (400 InvalidArgument keeping the upstream's
// message, param and code; 401 Unauthenticated; 403 PermissionDenied; 404
// NotFound; 429 ResourceExhausted; 5xx Unavailable); an upstream that cannot
// be reached is Unavailable, one that does not answer in time
// DeadlineExceeded; a stream that stops before its end marker ([DONE]) is
// Unavailable("upstream stream ended early ..."). Messages call the
// upstream "upstream for model '<name>'" and never carry its URL or host
// (clients see them); the URL goes to the server log with the model name.
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

// The largest stream event (or NDJSON line) read from an upstream.
inline constexpr size_t kMaxUpstreamEventBytes = 1u << 20;
// The largest whole (non-streamed) JSON answer read from an upstream.
inline constexpr size_t kMaxUpstreamAnswerBytes = 64u << 20;

// Reads one JSON object an upstream sent (`what`: "stream event",
// "answer") with parse_json: depth 64, at most `max_bytes`. Unavailable
// "<who> sent an unreadable <what>: ..." otherwise.
Result<nlohmann::json> read_upstream_json(std::string_view text, size_t max_bytes, const std::string& who,
                                          const char* what);

// Splits body bytes into lines ('\n', a '\r' before it dropped). Each byte
// is scanned once: a long line arriving in many pieces is not searched
// again from its start. Not thread-safe.
class LineSplitter {
 public:
  // Calls `on_line` for every complete line in what has arrived so far and
  // keeps the rest; stops at the first non-ok Status and returns it.
  Status feed(std::string_view bytes, const std::function<Status(std::string_view)>& on_line);
  // Bytes of the unfinished line.
  size_t pending() const { return buffer_.size(); }
  // The unfinished line (without a trailing '\r'); empties the buffer.
  std::string take_rest();

 private:
  std::string buffer_;
  size_t scanned_ = 0;  // buffer_[0, scanned_) holds no '\n'
};

// Turns an upstream's (streamed) answer into Deltas and a Completion. One
// per request; driven by one thread at a time (not thread-safe). `who`
// names the upstream in messages ("upstream for model 'x'").
class UpstreamDecoder {
 public:
  UpstreamDecoder(int32_t n, std::string who, size_t max_event_bytes = kMaxUpstreamEventBytes)
      : n_(n), max_event_bytes_(max_event_bytes), who_(std::move(who)) {}
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
  // Appends `d` to its choice (tool call pieces to the call of their
  // index: id and name set, arguments appended) and passes it to on_delta.
  // Unavailable for a tool call index of kMaxToolCalls or more.
  Status deliver(Delta d);
  // Adds one usage report. Completion tokens add up (llama-server reports
  // each choice of n > 1 on its own); prompt tokens are shared, so the
  // largest report counts.
  void add_usage(const Usage& u);
  const std::string& who() const { return who_; }
  // Unavailable: the upstream sent an event larger than max_event_bytes_.
  Status event_too_large() const;

  static constexpr size_t kMaxToolCalls = 128;  // per choice

  int32_t n_;
  size_t max_event_bytes_;
  bool ended_ = false;

 private:
  std::string who_;
  Completion completion_;
};

// Settings every remote type reads from its ModelConfig.
struct RemoteSettings {
  HttpUrl base;                  // base_url, without a trailing slash in its path
  std::string upstream_model;
  std::map<std::string, std::string> headers;  // Authorization when api_key_env is set
  TlsOptions tls;                // ca_file, tls_insecure_skip_verify
  std::string label;             // "upstream for model '<name>'", for messages
  int32_t connect_timeout_ms = 5000;
  int32_t read_timeout_ms = 120000;
  int32_t max_concurrent = 0;    // 0: unlimited
  int32_t max_queue = 64;

  // base path + `path`, as a full URL.
  std::string url(std::string_view path) const;

  std::string base_text;  // base.origin() + base.path, made once by read_remote_settings
};

// Checks and reads the remote fields of `config`. InvalidArgument (param
// "base_url") for a missing or malformed base_url, (param "ca_file") for a
// CA file that cannot be used, (param "api_key_env") naming the variable
// when `api_key_env` is set but the variable is not (or is empty).
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
  // (with param) for what the upstream cannot do. `stream`: ask the upstream
  // to stream; false (the caller wants no deltas) asks for one whole answer,
  // which costs both sides far less than parsing an event per token.
  virtual Result<UpstreamCall> prepare(const GenerateRequest& request, bool stream) const = 0;

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
// that strict hosted APIs do not reject them. Tools and tool messages as
// the header's comment says; InvalidArgument (param "tools") for tool
// parameters that are not a JSON object.
// Appended to `out` as JSON text, with no DOM built (nothing is appended
// when it fails).
Status append_openai_request(std::string& out, const GenerateRequest& request, const std::string& upstream_model,
                             bool stream = true);
// The same as a DOM, for callers that add to it.
Result<nlohmann::json> openai_request_json(const GenerateRequest& request, const std::string& upstream_model,
                                           bool stream = true);

// OpenAI's `tools` array for `tools` (Ollama takes the same):
// [{"type":"function","function":{"name","description","parameters"}}].
// InvalidArgument (param "tools[i].function.parameters") for parameters
// that are not a JSON object.
Result<nlohmann::json> tools_json(const std::vector<ToolSpec>& tools);

// Decodes an OpenAI server-sent-event stream (or, from an upstream that
// ignores "stream", a whole JSON completion).
class OpenAiStreamDecoder : public UpstreamDecoder {
 public:
  OpenAiStreamDecoder(bool chat, int32_t n, std::string who, size_t max_event_bytes = kMaxUpstreamEventBytes)
      : UpstreamDecoder(n, std::move(who), max_event_bytes), chat_(chat) {}
  void start(const HttpResponseHead& head) override;
  Status feed(std::string_view bytes) override;
  Status finish() override;
  const char* end_marker() const override { return "[DONE]"; }
  // The request asked for one whole answer: a body that is not an event
  // stream is read as JSON whatever its Content-Type says.
  void expect_whole() { asked_whole_ = true; }
  // Whole answers go through the DOM even in the common shape that is
  // otherwise read without one: for the test that holds the two paths to
  // the same result.
  void read_whole_with_dom() { dom_only_ = true; }

 private:
  Status line(std::string_view text);
  Status event(const std::string& data);
  Status chunk(const nlohmann::json& j);
  Status whole(const nlohmann::json& j);

  bool chat_;
  bool whole_json_ = false;
  bool asked_whole_ = false;
  bool dom_only_ = false;
  LineSplitter lines_;
  std::string body_;    // the whole JSON body (whole_json_)
  std::string data_;    // the current event's data lines
  size_t event_bytes_ = 0;  // bytes of the current event's data lines as they were sent
  bool has_data_ = false;
};

class OpenAiProvider : public RemoteProvider {
 public:
  // Reads the settings; connects lazily (nothing is sent until a request).
  static Result<ProviderPtr> create(const config::ModelConfig& config);

 protected:
  using RemoteProvider::RemoteProvider;
  Result<UpstreamCall> prepare(const GenerateRequest& request, bool stream) const override;
};

}  // namespace llmpool::providers
