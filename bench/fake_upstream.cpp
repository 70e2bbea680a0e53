// llmpool-fake-upstream: an OpenAI-compatible server that does no inference
// (see fake_openai.h and bench/README.md). Its answer, speed and failures
// come from the flags and can be changed while it runs through /control.
//
//   llmpool-fake-upstream --port 0 --ttft-ms 20 --token-ms 5 --tokens 16
//   curl -d '{"ttft_ms": 400}' http://127.0.0.1:PORT/control
//
// Prints "llmpool-fake-upstream listening on http://HOST:PORT" once it
// serves; runs until SIGINT or SIGTERM.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "fake_openai.h"

int main(int argc, char** argv) {
  using llmpool::fake::OpenAiFake;
  OpenAiFake::Options o;
  llmpool::fake::Behaviour& b = o.behaviour;
  CLI::App app{"llmpool-fake-upstream: a controllable OpenAI-compatible upstream that does no inference"};
  app.option_defaults()->always_capture_default();
  app.add_option("--host", o.host, "address to bind");
  app.add_option("--port", o.port, "port to bind; 0 picks a free one (printed)");
  app.add_option("--io-threads", o.io_threads, "HTTP threads")->check(CLI::Range(1, 64));
  app.add_option("--model", o.model, "the model /v1/models lists");
  app.add_option("--name", o.name, "x-fake-upstream header and /control name (default: the model)");
  app.add_option("--seed", o.seed, "seed of the error draws");
  app.add_option("--ttft-ms", b.ttft_ms, "request -> first token")->check(CLI::Range(0, 600000));
  app.add_option("--token-ms", b.token_ms, "between tokens")->check(CLI::Range(0, 60000));
  app.add_option("--tokens", b.tokens, "tokens per answer (max_tokens caps it)")->check(CLI::Range(1, 100000));
  app.add_option("--error-rate", b.error_rate, "share of requests failed at once")->check(CLI::Range(0.0, 1.0));
  app.add_option("--error-status", b.error_status, "their HTTP status")->check(CLI::Range(400, 599));
  app.add_flag("--stall", b.stall, "start stalled: hold every request until /control says {\"stall\": false}");
  app.add_option("--text", b.text, "the answer, cut into word tokens and repeated as needed")
      ->check([](const std::string& t) { return t.empty() ? std::string("must not be empty") : std::string(); });
  CLI11_PARSE(app, argc, argv);

  // SIGINT/SIGTERM are taken by sigwait below, never by a server thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  OpenAiFake fake(o);
  llmpool::Status st = fake.start();
  if (!st.is_ok()) {
    std::cerr << "llmpool-fake-upstream: " << st.to_string() << "\n";
    return 1;
  }
  std::printf("llmpool-fake-upstream listening on %s\n", fake.url().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  fake.stop();
  return 0;
}
