// `llmpool tenants add|list|update|remove` and `llmpool keys
// create|list|revoke`, each with `--config FILE`: the database is
// `<data_dir>/llmpool.db` from that config (docs/tenancy.md). The server may
// run at the same time (SQLite in WAL mode, a busy timeout).
//
// Tenants declared in the config's `tenants:` are written into the database
// first (the YAML wins) and are read-only here: `update` and `remove` of one
// are refused with where it is declared.
//
// `keys create` prints the new key alone on the last line of stdout (with
// --hmac: `KEY_ID SECRET`); it is never shown again. Errors go to stderr;
// exit 0 on success, 1 on a refused operation, 2 on a bad config.
#include <CLI/CLI.hpp>

#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/auth.h"
#include "cli/commands.h"
#include "config/config.h"
#include "tenancy/tenant_store.h"

namespace llmpool::cli {
namespace {

struct Opened {
  config::Config config;
  std::unique_ptr<tenancy::TenantStore> store;
};

// Loads the config (model files need not exist) and opens its database.
int fail(const Status& st) {
  std::cerr << "error: " << st.message() << "\n";
  return 1;
}

Result<Opened> load_and_open(const std::string& path, int* exit_code) {
  config::LoadResult loaded = config::load_config(path, /*check_files=*/false);
  for (const auto& issue : loaded.issues) std::cerr << issue.to_string() << "\n";
  *exit_code = 2;
  if (!loaded.ok()) return Status::invalid_argument(std::to_string(loaded.issues.size()) + " problem(s) in " + path);
  if (loaded.config.data_dir.empty())
    return Status::invalid_argument(path + " has no data_dir: tenants and keys live in <data_dir>/llmpool.db");
  *exit_code = 1;
  Opened out;
  out.config = std::move(loaded.config);
  ASSIGN_OR_RETURN(out.store, tenancy::TenantStore::open(out.config.data_dir));
  RETURN_IF_ERROR(api::sync_yaml_tenants(*out.store, out.config.tenants));
  return out;
}

// load_and_open, reporting its error: nullopt (with *exit_code set) when it failed.
std::optional<Opened> open_store(const std::string& path, int* exit_code) {
  auto opened = load_and_open(path, exit_code);
  if (!opened) {
    fail(opened.status());
    return std::nullopt;
  }
  return std::move(opened).value();
}

const config::TenantConfig* yaml_tenant(const config::Config& c, const std::string& name) {
  for (const auto& t : c.tenants)
    if (t.name == name) return &t;
  return nullptr;
}

// InvalidArgument naming the line when `name` is declared in the config
// file (such tenants are read-only for the CLI); ok otherwise.
Status refuse_yaml_tenant(const Opened& o, const std::string& config_path, const std::string& name,
                          const std::string& advice) {
  if (const auto* y = yaml_tenant(o.config, name))
    return Status::invalid_argument("tenant '" + name + "' is declared in " + config_path + ":" +
                                    std::to_string(y->line) + advice);
  return Status::ok();
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

std::string limit_text(int64_t v) { return v > 0 ? std::to_string(v) : "-"; }

void print_tenant(const tenancy::Tenant& t, bool from_yaml) {
  std::cout << t.name << "\tplan=" << (t.plan.empty() ? "-" : t.plan) << "\tmodels=" << join(t.allowed_models)
            << "\troute_groups=" << join(t.route_groups) << "\tmax_priority=" << t.max_priority
            << "\trpm=" << limit_text(t.requests_per_minute) << "\ttpm=" << limit_text(t.tokens_per_minute)
            << "\tconcurrent=" << limit_text(t.max_concurrent_requests)
            << "\tdaily=" << limit_text(t.daily_token_budget) << "\tmonthly=" << limit_text(t.monthly_token_budget)
            << "\tsource=" << (from_yaml ? "config" : "database") << "\n";
}

// The tenant fields a command line may set; those not given keep their value.
struct TenantFlags {
  std::string plan, throughput;
  std::vector<std::string> models, route_groups;
  int32_t max_priority = 0;
  int64_t rpm = 0, tpm = 0, concurrent = 0, daily = 0, monthly = 0, storage_days = 0, max_consumers = 0;
  std::map<std::string, CLI::Option*> given;

  void add_to(CLI::App* cmd) {
    const auto nonneg = CLI::Range(int64_t{0}, int64_t{1} << 50);
    given["plan"] = cmd->add_option("--plan", plan, "Plan name");
    given["models"] = cmd->add_option("--models", models, "Allowed models (comma-separated; '*' for all)")
                          ->delimiter(',');
    given["route_groups"] =
        cmd->add_option("--route-groups", route_groups, "Allowed route groups (comma-separated; '*' for all)")
            ->delimiter(',');
    given["max_priority"] =
        cmd->add_option("--max-priority", max_priority, "Highest request priority")->check(CLI::Range(-1000, 1000));
    given["rpm"] = cmd->add_option("--rpm", rpm, "Requests per minute (0: no limit)")->check(nonneg);
    given["tpm"] = cmd->add_option("--tpm", tpm, "Tokens per minute (0: no limit)")->check(nonneg);
    given["concurrent"] = cmd->add_option("--max-concurrent", concurrent, "Concurrent requests (0: no limit)")
                              ->check(nonneg);
    given["daily"] = cmd->add_option("--daily-tokens", daily, "Daily token budget (0: none)")->check(nonneg);
    given["monthly"] = cmd->add_option("--monthly-tokens", monthly, "Monthly token budget (0: none)")->check(nonneg);
    given["throughput"] = cmd->add_option("--throughput", throughput, "Seed quota: throughput (free text)");
    given["storage_days"] = cmd->add_option("--storage-days", storage_days, "Seed quota: storage days")->check(nonneg);
    given["max_consumers"] =
        cmd->add_option("--max-consumers", max_consumers, "Seed quota: max consumers")->check(nonneg);
  }

  bool has(const char* name) const {
    auto it = given.find(name);
    return it != given.end() && it->second->count() > 0;
  }

  void apply(tenancy::Tenant& t) const {
    if (has("plan")) t.plan = plan;
    if (has("throughput")) t.quotas.throughput = throughput;
    if (has("storage_days")) t.quotas.storage_days = storage_days;
    if (has("max_consumers")) t.quotas.max_consumers = max_consumers;
    if (has("models")) t.allowed_models = models;
    if (has("route_groups")) t.route_groups = route_groups;
    if (has("max_priority")) t.max_priority = max_priority;
    if (has("rpm")) t.requests_per_minute = rpm;
    if (has("tpm")) t.tokens_per_minute = tpm;
    if (has("concurrent")) t.max_concurrent_requests = concurrent;
    if (has("daily")) t.daily_token_budget = daily;
    if (has("monthly")) t.monthly_token_budget = monthly;
  }
};

struct TenantCommand {
  std::string config_path;
  std::string name;
  TenantFlags flags;
};

int tenants_add(const TenantCommand& c) {
  int code = 0;
  auto o = open_store(c.config_path, &code);
  if (!o) return code;
  if (Status st = refuse_yaml_tenant(*o, c.config_path, c.name, "; edit the config file instead"); !st)
    return fail(st);
  tenancy::Tenant t;
  t.name = c.name;
  c.flags.apply(t);
  if (Status st = o->store->add_tenant(t); !st) return fail(st);
  std::cout << "added tenant " << t.name << "\n";
  return 0;
}

int tenants_update(const TenantCommand& c) {
  int code = 0;
  auto o = open_store(c.config_path, &code);
  if (!o) return code;
  if (Status st = refuse_yaml_tenant(*o, c.config_path, c.name, " and is read-only here; edit the config file"); !st)
    return fail(st);
  auto t = o->store->get_tenant(c.name);
  if (!t) return fail(t.status());
  c.flags.apply(*t);
  if (Status st = o->store->update_tenant(*t); !st) return fail(st);
  std::cout << "updated tenant " << c.name << "\n";
  return 0;
}

int tenants_remove(const TenantCommand& c) {
  int code = 0;
  auto o = open_store(c.config_path, &code);
  if (!o) return code;
  if (Status st = refuse_yaml_tenant(*o, c.config_path, c.name, " and is read-only here; edit the config file"); !st)
    return fail(st);
  if (Status st = o->store->remove_tenant(c.name); !st) return fail(st);
  std::cout << "removed tenant " << c.name << " and its keys\n";
  return 0;
}

int tenants_list(const std::string& config_path) {
  int code = 0;
  auto o = open_store(config_path, &code);
  if (!o) return code;
  auto all = o->store->list_tenants();
  if (!all) return fail(all.status());
  for (const auto& t : *all) print_tenant(t, yaml_tenant(o->config, t.name) != nullptr);
  return 0;
}

struct KeyCommand {
  std::string config_path;
  std::string tenant;
  bool admin = false;
  bool hmac = false;
  std::string expires_in;
  int64_t expires_at = 0;
  int64_t rpm = 0, tpm = 0, concurrent = 0;
  std::string id;  // revoke
};

int keys_create(const KeyCommand& c) {
  int code = 0;
  auto o = open_store(c.config_path, &code);
  if (!o) return code;
  if (c.hmac) {
    if (c.admin) return fail(Status::invalid_argument("--hmac keys are tenant keys; drop --admin"));
    if (c.tenant.empty()) return fail(Status::invalid_argument("--hmac needs --tenant NAME"));
    auto k = o->store->create_hmac_key(c.tenant);
    if (!k) return fail(k.status());
    std::cout << "HMAC key for tenant " << c.tenant << " (the secret is shown once):\n";
    std::cout << k->info.key_id << " " << k->secret << "\n";
    return 0;
  }
  if (!c.admin && c.tenant.empty()) return fail(Status::invalid_argument("give --tenant NAME, or --admin"));
  tenancy::NewApiKey spec;
  spec.tenant = c.tenant;
  spec.admin = c.admin;
  if (!c.expires_in.empty() && c.expires_at)
    return fail(Status::invalid_argument("give --expires-in or --expires-at, not both"));
  if (!c.expires_in.empty()) {
    auto ms = config::parse_duration_ms(c.expires_in);
    if (!ms || *ms <= 0)
      return fail(Status::invalid_argument("--expires-in must be a duration such as 12h or 30d, got '" +
                                           c.expires_in.substr(0, 64) + "'"));
    spec.expires_at = tenancy::SystemWallClock::instance().now_unix() + (*ms + 999) / 1000;
  }
  if (c.expires_at) spec.expires_at = c.expires_at;
  spec.limits = {c.rpm, c.tpm, c.concurrent};
  auto k = o->store->create_key(spec);
  if (!k) return fail(k.status());
  std::cout << (c.admin ? "admin key" : "key for tenant " + c.tenant) << ", prefix " << k->info.prefix
            << " (shown once; store it now):\n";
  std::cout << k->key << "\n";
  return 0;
}

int keys_list(const KeyCommand& c) {
  int code = 0;
  auto o = open_store(c.config_path, &code);
  if (!o) return code;
  auto keys = o->store->list_keys(c.tenant);
  if (!keys) return fail(keys.status());
  for (const auto& k : *keys)
    std::cout << k.prefix << "\ttenant=" << (k.tenant.empty() ? "-" : k.tenant) << "\tadmin=" << (k.admin ? 1 : 0)
              << "\tcreated=" << k.created_at << "\texpires=" << (k.expires_at ? std::to_string(k.expires_at) : "-")
              << "\trevoked=" << (k.revoked_at ? std::to_string(*k.revoked_at) : "-")
              << "\trpm=" << limit_text(k.limits.requests_per_minute) << "\ttpm=" << limit_text(k.limits.tokens_per_minute)
              << "\tconcurrent=" << limit_text(k.limits.max_concurrent_requests) << "\n";
  auto hmac = o->store->list_hmac_keys(c.tenant);
  if (!hmac) return fail(hmac.status());
  for (const auto& k : *hmac)
    std::cout << k.key_id << "\ttenant=" << k.tenant << "\thmac=1\tcreated=" << k.created_at
              << "\trevoked=" << (k.revoked_at ? std::to_string(*k.revoked_at) : "-") << "\n";
  return 0;
}

int keys_revoke(const KeyCommand& c) {
  int code = 0;
  auto o = open_store(c.config_path, &code);
  if (!o) return code;
  // An API key by its prefix (or its whole text), an HMAC key by its id.
  std::string id = c.id;
  Status st;
  if (id.rfind("hk_", 0) == 0) {
    st = o->store->revoke_hmac_key(id);
  } else {
    if (id.rfind("llmp_", 0) == 0) id = id.substr(5, 8);
    st = o->store->revoke_key(id);
  }
  if (!st) return fail(st);
  std::cout << "revoked " << id << "\n";
  return 0;
}

}  // namespace

void add_tenants_command(CLI::App& app, int* exit_code) {
  CLI::App* tenants = app.add_subcommand("tenants", "Manage tenants in <data_dir>/llmpool.db");
  tenants->require_subcommand(1);
  for (const char* verb : {"add", "update", "remove"}) {
    auto c = std::make_shared<TenantCommand>();
    std::string v = verb;
    CLI::App* cmd = tenants->add_subcommand(v, v == "add" ? "Add a tenant" : v == "update" ? "Change a tenant's fields"
                                                                                          : "Remove a tenant and its keys");
    cmd->add_option("-c,--config", c->config_path, "YAML config file (its data_dir)")->required();
    cmd->add_option("name", c->name, "Tenant name ([a-z0-9_-], 1 to 64)")->required();
    if (v != "remove") c->flags.add_to(cmd);
    cmd->callback([c, v, exit_code] {
      *exit_code = v == "add" ? tenants_add(*c) : v == "update" ? tenants_update(*c) : tenants_remove(*c);
    });
  }
  auto path = std::make_shared<std::string>();
  CLI::App* list = tenants->add_subcommand("list", "List tenants (the config's and the database's)");
  list->add_option("-c,--config", *path, "YAML config file (its data_dir)")->required();
  list->callback([path, exit_code] { *exit_code = tenants_list(*path); });
}

void add_keys_command(CLI::App& app, int* exit_code) {
  CLI::App* keys = app.add_subcommand("keys", "Manage API keys and HMAC keys in <data_dir>/llmpool.db");
  keys->require_subcommand(1);
  auto c = std::make_shared<KeyCommand>();
  CLI::App* create = keys->add_subcommand("create", "Create a key; prints it alone on the last line");
  create->add_option("-c,--config", c->config_path, "YAML config file (its data_dir)")->required();
  create->add_option("--tenant", c->tenant, "The key's tenant");
  create->add_flag("--admin", c->admin, "An admin key (admin routes; every model)");
  create->add_flag("--hmac", c->hmac, "An HMAC signing key: prints KEY_ID SECRET");
  create->add_option("--expires-in", c->expires_in, "Expire after this long (12h, 30d)");
  create->add_option("--expires-at", c->expires_at, "Expire at this Unix time")->check(CLI::PositiveNumber);
  const auto nonneg = CLI::Range(int64_t{0}, int64_t{1} << 50);
  create->add_option("--rpm", c->rpm, "Requests per minute, below the tenant's")->check(nonneg);
  create->add_option("--tpm", c->tpm, "Tokens per minute, below the tenant's")->check(nonneg);
  create->add_option("--max-concurrent", c->concurrent, "Concurrent requests, below the tenant's")->check(nonneg);
  create->callback([c, exit_code] { *exit_code = keys_create(*c); });

  auto l = std::make_shared<KeyCommand>();
  CLI::App* list = keys->add_subcommand("list", "List keys (never their secrets)");
  list->add_option("-c,--config", l->config_path, "YAML config file (its data_dir)")->required();
  list->add_option("--tenant", l->tenant, "Only this tenant's keys");
  list->callback([l, exit_code] { *exit_code = keys_list(*l); });

  auto r = std::make_shared<KeyCommand>();
  CLI::App* revoke = keys->add_subcommand("revoke", "Revoke an API key (by prefix) or an HMAC key (by id)");
  revoke->add_option("-c,--config", r->config_path, "YAML config file (its data_dir)")->required();
  revoke->add_option("id", r->id, "Key prefix, whole key, or HMAC key id (hk_...)")->required();
  revoke->callback([r, exit_code] { *exit_code = keys_revoke(*r); });
}

}  // namespace llmpool::cli
