#include "router/decision_log.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace llmpool::router {
namespace {

using namespace std::chrono_literals;

class DecisionLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("llmpool-decision-log-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

  // A log at dir_/log.jsonl that writes only on flush(), rotating at
  // `max_bytes` with `keep` files.
  std::unique_ptr<DecisionLog> rotating(uint64_t max_bytes, int32_t keep) {
    DecisionLog::Options o;
    o.flush_interval = std::chrono::hours(1);
    o.max_bytes = max_bytes;
    o.keep = keep;
    auto log = DecisionLog::open(path(), o);
    EXPECT_TRUE(log.is_ok()) << log.status().message();
    return log ? std::move(log).value() : nullptr;
  }
  std::string path() const { return (dir_ / "log.jsonl").string(); }

  std::filesystem::path dir_;
};

// A line of exactly `size` bytes with the newline, numbered.
std::string line_of(int i, size_t size) {
  std::string s = "{\"i\":" + std::to_string(i) + ",\"pad\":\"";
  s.resize(size - 3, 'x');
  return s + "\"}";
}

TEST_F(DecisionLogTest, RotatesBySizeKeepingWholeLinesAndTheNewestFiles) {
  const std::string path = this->path();
  auto log = rotating(1000, 2);
  ASSERT_NE(log, nullptr);
  for (int i = 0; i < 45; ++i) {
    log->append(line_of(i, 100));
    if (i % 7 == 0) log->flush();  // batches of every size, across file ends
  }
  log->flush();
  EXPECT_EQ(log->written(), 45);
  EXPECT_EQ(log->rotations(), 4);
  // 45 lines: 0-9, 10-19 deleted; 20-29 in .2, 30-39 in .1, 40-44 current.
  auto numbers = [&](const std::string& p) {
    std::vector<int> out;
    for (const auto& l : lines(p)) out.push_back(std::stoi(l.substr(5)));
    return out;
  };
  auto range = [](int from, int to) {
    std::vector<int> out;
    for (int i = from; i < to; ++i) out.push_back(i);
    return out;
  };
  EXPECT_EQ(numbers(path + ".2"), range(20, 30));
  EXPECT_EQ(numbers(path + ".1"), range(30, 40));
  EXPECT_EQ(numbers(path), range(40, 45));
  EXPECT_FALSE(std::filesystem::exists(path + ".3"));
  for (const char* suffix : {"", ".1", ".2"})
    EXPECT_LE(std::filesystem::file_size(path + suffix), 1000u) << suffix;
}

TEST_F(DecisionLogTest, ALineLongerThanTheLimitGetsAFileOfItsOwn) {
  const std::string path = this->path();
  auto log = rotating(300, 3);
  ASSERT_NE(log, nullptr);
  log->append(line_of(0, 100));
  log->append(line_of(1, 500));
  log->append(line_of(2, 100));
  log->flush();
  EXPECT_EQ(lines(path + ".2").size(), 1u);
  ASSERT_EQ(lines(path + ".1").size(), 1u);
  EXPECT_EQ(lines(path + ".1")[0].size(), 499u);  // whole, never cut
  EXPECT_EQ(lines(path).size(), 1u);
  EXPECT_EQ(log->written(), 3);
}

TEST_F(DecisionLogTest, KeepZeroStartsOverAndALimitOfZeroNeverRotates) {
  const std::string path = this->path();
  auto log = rotating(200, 0);
  ASSERT_NE(log, nullptr);
  for (int i = 0; i < 5; ++i) log->append(line_of(i, 100));
  log->flush();
  EXPECT_EQ(lines(path).size(), 1u);  // 4 is alone in a new file
  EXPECT_FALSE(std::filesystem::exists(path + ".1"));
  log->set_rotation(0, 3);
  for (int i = 0; i < 20; ++i) log->append(line_of(i, 100));
  log->flush();
  EXPECT_EQ(lines(path).size(), 21u);
  EXPECT_FALSE(std::filesystem::exists(path + ".1"));
}

TEST_F(DecisionLogTest, AFileLeftByAnEarlierRunCountsTowardsTheLimit) {
  const std::string path = this->path();
  std::filesystem::create_directories(dir_);
  std::ofstream(path) << line_of(0, 100) << "\n" << line_of(1, 100) << "\n";
  auto log = rotating(250, 1);
  ASSERT_NE(log, nullptr);
  log->append(line_of(2, 100));
  log->flush();
  EXPECT_EQ(lines(path + ".1").size(), 2u);
  EXPECT_EQ(lines(path).size(), 1u);
}

TEST_F(DecisionLogTest, CreatesItsFolderAppendsAndFlushesOnDestruction) {
  std::string path = (dir_ / "sub" / "log.jsonl").string();
  {
    DecisionLog::Options o;
    o.flush_interval = 1h;  // only flush() and the destructor write
    auto log = DecisionLog::open(path, o);
    ASSERT_TRUE(log.is_ok()) << log.status().message();
    (*log)->append("{\"a\":1}");
    (*log)->append("{\"a\":2}");
    EXPECT_EQ(lines(path).size(), 0u);  // buffered, not written yet
    (*log)->flush();
    EXPECT_EQ(lines(path), (std::vector<std::string>{"{\"a\":1}", "{\"a\":2}"}));
    EXPECT_EQ((*log)->written(), 2);
    (*log)->append("{\"a\":3}");
  }
  EXPECT_EQ(lines(path).size(), 3u);
  // A second log on the same file appends.
  auto again = DecisionLog::open(path);
  ASSERT_TRUE(again.is_ok());
  (*again)->append("{\"a\":4}");
  (*again)->flush();
  EXPECT_EQ(lines(path).back(), "{\"a\":4}");
}

TEST_F(DecisionLogTest, TheWriterThreadWritesWithoutBeingAsked) {
  std::string path = (dir_ / "log.jsonl").string();
  DecisionLog::Options o;
  o.flush_interval = 10ms;
  auto log = DecisionLog::open(path, o);
  ASSERT_TRUE(log.is_ok());
  (*log)->append("x");
  for (int i = 0; i < 500 && (*log)->written() < 1; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(lines(path), std::vector<std::string>{"x"});
}

TEST_F(DecisionLogTest, LinesPastTheBufferLimitAreDroppedAndCounted) {
  std::string path = (dir_ / "log.jsonl").string();
  DecisionLog::Options o;
  o.flush_interval = 1h;
  o.flush_bytes = 1 << 20;
  o.max_buffer = 10;
  auto log = DecisionLog::open(path, o);
  ASSERT_TRUE(log.is_ok());
  (*log)->append("12345");    // 6 bytes with the newline
  (*log)->append("6789abc");  // would pass 10: dropped
  EXPECT_EQ((*log)->dropped(), 1);
  (*log)->flush();
  EXPECT_EQ(lines(path), std::vector<std::string>{"12345"});
}

TEST_F(DecisionLogTest, ConcurrentAppendsKeepWholeLines) {
  std::string path = (dir_ / "log.jsonl").string();
  DecisionLog::Options o;
  o.flush_interval = 1ms;
  o.flush_bytes = 64;
  {
    auto log = DecisionLog::open(path, o);
    ASSERT_TRUE(log.is_ok());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 250; ++i) (*log)->append("thread " + std::to_string(t) + " line " + std::to_string(i));
      });
    for (auto& th : threads) th.join();
  }
  auto all = lines(path);
  ASSERT_EQ(all.size(), 1000u);
  for (const auto& l : all) EXPECT_EQ(l.rfind("thread ", 0), 0u) << l;
}

TEST_F(DecisionLogTest, AFileThatCannotBeOpenedIsUnavailable) {
  auto log = DecisionLog::open("/proc/llmpool-no/log.jsonl");
  ASSERT_FALSE(log.is_ok());
  EXPECT_EQ(log.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(log.status().message().find("/proc/llmpool-no/log.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace llmpool::router
