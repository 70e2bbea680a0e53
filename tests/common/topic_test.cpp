#include "common/topic.h"

#include <gtest/gtest.h>

namespace llmpool {
namespace {

TEST(TopicNamerTest, BuildsSeedSubjects) {
  EXPECT_EQ(TopicNamer::topic("acme", "infer.requests").value(), "llm.acme.infer.requests.v1");
  EXPECT_EQ(TopicNamer::topic("globex", "infer.results").value(), "llm.globex.infer.results.v1");
  EXPECT_EQ(TopicNamer::control("acme", "workers.scale").value(), "ctrl.acme.workers.scale");
}

TEST(TopicNamerTest, RefusesTenantsThatWouldEscapeTheirSubjects) {
  for (const char* bad : {"", "a.b", "*", ">", "acme.>", "Acme", "a b", "a\nb"}) {
    EXPECT_FALSE(TopicNamer::topic(bad, "infer.requests").is_ok()) << bad;
    EXPECT_FALSE(TopicNamer::control(bad, "pause").is_ok()) << bad;
  }
  EXPECT_FALSE(TopicNamer::topic(std::string(65, 'a'), "infer.requests").is_ok());
  EXPECT_TRUE(TopicNamer::topic(std::string(64, 'a'), "infer.requests").is_ok());
}

TEST(TopicNamerTest, RefusesMalformedDomains) {
  for (const char* bad : {"", ".", "infer.", ".infer", "infer..requests", "infer.*", "infer.>"})
    EXPECT_FALSE(TopicNamer::topic("acme", bad).is_ok()) << bad;
}

}  // namespace
}  // namespace llmpool
