// Fuzz target: chat templating and tokenizing on a real model's template and
// vocabulary (engine::ChatTemplate::apply, its OutputParser, and
// LocalModel::tokenize / detokenize / format_chat), on the tiny test model
// with the Qwen3 template (tools and <think>), which the make_test_models
// fixture writes. The model's path comes from `--model=PATH` on the command
// line or the environment variable LLMPOOL_FUZZ_MODEL.
//
// Input: byte 0 holds flags (bits 0-1: tool_choice auto, none, required or
// the first tool's name; bit 2: with tools; bit 3: parse_reasoning; bit 4:
// add_special; bit 5: parse_special; bit 6: thinking_budget 0 instead of no
// limit; bit 7: an assistant message carries a tool call). The rest is split
// at 0x1f bytes into fields. With tools, the first field is the first
// tool's parameters (JSON schema text). The last field is a model output,
// fed to the request's output parser in growing prefixes, then tokenized
// and detokenized. Every other field is a message: its first byte picks the
// role, the rest is the content.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <llama.h>
#include <spdlog/spdlog.h>

#include "engine/chat_template.h"
#include "engine/llama_status.h"
#include "engine/local_model.h"

using namespace llmpool;
using namespace llmpool::engine;

namespace {

// Made once and never destroyed: libFuzzer ends with exit(), and a model
// freed by a static destructor would log through spdlog's registry after
// that registry is gone.
llama_model* g_model = nullptr;
ChatTemplate* g_template = nullptr;
LocalModel* g_local = nullptr;

void check(const Status& s) {
  if (!s.is_ok() && s.message().empty()) std::abort();  // an error always says what was wrong
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::string path;
  if (const char* env = std::getenv("LLMPOOL_FUZZ_MODEL")) path = env;
  for (int i = 1; i < *argc; ++i)
    if (std::strncmp((*argv)[i], "--model=", 8) == 0) path = (*argv)[i] + 8;
  if (path.empty()) {
    std::fprintf(stderr, "chat_template_fuzz: give the model as --model=PATH or LLMPOOL_FUZZ_MODEL\n");
    std::exit(2);
  }
  spdlog::set_level(spdlog::level::off);
  init_llama_backend();
  g_model = llama_model_load_from_file(path.c_str(), llama_model_default_params());
  if (!g_model) {
    std::fprintf(stderr, "chat_template_fuzz: cannot load %s\n", path.c_str());
    std::exit(2);
  }
  auto t = ChatTemplate::create(g_model);
  if (!t.is_ok()) {
    std::fprintf(stderr, "chat_template_fuzz: %s\n", t.status().to_string().c_str());
    std::exit(2);
  }
  g_template = std::move(t).value().release();
  LocalModelSpec spec;
  spec.name = "fuzz";
  spec.path = path;
  spec.context = 256;
  spec.parallel = 1;
  spec.batch = 64;
  spec.threads = 1;
  auto m = LocalModel::load(spec);
  if (!m.is_ok()) {
    std::fprintf(stderr, "chat_template_fuzz: %s\n", m.status().to_string().c_str());
    std::exit(2);
  }
  g_local = std::move(m).value().release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  std::vector<std::string> fields;
  {
    std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    for (size_t at = 0;;) {
      size_t sep = rest.find('\x1f', at);
      fields.emplace_back(rest.substr(at, sep == std::string_view::npos ? std::string_view::npos : sep - at));
      if (sep == std::string_view::npos) break;
      at = sep + 1;
    }
  }
  std::string output = fields.back();
  fields.pop_back();

  GenerateRequest request;
  size_t first_message = 0;
  if (flags & 4) {
    std::string params = fields.empty() ? std::string("{}") : fields[0];
    if (!fields.empty()) first_message = 1;
    request.tools.push_back({"get_weather", "Get the weather", params});
    request.tools.push_back({"search", "Search the web",
                             R"({"type":"object","properties":{"q":{"type":"string"}},"required":["q"]})"});
  }
  static const char* const kChoices[] = {"auto", "none", "required", "get_weather"};
  request.tool_choice = kChoices[flags & 3];
  request.parse_reasoning = flags & 8;
  request.thinking_budget = (flags & 64) ? 0 : -1;
  static const char* const kRoles[] = {"system", "user", "assistant", "tool", "developer", "user", "user", "user"};
  for (size_t i = first_message; i < fields.size(); ++i) {
    const std::string& f = fields[i];
    ChatMessage m;
    m.role = f.empty() ? "user" : kRoles[static_cast<uint8_t>(f[0]) & 7];
    m.content = f.empty() ? std::string() : f.substr(1);
    if (m.role == "assistant" && (flags & 128)) m.tool_calls.push_back({"call_1", "get_weather", m.content});
    if (m.role == "tool") m.tool_call_id = "call_1";
    request.messages.push_back(std::move(m));
  }
  if (request.messages.empty()) request.messages.push_back({"user", "hi"});

  auto formatted = g_template->apply(request);
  check(formatted.status());
  if (formatted.is_ok()) {
    const FormattedChat& chat = formatted.value();
    auto tokens = g_local->tokenize(chat.prompt, flags & 16, flags & 32);
    check(tokens.status());
    if (chat.make_parser) {
      auto parser = chat.make_parser();
      // The output as it grows: a few prefixes, then the whole, final.
      for (size_t cut : {output.size() / 3, output.size() / 2, output.size()})
        (void)parser->update(output.substr(0, cut), false);
      (void)parser->update(output, true);
      (void)parser->content();
      (void)parser->tool_calls();
    }
  }
  auto plain = g_local->format_chat(request.messages);
  check(plain.status());

  auto tokens = g_local->tokenize(output, flags & 16, flags & 32);
  check(tokens.status());
  if (tokens.is_ok()) {
    auto text = g_local->detokenize(tokens.value());
    check(text.status());
  }
  return 0;
}
