// llmpool: one program that serves many LLMs behind one OpenAI-compatible API.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"llmpool: a self-hosted LLM serving fabric"};
  app.require_subcommand(1);
  int exit_code = 0;
  llmpool::cli::add_serve_command(app, &exit_code);
  llmpool::cli::add_mkmodel_command(app, &exit_code);
  llmpool::cli::add_check_config_command(app, &exit_code);
  llmpool::cli::add_check_cpu_command(app, &exit_code);
  llmpool::cli::add_train_command(app, &exit_code);
  llmpool::cli::add_tenants_command(app, &exit_code);
  llmpool::cli::add_keys_command(app, &exit_code);
  llmpool::cli::add_worker_command(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
