// `llmpool check-cpu`: whether llama.cpp's extra CPU weight layouts (AMX
// tiles, repacked blocks) work on this machine (engine/weight_layouts.h).
// Prints what was checked; exit 0 when models may use them, 1 when every
// model keeps its weights in plain buffers. The benchmarks ask it whether
// llama-server, their reference, needs --no-repack here.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"
#include "engine/weight_layouts.h"

namespace llmpool::cli {

void add_check_cpu_command(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand("check-cpu", "Check whether llama.cpp's AMX and repacked weight layouts work here");
  cmd->callback([exit_code] {
    const engine::WeightLayoutCheck& c = engine::check_weight_layouts();
    std::cout << "weight layouts: " << (c.extra_layouts ? "extra layouts on" : "plain buffers only") << " (" << c.detail
              << ")\n";
    *exit_code = c.extra_layouts ? 0 : 1;
  });
}

}  // namespace llmpool::cli
