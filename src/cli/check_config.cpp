// `llmpool check-config FILE`: validates a config file and prints every
// problem as file:line:column: field: message. Exit 0 when valid, 2 if not.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"
#include "config/config.h"

namespace llmpool::cli {

void add_check_config_command(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("check-config", "Validate a config file and list its problems");
  cmd->add_option("file", *path, "YAML config file")->required();
  cmd->callback([path, exit_code] {
    config::LoadResult r = config::load_config(*path);
    for (const auto& issue : r.issues) std::cout << issue.to_string() << "\n";
    if (r.ok()) {
      std::cout << *path << ": ok (" << r.config.models.size() << " model(s))\n";
      *exit_code = 0;
    } else {
      std::cout << *path << ": " << r.issues.size() << " problem(s)\n";
      *exit_code = 2;
    }
  });
}

}  // namespace llmpool::cli
