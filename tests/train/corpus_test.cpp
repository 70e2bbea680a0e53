// The corpus reader: fortune separators, normalisation, folders, hostile files.
#include "train/corpus.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace llmpool::train {
namespace {

namespace fs = std::filesystem;

class CorpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("llmpool-corpus-" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  fs::path dir_;
};

TEST_F(CorpusTest, SplitsAtPercentLinesAndNormalisesWhitespace) {
  std::vector<std::string> docs;
  const size_t dropped =
      split_documents("\n  A  fool\tand his   money  \n\n%\n%\nare soon\r\n  parted.\n\t\t-- Anon\n%\n", 4096, docs);
  EXPECT_EQ(dropped, 0u);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "A fool and his money");
  EXPECT_EQ(docs[1], "are soon\nparted.\n-- Anon");
}

TEST_F(CorpusTest, DropsControlCharactersAndLongDocuments) {
  std::vector<std::string> docs;
  const size_t dropped = split_documents("be\x07l\x1bl\n%\n" + std::string(100, 'x') + "\n%\nok", 50, docs);
  EXPECT_EQ(dropped, 1u);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "bell");
  EXPECT_EQ(docs[1], "ok");
}

TEST_F(CorpusTest, ReadsAFolderInNameOrderSkippingIndexesAndDuplicateLinks) {
  write("b", "second\n%\nthird\n");
  write("a", "first\n");
  write("a.dat", std::string("\0\1\2binary", 9));
  fs::create_symlink(dir_ / "a", dir_ / "a.u8");
  auto corpus = read_corpus({dir_.string()});
  ASSERT_TRUE(corpus.is_ok()) << corpus.status().to_string();
  EXPECT_EQ(corpus->documents, (std::vector<std::string>{"first", "second", "third"}));
  EXPECT_EQ(corpus->files.size(), 2u);
}

TEST_F(CorpusTest, ReadsListedFilesOnceEach) {
  const fs::path a = write("a", "one\n%\ntwo");
  auto corpus = read_corpus({a.string(), a.string()});
  ASSERT_TRUE(corpus.is_ok());
  EXPECT_EQ(corpus->documents.size(), 2u);
}

TEST_F(CorpusTest, RejectsBinaryAndInvalidUtf8FilesByName) {
  const fs::path bin = write("bin", std::string("text\0more", 9));
  auto r = read_corpus({bin.string()});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("bin"), std::string::npos);
  for (const std::string bad : {"\xff\xfe", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok \xe2\x82"}) {
    const fs::path p = write("latin1", bad);
    auto s = read_corpus({p.string()});
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.status().message().find("UTF-8"), std::string::npos);
  }
}

TEST_F(CorpusTest, MissingEmptyAndOversizedCorporaAreErrors) {
  EXPECT_EQ(read_corpus({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(read_corpus({(dir_ / "nope").string()}).status().code(), StatusCode::kNotFound);
  const fs::path empty = write("empty", "\n%\n%\n   \n");
  EXPECT_EQ(read_corpus({empty.string()}).status().code(), StatusCode::kInvalidArgument);
  const fs::path big = write("big", std::string(2000, 'a'));
  CorpusLimits limits;
  limits.max_file_bytes = 1000;
  auto r = read_corpus({big.string()}, limits);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().param(), "corpus");
}

}  // namespace
}  // namespace llmpool::train
