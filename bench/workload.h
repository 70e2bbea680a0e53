// The load generator's workload and measurements, apart from the sockets:
// the request mix, deterministic prompts, the OpenAI request bodies, the
// reading of a (streamed or not) answer into timestamps, and the statistics.
//
// Everything here is a plain value or a single-owner object; a client thread
// owns the ResponseReader of its request. No function keeps global state.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "http_client.h"

namespace llmpool::bench {

enum class Endpoint { kChat, kCompletions };

// One kind of request in a mixed load: its prompt length and its share of
// the requests. max_tokens 0 means the run's --max-tokens.
struct LoadClass {
  std::string name;
  int prompt_tokens = 0;
  double share = 1.0;
  int max_tokens = 0;
};

// Parses "name:prompt_tokens:share[:max_tokens],..." e.g.
// "long:1500:0.25,short:64:0.75". Shares must be positive; they are used as
// weights (they need not add up to 1). Returns nullopt and sets *error on a
// malformed list.
std::optional<std::vector<LoadClass>> parse_mix(std::string_view text, std::string* error);

// Gives each of `n` requests a class index: the counts follow the shares
// (largest remainder, so 0.25 of 8 is exactly 2), the order is shuffled
// deterministically by `seed` so that long and short requests interleave.
std::vector<int> assign_classes(const std::vector<LoadClass>& classes, int n, uint64_t seed);

// A deterministic English-like text of about `target_tokens` tokens, made of
// sentences of common words (`words_per_token` words per token). `tag` (e.g.
// "Request 12") makes prompts distinct: it starts the text, so no two prompts
// share more than the chat template's prefix. With `shared_prefix` the body
// depends only on `seed` and the tag goes at the end instead, so every prompt
// of a run shares its first ~target_tokens tokens (a prefix-cache workload).
std::string make_prompt(int target_tokens, double words_per_token, uint64_t seed, std::string_view tag,
                        bool shared_prefix);

// The JSON body of one request: greedy, `max_tokens` tokens with EOS ignored
// (llama-server's "ignore_eos"), streamed with a final usage chunk unless
// `stream` is false. A non-empty `system` adds a system message before the
// prompt (chat only); with one, chat templates that insert a default system
// prompt of their own (llama-server's ChatML) do not, so different servers
// see the same tokens.
// How the answer is drawn: greedy by default; temperature > 0 samples (with
// top_p, as clients send).
struct Sampling {
  double temperature = 0;
  double top_p = 1;
};

std::string make_request_body(Endpoint endpoint, const std::string& model, const std::string& prompt,
                              int max_tokens, uint64_t seed, bool stream, const std::string& system = "",
                              const Sampling& sampling = {});

// One turn of a chat: the messages so far, then as above. `messages` is a
// JSON array of {"role","content"} objects (a multi-turn conversation that
// resends its whole history each turn).
std::string make_chat_body(const std::string& model, const nlohmann::json& messages, int max_tokens, uint64_t seed,
                           bool stream, const Sampling& sampling = {});

// What one request measured. Times are seconds since the request started
// (before connect).
struct RequestOutcome {
  int cls = 0;
  bool ok = false;
  std::string error;                 // why it failed; "" when ok
  bool streamed = false;             // the answer was text/event-stream
  double ttft_s = -1;                // first content delta; -1 if none
  double e2e_s = 0;                  // end of the answer
  std::vector<double> delta_times;   // every content delta
  long prompt_tokens = -1;           // from usage; -1 when absent
  long completion_tokens = -1;       // from usage; -1 when absent
  long cached_tokens = -1;           // usage.prompt_tokens_details.cached_tokens; -1 when absent
  std::string text;                  // the answer's content, as streamed
  int max_tokens = 0;                // what was asked for
  std::vector<std::string> notes;    // protocol oddities that did not fail it
  std::string raw;                   // the response body as received, when asked for
  double start_s = 0;                // when it started, seconds since its phase started
  std::string header;                // the value of the recorded response header (--record-header)

  // Completion tokens as the server counted them, else the number of deltas.
  long output_tokens() const {
    return completion_tokens >= 0 ? completion_tokens : static_cast<long>(delta_times.size());
  }
};

// Reads one answer from the HTTP handlers' callbacks into a RequestOutcome.
// An SSE answer gives one timestamp per content delta (chat "delta.content"
// or "delta.reasoning_content", completions "text"); a JSON answer (a server
// that does not stream) counts as one delta when it ends, so TTFT equals the
// full latency. Single owner; not thread-safe.
class ResponseReader {
 public:
  // With `keep_raw` the outcome carries the body as received (up to 4 MiB).
  ResponseReader(Endpoint endpoint, Clock::time_point start, int cls, int max_tokens, bool keep_raw = false);

  void on_head(const ResponseHead& head);
  // Returns false once the stream has said "[DONE]".
  bool on_body(std::string_view bytes, Clock::time_point at);
  // Ends the request: `transport_error` is http_post's answer.
  RequestOutcome finish(const std::string& transport_error, Clock::time_point end);

 private:
  void event(const std::string& data, Clock::time_point at);
  void content(const nlohmann::json& choice, Clock::time_point at);
  void usage(const nlohmann::json& message);
  void note(const std::string& text);
  double since_start(Clock::time_point t) const;

  Endpoint endpoint_;
  Clock::time_point start_;
  RequestOutcome out_;
  int status_ = 0;
  bool done_ = false;
  bool usage_seen_ = false;
  bool keep_raw_ = false;
  std::string body_;          // a non-streamed (or error) answer
  std::string stream_error_;  // an error event inside the stream
  SseParser sse_;
};

// p50/p99/mean/max of a sample; all zero with n == 0. Percentiles
// interpolate linearly between the closest ranks (numpy's default).
struct Summary {
  size_t n = 0;
  double p50 = 0, p99 = 0, mean = 0, max = 0;
};
Summary summarize(std::vector<double> values);
double percentile(const std::vector<double>& sorted, double p);

// The figures of one measured phase (or of one class within it).
struct PhaseStats {
  int ok = 0;
  int failed = 0;
  double wall_s = 0;
  long output_tokens = 0;          // over ok requests
  double output_tok_s = 0;         // output_tokens / wall_s
  double requests_per_s = 0;
  double prompt_tokens_mean = 0;   // from usage; 0 when no server reported it
  double cached_tokens_mean = -1;  // prompt tokens the server reused; -1 when none reported it
  int usage_seen = 0;              // ok requests whose answer carried usage
  int streamed = 0;                // ok requests answered with SSE
  int short_outputs = 0;           // ok requests with fewer tokens than asked
  Summary ttft_ms, itl_ms, e2e_ms;
  Summary decode_tok_s;            // per request: (deltas - 1) / (last - first delta)
  std::map<std::string, int> errors;  // failure message -> count
  std::map<std::string, int> notes;   // protocol oddity -> count
};

// Aggregates `outcomes` (only those of class `cls` when it is >= 0) over a
// phase that lasted `wall_s`.
PhaseStats aggregate(const std::vector<RequestOutcome>& outcomes, double wall_s, int cls = -1);

nlohmann::json to_json(const Summary& s);
nlohmann::json to_json(const PhaseStats& s);

// Requests per value of one response header (e.g. x-llmpool-model: which
// model answered), in consecutive windows of `window_s` seconds by the
// requests' start times, and in total. Failed requests count as "(failed)",
// ok ones without the header as "(none)".
struct HeaderWindow {
  double start_s = 0, end_s = 0;
  std::map<std::string, int> counts;
};
struct HeaderCounts {
  std::string header;
  double window_s = 0;
  std::vector<HeaderWindow> windows;   // from 0 to the last request's start; empty windows included
  std::map<std::string, int> total;
};
HeaderCounts count_header(const std::vector<RequestOutcome>& outcomes, const std::string& header, double window_s);
nlohmann::json to_json(const HeaderCounts& c);

}  // namespace llmpool::bench
