// `llmpool serve --config FILE`: loads the models and serves the API until
// SIGINT or SIGTERM, then drains in-flight requests and stops.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>

#include "api/http_server.h"
#include "api/openai_routes.h"
#include "cli/commands.h"
#include "common/log.h"
#include "config/config.h"
#include "obs/metrics.h"
#include "providers/factory.h"
#include "providers/registry.h"

namespace llmpool::cli {
namespace {

struct ServeOptions {
  std::string config_path;
  std::optional<std::string> host;
  std::optional<int> port;
  std::optional<std::string> log_level;
};

int serve(const ServeOptions& opts) {
  // Block the shutdown signals before any thread starts, so every thread
  // inherits the mask and only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  config::LoadResult loaded = config::load_config(opts.config_path);
  for (const auto& issue : loaded.issues) std::cerr << issue.to_string() << "\n";
  if (!loaded.ok()) {
    std::cerr << "serve: " << loaded.issues.size() << " problem(s) in " << opts.config_path << "\n";
    return 2;
  }
  config::Config cfg = std::move(loaded.config);
  if (opts.host) cfg.server.host = *opts.host;
  if (opts.port) cfg.server.port = static_cast<uint16_t>(*opts.port);
  init_logging(opts.log_level.value_or(cfg.log_level));

  auto registry = std::make_shared<providers::ModelRegistry>();
  for (const auto& m : cfg.models) {
    auto provider = providers::create_provider(m);
    if (!provider) {
      spdlog::error("{}:{}: model '{}': {}", cfg.path, m.line, m.name, provider.status().message());
      return 1;
    }
    Status st = registry->add(std::move(provider).value());
    if (!st) {
      spdlog::error("{}", st.message());
      return 1;
    }
  }

  obs::MetricsRegistry metrics;
  api::HttpRouter router;
  api::add_openai_routes(router, registry, metrics);
  api::HttpServer server(cfg.server, router);
  if (Status st = server.start(); !st) {
    spdlog::error("{}", st.message());
    return 1;
  }
  std::string base = "http://" + cfg.server.host + ":" + std::to_string(server.port());
  std::printf("llmpool listening on %s\n", base.c_str());
  std::printf("try: curl -s %s/v1/chat/completions -H 'Content-Type: application/json' "
              "-d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":16}'\n",
              base.c_str(), cfg.models.front().name.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
  registry.reset();  // models stop after the server: nothing calls them any more
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve the models of a config file over HTTP");
  cmd->add_option("-c,--config", opts->config_path, "YAML config file")->required();
  cmd->add_option("--host", opts->host, "Override server.host");
  cmd->add_option("--port", opts->port, "Override server.port (0 picks a free port)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--log-level", opts->log_level, "trace, debug, info, warn, error");
  cmd->callback([opts, exit_code] { *exit_code = serve(*opts); });
}

}  // namespace llmpool::cli
