// Unit tests for engine/model_writer: determinism, validation, metadata.
// Writes only tiny files (the llama-spm vocab with small shapes); reads them
// back with gguf.h and never loads a model.
#include "engine/model_writer.h"

#include <gguf.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

namespace llmpool::engine {
namespace {

namespace fs = std::filesystem;

struct GgufDeleter {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;

struct GgmlDeleter {
  void operator()(ggml_context* ctx) const { ggml_free(ctx); }
};
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

GgufPtr open_gguf(const std::string& path) {
  return GgufPtr{gguf_init_from_file(path.c_str(), gguf_init_params{true, nullptr})};
}

// Bytes of one GGUF scalar, 0 for strings and arrays.
size_t scalar_size(gguf_type type) {
  switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
  }
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class ModelWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(LLMPOOL_TEST_MODELS_DIR) / "model_writer_test" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
    vocab_ = vocab_file_path(LLMPOOL_VOCAB_DIR, "llama-spm");
    ASSERT_TRUE(fs::exists(vocab_)) << vocab_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Tiny shape, small enough that a file is ~0.1-1 MB.
  ModelWriterOptions options(const std::string& file, WeightType type = WeightType::kQ8_0) const {
    ModelWriterOptions o;
    o.shape = ModelShape{64, 1, 4, 2, 96, 512, 10000.0f, 1e-5f};
    o.type = type;
    o.seed = 7;
    o.vocab_path = vocab_;
    o.output_path = (dir_ / file).string();
    o.n_threads = 2;
    return o;
  }

  fs::path dir_;
  std::string vocab_;
};

TEST_F(ModelWriterTest, SameSeedWritesIdenticalBytes) {
  auto a = options("a.gguf");
  auto b = options("b.gguf");
  b.n_threads = 1;  // the thread count must not matter
  ASSERT_TRUE(write_model(a).is_ok());
  ASSERT_TRUE(write_model(b).is_ok());
  const auto bytes_a = read_bytes(a.output_path);
  EXPECT_GT(bytes_a.size(), 100000u);
  EXPECT_TRUE(bytes_a == read_bytes(b.output_path));
}

TEST_F(ModelWriterTest, DifferentSeedWritesDifferentBytes) {
  auto a = options("a.gguf");
  auto b = options("b.gguf");
  b.seed = 8;
  ASSERT_TRUE(write_model(a).is_ok());
  ASSERT_TRUE(write_model(b).is_ok());
  const auto bytes_a = read_bytes(a.output_path);
  const auto bytes_b = read_bytes(b.output_path);
  ASSERT_EQ(bytes_a.size(), bytes_b.size());
  EXPECT_FALSE(bytes_a == bytes_b);
}

TEST_F(ModelWriterTest, ThreadCountDoesNotChangeLargeTensors) {
  // Large enough that fill_segment splits rows across threads.
  auto a = options("a.gguf", WeightType::kQ4_0);
  a.shape.n_embd = 256;
  a.shape.n_ff = 512;
  a.n_threads = 4;
  auto b = a;
  b.output_path = (dir_ / "b.gguf").string();
  b.n_threads = 1;
  ASSERT_TRUE(write_model(a).is_ok());
  ASSERT_TRUE(write_model(b).is_ok());
  EXPECT_TRUE(read_bytes(a.output_path) == read_bytes(b.output_path));
}

TEST_F(ModelWriterTest, ReportsSizeAndParameters) {
  auto o = options("m.gguf");
  WrittenModel w;
  ASSERT_TRUE(write_model(o, &w).is_ok());
  EXPECT_EQ(w.n_vocab, 32000u);
  EXPECT_EQ(w.file_size, fs::file_size(o.output_path));
  // token_embd + output, one layer (q, k, v, o, gate, up, down, 2 norms), output_norm.
  const uint64_t e = 64, kv = 32, ff = 96, v = 32000;
  EXPECT_EQ(w.n_params, 2 * e * v + (e * e * 2 + e * kv * 2 + 3 * e * ff + 2 * e) + e);
  EXPECT_EQ(w.n_tensors, 1u + 9u + 2u);
  EXPECT_FALSE(fs::exists(o.output_path + ".tmp"));
}

TEST_F(ModelWriterTest, TiedEmbeddingsOmitOutputWeight) {
  auto o = options("m.gguf");
  o.tie_embeddings = true;
  ASSERT_TRUE(write_model(o).is_ok());
  auto g = open_gguf(o.output_path);
  ASSERT_TRUE(g);
  EXPECT_EQ(gguf_find_tensor(g.get(), "output.weight"), -1);
  EXPECT_GE(gguf_find_tensor(g.get(), "token_embd.weight"), 0);
}

TEST_F(ModelWriterTest, CopiesEveryTokenizerKeyAndSetsChatTemplate) {
  auto o = options("m.gguf");
  ASSERT_TRUE(write_model(o).is_ok());
  auto out = open_gguf(o.output_path);
  auto voc = open_gguf(vocab_);
  ASSERT_TRUE(out);
  ASSERT_TRUE(voc);
  int copied = 0;
  for (int64_t i = 0; i < gguf_get_n_kv(voc.get()); ++i) {
    const std::string key = gguf_get_key(voc.get(), i);
    if (!key.starts_with("tokenizer.") || key == "tokenizer.chat_template") continue;
    SCOPED_TRACE(key);
    const int64_t j = gguf_find_key(out.get(), key.c_str());
    ASSERT_GE(j, 0);
    const gguf_type type = gguf_get_kv_type(voc.get(), i);
    ASSERT_EQ(gguf_get_kv_type(out.get(), j), type);
    if (type == GGUF_TYPE_ARRAY) {
      const gguf_type at = gguf_get_arr_type(voc.get(), i);
      ASSERT_EQ(gguf_get_arr_type(out.get(), j), at);
      const size_t n = gguf_get_arr_n(voc.get(), i);
      ASSERT_EQ(gguf_get_arr_n(out.get(), j), n);
      if (at == GGUF_TYPE_STRING) {
        for (size_t k = 0; k < n; ++k) {
          ASSERT_STREQ(gguf_get_arr_str(out.get(), j, k), gguf_get_arr_str(voc.get(), i, k)) << k;
        }
      } else {
        ASSERT_GT(scalar_size(at), 0u);
        EXPECT_EQ(std::memcmp(gguf_get_arr_data(out.get(), j), gguf_get_arr_data(voc.get(), i), n * scalar_size(at)),
                  0);
      }
    } else if (type == GGUF_TYPE_STRING) {
      EXPECT_STREQ(gguf_get_val_str(out.get(), j), gguf_get_val_str(voc.get(), i));
    } else {
      ASSERT_GT(scalar_size(type), 0u);
      EXPECT_EQ(std::memcmp(gguf_get_val_data(out.get(), j), gguf_get_val_data(voc.get(), i), scalar_size(type)), 0);
    }
    ++copied;
  }
  EXPECT_GE(copied, 8);  // model, pre, tokens, scores, token_type, bos, eos, unk, ...

  const int64_t t = gguf_find_key(out.get(), "tokenizer.chat_template");
  ASSERT_GE(t, 0);
  const std::string tmpl = gguf_get_val_str(out.get(), t);
  EXPECT_EQ(tmpl, kChatMlTemplate);
  EXPECT_NE(tmpl.find("<|im_start|>"), std::string::npos);
}

TEST_F(ModelWriterTest, WritesLlamaHyperparameters) {
  auto o = options("m.gguf", WeightType::kF16);
  o.name = "unit-test-model";
  ASSERT_TRUE(write_model(o).is_ok());
  auto g = open_gguf(o.output_path);
  ASSERT_TRUE(g);
  auto u32 = [&](const char* key) {
    const int64_t id = gguf_find_key(g.get(), key);
    EXPECT_GE(id, 0) << key;
    return id < 0 ? 0u : gguf_get_val_u32(g.get(), id);
  };
  auto str = [&](const char* key) {
    const int64_t id = gguf_find_key(g.get(), key);
    EXPECT_GE(id, 0) << key;
    return id < 0 ? std::string() : std::string(gguf_get_val_str(g.get(), id));
  };
  EXPECT_EQ(str("general.architecture"), "llama");
  EXPECT_EQ(str("general.name"), "unit-test-model");
  EXPECT_EQ(u32("general.file_type"), 1u);  // LLAMA_FTYPE_MOSTLY_F16
  EXPECT_EQ(u32("llama.context_length"), 512u);
  EXPECT_EQ(u32("llama.embedding_length"), 64u);
  EXPECT_EQ(u32("llama.block_count"), 1u);
  EXPECT_EQ(u32("llama.feed_forward_length"), 96u);
  EXPECT_EQ(u32("llama.attention.head_count"), 4u);
  EXPECT_EQ(u32("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(u32("llama.rope.dimension_count"), 16u);
  EXPECT_EQ(u32("llama.vocab_size"), 32000u);
  EXPECT_FLOAT_EQ(gguf_get_val_f32(g.get(), gguf_find_key(g.get(), "llama.rope.freq_base")), 10000.0f);
  EXPECT_FLOAT_EQ(gguf_get_val_f32(g.get(), gguf_find_key(g.get(), "llama.attention.layer_norm_rms_epsilon")),
                  1e-5f);
  // block_count above is ours, not the vocab file's (32): only tokenizer.* keys are copied.
}

TEST_F(ModelWriterTest, StoresEachTypeWithNormsInF32) {
  for (WeightType type : {WeightType::kF16, WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kF32}) {
    SCOPED_TRACE(std::string(weight_type_name(type)));
    auto o = options(std::string(weight_type_name(type)) + ".gguf", type);
    WrittenModel w;
    ASSERT_TRUE(write_model(o, &w).is_ok());
    auto g = open_gguf(o.output_path);
    ASSERT_TRUE(g);
    const ggml_type expected = type == WeightType::kF16    ? GGML_TYPE_F16
                               : type == WeightType::kQ8_0 ? GGML_TYPE_Q8_0
                               : type == WeightType::kQ4_0 ? GGML_TYPE_Q4_0
                                                           : GGML_TYPE_F32;
    EXPECT_EQ(gguf_get_tensor_type(g.get(), gguf_find_tensor(g.get(), "blk.0.ffn_down.weight")), expected);
    EXPECT_EQ(gguf_get_tensor_type(g.get(), gguf_find_tensor(g.get(), "token_embd.weight")), expected);
    EXPECT_EQ(gguf_get_tensor_type(g.get(), gguf_find_tensor(g.get(), "blk.0.attn_norm.weight")), GGML_TYPE_F32);
    EXPECT_EQ(gguf_get_tensor_type(g.get(), gguf_find_tensor(g.get(), "output_norm.weight")), GGML_TYPE_F32);
    // The data section ends exactly at the end of the file.
    const int64_t last = gguf_get_n_tensors(g.get()) - 1;
    const size_t end = gguf_get_data_offset(g.get()) + gguf_get_tensor_offset(g.get(), last) +
                       GGML_PAD(gguf_get_tensor_size(g.get(), last), gguf_get_alignment(g.get()));
    EXPECT_EQ(end, fs::file_size(o.output_path));
  }
}

TEST_F(ModelWriterTest, WeightsAreSmallAndCenteredNormsAreOne) {
  auto o = options("f32.gguf", WeightType::kF32);
  ASSERT_TRUE(write_model(o).is_ok());
  ggml_context* raw = nullptr;
  GgufPtr g{gguf_init_from_file(o.output_path.c_str(), gguf_init_params{false, &raw})};
  GgmlPtr data{raw};
  ASSERT_TRUE(g);
  ASSERT_TRUE(data);
  const ggml_tensor* embd = ggml_get_tensor(data.get(), "token_embd.weight");
  ASSERT_NE(embd, nullptr);
  const auto* w = static_cast<const float*>(embd->data);
  const int64_t n = ggml_nelements(embd);
  double sum = 0, sum2 = 0, max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(w[i]));
    sum += w[i];
    sum2 += double(w[i]) * w[i];
    max_abs = std::max(max_abs, std::fabs(double(w[i])));
  }
  const double mean = sum / n;
  const double sd = std::sqrt(sum2 / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-4);
  EXPECT_NEAR(sd, 0.02, 5e-4);
  EXPECT_LT(max_abs, 0.02 * 3.5);  // Irwin-Hall(4) is bounded by ±sqrt(12) sd
  EXPECT_GT(max_abs, 0.02 * 2.5);

  const ggml_tensor* norm = ggml_get_tensor(data.get(), "blk.0.ffn_norm.weight");
  ASSERT_NE(norm, nullptr);
  for (int64_t i = 0; i < ggml_nelements(norm); ++i) EXPECT_EQ(static_cast<const float*>(norm->data)[i], 1.0f);
}

TEST_F(ModelWriterTest, RejectsBadDimensionsNamingTheField) {
  struct Case {
    const char* field;
    ModelShape shape;
    WeightType type;
  };
  const ModelShape ok{64, 1, 4, 2, 96, 512, 10000.0f, 1e-5f};
  auto with = [&](auto change) {
    ModelShape s = ok;
    change(s);
    return s;
  };
  const Case cases[] = {
      {"n_embd", with([](ModelShape& s) { s.n_embd = 0; }), WeightType::kF16},
      {"n_layer", with([](ModelShape& s) { s.n_layer = 0; }), WeightType::kF16},
      {"n_layer", with([](ModelShape& s) { s.n_layer = 100000; }), WeightType::kF16},
      {"n_head_kv", with([](ModelShape& s) { s.n_head_kv = 0; }), WeightType::kF16},
      {"n_ctx_train", with([](ModelShape& s) { s.n_ctx_train = 0; }), WeightType::kF16},
      {"n_embd", with([](ModelShape& s) { s.n_head = 3; }), WeightType::kF16},       // 64 % 3
      {"head_dim", with([](ModelShape& s) { s.n_embd = 60; s.n_head = 4; }), WeightType::kF16},  // 15
      {"n_head_kv", with([](ModelShape& s) { s.n_head_kv = 3; }), WeightType::kF16},  // 4 % 3
      {"n_embd", with([](ModelShape& s) { s.n_embd = 48; }), WeightType::kQ8_0},      // 48 % 32
      {"n_ff", with([](ModelShape& s) { s.n_ff = 100; }), WeightType::kQ4_0},         // 100 % 32
      {"rope_freq_base", with([](ModelShape& s) { s.rope_freq_base = -1.0f; }), WeightType::kF16},
      {"rms_eps", with([](ModelShape& s) { s.rms_eps = 0.0f; }), WeightType::kF16},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    auto o = options("bad.gguf", c.type);
    o.shape = c.shape;
    const Status s = write_model(o);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.param(), c.field) << s.to_string();
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message();
    EXPECT_FALSE(fs::exists(o.output_path));
    EXPECT_FALSE(fs::exists(o.output_path + ".tmp"));
  }
}

TEST_F(ModelWriterTest, AcceptsUnalignedDimensionsForFloatTypes) {
  auto o = options("f16.gguf", WeightType::kF16);
  o.shape.n_embd = 48;
  o.shape.n_ff = 100;
  EXPECT_TRUE(write_model(o).is_ok());
  EXPECT_TRUE(validate_shape(o.shape, WeightType::kF32).is_ok());
  EXPECT_FALSE(validate_shape(o.shape, WeightType::kQ8_0).is_ok());
}

TEST_F(ModelWriterTest, MissingVocabIsNotFound) {
  auto o = options("m.gguf");
  o.vocab_path = (dir_ / "no-such-vocab.gguf").string();
  const Status s = write_model(o);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.to_string();
  EXPECT_NE(s.message().find(o.vocab_path), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(o.output_path));
  EXPECT_FALSE(fs::exists(o.output_path + ".tmp"));
}

TEST_F(ModelWriterTest, VocabThatIsNotGgufIsInvalidArgument) {
  const auto junk = dir_ / "junk.gguf";
  std::ofstream(junk) << "this is not a gguf file";
  auto o = options("m.gguf");
  o.vocab_path = junk.string();
  const Status s = write_model(o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_EQ(s.param(), "vocab_path");
  EXPECT_FALSE(fs::exists(o.output_path));
}

TEST_F(ModelWriterTest, MissingOutputDirectoryIsNotFound) {
  auto o = options("m.gguf");
  o.output_path = (dir_ / "no-such-dir" / "m.gguf").string();
  const Status s = write_model(o);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.to_string();
  EXPECT_EQ(s.param(), "output_path");
}

TEST_F(ModelWriterTest, ReplacesAnExistingFile) {
  auto o = options("m.gguf");
  std::ofstream(o.output_path) << "old";
  ASSERT_TRUE(write_model(o).is_ok());
  EXPECT_GT(fs::file_size(o.output_path), 100000u);
  EXPECT_FALSE(fs::exists(o.output_path + ".tmp"));
}

TEST(ModelPresetTest, FindsPresetsByName) {
  auto tiny = find_model_preset("tiny");
  ASSERT_TRUE(tiny.is_ok());
  EXPECT_EQ(tiny->vocab_name, "llama-spm");
  EXPECT_EQ(tiny->shape.n_embd, 64u);
  EXPECT_EQ(tiny->shape.n_layer, 2u);
  EXPECT_EQ(tiny->shape.n_head, 4u);
  EXPECT_EQ(tiny->shape.n_head_kv, 2u);
  EXPECT_EQ(tiny->shape.n_ff, 128u);
  EXPECT_EQ(tiny->shape.n_ctx_train, 4096u);

  auto bench = find_model_preset("bench-0.5b");
  ASSERT_TRUE(bench.is_ok());
  EXPECT_EQ(bench->vocab_name, "qwen2");
  EXPECT_EQ(bench->shape.n_embd, 896u);
  EXPECT_EQ(bench->shape.n_layer, 24u);
  EXPECT_EQ(bench->shape.n_head, 14u);
  EXPECT_EQ(bench->shape.n_head_kv, 2u);
  EXPECT_EQ(bench->shape.n_ff, 4864u);
  EXPECT_EQ(bench->shape.n_ctx_train, 32768u);

  for (const ModelPreset& p : model_presets()) {
    for (WeightType t : {WeightType::kF16, WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kF32}) {
      EXPECT_TRUE(validate_shape(p.shape, t).is_ok()) << p.name << " " << weight_type_name(t);
    }
  }
}

TEST(ModelPresetTest, UnknownPresetIsNotFoundListingKnownNames) {
  auto p = find_model_preset("huge");
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(p.status().param(), "preset");
  EXPECT_NE(p.status().message().find("bench-0.5b"), std::string::npos);
}

TEST(ChatTemplateTest, MatchesTheQwen2VocabTemplate) {
  auto g = open_gguf(vocab_file_path(LLMPOOL_VOCAB_DIR, "qwen2"));
  ASSERT_TRUE(g);
  const int64_t id = gguf_find_key(g.get(), "tokenizer.chat_template");
  ASSERT_GE(id, 0);
  EXPECT_EQ(std::string_view(gguf_get_val_str(g.get(), id)), kChatMlTemplate);
}

TEST(WeightTypeTest, NamesRoundTrip) {
  for (WeightType t : {WeightType::kF16, WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kF32}) {
    auto parsed = parse_weight_type(weight_type_name(t));
    ASSERT_TRUE(parsed.is_ok());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(weight_type_name(WeightType::kQ8_0), "q8_0");
  auto bad = parse_weight_type("q5_k");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().param(), "type");
}

TEST(VocabFilePathTest, JoinsDirectoryAndName) {
  EXPECT_EQ(vocab_file_path("/v", "qwen2"), "/v/ggml-vocab-qwen2.gguf");
  EXPECT_EQ(vocab_file_path("/v/", "llama-spm"), "/v/ggml-vocab-llama-spm.gguf");
}

}  // namespace
}  // namespace llmpool::engine
