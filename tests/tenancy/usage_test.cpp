// Usage in the database (schema version 3) and the recorder that writes it
// from its own thread: sums per tenant, key, model and UTC day.
#include <gtest/gtest.h>

#include "tenancy/tenancy_test_util.h"
#include "tenancy/tenant_store.h"
#include "tenancy/usage_recorder.h"

namespace llmpool::tenancy {
namespace {

using testing::TempDir;

class UsageRecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = TenantStore::open(tmp_.path(), clock_);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    store_ = std::move(s).value();
  }
  TempDir tmp_;
  ManualWallClock clock_;  // 2026-01-01T00:00:00Z
  std::shared_ptr<TenantStore> store_;
};

TEST_F(UsageRecorderTest, DaysAreUtcDates) {
  EXPECT_EQ(usage_day(0), "1970-01-01");
  EXPECT_EQ(usage_day(1767225600), "2026-01-01");
  EXPECT_EQ(usage_day(1767225600 - 1), "2025-12-31");
}

TEST_F(UsageRecorderTest, RecordsAddUpPerTenantKeyModelAndDay) {
  ASSERT_TRUE(store_->record_usage({"acme", "k1", "tiny", "2026-01-01", 1, 10, 5}).is_ok());
  ASSERT_TRUE(store_->record_usage({"acme", "k1", "tiny", "2026-01-01", 2, 20, 10}).is_ok());
  ASSERT_TRUE(store_->record_usage({"acme", "k2", "tiny", "2026-01-01", 1, 1, 1}).is_ok());
  ASSERT_TRUE(store_->record_usage({"acme", "k1", "tiny", "2026-01-02", 1, 1, 1}).is_ok());
  ASSERT_TRUE(store_->record_usage({"globex", "k3", "x' OR 1=1 --", "2026-01-01", 1, 1, 1}).is_ok());
  auto rows = store_->usage("acme");
  ASSERT_TRUE(rows.is_ok());
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].key_id, "k1");
  EXPECT_EQ((*rows)[0].requests, 3);
  EXPECT_EQ((*rows)[0].prompt_tokens, 30);
  EXPECT_EQ((*rows)[0].completion_tokens, 15);
  EXPECT_EQ(store_->usage("acme", "2026-01-02").value().size(), 1u);
  EXPECT_EQ(store_->usage("acme", "", "2026-01-01").value().size(), 2u);
  EXPECT_EQ(store_->usage().value().size(), 4u);
  EXPECT_EQ(store_->usage("globex").value().at(0).model, "x' OR 1=1 --");
  // Bad values are refused, not written.
  EXPECT_FALSE(store_->record_usage({"Bad!", "k", "m", "2026-01-01", 1, 1, 1}).is_ok());
  EXPECT_FALSE(store_->record_usage({"acme", "k", "m", "2026-01-01", 1, -1, 1}).is_ok());
  EXPECT_FALSE(store_->record_usage({"acme", "k", std::string(300, 'm'), "2026-01-01", 1, 1, 1}).is_ok());
  EXPECT_FALSE(store_->usage("Bad!").is_ok());
}

TEST_F(UsageRecorderTest, TheRecorderSumsInMemoryAndWritesOnFlushAndAtTheEnd) {
  {
    UsageRecorder rec(store_, std::chrono::hours(1), clock_);
    rec.add("acme", "k1", "tiny", 1, 10, 5);
    rec.add("acme", "k1", "tiny", 1, 10, 5);
    EXPECT_TRUE(store_->usage("acme").value().empty());  // nothing written before a flush
    ASSERT_TRUE(rec.flush().is_ok());
    auto rows = store_->usage("acme").value();
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].requests, 2);
    EXPECT_EQ(rows[0].day, "2026-01-01");
    clock_.advance(86400);
    rec.add("acme", "k1", "tiny", 1, 1, 1);
    rec.add("Bad!", "k1", "tiny", 1, 1, 1);  // refused by the store: dropped, not retried forever
  }  // the destructor flushes
  auto rows = store_->usage("acme").value();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].day, "2026-01-02");
}

TEST_F(UsageRecorderTest, TheRecorderWritesOnItsOwnAfterItsInterval) {
  UsageRecorder rec(store_, std::chrono::milliseconds(10), clock_);
  rec.add("acme", "k1", "tiny", 1, 1, 1);
  // Bounded wait with generous slack: the thread's interval is 10 ms.
  for (int i = 0; i < 500 && store_->usage("acme").value().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(store_->usage("acme").value().size(), 1u);
}

}  // namespace
}  // namespace llmpool::tenancy
