#include "engine/weight_layouts.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "engine/llama_status.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace llmpool::engine {
namespace {

constexpr auto kChildTimeout = std::chrono::seconds(30);
// Exit codes of the checking child.
constexpr int kAgree = 0;
constexpr int kDisagree = 3;
constexpr int kSetupFailed = 4;

std::vector<ggml_backend_buffer_type_t> amx_layouts() {
  std::vector<ggml_backend_buffer_type_t> out;
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (!cpu) return out;
  auto get = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
      ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts"));
  if (!get) return out;
  for (ggml_backend_buffer_type_t* b = get(cpu); b && *b; ++b)
    if (std::string_view(ggml_backend_buft_name(*b)).find("AMX") != std::string_view::npos) out.push_back(*b);
  return out;
}

// In the child: y = W x for a q8_0 W (K x N) kept in `layout` and the same W
// in a plain buffer, for one row of x (decode) and for 32 (a prompt chunk);
// exit code kAgree when both products agree.
int multiply_in(ggml_backend_buffer_type_t layout) {
  constexpr int64_t K = 256, N = 64;
  std::vector<float> wf(static_cast<size_t>(K * N));
  for (size_t i = 0; i < wf.size(); ++i) wf[i] = std::sin(0.37f * static_cast<float>(i)) * 0.5f;
  std::vector<uint8_t> wq(ggml_row_size(GGML_TYPE_Q8_0, K) * N);
  ggml_quantize_chunk(GGML_TYPE_Q8_0, wf.data(), wq.data(), 0, N, K, nullptr);
  ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  ggml_backend_t cpu = dev ? ggml_backend_dev_init(dev, nullptr) : nullptr;
  if (!cpu) return kSetupFailed;
  auto set_threads = reinterpret_cast<ggml_backend_set_n_threads_t>(
      ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), "ggml_backend_set_n_threads"));
  if (set_threads) set_threads(cpu, 1);  // no OpenMP team in a forked child
  ggml_backend_buffer_type_t host = ggml_backend_dev_buffer_type(dev);
  int rc = kAgree;
  for (int64_t M : {int64_t{1}, int64_t{32}}) {
    ggml_init_params ip{ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
    ggml_context* in_layout = ggml_init(ip);
    ggml_context* plain = ggml_init(ip);
    ggml_context* graph = ggml_init(ip);
    ggml_tensor* w_layout = ggml_new_tensor_2d(in_layout, GGML_TYPE_Q8_0, K, N);
    ggml_tensor* w_plain = ggml_new_tensor_2d(plain, GGML_TYPE_Q8_0, K, N);
    ggml_tensor* x = ggml_new_tensor_2d(plain, GGML_TYPE_F32, K, M);
    ggml_backend_buffer_t b1 = ggml_backend_alloc_ctx_tensors_from_buft(in_layout, layout);
    ggml_backend_buffer_t b2 = ggml_backend_alloc_ctx_tensors_from_buft(plain, host);
    if (!b1 || !b2) return kSetupFailed;
    ggml_backend_tensor_set(w_layout, wq.data(), 0, wq.size());
    ggml_backend_tensor_set(w_plain, wq.data(), 0, wq.size());
    std::vector<float> xf(static_cast<size_t>(K * M));
    for (size_t i = 0; i < xf.size(); ++i) xf[i] = std::cos(0.11f * static_cast<float>(i));
    ggml_backend_tensor_set(x, xf.data(), 0, xf.size() * sizeof(float));
    ggml_tensor* y1 = ggml_mul_mat(graph, w_layout, x);
    ggml_tensor* y2 = ggml_mul_mat(graph, w_plain, x);
    ggml_cgraph* g = ggml_new_graph(graph);
    ggml_build_forward_expand(g, y1);
    ggml_build_forward_expand(g, y2);
    ggml_backend_buffer_t b3 = ggml_backend_alloc_ctx_tensors_from_buft(graph, host);
    if (!b3 || ggml_backend_graph_compute(cpu, g) != GGML_STATUS_SUCCESS) return kSetupFailed;
    std::vector<float> r1(static_cast<size_t>(N * M)), r2(r1.size());
    ggml_backend_tensor_get(y1, r1.data(), 0, r1.size() * sizeof(float));
    ggml_backend_tensor_get(y2, r2.data(), 0, r2.size() * sizeof(float));
    float scale = 1e-6f, diff = 0;
    for (size_t i = 0; i < r1.size(); ++i) {
      scale = std::max(scale, std::fabs(r2[i]));
      diff = std::max(diff, std::fabs(r1[i] - r2[i]));
    }
    if (!(diff <= 1e-2f * scale)) rc = kDisagree;  // NaN disagrees too
    ggml_backend_buffer_free(b1);
    ggml_backend_buffer_free(b2);
    ggml_backend_buffer_free(b3);
    ggml_free(in_layout);
    ggml_free(plain);
    ggml_free(graph);
    if (rc != kAgree) break;
  }
  ggml_backend_free(cpu);
  return rc;
}

WeightLayoutCheck run_check() {
  WeightLayoutCheck out;
  const std::vector<ggml_backend_buffer_type_t> layouts = amx_layouts();
  if (layouts.empty()) {
    out.detail = "no AMX layout on this CPU";
    return out;
  }
  for (ggml_backend_buffer_type_t layout : layouts) {
    const std::string name = ggml_backend_buft_name(layout);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      out.extra_layouts = false;
      out.detail = "cannot start the process that checks the " + name + " layout (" + std::strerror(errno) + ")";
      return out;
    }
    if (pid == 0) {
      // Only this thread lives on here: nothing that another thread may have
      // held a lock of (the log) is touched before _exit.
      ggml_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
      // A fault ends the child as the signal itself (not through a handler a
      // sanitizer or crash reporter installed), for the parent to name it.
      for (int sig : {SIGSEGV, SIGILL, SIGBUS, SIGFPE}) ::signal(sig, SIG_DFL);
      ::_exit(multiply_in(layout));
    }
    int status = 0;
    const auto until = std::chrono::steady_clock::now() + kChildTimeout;
    pid_t done = 0;
    while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (done == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      out.detail = "a matrix product in the " + name + " layout did not finish in 30 s";
    } else if (done < 0) {
      out.detail = "cannot wait for the " + name + " check (" + std::string(std::strerror(errno)) + ")";
    } else if (WIFSIGNALED(status)) {
      out.detail = "a matrix product in the " + name + " layout died of " + strsignal(WTERMSIG(status));
    } else if (WEXITSTATUS(status) == kDisagree) {
      out.detail = "the " + name + " layout's matrix product differs from the plain kernels'";
    } else if (WEXITSTATUS(status) != kAgree) {
      out.detail = "the " + name + " check could not set up its matrices (exit code " +
                   std::to_string(WEXITSTATUS(status)) + ")";
    } else {
      continue;
    }
    out.extra_layouts = false;
    return out;
  }
  out.detail = "the AMX layout's matrix products agree with the plain kernels'";
  return out;
}

}  // namespace

const WeightLayoutCheck& check_weight_layouts() {
  static WeightLayoutCheck result;
  static std::once_flag once;
  std::call_once(once, [] {
    init_llama_backend();
    result = run_check();
    if (!result.extra_layouts)
      spdlog::warn("llama.cpp's AMX kernels fail on this CPU ({}): every model keeps its weights in plain "
                   "CPU buffers, as llama-server --no-repack does",
                   result.detail);
    else
      spdlog::debug("weight layouts: {}", result.detail);
  });
  return result;
}

llama_model_params model_params(bool repack) {
  llama_model_params mp = llama_model_default_params();
  mp.use_extra_bufts = repack && check_weight_layouts().extra_layouts;
  return mp;
}

}  // namespace llmpool::engine
