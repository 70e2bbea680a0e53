// The training path: a few steps of the `test` preset on one fortune file.
// Determinism (same seed, same loss curve and bytes), learning (the loss
// falls), the draft sharing the target's vocabulary, loading the result in
// the engine, and bad options.
#include "train/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "engine/local_model.h"
#include "train/corpus.h"

namespace llmpool::train {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFortunes = "/usr/share/games/fortunes/fortunes";  // Debian's fortunes-min

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto corpus = read_corpus({kFortunes});
    ASSERT_TRUE(corpus.is_ok()) << corpus.status().to_string() << " (scripts/setup installs fortunes-min)";
    documents_ = new std::vector<std::string>(std::move(corpus->documents));
  }
  static void TearDownTestSuite() {
    delete documents_;
    documents_ = nullptr;
  }
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("llmpool-train-" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  TrainOptions options(const std::string& out, int64_t steps = 4, uint64_t seed = 7) const {
    auto preset = find_train_preset("test");
    EXPECT_TRUE(preset.is_ok());
    TrainOptions o;
    o.documents = *documents_;
    o.shape = preset->shape;
    o.vocab_size = preset->vocab_size;
    o.seq_len = preset->seq_len;
    o.lr = preset->lr;
    o.steps = steps;
    o.seed = seed;
    o.threads = 2;
    o.type = engine::WeightType::kQ8_0;
    o.output_path = (dir_ / out).string();
    return o;
  }

  static std::vector<std::string>* documents_;
  fs::path dir_;
};
std::vector<std::string>* TrainerTest::documents_ = nullptr;

TEST_F(TrainerTest, SameSeedGivesTheSameLossCurveAndTheSameFile) {
  auto a = train_model(options("a.gguf"));
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  auto b = train_model(options("b.gguf"));
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  ASSERT_EQ(a->losses.size(), 4u);
  EXPECT_EQ(a->losses, b->losses);
  EXPECT_EQ(file_bytes(dir_ / "a.gguf"), file_bytes(dir_ / "b.gguf"));
  auto c = train_model(options("c.gguf", 4, 8));
  ASSERT_TRUE(c.is_ok());
  EXPECT_NE(a->losses, c->losses);
  // Nothing but the outputs is left in the folder.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 3);
}

TEST_F(TrainerTest, LossFallsAndProgressIsReportedEveryStep) {
  TrainOptions o = options("m.gguf", 40);
  std::vector<TrainProgress> seen;
  o.on_progress = [&](const TrainProgress& p) { seen.push_back(p); };
  auto r = train_model(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->losses.size(), 40u);
  const double first = r->losses.front();
  double last5 = 0;
  for (size_t i = 35; i < 40; ++i) last5 += r->losses[i] / 5;
  EXPECT_NEAR(first, std::log(512.0), 0.5);  // a uniform guess over the vocabulary
  EXPECT_LT(last5, first - 1.0) << "first " << first << ", last five " << last5;
  EXPECT_TRUE(std::isfinite(r->eval_loss));
  EXPECT_GT(r->eval_windows, 0);
  size_t train_steps = 0;
  for (const TrainProgress& p : seen) {
    if (p.phase != TrainProgress::Phase::kTrain) continue;
    ++train_steps;
    EXPECT_EQ(p.step, static_cast<int64_t>(train_steps));
    EXPECT_EQ(p.steps, 40);
    EXPECT_GT(p.lr, 0);
    EXPECT_GE(p.tokens_per_second, 0);
  }
  EXPECT_EQ(train_steps, 40u);
  EXPECT_EQ(seen.back().phase, TrainProgress::Phase::kEval);
}

TEST_F(TrainerTest, TheTrainedModelLoadsAndAnswersInTheEngine) {
  auto r = train_model(options("m.gguf", 20));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  engine::LocalModelSpec spec;
  spec.name = "trained";
  spec.path = (dir_ / "m.gguf").string();
  spec.context = 512;
  spec.parallel = 1;
  spec.threads = 1;
  auto model = engine::LocalModel::load(spec);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  // The chat template survived training (ChatML) and the vocabulary is the learned one.
  auto chat = (*model)->format_chat({{"user", "Hello"}});
  ASSERT_TRUE(chat.is_ok()) << chat.status().to_string();
  EXPECT_NE(chat->find("<|im_start|>assistant"), std::string::npos);
  auto toks = (*model)->tokenize("<|im_end|>", false, true);
  ASSERT_TRUE(toks.is_ok());
  EXPECT_EQ(*toks, std::vector<int32_t>{4});
}

TEST_F(TrainerTest, ADraftTrainedOnTheTargetsVocabularySharesIt) {
  auto target = train_model(options("target.gguf", 2));
  ASSERT_TRUE(target.is_ok()) << target.status().to_string();
  TrainOptions o = options("draft.gguf", 2, 9);
  o.vocab_path = (dir_ / "target.gguf").string();
  o.shape.n_ff = 64;
  auto draft = train_model(o);
  ASSERT_TRUE(draft.is_ok()) << draft.status().to_string();
  EXPECT_EQ(draft->n_vocab, target->n_vocab);
  for (const auto* name : {"target.gguf", "draft.gguf"}) {
    engine::LocalModelSpec spec;
    spec.name = name;
    spec.path = (dir_ / name).string();
    spec.context = 256;
    spec.parallel = 1;
    spec.threads = 1;
    auto m = engine::LocalModel::load(spec);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    auto t = (*m)->tokenize("the meaning of life", false, false);
    ASSERT_TRUE(t.is_ok());
    static std::vector<int32_t> first;
    if (first.empty()) {
      first = *t;
    } else {
      EXPECT_EQ(*t, first);
    }
  }
}

TEST_F(TrainerTest, RejectsBadOptionsNamingTheField) {
  struct Case {
    const char* param;
    std::function<void(TrainOptions&)> edit;
  };
  const std::vector<Case> cases = {
      {"seq-len", [](TrainOptions& o) { o.seq_len = 100; }},
      {"seq-len", [](TrainOptions& o) { o.seq_len = 8192; }},
      {"steps", [](TrainOptions& o) { o.steps = 0; }},
      {"epochs", [](TrainOptions& o) { o.epochs = -1; }},
      {"lr", [](TrainOptions& o) { o.lr = std::nanf(""); }},
      {"lr", [](TrainOptions& o) { o.lr = 2; }},
      {"threads", [](TrainOptions& o) { o.threads = 0; }},
      {"vocab-size", [](TrainOptions& o) { o.vocab_size = 10; }},
      {"n_embd", [](TrainOptions& o) { o.shape.n_head = 3; }},
      {"out", [](TrainOptions& o) { o.output_path.clear(); }},
      {"corpus", [](TrainOptions& o) { o.documents.clear(); }},
      {"corpus", [](TrainOptions& o) { o.documents = {"too short"}; }},
  };
  for (const Case& c : cases) {
    TrainOptions o = options("bad.gguf");
    c.edit(o);
    auto r = train_model(o);
    ASSERT_FALSE(r.is_ok()) << c.param;
    EXPECT_EQ(r.status().param(), c.param) << r.status().to_string();
  }
  TrainOptions o = options("nowhere/bad.gguf");
  EXPECT_EQ(train_model(o).status().code(), StatusCode::kNotFound);
  o = options("bad.gguf");
  o.vocab_path = (dir_ / "missing.gguf").string();
  EXPECT_EQ(train_model(o).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir_ / "bad.gguf"));
  EXPECT_EQ(find_train_preset("nope").status().param(), "preset");
}

}  // namespace
}  // namespace llmpool::train
