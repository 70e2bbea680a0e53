// `llmpool worker --config FILE`: serves the config's models from the
// JetStream fabric (docs/fabric.md) until SIGINT or SIGTERM, then stops
// pulling, finishes the jobs in flight (server.shutdown_grace_ms), acks
// them and exits. The config needs a fabric: block; --nats-url overrides
// fabric.nats_url, --id fabric.worker_id.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include <signal.h>
#include <unistd.h>

#include "cli/commands.h"
#include "common/log.h"
#include "config/config.h"
#include "fabric/worker.h"

namespace llmpool::cli {
namespace {

struct WorkerOptions {
  std::string config_path;
  std::optional<std::string> nats_url;
  std::optional<std::string> id;
  std::optional<int> slots;
  std::optional<std::string> log_level;
};

int run_worker(const WorkerOptions& opts) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  config::LoadResult loaded = config::load_config(opts.config_path);
  for (const auto& issue : loaded.issues) std::cerr << issue.to_string() << "\n";
  if (!loaded.ok()) {
    std::cerr << "worker: " << loaded.issues.size() << " problem(s) in " << opts.config_path << "\n";
    return 2;
  }
  config::Config cfg = std::move(loaded.config);
  if (!cfg.fabric.enabled && !opts.nats_url) {
    std::cerr << "worker: " << opts.config_path << " has no fabric: block (or give --nats-url)\n";
    return 2;
  }
  cfg.fabric.enabled = true;
  if (opts.nats_url) cfg.fabric.nats_url = *opts.nats_url;
  if (opts.id) cfg.fabric.worker_id = *opts.id;
  if (opts.slots) cfg.fabric.slots = *opts.slots;
  init_logging(opts.log_level.value_or(cfg.log_level));

  std::atomic<bool> stop{false};
  fabric::Worker worker(cfg);
  // The start may wait for the server; a signal meanwhile ends it.
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("worker: received {}, draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
    stop = true;
  });
  Status st = worker.start(stop);
  if (!st) {
    spdlog::error("worker: {}", st.message());
    if (!stop) kill(getpid(), SIGTERM);  // ends the signal thread
    signal_thread.join();
    return 1;
  }
  std::printf("llmpool worker %s serving on %s\n", worker.id().c_str(), cfg.fabric.nats_url.c_str());
  std::fflush(stdout);
  signal_thread.join();
  worker.drain(cfg.server.shutdown_grace_ms);
  spdlog::info("worker: stopped");
  return 0;
}

}  // namespace

void add_worker_command(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<WorkerOptions>();
  CLI::App* cmd = app.add_subcommand("worker", "Serve the models of a config file from the NATS JetStream fabric");
  cmd->add_option("-c,--config", opts->config_path, "YAML config file (with a fabric: block)")->required();
  cmd->add_option("--nats-url", opts->nats_url, "Override fabric.nats_url");
  cmd->add_option("--id", opts->id, "Override fabric.worker_id");
  cmd->add_option("--slots", opts->slots, "Override fabric.slots")->check(CLI::Range(1, 4096));
  cmd->add_option("--log-level", opts->log_level, "trace, debug, info, warn, error");
  cmd->callback([opts, exit_code] { *exit_code = run_worker(*opts); });
}

}  // namespace llmpool::cli
