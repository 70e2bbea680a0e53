// Forced tool calls through the whole engine on models with random weights:
// whatever the template, tool_choice "required" (which a named function
// becomes) must give a complete call of a listed function whose arguments
// are JSON matching its schema, streamed and not. Three templates: Qwen3
// (its own <tool_call> format), ChatML (no tool support: the generic format)
// and one the Jinja engine cannot read (the built-in ChatML formatting with
// the generic format), the last written by this test.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <future>
#include <map>
#include <set>

#include <unistd.h>

#include "engine/local_model.h"
#include "engine/model_writer.h"

namespace llmpool::engine {
namespace {

using nlohmann::json;

const std::string kChatml = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";
const std::string kQwen3 = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-qwen3-q8_0.gguf";
// Written by this test, one file per process: ctest runs the parameterised
// cases as separate processes, side by side, and two writers of one file
// would rename each other's temporary away.
const std::string kNoJinja =
    std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-nojinja-" + std::to_string(::getpid()) + "-q8_0.gguf";

// Bounded arguments: a random model fills an unbounded string for ever.
const char* kWeatherSchema =
    R"({"type":"object","properties":{"city":{"type":"string","maxLength":16},)"
    R"("unit":{"type":"string","enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7}},)"
    R"("required":["unit"]})";
const char* kTimeSchema = R"({"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},"required":["zone"]})";

struct Collector {
  std::vector<Delta> deltas;
  std::promise<Result<Completion>> done;
  std::future<Result<Completion>> future = done.get_future();
  GenerateCallbacks callbacks(bool stream) {
    GenerateCallbacks cb;
    if (stream) cb.on_delta = [this](Delta d) { deltas.push_back(std::move(d)); };
    cb.on_done = [this](Result<Completion> r) { done.set_value(std::move(r)); };
    return cb;
  }
};

// Checks one call against the test's two tools.
void expect_valid_call(const ToolCall& call, const std::set<std::string>& allowed) {
  EXPECT_TRUE(allowed.count(call.name)) << call.name;
  EXPECT_EQ(call.id.rfind("call_", 0), 0u) << call.id;
  json args = json::parse(call.arguments, nullptr, false);
  ASSERT_FALSE(args.is_discarded()) << "arguments are not JSON: " << call.arguments;
  ASSERT_TRUE(args.is_object()) << call.arguments;
  if (call.name == "get_weather") {
    ASSERT_TRUE(args.contains("unit")) << call.arguments;
    EXPECT_TRUE(args["unit"] == "celsius" || args["unit"] == "fahrenheit") << call.arguments;
    for (const auto& [key, value] : args.items()) {
      EXPECT_TRUE(key == "city" || key == "unit" || key == "days") << call.arguments;
      if (key == "days") {
        EXPECT_TRUE(value.is_number_integer() && value >= 1 && value <= 7) << call.arguments;
      } else if (key == "city") {
        EXPECT_TRUE(value.is_string()) << call.arguments;
      }
    }
  } else {
    ASSERT_EQ(args.size(), 1u) << call.arguments;
    EXPECT_TRUE(args["zone"] == "UTC" || args["zone"] == "CET") << call.arguments;
  }
}

class ForcedToolCallTest : public ::testing::TestWithParam<std::string> {
 public:
  static void SetUpTestSuite() {
    // A ChatML-looking template that the Jinja engine cannot parse: the model
    // loads without a ChatTemplate and formats with llama.cpp's built-in ChatML.
    ModelWriterOptions o;
    o.vocab_path = vocab_file_path(LLMPOOL_VOCAB_DIR, "llama-spm");
    o.output_path = kNoJinja;
    o.seed = 43;
    o.chat_template = "<|im_start|>{% if %}{{ messages }";
    Status written = write_model(o);
    ASSERT_TRUE(written.is_ok()) << written.to_string();
    for (const auto& [key, path] : std::map<std::string, std::string>{
             {"qwen3", kQwen3}, {"chatml", kChatml}, {"nojinja", kNoJinja}}) {
      LocalModelSpec spec;
      spec.name = key;
      spec.path = path;
      spec.context = 2048;
      spec.parallel = 2;
      spec.batch = 256;
      spec.threads = 1;
      auto m = LocalModel::load(spec);
      ASSERT_TRUE(m.is_ok()) << m.status().to_string();
      models_[key] = std::move(m).value();
    }
  }
  static void TearDownTestSuite() {
    models_.clear();
    std::filesystem::remove(kNoJinja);
  }

  static GenerateRequest request(std::vector<ToolSpec> tools, uint32_t seed) {
    GenerateRequest r;
    r.messages = {{"system", "You help with the weather."}, {"user", "What's the weather in Paris this week?"}};
    r.tools = std::move(tools);
    r.tool_choice = "required";
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.sampling.max_tokens = 1024;
    return r;
  }
  static Completion run(GenerateRequest r, Collector& c, bool stream) {
    models_.at(GetParam())->submit(std::move(r), nullptr, c.callbacks(stream));
    auto done = c.future.get();
    EXPECT_TRUE(done.is_ok()) << done.status().to_string();
    return done.is_ok() ? std::move(done).value() : Completion{};
  }

  static std::map<std::string, std::unique_ptr<LocalModel>> models_;
};
std::map<std::string, std::unique_ptr<LocalModel>> ForcedToolCallTest::models_;

const ToolSpec kWeather{"get_weather", "Get the weather forecast", kWeatherSchema};
const ToolSpec kTime{"get_time", "Get the time", kTimeSchema};

// Runs a forced request without parallel calls: one complete call.
void expect_one_call(ForcedToolCallTest& test, std::vector<ToolSpec> tools, uint32_t seed,
                     const std::set<std::string>& allowed);

TEST_P(ForcedToolCallTest, NamedFunctionWithoutParallelCallsGivesOneCompleteCall) {
  // What the API makes of tool_choice {function: {name}}: that tool alone, required.
  for (uint32_t seed : {1u, 2u, 3u}) expect_one_call(*this, {kWeather}, seed, {"get_weather"});
}

TEST_P(ForcedToolCallTest, RequiredWithoutParallelCallsCallsOneListedFunction) {
  for (uint32_t seed : {4u, 5u, 6u}) expect_one_call(*this, {kWeather, kTime}, seed, {"get_weather", "get_time"});
}

void expect_one_call(ForcedToolCallTest& test, std::vector<ToolSpec> tools, uint32_t seed,
                     const std::set<std::string>& allowed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto r = test.request(std::move(tools), seed);
  r.parallel_tool_calls = false;
  Collector c;
  Completion done = test.run(std::move(r), c, false);
  ASSERT_EQ(done.choices.size(), 1u);
  const Choice& choice = done.choices[0];
  EXPECT_EQ(choice.finish_reason, FinishReason::kToolCalls);
  EXPECT_EQ(choice.text, "");
  ASSERT_EQ(choice.tool_calls.size(), 1u);
  expect_valid_call(choice.tool_calls[0], allowed);
}

// Qwen3's format lets calls follow one another without end; a model with
// random weights rarely stops choosing another, and runs into max_tokens.
// The generic format's list closes far sooner.
bool parallel_calls_end(const std::string& model) { return model != "qwen3"; }

TEST_P(ForcedToolCallTest, RequiredWithParallelCallsGivesCompleteCallsOfListedFunctions) {
  if (!parallel_calls_end(GetParam())) GTEST_SKIP() << "a random model does not end a list of Qwen3 calls";
  for (uint32_t seed : {4u, 5u, 6u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Collector c;
    Completion done = run(request({kWeather, kTime}, seed), c, false);
    ASSERT_EQ(done.choices.size(), 1u);
    const Choice& choice = done.choices[0];
    EXPECT_EQ(choice.finish_reason, FinishReason::kToolCalls);
    EXPECT_EQ(choice.text, "");
    ASSERT_GE(choice.tool_calls.size(), 1u);
    std::set<std::string> ids;
    for (const auto& call : choice.tool_calls) {
      expect_valid_call(call, {"get_weather", "get_time"});
      ids.insert(call.id);
    }
    EXPECT_EQ(ids.size(), choice.tool_calls.size()) << "each call has its own id";
  }
}

// Cut off by max_tokens inside a call: an answer, finish "length", with
// what was read so far; never an engine error.
TEST_P(ForcedToolCallTest, CallCutOffByMaxTokensEndsWithLength) {
  auto r = request({kWeather}, 9);
  r.sampling.max_tokens = 6;
  Collector c;
  Completion done = run(std::move(r), c, true);
  ASSERT_EQ(done.choices.size(), 1u);
  EXPECT_EQ(done.choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(done.usage.completion_tokens, 6);
}

TEST_P(ForcedToolCallTest, StreamedDeltasCarryIdAndNameFirstThenArgumentPieces) {
  auto r = request({kWeather, kTime}, 7);
  r.parallel_tool_calls = parallel_calls_end(GetParam());
  Collector c;
  Completion done = run(std::move(r), c, true);
  ASSERT_EQ(done.choices.size(), 1u);
  const Choice& choice = done.choices[0];
  ASSERT_GE(choice.tool_calls.size(), 1u);
  std::map<int32_t, ToolCall> streamed;
  std::string text;
  size_t argument_pieces = 0;
  for (const Delta& d : c.deltas) {
    text += d.text;
    for (const auto& t : d.tool_calls) {
      if (!streamed.count(t.index)) {
        EXPECT_FALSE(t.id.empty());
        EXPECT_FALSE(t.name.empty());
        streamed[t.index] = {t.id, t.name, ""};
      } else {
        EXPECT_TRUE(t.id.empty() && t.name.empty()) << "id and name come once, in the call's first delta";
      }
      streamed[t.index].arguments += t.arguments;
      argument_pieces += !t.arguments.empty();
    }
  }
  ASSERT_FALSE(c.deltas.empty());
  EXPECT_EQ(c.deltas.back().finish_reason, FinishReason::kToolCalls);
  EXPECT_EQ(text, "");
  ASSERT_EQ(streamed.size(), choice.tool_calls.size());
  for (size_t i = 0; i < choice.tool_calls.size(); ++i) {
    const ToolCall& s = streamed[static_cast<int32_t>(i)];
    EXPECT_EQ(s.id, choice.tool_calls[i].id);
    EXPECT_EQ(s.name, choice.tool_calls[i].name);
    EXPECT_EQ(s.arguments, choice.tool_calls[i].arguments);
  }
  EXPECT_GT(argument_pieces, choice.tool_calls.size()) << "arguments arrive in pieces as they are generated";
}

TEST_P(ForcedToolCallTest, ToolChoiceNoneAnswersInText) {
  auto r = request({kWeather}, 8);
  r.tool_choice = "none";
  r.sampling.max_tokens = 8;
  r.sampling.ignore_eos = true;
  Collector c;
  Completion done = run(std::move(r), c, false);
  ASSERT_EQ(done.choices.size(), 1u);
  EXPECT_TRUE(done.choices[0].tool_calls.empty());
  EXPECT_EQ(done.choices[0].finish_reason, FinishReason::kLength);
  EXPECT_FALSE(done.choices[0].text.empty());
}

INSTANTIATE_TEST_SUITE_P(Templates, ForcedToolCallTest, ::testing::Values("qwen3", "chatml", "nojinja"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace llmpool::engine
