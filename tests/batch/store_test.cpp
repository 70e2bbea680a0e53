#include "batch/store.h"

#include <sys/stat.h>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "tenancy/tenancy_test_util.h"

namespace llmpool::batch {
namespace {

using tenancy::testing::TempDir;

BatchRecord in_progress_batch(const std::string& id, const std::string& tenant, int64_t total) {
  BatchRecord b;
  b.id = id;
  b.tenant = tenant;
  b.endpoint = "/v1/chat/completions";
  b.input_file_id = "file-in";
  b.created_at = 100;
  b.expires_at = 100 + 86400;
  b.metadata = R"({"k":"v"})";
  (void)total;
  return b;
}

std::vector<JobRecord> jobs_for(const std::string& batch_id, int n) {
  std::vector<JobRecord> jobs;
  for (int i = 0; i < n; ++i)
    jobs.push_back({batch_id + ":" + std::to_string(i), i + 1, "c" + std::to_string(i), "tiny", R"({"model":"tiny"})"});
  return jobs;
}

class BatchStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = open(); }
  std::unique_ptr<BatchStore> open() {
    auto s = BatchStore::open(dir_.path() + "/data");
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(s).value() : nullptr;
  }
  std::string db_path() const { return dir_.path() + "/data/batch.db"; }

  // Adds a validating batch and starts it with `n` jobs.
  void start(const std::string& id, int n, const std::string& tenant = "") {
    BatchRecord b = in_progress_batch(id, tenant, n);
    ASSERT_TRUE(store_->add_batch(b).is_ok());
    b.status = kInProgress;
    b.in_progress_at = 101;
    b.total = n;
    auto started = store_->start_batch(b, jobs_for(id, n));
    ASSERT_TRUE(started.is_ok()) << started.status().to_string();
    ASSERT_TRUE(*started);
  }

  TempDir dir_;
  std::unique_ptr<BatchStore> store_;
};

TEST_F(BatchStoreTest, MigratesAFreshFileAndReopensIt) {
  ASSERT_TRUE(store_);
  EXPECT_EQ(*store_->schema_version(), BatchStore::current_schema_version());
  store_.reset();
  store_ = open();
  ASSERT_TRUE(store_);
  EXPECT_EQ(*store_->schema_version(), BatchStore::current_schema_version());
  struct stat st {};
  ASSERT_EQ(::stat(db_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(BatchStoreTest, UsesWriteAheadLogging) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db_path().c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)), "wal");
  sqlite3_finalize(q);
  sqlite3_close(db);
}

TEST_F(BatchStoreTest, RefusesAFileFromANewerBuild) {
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = BatchStore::open(dir_.path() + "/data");
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.status().message().find("newer"), std::string::npos);
}

TEST_F(BatchStoreTest, KeepsFilesPerTenant) {
  ASSERT_TRUE(store_->add_file({"file-a", "acme", "batch", "a.jsonl", 3, 10}, "abc").is_ok());
  EXPECT_EQ(*store_->file_content("acme", "file-a"), "abc");
  EXPECT_EQ(store_->get_file("acme", "file-a")->filename, "a.jsonl");
  EXPECT_EQ(store_->get_file("other", "file-a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->file_content("other", "file-a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->delete_file("other", "file-a").code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->list_files("other", "", Page{})->empty());
  EXPECT_EQ(store_->add_file({"file-a", "acme", "batch", "b", 0, 10}, "").code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(store_->delete_file("acme", "file-a").is_ok());
  EXPECT_EQ(store_->get_file("acme", "file-a").status().code(), StatusCode::kNotFound);
}

TEST_F(BatchStoreTest, ListsFilesByPageInBothOrders) {
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(store_->add_file({"file-" + std::to_string(i), "", "batch", "f", 0, 10 + i}, "").is_ok());
  ASSERT_TRUE(store_->add_file({"file-out", "", "batch_output", "o", 0, 20}, "").is_ok());
  auto first = store_->list_files("", "batch", Page{"", 2, false});
  ASSERT_EQ(first->size(), 3u);  // limit + 1
  EXPECT_EQ((*first)[0].id, "file-4");
  EXPECT_EQ((*first)[1].id, "file-3");
  auto next = store_->list_files("", "batch", Page{"file-3", 10, false});
  ASSERT_EQ(next->size(), 3u);
  EXPECT_EQ((*next)[0].id, "file-2");
  auto asc = store_->list_files("", "", Page{"file-3", 10, true});
  ASSERT_EQ(asc->size(), 2u);
  EXPECT_EQ((*asc)[0].id, "file-4");
  EXPECT_EQ((*asc)[1].id, "file-out");
}

TEST_F(BatchStoreTest, StoresTheFirstResultOfAJobOnly) {
  start("batch_1", 2);
  auto first = store_->put_result({"batch_1:0", 200, R"({"answer":1})"});
  ASSERT_TRUE(first.is_ok());
  EXPECT_TRUE(first->stored);
  EXPECT_EQ(first->batch_id, "batch_1");
  EXPECT_FALSE(first->batch_done);
  auto again = store_->put_result({"batch_1:0", 500, R"({"answer":2})"});
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(again->stored);
  auto b = store_->get_batch("batch_1");
  EXPECT_EQ(b->completed, 1);
  EXPECT_EQ(b->failed, 0);
  auto failed = store_->put_result({"batch_1:1", 400, R"({"error":{}})"});
  EXPECT_TRUE(failed->batch_done);
  b = store_->get_batch("batch_1");
  EXPECT_EQ(b->completed, 1);
  EXPECT_EQ(b->failed, 1);
  EXPECT_TRUE(store_->pending_jobs("batch_1")->empty());
}

TEST_F(BatchStoreTest, IgnoresResultsForUnknownJobsAndEndedBatches) {
  auto unknown = store_->put_result({"batch_x:0", 200, "{}"});
  ASSERT_TRUE(unknown.is_ok());
  EXPECT_FALSE(unknown->stored);
  EXPECT_EQ(unknown->batch_id, "");
  start("batch_2", 1);
  BatchRecord b = *store_->get_batch("batch_2");
  b.status = kExpired;
  ASSERT_TRUE(*store_->update_batch(b, kInProgress));
  EXPECT_FALSE(store_->put_result({"batch_2:0", 200, "{}"})->stored);
  EXPECT_EQ(store_->get_batch("batch_2")->completed, 0);
}

TEST_F(BatchStoreTest, StartsABatchOnlyFromValidating) {
  start("batch_3", 2);
  BatchRecord b = *store_->get_batch("batch_3");
  auto again = store_->start_batch(b, jobs_for("batch_3", 5));
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(*again);
  EXPECT_EQ(store_->pending_jobs("batch_3")->size(), 2u);
}

TEST_F(BatchStoreTest, KeepsBatchesJobsAndResultsAcrossAReopen) {
  start("batch_4", 3, "acme");
  ASSERT_TRUE(store_->put_result({"batch_4:1", 200, "{}"})->stored);
  store_.reset();
  store_ = open();
  auto pending = store_->pending_jobs("batch_4");
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].id, "batch_4:0");
  EXPECT_EQ((*pending)[0].line, 1);
  EXPECT_EQ((*pending)[1].id, "batch_4:2");
  auto b = store_->get_batch("acme", "batch_4");
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(b->status, kInProgress);
  EXPECT_EQ(b->metadata, R"({"k":"v"})");
  EXPECT_EQ(b->completed, 1);
  EXPECT_EQ(store_->get_batch("other", "batch_4").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->batches_with_status(kInProgress), std::vector<std::string>{"batch_4"});
}

TEST_F(BatchStoreTest, FinalizesOnceWithTheLinesInOrder) {
  start("batch_5", 2);
  ASSERT_TRUE(store_->put_result({"batch_5:1", 200, "{\"n\":2}"})->stored);
  std::vector<std::string> seen;
  auto build = [&](BatchRecord& b, const std::vector<LineOutcome>& lines) -> Result<Finalized> {
    for (const auto& l : lines) seen.push_back(l.job.custom_id + (l.result ? ":done" : ":none"));
    b.status = kExpired;
    b.expired_at = 500;
    Finalized f;
    f.output = NewFile{{"file-out5", b.tenant, "batch_output", "o", 2, 500}, "ok"};
    b.output_file_id = "file-out5";
    return f;
  };
  auto done = store_->finalize("batch_5", kInProgress, build);
  ASSERT_TRUE(done.is_ok()) << done.status().to_string();
  EXPECT_TRUE(*done);
  EXPECT_EQ(seen, (std::vector<std::string>{"c0:none", "c1:done"}));
  EXPECT_EQ(store_->get_batch("batch_5")->status, kExpired);
  EXPECT_EQ(*store_->file_content("", "file-out5"), "ok");
  auto twice = store_->finalize("batch_5", kInProgress, build);
  ASSERT_TRUE(twice.is_ok());
  EXPECT_FALSE(*twice);
}

TEST_F(BatchStoreTest, RollsBackAFinalizeWhoseBuilderFails) {
  start("batch_6", 1);
  auto done = store_->finalize("batch_6", kInProgress, [](BatchRecord& b, const std::vector<LineOutcome>&) -> Result<Finalized> {
    b.status = kCompleted;
    return Status::internal("disk full");
  });
  EXPECT_FALSE(done.is_ok());
  EXPECT_EQ(store_->get_batch("batch_6")->status, kInProgress);
}

}  // namespace
}  // namespace llmpool::batch
