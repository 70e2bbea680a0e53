#include "engine/local_model.h"

#include <llama.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "engine/llama_status.h"

namespace llmpool::engine {
namespace {

constexpr const char* kFallbackTemplate = "chatml";

struct SamplerDeleter {
  void operator()(llama_sampler* s) const { llama_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

SamplerPtr make_sampler(const SamplingParams& p) {
  SamplerPtr chain(llama_sampler_chain_init(llama_sampler_chain_default_params()));
  if (p.temperature <= 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
    return chain;
  }
  if (p.top_k > 0) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_k(p.top_k));
  if (p.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(p.top_p, 1));
  if (p.min_p > 0.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_min_p(p.min_p, 1));
  llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(p.temperature));
  llama_sampler_chain_add(chain.get(),
                          llama_sampler_init_dist(p.seed ? *p.seed : LLAMA_DEFAULT_SEED));
  return chain;
}

std::string token_piece(const llama_vocab* vocab, llama_token token) {
  char buf[256];
  int32_t n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, false);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, false);
  big.resize(static_cast<size_t>(std::max(n, 0)));
  return big;
}

// Earliest position in `text` at or after `from` where a stop string
// starts, or npos. `from` lets the search skip text already checked.
size_t find_stop(const std::string& text, const std::vector<std::string>& stops, size_t from) {
  size_t best = std::string::npos;
  for (const auto& s : stops) {
    if (s.empty()) continue;
    size_t start = from > s.size() ? from - s.size() : 0;
    size_t pos = text.find(s, start);
    if (pos < best) best = pos;
  }
  return best;
}

}  // namespace

LocalModel::LocalModel(LocalModelSpec spec)
    : spec_(std::move(spec)), model_(nullptr, llama_model_free), ctx_(nullptr, llama_free) {}

Result<std::unique_ptr<LocalModel>> LocalModel::load(const LocalModelSpec& spec) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(spec.path, ec))
    return Status::not_found("model file not found: " + spec.path);
  init_llama_backend();

  std::unique_ptr<LocalModel> m(new LocalModel(spec));
  llama_model_params mp = llama_model_default_params();
  m->model_.reset(llama_model_load_from_file(spec.path.c_str(), mp));
  if (!m->model_) return Status::invalid_argument("llama.cpp cannot load model file: " + spec.path);

  int32_t threads = spec.threads > 0 ? spec.threads
                                     : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(spec.context);
  cp.n_batch = static_cast<uint32_t>(std::min(spec.context, 2048));
  cp.n_ubatch = std::min<uint32_t>(cp.n_batch, 512);
  cp.n_seq_max = 1;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  m->ctx_.reset(llama_init_from_model(m->model_.get(), cp));
  if (!m->ctx_) return Status::invalid_argument("llama.cpp cannot create a context for " + spec.path);

  m->n_ctx_ = static_cast<int32_t>(llama_n_ctx(m->ctx_.get()));
  m->n_batch_ = static_cast<int32_t>(llama_n_batch(m->ctx_.get()));
  m->size_bytes_ = llama_model_size(m->model_.get());
  const char* tmpl = llama_model_chat_template(m->model_.get(), nullptr);
  m->chat_template_ = tmpl ? tmpl : kFallbackTemplate;
  m->thread_ = std::thread([raw = m.get()] { raw->run(); });
  spdlog::info("model '{}' loaded from {} ({:.1f} MiB, context {}, {} threads)", spec.name,
               spec.path, m->size_bytes_ / 1048576.0, m->n_ctx_, threads);
  return m;
}

LocalModel::~LocalModel() {
  std::deque<Job> abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    abandoned.swap(queue_);
  }
  cv_.notify_all();
  for (auto& job : abandoned) job.done(Status::unavailable("model '" + spec_.name + "' is shutting down"));
  if (thread_.joinable()) thread_.join();
}

void LocalModel::submit(GenerationRequest request, GenerationCallback done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      done(Status::unavailable("model '" + spec_.name + "' is shutting down"));
      return;
    }
    if (static_cast<int32_t>(queue_.size()) >= spec_.max_queue) {
      done(Status::resource_exhausted("model '" + spec_.name + "' queue is full"));
      return;
    }
    queue_.push_back(Job{std::move(request), std::move(done)});
  }
  cv_.notify_one();
}

void LocalModel::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Result<Completion> result = [&]() -> Result<Completion> {
      try {
        return generate(job.request);
      } catch (const std::exception& e) {
        return Status::internal(std::string("generation failed: ") + e.what());
      }
    }();
    job.done(std::move(result));
  }
}

Result<std::string> LocalModel::format_chat(const std::vector<ChatMessage>& messages) const {
  std::vector<llama_chat_message> msgs;
  msgs.reserve(messages.size());
  size_t total = 0;
  for (const auto& m : messages) {
    msgs.push_back({m.role.c_str(), m.content.c_str()});
    total += m.role.size() + m.content.size();
  }
  std::string buf(total * 2 + 256, '\0');
  int32_t n = llama_chat_apply_template(chat_template_.c_str(), msgs.data(), msgs.size(), true,
                                        buf.data(), static_cast<int32_t>(buf.size()));
  if (n < 0) return Status::internal("model '" + spec_.name + "' has an unsupported chat template");
  if (static_cast<size_t>(n) > buf.size()) {
    buf.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(chat_template_.c_str(), msgs.data(), msgs.size(), true,
                                  buf.data(), static_cast<int32_t>(buf.size()));
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Result<std::vector<int32_t>> LocalModel::tokenize(const std::string& text) const {
  const llama_vocab* vocab = llama_model_get_vocab(model_.get());
  if (text.size() > static_cast<size_t>(INT32_MAX / 2)) return Status::invalid_argument("prompt too long", "messages");
  std::vector<llama_token> tokens(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), true, true);
  if (n < 0) {
    if (n == INT32_MIN) return Status::invalid_argument("prompt too long", "messages");
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), true, true);
  }
  tokens.resize(static_cast<size_t>(std::max(n, 0)));
  return tokens;
}

Result<Completion> LocalModel::generate(const GenerationRequest& request) {
  Result<std::string> prompt = format_chat(request.messages);
  if (!prompt) return prompt.status();
  Result<std::vector<int32_t>> tokens = tokenize(*prompt);
  if (!tokens) return tokens.status();
  const int32_t n_prompt = static_cast<int32_t>(tokens->size());
  if (n_prompt == 0) return Status::invalid_argument("the prompt is empty", "messages");
  if (n_prompt >= n_ctx_) {
    return Status::invalid_argument(
        "This model's maximum context length is " + std::to_string(n_ctx_) +
            " tokens, but the prompt is " + std::to_string(n_prompt) + " tokens",
        "messages", "context_length_exceeded");
  }

  llama_memory_clear(llama_get_memory(ctx_.get()), true);
  for (int32_t i = 0; i < n_prompt; i += n_batch_) {
    int32_t n = std::min(n_batch_, n_prompt - i);
    Status st = decode_status(llama_decode(ctx_.get(), llama_batch_get_one(tokens->data() + i, n)),
                              "prompt");
    if (!st) return st;
  }

  const llama_vocab* vocab = llama_model_get_vocab(model_.get());
  SamplerPtr sampler = make_sampler(request.sampling);
  Completion out;
  out.usage.prompt_tokens = n_prompt;
  int32_t budget = n_ctx_ - n_prompt;
  if (request.sampling.max_tokens) budget = std::min(budget, *request.sampling.max_tokens);
  out.finish_reason = FinishReason::kLength;
  int32_t n_past = n_prompt;
  for (int32_t produced = 0; produced < budget; ++produced) {
    llama_token tok = llama_sampler_sample(sampler.get(), ctx_.get(), -1);
    if (llama_vocab_is_eog(vocab, tok)) {
      out.finish_reason = FinishReason::kStop;
      break;
    }
    ++out.usage.completion_tokens;
    size_t before = out.text.size();
    out.text += token_piece(vocab, tok);
    size_t stop = find_stop(out.text, request.sampling.stop, before);
    if (stop != std::string::npos) {
      out.text.resize(stop);
      out.finish_reason = FinishReason::kStop;
      break;
    }
    if (produced + 1 == budget || n_past + 1 >= n_ctx_) break;
    Status st = decode_status(llama_decode(ctx_.get(), llama_batch_get_one(&tok, 1)), "decode");
    if (!st) return st;
    ++n_past;
  }
  return out;
}

}  // namespace llmpool::engine
