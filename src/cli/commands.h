// The llmpool subcommands. Each add_*_command registers itself on the CLI11
// app and sets a callback that stores the exit code in `*exit_code`.
// Only cli wires concrete types together (docs/architecture.md).
#pragma once

namespace CLI {
class App;
}

namespace llmpool::cli {

void add_serve_command(CLI::App& app, int* exit_code);
void add_mkmodel_command(CLI::App& app, int* exit_code);
void add_check_config_command(CLI::App& app, int* exit_code);
void add_check_cpu_command(CLI::App& app, int* exit_code);
void add_train_command(CLI::App& app, int* exit_code);
void add_tenants_command(CLI::App& app, int* exit_code);
void add_keys_command(CLI::App& app, int* exit_code);
void add_worker_command(CLI::App& app, int* exit_code);

}  // namespace llmpool::cli
