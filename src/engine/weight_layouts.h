// Where llama.cpp keeps a model's weights on the CPU: in plain buffers, or
// also in the CPU's "extra" layouts (AMX tiles, repacked blocks), which
// llama.cpp picks by default and llama-server turns off with --no-repack.
//
// Some machines advertise AMX and still die in ggml's AMX kernels: on a
// Firecracker guest on an Intel Sapphire Rapids host (Linux 6.18), the first
// matrix product of a q8_0 model ends in SIGILL or SIGSEGV, in llama-bench and
// llama-server as in llmpool, though a plain AMX program runs there. So before
// the first model loads, a child process multiplies a small matrix through
// each AMX layout the CPU backend offers and compares the result with the
// plain kernels'; where it dies or disagrees, every model of the process
// keeps its weights in plain buffers.
#pragma once

#include <string>

#include "llama.h"

namespace llmpool::engine {

struct WeightLayoutCheck {
  bool extra_layouts = true;  // models may use the extra layouts
  std::string detail;         // what was checked and what happened
};

// Checked once per process (later calls return the first answer); on a CPU
// whose backend offers no AMX layout nothing is run. Thread-safe.
const WeightLayoutCheck& check_weight_layouts();

// llama_model_default_params(), with the extra layouts off where the check
// above failed or the caller asks for plain buffers (repack = false).
llama_model_params model_params(bool repack = true);

}  // namespace llmpool::engine
