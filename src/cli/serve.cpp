// `llmpool serve --config FILE`: serves the API over the model pool until
// SIGINT or SIGTERM, then drains in-flight requests and stops. Models load
// on first use (or at start when `warm`); the config file is watched and
// reloaded when it changes or on SIGHUP (see pool/config_watcher.h).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <optional>

#include "api/admin_routes.h"
#include "api/auth.h"
#include "api/tenant_routes.h"
#include "api/fabric_routes.h"
#include "api/batch_routes.h"
#include "api/http_server.h"
#include "api/openai_routes.h"
#include "api/routing_routes.h"
#include "cli/commands.h"
#include "common/log.h"
#include "config/config.h"
#include "fabric/connection.h"
#include "fabric/fleet.h"
#include "fabric/job_runner.h"
#include "obs/metrics.h"
#include "pool/config_watcher.h"
#include "pool/model_pool.h"
#include "ratelimit/limiter.h"
#include "router/service.h"

namespace llmpool::cli {
namespace {

struct ServeOptions {
  std::string config_path;
  std::optional<std::string> host;
  std::optional<int> port;
  std::optional<std::string> log_level;
  std::optional<std::string> nats_url;  // overrides fabric.nats_url
};

int serve(const ServeOptions& opts) {
  // Block the shutdown and reload signals before any thread starts, so every
  // thread inherits the mask and only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  config::LoadResult loaded = config::load_config(opts.config_path);
  for (const auto& issue : loaded.issues) std::cerr << issue.to_string() << "\n";
  if (!loaded.ok()) {
    std::cerr << "serve: " << loaded.issues.size() << " problem(s) in " << opts.config_path << "\n";
    return 2;
  }
  const config::Config file_cfg = loaded.config;  // as written: what reloads compare against
  config::Config cfg = std::move(loaded.config);
  if (opts.host) cfg.server.host = *opts.host;
  if (opts.port) cfg.server.port = static_cast<uint16_t>(*opts.port);
  init_logging(opts.log_level.value_or(cfg.log_level));
  if (Status st = config::check_exposure(cfg); !st) {
    std::cerr << "serve: " << st.message() << "\n";
    return 2;
  }
  // Tenancy (docs/tenancy.md): the database, the YAML's tenants written into
  // it (they win), and the authenticator that guards every route.
  std::shared_ptr<tenancy::TenantStore> store;
  if (!cfg.data_dir.empty()) {
    auto opened = tenancy::TenantStore::open(cfg.data_dir);
    if (!opened) {
      std::cerr << "serve: data_dir: " << opened.status().message() << "\n";
      return 2;
    }
    store = std::move(opened).value();
    if (Status st = api::sync_yaml_tenants(*store, cfg.tenants); !st) {
      std::cerr << "serve: tenants: " << st.message() << "\n";
      return 2;
    }
  }
  std::shared_ptr<api::Authenticator> auth;
  if (cfg.auth.enabled) {
    auto created_auth = api::Authenticator::create(cfg, store);
    if (!created_auth) {
      std::cerr << "serve: " << created_auth.status().message() << "\n";
      return 2;
    }
    auth = std::move(created_auth).value();
  }

  // The fabric (docs/fabric.md): queue models and GET /api/workers use this
  // connection and the fleet view of the workers' heartbeats.
  if (opts.nats_url) {
    cfg.fabric.nats_url = *opts.nats_url;
    cfg.fabric.enabled = true;
  }
  std::shared_ptr<fabric::FleetView> fleet;
  if (cfg.fabric.enabled) {
    auto conn = fabric::Connection::connect(cfg.fabric, "llmpool-serve");
    if (!conn) {
      std::cerr << "serve: fabric: " << conn.status().message() << "\n";
      return 2;
    }
    fabric::set_process_connection(*conn);
    auto view = fabric::FleetView::start(*conn, cfg.fabric.tenants, cfg.fabric.heartbeat_ms);
    if (!view) {
      std::cerr << "serve: fabric: " << view.status().message() << "\n";
      return 2;
    }
    fleet = std::move(view).value();
    fabric::set_process_fleet(fleet);
  }

  // Declared in this order so that they are destroyed in reverse: the
  // watcher, then the server (drains), then the router service (flushes the
  // decision log), then the pool, then the metrics.
  obs::MetricsRegistry metrics;
  pool::ModelPool::Options pool_options;
  pool_options.metrics = &metrics;
  auto pool = std::make_shared<pool::ModelPool>(cfg, std::move(pool_options));
  router::RouterService::Options routing_options;
  routing_options.metrics = &metrics;
  // The tenants metrics may name (others count as `_unknown`): the YAML's
  // and the store's at start, and those added later (the authenticator
  // finds them in the store).
  for (const auto& t : cfg.tenants) routing_options.tenants.push_back(t.name);
  if (auth) routing_options.tenant_known = [auth](const std::string& t) { return auth->tenant_exists(t); };
  if (store) {
    if (auto listed = store->list_tenants(); listed) {
      for (const auto& t : *listed) routing_options.tenants.push_back(t.name);
    }
  }
  auto created = router::RouterService::create(cfg, pool, routing_options);
  if (!created) {
    std::cerr << "serve: routing: " << created.status().message() << "\n";
    return 2;
  }
  std::shared_ptr<router::RouterService> routing = std::move(created).value();
  api::HttpRouter router;
  api::TenancyOptions tenancy_options;
  if (auth) {
    // The rate limiter: in-process, or Redis shared by every instance (docs/tenancy.md).
    ratelimit::Options limit_options;
    limit_options.url = cfg.rate_limits.url;
    if (const char* env = cfg.rate_limits.url_env.empty() ? nullptr : std::getenv(cfg.rate_limits.url_env.c_str());
        env && *env)
      limit_options.url = env;
    limit_options.fail_open = cfg.rate_limits.fail_open;
    limit_options.lease_ttl = std::chrono::milliseconds(cfg.rate_limits.lease_ttl_ms);
    limit_options.pool_size = cfg.rate_limits.pool_size;
    limit_options.allotment = std::chrono::milliseconds(cfg.rate_limits.allotment_ms);
    limit_options.metrics = &metrics;
    limit_options.async_finish = true;  // an HTTP I/O loop never waits for Redis
    auto limiter = ratelimit::make_limiter(limit_options);
    if (!limiter) {
      std::cerr << "serve: rate_limits: " << limiter.status().message() << "\n";
      return 2;
    }
    tenancy_options.limiter = std::shared_ptr<ratelimit::Limiter>(std::move(limiter).value());
    // An admission waits on the limiter's own threads (admit_async); an
    // HMAC-signed request's guard waits a Redis round trip to see that the
    // signature is new: one of the router's threads waits it, never an HTTP
    // I/O thread (docs/architecture.md).
    if (!limit_options.url.empty() && limit_options.url != "local")
      router.offload_bodies(limit_options.pool_size, 1024, api::hmac_signed);
    auth->share_replays(tenancy_options.limiter);  // an HMAC signature is accepted once by all instances
    // Usage is written through a connection of its own: a write (and the
    // WAL checkpoint it may run) holds only that connection's lock, never
    // the one every request's key check takes (WAL readers do not wait).
    if (store) {
      auto usage_store = tenancy::TenantStore::open(cfg.data_dir);
      if (!usage_store) {
        std::cerr << "serve: data_dir: " << usage_store.status().message() << "\n";
        return 2;
      }
      tenancy_options.usage =
          std::make_shared<tenancy::UsageRecorder>(std::shared_ptr<tenancy::TenantStore>(std::move(*usage_store)));
    }
    router.set_guard([auth](const api::HttpRequest& req) { return auth->guard(req); });
    api::add_tenant_routes(router, auth, tenancy_options.usage);
  }
  // Bodies of 64 KiB and more are parsed off the I/O threads (docs/architecture.md).
  router.offload_large_bodies(64 << 10, 2);
  api::add_openai_routes(router, pool, metrics, routing, tenancy_options);
  api::add_routing_routes(router, routing);
  api::add_admin_routes(router, pool);
  if (fleet) api::add_fabric_routes(router, fleet);
  // The Files and Batch APIs, when there is a data_dir to keep them in
  // (docs/batch.md). Lines run on the fabric's workers when it is on, else
  // through the route table above, as the batch's tenant when auth is on.
  std::shared_ptr<batch::LocalJobRunner> batch_runner;
  std::shared_ptr<fabric::FabricJobRunner> fabric_runner;
  std::shared_ptr<batch::BatchService> batches;
  if (!cfg.data_dir.empty()) {
    auto store = batch::BatchStore::open(cfg.data_dir);
    if (!store) {
      std::cerr << "serve: batch: " << store.status().message() << "\n";
      return 2;
    }
    std::shared_ptr<batch::JobRunner> runner;
    if (fleet) {
      fabric_runner = std::make_shared<fabric::FabricJobRunner>(fabric::process_connection(), cfg.fabric.tenants);
      runner = fabric_runner;
    } else {
      api::PrincipalFor principal_for;
      if (auth) principal_for = [auth](const std::string& tenant) { return auth->principal_for_tenant(tenant); };
      batch_runner = std::make_shared<batch::LocalJobRunner>(
          api::route_dispatch(router, std::move(principal_for)),
          batch::LocalJobRunner::Options{.max_concurrent = cfg.batch.max_concurrent});
      runner = batch_runner;
    }
    batch::BatchService::Options batch_options;
    batch_options.limits = {static_cast<int64_t>(cfg.batch.max_file_bytes), cfg.batch.max_lines,
                            cfg.batch.max_line_bytes};
    batch_options.cancel_grace_seconds = (cfg.batch.cancel_grace_ms + 999) / 1000;
    batches = std::make_shared<batch::BatchService>(std::move(*store), runner, std::move(batch_options));
    api::TenantOf tenant_of = api::no_tenant;
    if (auth) tenant_of = [](const api::HttpRequest& r) { return r.principal ? r.principal->tenant_name() : std::string(); };
    api::add_batch_routes(router, batches, std::move(tenant_of));
  }
  api::HttpServer server(cfg.server, router, &metrics);
  // metrics_listen: /metrics (and /health) on a listener of their own, without credentials.
  api::HttpRouter metrics_router;
  std::unique_ptr<api::HttpServer> metrics_server;
  if (!cfg.metrics_listen.empty()) {
    metrics_router.add("GET", "/metrics", [&metrics](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = metrics.render();
      w->respond(std::move(r));
    });
    metrics_router.add("GET", "/health", [](const api::HttpRequest&, api::ResponseWriterPtr w) {
      api::HttpResponse r;
      r.body = "{\"status\":\"ok\"}";
      w->respond(std::move(r));
    });
    config::ServerConfig mc = cfg.server;
    (void)config::split_host_port(cfg.metrics_listen, &mc.host, &mc.port);  // checked by load_config
    metrics_server = std::make_unique<api::HttpServer>(mc, metrics_router);
  }
  pool->start();  // warm models start loading
  if (Status st = server.start(); !st) {
    spdlog::error("{}", st.message());
    pool->stop();
    return 1;
  }
  if (batches) {
    if (Status st = batches->start(); !st) {
      spdlog::error("batch: {}", st.message());
      pool->stop();
      return 1;
    }
  }
  if (metrics_server) {
    if (Status st = metrics_server->start(); !st) {
      spdlog::error("metrics_listen: {}", st.message());
      server.stop();
      pool->stop();
      return 1;
    }
    spdlog::info("metrics on http://{}:{}/metrics", cfg.metrics_listen.substr(0, cfg.metrics_listen.rfind(':')),
                 metrics_server->port());
  }

  pool::ConfigWatcher::Options watch_options;
  watch_options.metrics = &metrics;
  const bool log_level_fixed = opts.log_level.has_value();
  watch_options.on_applied = [log_level_fixed, routing, auth, store](const config::Config& previous,
                                                                     const config::Config& next) {
    if (!log_level_fixed && previous.log_level != next.log_level) {
      spdlog::set_level(spdlog::level::from_str(next.log_level));
      spdlog::info("log level is now {}", next.log_level);
    }
    // Compared with what the router runs, not with the previous file: a
    // routing part refused before is tried again.
    if (!routing->is_current(next)) {
      if (Status st = routing->apply(next); !st) {
        spdlog::error("routing: the new routing section was not applied (the old one stays): {}", st.message());
        return st;  // the reload counts as failed
      }
      spdlog::info("routing: configuration applied");
    }
    if (previous.auth.enabled != next.auth.enabled || previous.data_dir != next.data_dir ||
        previous.metrics_listen != next.metrics_listen)
      spdlog::warn("auth.enabled, data_dir and metrics_listen take effect at the next start");
    // Tenants and JWT keys are reloaded: the YAML's tenants into the database, a new JWT verifier.
    if (store && previous.tenants != next.tenants) {
      if (Status st = api::sync_yaml_tenants(*store, next.tenants); !st) {
        spdlog::error("tenants: the new tenants were not written: {}", st.message());
        return st;
      }
    }
    if (auth) {
      if (Status st = auth->apply(next); !st) {
        spdlog::error("auth: the new auth section was not applied (the old one stays): {}", st.message());
        return st;
      }
    }
    return Status::ok();
  };
  pool::ConfigWatcher watcher(file_cfg, *pool, std::move(watch_options));
  watcher.start();

  std::string base = "http://" + cfg.server.host + ":" + std::to_string(server.port());
  std::printf("llmpool listening on %s\n", base.c_str());
  if (auth)
    std::printf("auth is on: make a key with `llmpool keys create --config %s --tenant NAME` and send it as "
                "-H 'Authorization: Bearer KEY'\n",
                opts.config_path.c_str());
  std::printf("try: curl -s %s/v1/chat/completions%s -H 'Content-Type: application/json' "
              "-d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":16}'\n",
              base.c_str(), auth ? " -H \"Authorization: Bearer $KEY\"" : "", cfg.models.front().name.c_str());
  std::fflush(stdout);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("received SIGHUP, reloading {}", cfg.path);
      (void)watcher.reload();  // logs and counts its own outcome
      continue;
    }
    spdlog::info("received {}, draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  watcher.stop();
  // The order of a drain: the listener closes and new requests, also on
  // connections already open, get 503 with Retry-After; the generations
  // running finish (routing refuses new ones too); the answers in flight are
  // written out. All of it within one grace period, which began here; then
  // every connection closes.
  const auto grace = std::chrono::milliseconds(cfg.server.shutdown_grace_ms);
  const auto drain_deadline = std::chrono::steady_clock::now() + grace;
  server.begin_drain();
  // Batches stop first: lines not answered yet run again on the next start.
  if (batches) batches->stop();
  if (batch_runner) batch_runner->stop();
  if (fabric_runner) fabric_runner->stop();
  const bool drained = routing->close_and_drain(grace);
  if (!drained) {
    spdlog::warn("shutdown: generations still running after {} ms; exiting without waiting for them",
                 cfg.server.shutdown_grace_ms);
    // Their callbacks still reach the router service: keep it (and the pool
    // it holds) alive until the process ends instead of destroying it under them.
    new std::shared_ptr<router::RouterService>(routing);
  }
  if (metrics_server) metrics_server->stop();
  if (!server.stop())
    spdlog::warn("shutdown: answers still being written after {} ms were cut", cfg.server.shutdown_grace_ms);
  else
    spdlog::info("shutdown: drained in {} ms", cfg.server.shutdown_grace_ms -
                 std::chrono::duration_cast<std::chrono::milliseconds>(drain_deadline - std::chrono::steady_clock::now()).count());
  pool->stop();  // models stop after the server: nothing calls them any more
  fabric::set_process_fleet(nullptr);
  fabric::set_process_connection(nullptr);  // closed with the last queue model
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
  cmd->add_option("--nats-url", opts->nats_url, "Override fabric.nats_url (and enable the fabric)");
  cmd->callback([opts, exit_code] { *exit_code = serve(*opts); });
}

}  // namespace llmpool::cli
