// OpenAiFake: a controllable OpenAI-compatible upstream on loopback, for the
// routing benchmark and the router's integration tests (and the
// llmpool-fake-upstream binary, bench/fake_upstream.cpp). It does no
// inference: every answer is the configured text, cut into word tokens and
// sent with the configured delays.
//
//   POST /v1/chat/completions   streamed (SSE, usage chunk when
//                               stream_options.include_usage) or whole; n
//                               choices; max_tokens caps the answer
//   GET  /v1/models             the one model
//   GET  /control               {"name", "model", "behaviour", "counts"}
//   POST /control               changes any Behaviour fields (JSON names as
//                               below) and/or {"reset_counts": true}; answers
//                               like GET. Unknown fields and bad values: 400
//                               naming the field, nothing changed.
//
// Each request takes the behaviour current when it arrives, except a stall,
// which holds the request (no bytes at all) until the stall is switched off
// (then it runs as configured from that moment) or the client goes away.
// Whether a request fails (error_rate) is drawn from a generator seeded by
// Options::seed, so a run with the same requests in the same order fails the
// same ones.
//
// Thread-safe. Timed steps run on one timer thread (qos::ThreadTimer); the
// HTTP server runs `io_threads` threads. stop() (also the destructor) stops
// the server; answers still pending are dropped.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "fake_server.h"
#include "qos/timer.h"

namespace llmpool::fake {

struct Behaviour {
  int64_t ttft_ms = 0;       // request received -> first token (or the whole answer's head)
  int64_t token_ms = 0;      // between tokens
  int32_t tokens = 16;       // tokens per answer (the request's max_tokens caps it)
  double error_rate = 0;     // share of requests answered with error_status at once
  int32_t error_status = 500;
  bool stall = false;        // hold new (and held) requests until switched off
  std::string text = "The quick brown fox jumps over the lazy dog.";
};

// Applies the fields present in `update` (a JSON object with Behaviour's
// field names) to `base`. InvalidArgument naming the field on an unknown
// field or a value of the wrong type or out of range: ttft_ms 0-600000,
// token_ms 0-60000, tokens 1-100000, error_rate 0-1, error_status 400-599,
// text 1-65536 bytes.
Result<Behaviour> apply_behaviour(const Behaviour& base, const nlohmann::json& update);
nlohmann::json to_json(const Behaviour& b);

// The first `n` word tokens of `text`, cycling through it: "The", " quick",
// …; after the last word the first comes again with a leading space.
std::vector<std::string> answer_tokens(const std::string& text, int32_t n);

// What the fake has seen since it started (or the last reset_counts).
struct Counts {
  int64_t requests = 0;      // chat requests with a valid body
  int64_t ok = 0;            // answered to the end
  int64_t errors = 0;        // answered with error_status (error_rate)
  int64_t stalled = 0;       // arrived while stalled
  int64_t cancelled = 0;     // the client went away before the end
  int64_t bad_requests = 0;  // 400: not a JSON object
  int64_t active = 0;        // in flight now (never reset)
};
nlohmann::json to_json(const Counts& c);

class OpenAiFake {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;          // 0: a free port
    int io_threads = 2;
    std::string model = "fake"; // listed by /v1/models; answers echo the request's model
    std::string name;           // x-fake-upstream header and /control; default: model
    uint64_t seed = 1;
    Behaviour behaviour;
  };

  explicit OpenAiFake(Options options);
  ~OpenAiFake();
  OpenAiFake(const OpenAiFake&) = delete;
  OpenAiFake& operator=(const OpenAiFake&) = delete;

  Status start();
  void stop();
  uint16_t port() const { return server_.port(); }
  std::string url(const std::string& path = "") const { return server_.url(path); }

  Behaviour behaviour() const;
  void set_behaviour(Behaviour b);
  Counts counts() const;
  // GET /control's answer.
  nlohmann::json control_state() const;

 private:
  struct Exchange;
  void chat(const api::HttpRequest& req, api::ResponseWriterPtr w);
  void control(const api::HttpRequest& req, api::ResponseWriterPtr w);
  void wait_stall(std::shared_ptr<Exchange> x);
  void begin(std::shared_ptr<Exchange> x);
  void step(std::shared_ptr<Exchange> x);
  void finish(bool ok);
  bool gone(const std::shared_ptr<Exchange>& x);

  Options options_;
  std::string id_prefix_;  // guarded by mu_ (set once the port is known, while requests may arrive)
  std::atomic<int64_t> next_id_{1};
  mutable std::mutex mu_;
  Behaviour behaviour_;
  Counts counts_;
  std::mt19937_64 rng_;
  FakeServer server_;
  // Last: destroyed first, so no timed step outlives what it uses.
  qos::ThreadTimer timer_;
};

}  // namespace llmpool::fake
