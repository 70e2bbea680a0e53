#include "engine/model_writer.h"

#include <ggml.h>
#include <gguf.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <future>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace llmpool::engine {

namespace {

constexpr uint32_t kQuantBlock = 32;  // QK8_0 == QK4_0 == 32
constexpr uint32_t kMaxEmbd = 65536;
constexpr uint32_t kMaxLayers = 1024;
constexpr uint32_t kMaxHeads = 4096;
constexpr uint32_t kMaxFf = 1u << 20;
constexpr uint32_t kMaxCtx = 1u << 24;
constexpr size_t kMaxVocab = 1u << 22;
constexpr size_t kMaxNameLength = 256;
constexpr size_t kMaxTemplateLength = 1u << 20;
constexpr unsigned kMaxThreads = 256;
// One segment of a tensor is generated in memory, then written. Bounds the
// memory in use independently of the model size.
constexpr size_t kSegmentBytes = 32u << 20;
// Rows are generated into a float scratch buffer of about this many elements
// and converted to the storage type in one ggml call.
constexpr int64_t kScratchElements = 1 << 16;
// Below this many elements a segment is filled on the calling thread.
constexpr int64_t kMinElementsPerThread = 1 << 18;
constexpr float kWeightStd = 0.02f;

constexpr ModelPreset kPresets[] = {
    {"tiny", "llama-spm", "llama-spm vocab (32000), n_embd 64, 2 layers, 4 heads, 2 KV heads, n_ff 128 - a few MB",
     ModelShape{64, 2, 4, 2, 128, 4096, 10000.0f, 1e-5f}},
    {"bench-0.5b", "qwen2",
     "qwen2 vocab (151936), n_embd 896, 24 layers, 14 heads, 2 KV heads, n_ff 4864 - the Qwen2.5-0.5B shape",
     ModelShape{896, 24, 14, 2, 4864, 32768, 1000000.0f, 1e-6f}},
};

// splitmix64's output function: a bijective 64-bit mixer.
uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// splitmix64 (Steele, Lea, Flood 2014): fast, tiny state, good enough for
// weights, and fully specified, unlike std:: distributions.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Irwin-Hall with n = 4: the sum of the four 16-bit lanes of one random word
// is close to normal (error < 1% of the peak density); centred and scaled to
// standard deviation kWeightStd. Integer arithmetic and one float multiply,
// so the result is the same on every machine.
float approx_normal(uint64_t w) {
  const int32_t sum = static_cast<int32_t>((w & 0xffff) + ((w >> 16) & 0xffff) +
                                           ((w >> 32) & 0xffff) + (w >> 48));
  // Mean 4 * 32767.5, standard deviation 65536 * sqrt(4 / 12) (to 6 digits).
  constexpr int32_t kMean = 131070;
  constexpr float kScale = kWeightStd / 37837.23f;
  return static_cast<float>(sum - kMean) * kScale;
}

ggml_type to_ggml_type(WeightType type) {
  switch (type) {
    case WeightType::kF16: return GGML_TYPE_F16;
    case WeightType::kQ8_0: return GGML_TYPE_Q8_0;
    case WeightType::kQ4_0: return GGML_TYPE_Q4_0;
    case WeightType::kF32: return GGML_TYPE_F32;
  }
  return GGML_TYPE_F32;
}

// llama_ftype values (llama.h), kept here so that this file needs ggml only.
uint32_t file_type_of(WeightType type) {
  switch (type) {
    case WeightType::kF32: return 0;   // LLAMA_FTYPE_ALL_F32
    case WeightType::kF16: return 1;   // LLAMA_FTYPE_MOSTLY_F16
    case WeightType::kQ4_0: return 2;  // LLAMA_FTYPE_MOSTLY_Q4_0
    case WeightType::kQ8_0: return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
  }
  return 0;
}

bool is_quantized(WeightType type) { return type == WeightType::kQ8_0 || type == WeightType::kQ4_0; }

struct GgufDeleter {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;

struct GgmlDeleter {
  void operator()(ggml_context* ctx) const { ggml_free(ctx); }
};
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

struct TensorSpec {
  std::string name;
  int64_t ne0 = 0;
  int64_t ne1 = 1;  // 1 for vectors
  bool is_norm = false;
  ggml_type type = GGML_TYPE_F32;
};

std::vector<TensorSpec> llama_tensors(const ModelShape& s, uint32_t n_vocab, WeightType wtype,
                                      bool tie_embeddings) {
  const ggml_type wt = to_ggml_type(wtype);
  const int64_t n_embd = s.n_embd;
  const int64_t n_kv = static_cast<int64_t>(s.n_embd / s.n_head) * s.n_head_kv;
  auto matrix = [wt](std::string name, int64_t ne0, int64_t ne1) {
    return TensorSpec{std::move(name), ne0, ne1, false, wt};
  };
  auto norm = [](std::string name, int64_t ne0) {
    return TensorSpec{std::move(name), ne0, 1, true, GGML_TYPE_F32};
  };
  // ggml order: ne0 is the row length (the input dimension of a matmul).
  std::vector<TensorSpec> t;
  t.push_back(matrix("token_embd.weight", n_embd, n_vocab));
  for (uint32_t i = 0; i < s.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    t.push_back(norm(p + "attn_norm.weight", n_embd));
    t.push_back(matrix(p + "attn_q.weight", n_embd, n_embd));
    t.push_back(matrix(p + "attn_k.weight", n_embd, n_kv));
    t.push_back(matrix(p + "attn_v.weight", n_embd, n_kv));
    t.push_back(matrix(p + "attn_output.weight", n_embd, n_embd));
    t.push_back(norm(p + "ffn_norm.weight", n_embd));
    t.push_back(matrix(p + "ffn_gate.weight", n_embd, s.n_ff));
    t.push_back(matrix(p + "ffn_up.weight", n_embd, s.n_ff));
    t.push_back(matrix(p + "ffn_down.weight", s.n_ff, n_embd));
  }
  t.push_back(norm("output_norm.weight", n_embd));
  if (!tie_embeddings) t.push_back(matrix("output.weight", n_embd, n_vocab));
  return t;
}

// Fills rows [row_begin, row_end) of `t`, stored contiguously at `dst`.
// Each row has its own PRNG stream, so any split of the rows across threads
// writes the same bytes.
void fill_rows(const TensorSpec& t, uint64_t tensor_seed, int64_t row_begin, int64_t row_end,
               uint8_t* dst) {
  const size_t row_bytes = ggml_row_size(t.type, t.ne0);
  if (t.is_norm) {
    const float one = 1.0f;
    for (int64_t r = row_begin; r < row_end; ++r) {
      for (int64_t i = 0; i < t.ne0; ++i) {
        std::memcpy(dst + (r - row_begin) * row_bytes + i * sizeof(float), &one, sizeof(float));
      }
    }
    return;
  }
  const int64_t rows_per_chunk = std::max<int64_t>(1, kScratchElements / t.ne0);
  std::vector<float> scratch(static_cast<size_t>(rows_per_chunk * t.ne0));
  for (int64_t r0 = row_begin; r0 < row_end; r0 += rows_per_chunk) {
    const int64_t nrows = std::min(rows_per_chunk, row_end - r0);
    for (int64_t r = 0; r < nrows; ++r) {
      SplitMix64 rng(mix64(tensor_seed ^ mix64(static_cast<uint64_t>(r0 + r))));
      float* row = scratch.data() + r * t.ne0;
      for (int64_t i = 0; i < t.ne0; ++i) row[i] = approx_normal(rng.next());
    }
    uint8_t* out = dst + (r0 - row_begin) * row_bytes;
    const int64_t n = nrows * t.ne0;
    switch (t.type) {
      case GGML_TYPE_F32:
        std::memcpy(out, scratch.data(), static_cast<size_t>(n) * sizeof(float));
        break;
      case GGML_TYPE_F16:
        ggml_fp32_to_fp16_row(scratch.data(), reinterpret_cast<ggml_fp16_t*>(out), n);
        break;
      default:
        ggml_quantize_chunk(t.type, scratch.data(), out, 0, nrows, t.ne0, nullptr);
        break;
    }
  }
}

// Fills rows [row_begin, row_end) using up to `n_threads` threads.
void fill_segment(const TensorSpec& t, uint64_t tensor_seed, int64_t row_begin, int64_t row_end,
                  uint8_t* dst, unsigned n_threads) {
  const int64_t rows = row_end - row_begin;
  const int64_t elements = rows * t.ne0;
  const int64_t by_work = std::max<int64_t>(1, elements / kMinElementsPerThread);
  const int64_t workers = std::min<int64_t>({static_cast<int64_t>(n_threads), by_work, rows});
  if (workers <= 1) {
    fill_rows(t, tensor_seed, row_begin, row_end, dst);
    return;
  }
  const size_t row_bytes = ggml_row_size(t.type, t.ne0);
  auto range = [&](int64_t k) {
    return std::pair<int64_t, int64_t>{row_begin + rows * k / workers, row_begin + rows * (k + 1) / workers};
  };
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  auto work = [&](int64_t k) {
    try {
      const auto [b, e] = range(k);
      fill_rows(t, tensor_seed, b, e, dst + (b - row_begin) * row_bytes);
    } catch (...) {
      errors[static_cast<size_t>(k)] = std::current_exception();
    }
  };
  {
    // jthreads join on scope exit, also when starting a later one throws.
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<size_t>(workers - 1));
    for (int64_t k = 1; k < workers; ++k) threads.emplace_back(work, k);
    work(0);
  }
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

Status io_error(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOENT || err == ENOTDIR) return Status::not_found(std::move(msg), "output_path");
  if (err == EACCES || err == EPERM || err == EROFS) return Status::permission_denied(std::move(msg));
  return Status::internal(std::move(msg));
}

// Copies one KV pair; the vocab files hold scalars, strings and flat arrays.
Status copy_kv(gguf_context* dst, const gguf_context* src, int64_t id) {
  const char* key = gguf_get_key(src, id);
  switch (gguf_get_kv_type(src, id)) {
    case GGUF_TYPE_UINT8: gguf_set_val_u8(dst, key, gguf_get_val_u8(src, id)); break;
    case GGUF_TYPE_INT8: gguf_set_val_i8(dst, key, gguf_get_val_i8(src, id)); break;
    case GGUF_TYPE_UINT16: gguf_set_val_u16(dst, key, gguf_get_val_u16(src, id)); break;
    case GGUF_TYPE_INT16: gguf_set_val_i16(dst, key, gguf_get_val_i16(src, id)); break;
    case GGUF_TYPE_UINT32: gguf_set_val_u32(dst, key, gguf_get_val_u32(src, id)); break;
    case GGUF_TYPE_INT32: gguf_set_val_i32(dst, key, gguf_get_val_i32(src, id)); break;
    case GGUF_TYPE_FLOAT32: gguf_set_val_f32(dst, key, gguf_get_val_f32(src, id)); break;
    case GGUF_TYPE_UINT64: gguf_set_val_u64(dst, key, gguf_get_val_u64(src, id)); break;
    case GGUF_TYPE_INT64: gguf_set_val_i64(dst, key, gguf_get_val_i64(src, id)); break;
    case GGUF_TYPE_FLOAT64: gguf_set_val_f64(dst, key, gguf_get_val_f64(src, id)); break;
    case GGUF_TYPE_BOOL: gguf_set_val_bool(dst, key, gguf_get_val_bool(src, id)); break;
    case GGUF_TYPE_STRING: gguf_set_val_str(dst, key, gguf_get_val_str(src, id)); break;
    case GGUF_TYPE_ARRAY: {
      const gguf_type arr_type = gguf_get_arr_type(src, id);
      const size_t n = gguf_get_arr_n(src, id);
      if (arr_type == GGUF_TYPE_STRING) {
        std::vector<const char*> items(n);
        for (size_t i = 0; i < n; ++i) items[i] = gguf_get_arr_str(src, id, i);
        gguf_set_arr_str(dst, key, items.data(), n);
      } else if (arr_type == GGUF_TYPE_ARRAY) {
        return Status::invalid_argument(std::string("vocab key ") + key + " is a nested array",
                                        "vocab_path");
      } else {
        gguf_set_arr_data(dst, key, arr_type, gguf_get_arr_data(src, id), n);
      }
      break;
    }
    default:
      return Status::invalid_argument(std::string("vocab key ") + key + " has an unknown type",
                                      "vocab_path");
  }
  return Status::ok();
}

// Opens the vocab file and checks that it carries a token list.
Result<GgufPtr> open_vocab(const std::string& path, uint32_t* n_vocab) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::not_found("vocab file not found: " + path, "vocab_path");
  }
  GgufPtr vocab{gguf_init_from_file(path.c_str(), gguf_init_params{/*no_alloc=*/true, /*ctx=*/nullptr})};
  if (!vocab) return Status::invalid_argument("not a GGUF file: " + path, "vocab_path");
  const int64_t tokens = gguf_find_key(vocab.get(), "tokenizer.ggml.tokens");
  if (tokens < 0 || gguf_get_kv_type(vocab.get(), tokens) != GGUF_TYPE_ARRAY ||
      gguf_get_arr_type(vocab.get(), tokens) != GGUF_TYPE_STRING) {
    return Status::invalid_argument("vocab file has no tokenizer.ggml.tokens string array: " + path,
                                    "vocab_path");
  }
  const size_t n = gguf_get_arr_n(vocab.get(), tokens);
  if (n == 0 || n > kMaxVocab) {
    return Status::invalid_argument(
        "vocab file has " + std::to_string(n) + " tokens (1 to " + std::to_string(kMaxVocab) +
            " supported): " + path,
        "vocab_path");
  }
  *n_vocab = static_cast<uint32_t>(n);
  return vocab;
}

// Removes the temporary file unless the write was committed.
class TmpFileGuard {
 public:
  explicit TmpFileGuard(std::string path) : path_(std::move(path)) {}
  TmpFileGuard(const TmpFileGuard&) = delete;
  TmpFileGuard& operator=(const TmpFileGuard&) = delete;
  ~TmpFileGuard() {
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove(path_, ec);
    }
  }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  bool committed_ = false;
};

Status write_model_impl(const ModelWriterOptions& options, WrittenModel* written) {
  const ModelShape& shape = options.shape;
  if (Status s = validate_shape(shape, options.type); !s) return s;
  if (options.output_path.empty()) return Status::invalid_argument("output_path is empty", "output_path");
  if (options.vocab_path.empty()) return Status::invalid_argument("vocab_path is empty", "vocab_path");
  if (options.name.size() > kMaxNameLength) {
    return Status::invalid_argument("name is longer than " + std::to_string(kMaxNameLength) + " bytes",
                                    "name");
  }
  if (options.chat_template.size() > kMaxTemplateLength) {
    return Status::invalid_argument("chat_template is too long", "chat_template");
  }

  uint32_t n_vocab = 0;
  auto vocab = open_vocab(options.vocab_path, &n_vocab);
  if (!vocab) return vocab.status();

  // Metadata: general.*, llama.*, then the vocab's tokenizer.* in file order.
  GgufPtr gguf{gguf_init_empty()};
  gguf_context* ctx = gguf.get();
  const std::string name = options.name.empty() ? std::string("llmpool-random") : options.name;
  gguf_set_val_str(ctx, "general.architecture", "llama");
  gguf_set_val_str(ctx, "general.name", name.c_str());
  gguf_set_val_u32(ctx, "general.file_type", file_type_of(options.type));
  gguf_set_val_u32(ctx, "general.quantization_version", GGML_QNT_VERSION);
  gguf_set_val_u32(ctx, "llama.vocab_size", n_vocab);
  gguf_set_val_u32(ctx, "llama.context_length", shape.n_ctx_train);
  gguf_set_val_u32(ctx, "llama.embedding_length", shape.n_embd);
  gguf_set_val_u32(ctx, "llama.block_count", shape.n_layer);
  gguf_set_val_u32(ctx, "llama.feed_forward_length", shape.n_ff);
  gguf_set_val_u32(ctx, "llama.attention.head_count", shape.n_head);
  gguf_set_val_u32(ctx, "llama.attention.head_count_kv", shape.n_head_kv);
  gguf_set_val_f32(ctx, "llama.attention.layer_norm_rms_epsilon", shape.rms_eps);
  gguf_set_val_f32(ctx, "llama.rope.freq_base", shape.rope_freq_base);
  gguf_set_val_u32(ctx, "llama.rope.dimension_count", shape.n_embd / shape.n_head);
  const gguf_context* src = vocab->get();
  for (int64_t i = 0; i < gguf_get_n_kv(src); ++i) {
    if (std::string_view(gguf_get_key(src, i)).starts_with("tokenizer.")) {
      if (Status s = copy_kv(ctx, src, i); !s) return s;
    }
  }
  vocab->reset();  // the token arrays are copied; free the vocab early
  if (!options.chat_template.empty()) {
    gguf_set_val_str(ctx, "tokenizer.chat_template", options.chat_template.c_str());
  }

  const std::vector<TensorSpec> specs = llama_tensors(shape, n_vocab, options.type, options.tie_embeddings);
  GgmlPtr tensor_ctx{ggml_init(ggml_init_params{
      /*mem_size=*/specs.size() * ggml_tensor_overhead(), /*mem_buffer=*/nullptr, /*no_alloc=*/true})};
  if (!tensor_ctx) return Status::internal("ggml_init failed");
  uint64_t n_params = 0;
  for (const TensorSpec& t : specs) {
    ggml_tensor* tensor = t.is_norm ? ggml_new_tensor_1d(tensor_ctx.get(), t.type, t.ne0)
                                    : ggml_new_tensor_2d(tensor_ctx.get(), t.type, t.ne0, t.ne1);
    ggml_set_name(tensor, t.name.c_str());
    gguf_add_tensor(ctx, tensor);
    n_params += static_cast<uint64_t>(t.ne0) * static_cast<uint64_t>(t.ne1);
  }

  const std::string tmp_path = options.output_path + ".tmp";
  TmpFileGuard guard(tmp_path);
  FilePtr file{std::fopen(tmp_path.c_str(), "wb")};
  if (!file) return io_error("cannot create", tmp_path, errno);

  const size_t meta_size = gguf_get_meta_size(ctx);
  {
    std::vector<uint8_t> meta(meta_size);
    gguf_get_meta_data(ctx, meta.data());
    if (std::fwrite(meta.data(), 1, meta.size(), file.get()) != meta.size()) {
      return io_error("cannot write", tmp_path, errno);
    }
  }
  unsigned n_threads = options.n_threads != 0 ? options.n_threads : std::thread::hardware_concurrency();
  n_threads = std::clamp(n_threads, 1u, kMaxThreads);

  // Tensor data follows the metadata in gguf's order, each tensor padded to
  // the alignment, exactly as gguf_write_to_file would lay it out. Segments
  // are double-buffered: one is written by an async task while the next is
  // generated, so the file I/O overlaps the generation.
  const size_t alignment = gguf_get_alignment(ctx);
  uint64_t offset = meta_size;
  std::vector<uint8_t> buffers[2];
  std::future<int> pending;  // errno of the previous segment's write, 0 if ok
  size_t segment = 0;
  auto wait_pending = [&]() -> int { return pending.valid() ? pending.get() : 0; };
  uint64_t total_bytes = meta_size;
  for (const TensorSpec& t : specs) total_bytes += ggml_row_size(t.type, t.ne0) * static_cast<uint64_t>(t.ne1);
  auto report = [&](uint64_t done) {
    if (options.on_progress) options.on_progress(std::min(done, total_bytes), total_bytes);
  };
  for (size_t ti = 0; ti < specs.size(); ++ti) {
    const TensorSpec& t = specs[ti];
    if (offset != meta_size + gguf_get_tensor_offset(ctx, static_cast<int64_t>(ti))) {
      return Status::internal("tensor " + t.name + " would be written at the wrong offset");
    }
    const size_t row_bytes = ggml_row_size(t.type, t.ne0);
    const uint64_t tensor_seed = mix64(options.seed ^ fnv1a(t.name));
    const int64_t rows_per_segment = std::max<int64_t>(1, static_cast<int64_t>(kSegmentBytes / row_bytes));
    for (int64_t r0 = 0; r0 < t.ne1; r0 += rows_per_segment, ++segment) {
      const int64_t r1 = std::min(t.ne1, r0 + rows_per_segment);
      const size_t bytes = static_cast<size_t>(r1 - r0) * row_bytes;
      const size_t end = offset + bytes;
      const size_t pad = r1 == t.ne1 ? (alignment - end % alignment) % alignment : 0;
      // The write that used this buffer was waited for in the previous round.
      std::vector<uint8_t>& buffer = buffers[segment % 2];
      buffer.resize(bytes + pad);
      fill_segment(t, tensor_seed, r0, r1, buffer.data(), n_threads);
      std::fill(buffer.begin() + static_cast<std::ptrdiff_t>(bytes), buffer.end(), uint8_t{0});
      if (int err = wait_pending(); err != 0) return io_error("cannot write", tmp_path, err);
      pending = std::async(std::launch::async, [f = file.get(), data = buffer.data(), n = buffer.size()] {
        return std::fwrite(data, 1, n, f) == n ? 0 : (errno != 0 ? errno : EIO);
      });
      offset += bytes + pad;
      report(offset);
    }
  }
  if (int err = wait_pending(); err != 0) return io_error("cannot write", tmp_path, err);
  report(total_bytes);
  if (std::fflush(file.get()) != 0) return io_error("cannot write", tmp_path, errno);
  if (std::fclose(file.release()) != 0) return io_error("cannot close", tmp_path, errno);

  std::error_code ec;
  std::filesystem::rename(tmp_path, options.output_path, ec);
  if (ec) return io_error("cannot rename " + tmp_path + " to", options.output_path, ec.value());
  guard.commit();

  if (written != nullptr) {
    written->n_vocab = n_vocab;
    written->n_params = n_params;
    written->n_tensors = specs.size();
    written->file_size = offset;
  }
  return Status::ok();
}

}  // namespace

std::string_view weight_type_name(WeightType type) {
  switch (type) {
    case WeightType::kF16: return "f16";
    case WeightType::kQ8_0: return "q8_0";
    case WeightType::kQ4_0: return "q4_0";
    case WeightType::kF32: return "f32";
  }
  return "unknown";
}

Result<WeightType> parse_weight_type(std::string_view name) {
  for (WeightType t : {WeightType::kF16, WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kF32}) {
    if (name == weight_type_name(t)) return t;
  }
  return Status::invalid_argument(
      "unknown weight type '" + std::string(name.substr(0, 64)) + "' (expected f16, q8_0, q4_0 or f32)",
      "type");
}

Status validate_shape(const ModelShape& s, WeightType type) {
  auto bounded = [](const char* field, uint32_t value, uint32_t max) -> Status {
    if (value == 0 || value > max) {
      return Status::invalid_argument(std::string(field) + " must be between 1 and " + std::to_string(max) +
                                          ", got " + std::to_string(value),
                                      field);
    }
    return Status::ok();
  };
  for (Status st : {bounded("n_embd", s.n_embd, kMaxEmbd), bounded("n_layer", s.n_layer, kMaxLayers),
                    bounded("n_head", s.n_head, kMaxHeads), bounded("n_head_kv", s.n_head_kv, kMaxHeads),
                    bounded("n_ff", s.n_ff, kMaxFf), bounded("n_ctx_train", s.n_ctx_train, kMaxCtx)}) {
    if (!st) return st;
  }
  if (!std::isfinite(s.rope_freq_base) || s.rope_freq_base <= 0.0f || s.rope_freq_base > 1e9f) {
    return Status::invalid_argument("rope_freq_base must be in (0, 1e9]", "rope_freq_base");
  }
  if (!std::isfinite(s.rms_eps) || s.rms_eps <= 0.0f || s.rms_eps >= 1.0f) {
    return Status::invalid_argument("rms_eps must be in (0, 1)", "rms_eps");
  }
  if (s.n_embd % s.n_head != 0) {
    return Status::invalid_argument("n_embd (" + std::to_string(s.n_embd) + ") is not divisible by n_head (" +
                                        std::to_string(s.n_head) + ")",
                                    "n_embd");
  }
  const uint32_t head_dim = s.n_embd / s.n_head;
  if (head_dim % 2 != 0) {
    return Status::invalid_argument("head_dim = n_embd / n_head (" + std::to_string(head_dim) +
                                        ") must be even for RoPE",
                                    "head_dim");
  }
  if (s.n_head % s.n_head_kv != 0) {
    return Status::invalid_argument("n_head (" + std::to_string(s.n_head) + ") is not divisible by n_head_kv (" +
                                        std::to_string(s.n_head_kv) + ")",
                                    "n_head_kv");
  }
  if (is_quantized(type)) {
    const std::string tn(weight_type_name(type));
    if (s.n_embd % kQuantBlock != 0) {
      return Status::invalid_argument("n_embd (" + std::to_string(s.n_embd) + ") must be a multiple of " +
                                          std::to_string(kQuantBlock) + " (the " + tn + " block size)",
                                      "n_embd");
    }
    if (s.n_ff % kQuantBlock != 0) {
      return Status::invalid_argument("n_ff (" + std::to_string(s.n_ff) + ") must be a multiple of " +
                                          std::to_string(kQuantBlock) + " (the " + tn + " block size)",
                                      "n_ff");
    }
  }
  return Status::ok();
}

std::span<const ModelPreset> model_presets() { return kPresets; }

Result<ModelPreset> find_model_preset(std::string_view name) {
  std::string known;
  for (const ModelPreset& p : kPresets) {
    if (p.name == name) return p;
    if (!known.empty()) known += ", ";
    known += p.name;
  }
  return Status::not_found("unknown preset '" + std::string(name.substr(0, 64)) + "' (known: " + known + ")",
                           "preset");
}

std::string vocab_file_path(std::string_view vocab_dir, std::string_view vocab_name) {
  std::string path(vocab_dir);
  if (!path.empty() && path.back() != '/') path += '/';
  path += "ggml-vocab-";
  path += vocab_name;
  path += ".gguf";
  return path;
}

Status write_model(const ModelWriterOptions& options, WrittenModel* written) {
  // ggml and std::thread can throw (bad_alloc, system_error); keep them inside.
  try {
    return write_model_impl(options, written);
  } catch (const std::exception& e) {
    return Status::internal(std::string("writing model failed: ") + e.what());
  }
}

}  // namespace llmpool::engine
