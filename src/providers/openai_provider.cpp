#include "providers/openai_provider.h"

#include "common/json.h"
#include "providers/factory.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cstdlib>
#include <deque>
#include <mutex>

namespace llmpool::providers {

using nlohmann::json;

namespace {

// How much of an upstream's error answer we keep for its message.
constexpr size_t kMaxErrorBody = 64u << 10;
// Highest choice index accepted from an upstream.
constexpr int64_t kMaxChoiceIndex = 1024;
// How often waiting requests are checked for cancellation.
constexpr auto kSweepInterval = std::chrono::milliseconds(50);

// 0.7f as 0.7, not 0.699999988079071: the shortest decimal of the float.
double clean(float f) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f);
  if (ec != std::errc()) return f;
  *end = '\0';
  return std::strtod(buf, nullptr);
}

std::string string_field(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int32_t int_field(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_integer()) return 0;
  int64_t v = it->get<int64_t>();
  return static_cast<int32_t>(std::clamp<int64_t>(v, 0, INT32_MAX));
}

float float_field(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_number() ? it->get<float>() : 0.0f;
}

FinishReason finish_reason_from(const std::string& s) {
  if (s == "length") return FinishReason::kLength;
  if (s == "tool_calls" || s == "function_call") return FinishReason::kToolCalls;
  return FinishReason::kStop;
}

// The "tool_calls" of a chat message (whole) or delta (streamed: pieces
// with their own "index"), as ToolCallDeltas. Arguments are JSON text; an
// upstream that sends them as an object gets them written out.
Status read_tool_calls(const json& m, const std::string& who, bool streamed, std::vector<ToolCallDelta>* out) {
  auto tc = m.find("tool_calls");
  if (tc == m.end() || tc->is_null()) return Status::ok();
  if (!tc->is_array()) return Status::unavailable(who + " sent 'tool_calls' that is " + json_type_name(*tc));
  for (size_t k = 0; k < tc->size(); ++k) {
    const json& e = (*tc)[k];
    if (!e.is_object()) continue;
    ToolCallDelta t;
    t.index = static_cast<int32_t>(std::min<size_t>(k, INT32_MAX));
    auto idx = e.find("index");
    if (streamed && idx != e.end() && idx->is_number_integer())
      t.index = static_cast<int32_t>(std::clamp<int64_t>(idx->get<int64_t>(), -1, INT32_MAX));
    t.id = string_field(e, "id");
    auto fn = e.find("function");
    if (fn != e.end() && fn->is_object()) {
      t.name = string_field(*fn, "name");
      auto args = fn->find("arguments");
      if (args != fn->end() && args->is_string())
        t.arguments = args->get<std::string>();
      else if (args != fn->end() && (args->is_object() || args->is_array()))
        t.arguments = args->dump(-1, ' ', false, json::error_handler_t::replace);  // depth-bounded by parse_json
    }
    out->push_back(std::move(t));
  }
  return Status::ok();
}

// Chat format {"content":[{token, logprob, top_logprobs:[...]}]} (also what
// llama-server sends for /completions), or the legacy completions format
// {"tokens", "token_logprobs", "top_logprobs":[{token: logprob}]}.
std::vector<TokenLogprob> parse_logprobs(const json& lp) {
  std::vector<TokenLogprob> out;
  if (!lp.is_object()) return out;
  auto content = lp.find("content");
  if (content != lp.end() && content->is_array()) {
    for (const auto& e : *content) {
      if (!e.is_object()) continue;
      TokenLogprob t;
      t.token = string_field(e, "token");
      t.logprob = float_field(e, "logprob");
      auto top = e.find("top_logprobs");
      if (top != e.end() && top->is_array())
        for (const auto& a : *top)
          if (a.is_object()) t.top.push_back({string_field(a, "token"), float_field(a, "logprob")});
      out.push_back(std::move(t));
    }
    return out;
  }
  auto tokens = lp.find("tokens");
  if (tokens == lp.end() || !tokens->is_array()) return out;
  auto values = lp.find("token_logprobs");
  auto tops = lp.find("top_logprobs");
  for (size_t i = 0; i < tokens->size(); ++i) {
    TokenLogprob t;
    if ((*tokens)[i].is_string()) t.token = (*tokens)[i].get<std::string>();
    if (values != lp.end() && values->is_array() && i < values->size() && (*values)[i].is_number())
      t.logprob = (*values)[i].get<float>();
    if (tops != lp.end() && tops->is_array() && i < tops->size() && (*tops)[i].is_object())
      for (auto it = (*tops)[i].begin(); it != (*tops)[i].end(); ++it)
        if (it.value().is_number()) t.top.push_back({it.key(), it.value().get<float>()});
    out.push_back(std::move(t));
  }
  return out;
}

Usage parse_usage(const json& u) {
  Usage out;
  out.prompt_tokens = int_field(u, "prompt_tokens");
  out.completion_tokens = int_field(u, "completion_tokens");
  auto details = u.find("prompt_tokens_details");
  if (details != u.end() && details->is_object()) out.cached_prompt_tokens = int_field(*details, "cached_tokens");
  return out;
}

// An "error" object inside a 200 stream: its numeric code, when it looks
// like an HTTP status, picks the Status code; otherwise it is the
// upstream's fault.
// The choice's "index" (default 0), bounded so a bad upstream cannot make
// us allocate without limit.
Status read_choice_index(const json& c, const std::string& who, int32_t* index) {
  auto idx = c.find("index");
  if (idx == c.end() || !idx->is_number_integer()) return Status::ok();
  int64_t i = idx->get<int64_t>();
  if (i < 0 || i >= kMaxChoiceIndex)
    return Status::unavailable(who + " sent choice index " + std::to_string(i));
  *index = static_cast<int32_t>(i);
  return Status::ok();
}

Status in_stream_error(const json& j, std::string_view raw, const std::string& who) {
  int http_status = 500;
  const json& e = j["error"];
  if (e.is_object()) {
    auto c = e.find("code");
    if (c != e.end() && c->is_number_integer() && c->get<int64_t>() >= 400 && c->get<int64_t>() < 600)
      http_status = static_cast<int>(c->get<int64_t>());
  }
  return upstream_error_status(http_status, raw, who);
}

// A whole answer in the shape nearly every upstream sends, read from its
// text with no DOM: for each choice its index, text (or message content and
// reasoning_content) and finish reason, and the usage. Anything else it
// reads past unchecked but valid. It declines (read() false) wherever the DOM
// path (whole()) could do anything but deliver those fields: an error
// member that is not null, tool calls or logprobs that are not null, a
// choice that is not an object, a field of another type than the one read
// (null aside), an index out of range, a key it reads given twice (the DOM
// keeps the last), and any text the parser refuses. The decoder then reads
// the answer through the DOM, so what it delivers never depends on the path:
// the differential test (OpenAiWholeAnswerTest) holds the two to that.
class CommonAnswerReader : public JsonEvents {
 public:
  explicit CommonAnswerReader(bool chat) : chat_(chat) {}

  struct Answer {
    std::vector<Delta> choices;
    std::optional<Usage> usage;
  };

  bool read(std::string_view text) {
    return read_json(text, JsonLimits{kDefaultJsonLimits.max_depth, kMaxUpstreamAnswerBytes}, *this) && done_;
  }
  Answer& answer() { return answer_; }

  bool begin_object() override {
    if (skip_ > 0 || want_ == Want::kAny) return skip();
    switch (want_) {
      case Want::kRoot: return open(At::kRoot);
      case Want::kChoice:
        answer_.choices.emplace_back();
        answer_.choices.back().finish_reason = FinishReason::kStop;  // what whole() makes of a missing one
        return open(At::kChoice);
      case Want::kMessage: return open(At::kMessage);
      case Want::kUsage: answer_.usage.emplace(); return open(At::kUsage);
      case Want::kDetails: return open(At::kDetails);
      default: return false;
    }
  }
  bool begin_array() override {
    if (skip_ > 0 || want_ == Want::kAny) return skip();
    return want_ == Want::kChoices && open(At::kChoices);
  }
  bool end_container() override {
    if (skip_ > 0) {
      --skip_;
      if (skip_ == 0) after_value();
      return true;
    }
    const Frame closed = frames_[--depth_];
    if (depth_ == 0) {
      done_ = closed.seen & 1;  // an answer without "choices" is whole()'s error to give
      return true;
    }
    after_value();
    return true;
  }
  bool key(std::string& key) override {
    if (skip_ > 0) return true;
    using namespace std::string_view_literals;
    const std::string_view k = key;  // compared as views: the length first, no strlen
    Frame& f = frames_[depth_ - 1];
    int field = -1;
    switch (f.at) {
      case At::kRoot:
        field = k == "choices"sv ? 0 : k == "usage"sv ? 1 : k == "error"sv ? 2 : -1;
        want_ = field == 0 ? Want::kChoices : field == 1 ? Want::kUsage : field == 2 ? Want::kNull : Want::kAny;
        break;
      case At::kChoice:
        field = k == "index"sv ? 0 : k == "finish_reason"sv ? 1 : k == "logprobs"sv ? 2
              : chat_ && k == "message"sv ? 3 : !chat_ && k == "text"sv ? 4 : -1;
        want_ = field == 0 ? Want::kIndex : field == 1 ? Want::kFinish : field == 2 ? Want::kNull
              : field == 3 ? Want::kMessage : field == 4 ? Want::kText : Want::kAny;
        break;
      case At::kMessage:
        field = k == "content"sv ? 0 : k == "reasoning_content"sv ? 1 : k == "tool_calls"sv ? 2 : -1;
        want_ = field == 0 ? Want::kText : field == 1 ? Want::kReasoning : field == 2 ? Want::kNull : Want::kAny;
        break;
      case At::kUsage:
        field = k == "prompt_tokens"sv ? 0 : k == "completion_tokens"sv ? 1 : k == "prompt_tokens_details"sv ? 2 : -1;
        want_ = field == 0 ? Want::kPrompt : field == 1 ? Want::kCompletion : field == 2 ? Want::kDetails : Want::kAny;
        break;
      case At::kDetails:
        field = k == "cached_tokens"sv ? 0 : -1;
        want_ = field == 0 ? Want::kCached : Want::kAny;
        break;
      case At::kChoices: return false;  // an array has no keys
    }
    if (field < 0) return true;
    const uint32_t bit = 1u << field;
    if (f.seen & bit) return false;  // the DOM keeps the last of two
    f.seen |= bit;
    return true;
  }
  bool string(std::string& v) override {
    if (skip_ > 0 || want_ == Want::kAny) return scalar();
    if (answer_.choices.empty()) return false;
    Delta& d = answer_.choices.back();
    switch (want_) {
      case Want::kText: d.text = std::move(v); break;
      case Want::kReasoning: d.reasoning_content = std::move(v); break;
      case Want::kFinish: d.finish_reason = finish_reason_from(v); break;
      default: return false;
    }
    return scalar();
  }
  bool null() override {
    if (skip_ > 0) return scalar();
    switch (want_) {
      case Want::kAny:
      case Want::kNull:
      case Want::kText:
      case Want::kReasoning:
      case Want::kFinish:
      case Want::kMessage:
      case Want::kUsage:
      case Want::kDetails: return scalar();  // as whole() reads a null there: absent
      default: return false;
    }
  }
  bool boolean(bool) override { return (skip_ > 0 || want_ == Want::kAny) && scalar(); }
  bool number_float(double) override { return (skip_ > 0 || want_ == Want::kAny) && scalar(); }
  bool integer(int64_t v) override { return number(v); }
  bool unsigned_integer(uint64_t v) override {
    if (v > static_cast<uint64_t>(INT64_MAX)) return (skip_ > 0 || want_ == Want::kAny) && scalar();
    return number(static_cast<int64_t>(v));
  }

 private:
  enum class At : uint8_t { kRoot, kChoices, kChoice, kMessage, kUsage, kDetails };
  // What the next value may be, and what it is for.
  enum class Want : uint8_t {
    kRoot, kAny, kNull, kChoices, kChoice, kMessage, kUsage, kDetails,
    kIndex, kText, kReasoning, kFinish, kPrompt, kCompletion, kCached,
  };
  struct Frame {
    At at;
    uint32_t seen = 0;  // the fields read, one bit each
  };

  bool open(At at) {
    frames_[depth_++] = {at};  // at most 5 deep: deeper values are read past (skip_)
    if (at == At::kChoices) want_ = Want::kChoice;
    return true;
  }
  bool skip() {
    ++skip_;
    return true;
  }
  // A value ended: in `choices` the next is a choice, elsewhere a key.
  void after_value() { want_ = depth_ > 0 && frames_[depth_ - 1].at == At::kChoices ? Want::kChoice : Want::kAny; }
  bool scalar() {
    if (skip_ == 0) after_value();
    return depth_ > 0;  // a scalar at the root is not an answer
  }
  bool number(int64_t v) {
    if (skip_ > 0 || want_ == Want::kAny) return scalar();
    const int32_t clamped = static_cast<int32_t>(std::clamp<int64_t>(v, 0, INT32_MAX));
    switch (want_) {
      case Want::kIndex:
        if (v < 0 || v >= kMaxChoiceIndex || answer_.choices.empty()) return false;
        answer_.choices.back().index = static_cast<int32_t>(v);
        break;
      case Want::kPrompt: answer_.usage->prompt_tokens = clamped; break;
      case Want::kCompletion: answer_.usage->completion_tokens = clamped; break;
      case Want::kCached: answer_.usage->cached_prompt_tokens = clamped; break;
      default: return false;
    }
    return scalar();
  }

  const bool chat_;
  Want want_ = Want::kRoot;
  std::array<Frame, 5> frames_{};  // root, choices, a choice, its message or the usage, the usage's details
  size_t depth_ = 0;
  int skip_ = 0;  // depth inside a value read past
  bool done_ = false;
  Answer answer_;
};

}  // namespace

// ---------------------------------------------------------------------------
// UpstreamDecoder

Result<json> read_upstream_json(std::string_view text, size_t max_bytes, const std::string& who, const char* what) {
  const std::string name = std::string("the ") + what;
  Result<json> j = parse_json(text, JsonLimits{kDefaultJsonLimits.max_depth, max_bytes}, name);
  if (!j) return Status::unavailable(who + " sent an unreadable " + what + ": " + j.status().message());
  if (!j->is_object())
    return Status::unavailable(who + " sent " + json_type_name(*j) + " as its " + what + ", not an object");
  return j;
}

Status LineSplitter::feed(std::string_view bytes, const std::function<Status(std::string_view)>& on_line) {
  buffer_.append(bytes);
  size_t start = 0;
  Status st;
  for (size_t nl; (nl = buffer_.find('\n', std::max(start, scanned_))) != std::string::npos;) {
    std::string_view l(buffer_.data() + start, nl - start);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    start = nl + 1;
    st = on_line(l);
    if (!st) break;
  }
  // What is left after the last newline has been scanned: the next feed
  // starts where the new bytes begin.
  buffer_.erase(0, start);
  scanned_ = st ? buffer_.size() : 0;
  return st;
}

std::string LineSplitter::take_rest() {
  std::string rest = std::move(buffer_);
  buffer_.clear();
  scanned_ = 0;
  if (!rest.empty() && rest.back() == '\r') rest.pop_back();
  return rest;
}

Status UpstreamDecoder::deliver(Delta d) {
  size_t i = static_cast<size_t>(std::max(0, d.index));
  if (completion_.choices.size() <= i) {
    size_t old = completion_.choices.size();
    completion_.choices.resize(i + 1);
    for (size_t k = old; k <= i; ++k) completion_.choices[k].index = static_cast<int32_t>(k);
  }
  Choice& c = completion_.choices[i];
  c.text += d.text;
  c.reasoning_content += d.reasoning_content;
  c.logprobs.insert(c.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
  for (const ToolCallDelta& t : d.tool_calls) {
    if (t.index < 0 || static_cast<size_t>(t.index) >= kMaxToolCalls)
      return Status::unavailable(who_ + " sent tool call index " + std::to_string(t.index) + " (at most " +
                                 std::to_string(kMaxToolCalls - 1) + ")");
    if (c.tool_calls.size() <= static_cast<size_t>(t.index)) c.tool_calls.resize(static_cast<size_t>(t.index) + 1);
    ToolCall& call = c.tool_calls[static_cast<size_t>(t.index)];
    if (!t.id.empty()) call.id = t.id;
    if (!t.name.empty()) call.name = t.name;
    call.arguments += t.arguments;
  }
  if (d.finish_reason) c.finish_reason = *d.finish_reason;
  if (on_delta) on_delta(std::move(d));
  return Status::ok();
}

Status UpstreamDecoder::event_too_large() const {
  return Status::unavailable(who_ + " sent a stream event larger than " + std::to_string(max_event_bytes_) +
                             " bytes (the limit per event); the request was ended");
}

void UpstreamDecoder::add_usage(const Usage& u) {
  Usage& t = completion_.usage;
  t.prompt_tokens = std::max(t.prompt_tokens, u.prompt_tokens);
  t.cached_prompt_tokens = std::max(t.cached_prompt_tokens, u.cached_prompt_tokens);
  t.completion_tokens += u.completion_tokens;
}

Completion UpstreamDecoder::completion() const {
  Completion c = completion_;
  size_t n = static_cast<size_t>(std::max(1, n_));
  if (c.choices.size() < n) c.choices.resize(n);
  for (size_t i = 0; i < c.choices.size(); ++i) c.choices[i].index = static_cast<int32_t>(i);
  return c;
}

// ---------------------------------------------------------------------------
// OpenAiStreamDecoder

void OpenAiStreamDecoder::start(const HttpResponseHead& head) {
  // An upstream that ignores "stream": true answers with one JSON object;
  // one asked for a whole answer may still stream.
  const std::string type = head.header("content-type");
  whole_json_ = type.find("application/json") != std::string::npos ||
                (asked_whole_ && type.find("text/event-stream") == std::string::npos);
}

Status OpenAiStreamDecoder::feed(std::string_view bytes) {
  if (whole_json_) {
    if (body_.size() + bytes.size() > kMaxUpstreamAnswerBytes)
      return Status::unavailable(who() + " sent an answer larger than " + std::to_string(kMaxUpstreamAnswerBytes) +
                                 " bytes");
    body_.append(bytes);
    return Status::ok();
  }
  RETURN_IF_ERROR(lines_.feed(bytes, [this](std::string_view l) { return line(l); }));
  // An event is its data lines up to the blank line: the unfinished line
  // counts with the lines already gathered.
  if (lines_.pending() + event_bytes_ > max_event_bytes_) return event_too_large();
  return Status::ok();
}

Status OpenAiStreamDecoder::line(std::string_view text) {
  if (text.empty()) {  // the blank line that ends an event
    if (!has_data_) return Status::ok();
    std::string data = std::move(data_);
    data_.clear();
    has_data_ = false;
    event_bytes_ = 0;
    return event(data);
  }
  if (text.front() == ':') return Status::ok();  // a comment (keep-alive ping)
  size_t colon = text.find(':');
  std::string_view field = text.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    // Counted as sent, "data: " and all, so that short lines add up too.
    event_bytes_ += text.size() + 1;
    if (event_bytes_ > max_event_bytes_) return event_too_large();
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  }
  return Status::ok();  // event:, id:, retry: carry nothing we use
}

Status OpenAiStreamDecoder::event(const std::string& data) {
  if (ended_) return Status::ok();
  if (data == "[DONE]") {
    ended_ = true;
    return Status::ok();
  }
  ASSIGN_OR_RETURN(json j, read_upstream_json(data, max_event_bytes_, who(), "stream event"));
  if (j.contains("error") && !j["error"].is_null()) return in_stream_error(j, data, who());
  return chunk(j);
}

Status OpenAiStreamDecoder::chunk(const json& j) {
  auto choices = j.find("choices");
  if (choices != j.end() && choices->is_array()) {
    for (const auto& c : *choices) {
      if (!c.is_object()) continue;
      Delta d;
      RETURN_IF_ERROR(read_choice_index(c, who(), &d.index));
      if (chat_) {
        auto delta = c.find("delta");
        if (delta != c.end() && delta->is_object()) {
          d.text = string_field(*delta, "content");
          d.reasoning_content = string_field(*delta, "reasoning_content");
          RETURN_IF_ERROR(read_tool_calls(*delta, who(), /*streamed=*/true, &d.tool_calls));
        }
      } else {
        d.text = string_field(c, "text");
      }
      auto fr = c.find("finish_reason");
      if (fr != c.end() && fr->is_string()) d.finish_reason = finish_reason_from(fr->get<std::string>());
      auto lp = c.find("logprobs");
      if (lp != c.end()) d.logprobs = parse_logprobs(*lp);
      if (!d.text.empty() || !d.reasoning_content.empty() || !d.tool_calls.empty() || d.finish_reason ||
          !d.logprobs.empty())
        RETURN_IF_ERROR(deliver(std::move(d)));
    }
  }
  auto usage = j.find("usage");
  if (usage != j.end() && usage->is_object()) add_usage(parse_usage(*usage));
  return Status::ok();
}

// `j` is buffer_ parsed. Messages quote buffer_ itself: j.dump() recurses
// once per nesting level and overflows the stack on a deeply nested answer.
Status OpenAiStreamDecoder::whole(const json& j) {
  if (j.contains("error") && !j["error"].is_null()) return in_stream_error(j, body_, who());
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array())
    return Status::unavailable(who() + " answered without 'choices' (" + json_excerpt(j) + ")");
  for (const auto& c : *choices) {
    if (!c.is_object()) continue;
    Delta d;
    RETURN_IF_ERROR(read_choice_index(c, who(), &d.index));
    if (chat_) {
      auto m = c.find("message");
      if (m != c.end() && m->is_object()) {
        d.text = string_field(*m, "content");
        d.reasoning_content = string_field(*m, "reasoning_content");
        RETURN_IF_ERROR(read_tool_calls(*m, who(), /*streamed=*/false, &d.tool_calls));
      }
    } else {
      d.text = string_field(c, "text");
    }
    d.finish_reason = finish_reason_from(string_field(c, "finish_reason"));
    auto lp = c.find("logprobs");
    if (lp != c.end()) d.logprobs = parse_logprobs(*lp);
    RETURN_IF_ERROR(deliver(std::move(d)));
  }
  auto usage = j.find("usage");
  if (usage != j.end() && usage->is_object()) add_usage(parse_usage(*usage));
  ended_ = true;
  return Status::ok();
}

Status OpenAiStreamDecoder::finish() {
  if (whole_json_) {
    std::string body = std::move(body_);
    body_.clear();
    if (!dom_only_) {
      CommonAnswerReader reader(chat_);
      if (reader.read(body)) {
        CommonAnswerReader::Answer& a = reader.answer();
        for (Delta& d : a.choices) RETURN_IF_ERROR(deliver(std::move(d)));
        if (a.usage) add_usage(*a.usage);
        ended_ = true;
        return Status::ok();
      }
    }
    ASSIGN_OR_RETURN(json j, read_upstream_json(body, kMaxUpstreamAnswerBytes, who(), "answer"));
    body_ = std::move(body);  // for an in-band error's message
    Status st = whole(j);
    body_.clear();
    return st;
  }
  // Be lenient with a last line or event that lacks its terminating newline;
  // a truncated event is dropped (the missing [DONE] tells).
  if (lines_.pending() > 0) RETURN_IF_ERROR(line(lines_.take_rest()));
  if (has_data_) {
    std::string data = std::move(data_);
    has_data_ = false;
    // A last event that is whole JSON counts; a cut one is dropped.
    if (data == "[DONE]" || read_upstream_json(data, max_event_bytes_, who(), "stream event")) return event(data);
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------
// Settings

std::string RemoteSettings::url(std::string_view path) const {
  std::string out = base_text.empty() ? base.origin() + base.path : base_text;
  out += path;
  return out;
}

Result<RemoteSettings> read_remote_settings(const config::ModelConfig& config) {
  const std::string who = "model '" + config.name + "': ";
  if (config.base_url.empty())
    return Status::invalid_argument(who + "base_url is required for type '" + config.type + "'", "base_url");
  Result<HttpUrl> url = parse_http_url(config.base_url);
  if (!url) return Status::invalid_argument(who + "base_url: " + url.status().message(), "base_url");
  RemoteSettings s;
  s.base = std::move(url).value();
  s.label = "upstream for model '" + config.name + "'";
  s.tls.ca_file = config.ca_file;
  s.tls.insecure_skip_verify = config.tls_insecure_skip_verify;
  if (Status st = check_tls_options(s.tls); !st) return Status::invalid_argument(who + st.message(), "ca_file");
  if (s.base.path.find('?') != std::string::npos)
    return Status::invalid_argument(who + "base_url must not have a query string", "base_url");
  while (!s.base.path.empty() && s.base.path.back() == '/') s.base.path.pop_back();
  s.base_text = s.base.origin() + s.base.path;
  s.upstream_model = config.upstream_model.empty() ? config.name : config.upstream_model;
  if (!config.api_key_env.empty()) {
    const char* key = std::getenv(config.api_key_env.c_str());
    if (key == nullptr || *key == '\0')
      return Status::invalid_argument(who + "the environment variable '" + config.api_key_env +
                                          "' named by api_key_env is not set",
                                      "api_key_env");
    s.headers["Authorization"] = std::string("Bearer ") + key;
  }
  s.connect_timeout_ms = config.connect_timeout_ms;
  s.read_timeout_ms = config.read_timeout_ms;
  s.max_concurrent = std::max(0, config.max_concurrent);
  s.max_queue = std::max(0, config.max_queue);
  return s;
}

// ---------------------------------------------------------------------------
// RemoteProvider

struct RemoteProvider::Shared {
  std::string model;
  int32_t max_concurrent = 0;
  int32_t max_queue = 0;

  mutable std::mutex mu;
  bool closed = false;                         // guarded by mu
  int32_t active = 0;                          // guarded by mu
  std::deque<std::shared_ptr<Call>> waiting;   // guarded by mu
  bool sweeping = false;                       // guarded by mu
  std::shared_ptr<HttpClient> client;          // guarded by mu; null once closed

  std::atomic<int64_t> requests_done{0};
  std::atomic<int64_t> prompt_tokens{0};
  std::atomic<int64_t> cached_prompt_tokens{0};
  std::atomic<int64_t> generated_tokens{0};
};

// One request. The HTTP client's callbacks touch the response state one at
// a time, on its I/O thread.
struct RemoteProvider::Call {
  std::shared_ptr<Shared> shared;
  HttpClientRequest http;
  std::unique_ptr<UpstreamDecoder> decoder;
  CancelTokenPtr cancel;
  GenerateCallbacks callbacks;

  int status = 0;
  bool got_head = false;
  std::string error_body;
  Status stream_error;

  bool ok_status() const { return status >= 200 && status < 300; }

  Completion cancelled() const {
    Completion c = decoder->completion();
    for (auto& ch : c.choices) ch.finish_reason = FinishReason::kCancelled;
    return c;
  }

  // What on_done gets, from what the HTTP client reported (`transport`)
  // and what the stream said.
  Result<Completion> outcome(const Status& transport) {
    if (cancel->cancelled()) return cancelled();
    if (!got_head) return transport;  // never answered: the message names the upstream
    if (!ok_status()) return upstream_error_status(status, error_body, http.label);
    if (!stream_error.is_ok()) return stream_error;
    if (!decoder->ended() && transport.is_ok()) {
      Status st = decoder->finish();
      if (!st) return st;
    }
    if (decoder->ended()) return decoder->completion();  // even if the connection broke after the end
    if (transport.code() == StatusCode::kDeadlineExceeded)
      return Status::deadline_exceeded("upstream stream stalled: " + transport.message());
    if (!transport.is_ok()) return Status::unavailable("upstream stream ended early: " + transport.message());
    return Status::unavailable("upstream stream ended early: " + http.label + " closed the stream before " +
                               decoder->end_marker());
  }
};

RemoteProvider::RemoteProvider(ModelInfo info, RemoteSettings settings)
    : info_(std::move(info)), settings_(std::move(settings)), shared_(std::make_shared<Shared>()) {
  shared_->model = info_.name;
  shared_->max_concurrent = settings_.max_concurrent;
  shared_->max_queue = settings_.max_queue;
  HttpClientOptions options;
  options.io_threads = 1;
  // As many idle connections as requests may be in flight (nginx's
  // `keepalive 64` for an unbounded model): fewer closes one connection per
  // answer above the cap and opens a new one for the next request.
  options.max_idle_per_host = settings_.max_concurrent > 0 ? std::max(8, settings_.max_concurrent) : 64;
  options.tls = settings_.tls;
  shared_->client = std::make_shared<HttpClient>(options);
}

RemoteProvider::~RemoteProvider() {
  std::deque<std::shared_ptr<Call>> waiting;
  std::shared_ptr<HttpClient> client;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->closed = true;
    waiting.swap(shared_->waiting);
    client = std::move(shared_->client);
  }
  for (auto& c : waiting)
    c->callbacks.on_done(Status::unavailable("model '" + info_.name + "' was shut down before its request started"));
  client.reset();  // ends the requests in flight and joins the I/O thread
}

void RemoteProvider::generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) {
  if (!cancel) cancel = std::make_shared<CancelToken>();
  if (!callbacks.on_done) callbacks.on_done = [](Result<Completion>) {};
  // Deltas are asked for only by streaming clients (and the ensembles that
  // relay them); everyone else gets the upstream's whole answer.
  Result<UpstreamCall> prepared = prepare(request, static_cast<bool>(callbacks.on_delta));
  if (!prepared) return callbacks.on_done(prepared.status());
  UpstreamCall up = std::move(prepared).value();

  auto call = std::make_shared<Call>();
  call->shared = shared_;
  call->cancel = std::move(cancel);
  call->callbacks = std::move(callbacks);
  call->decoder = std::move(up.decoder);
  call->http.method = "POST";
  call->http.url = settings_.url(up.path);
  call->http.label = settings_.label;
  call->http.headers = settings_.headers;
  call->http.body = std::move(up.body);
  call->http.connect_timeout_ms = settings_.connect_timeout_ms;
  call->http.read_timeout_ms = settings_.read_timeout_ms;
  // The decoder lives inside the call, so a plain pointer back is safe.
  Call* raw = call.get();
  call->decoder->on_delta = [raw](Delta d) {
    if (raw->cancel->cancelled() || !raw->callbacks.on_delta) return;
    raw->callbacks.on_delta(std::move(d));
  };
  if (call->cancel->cancelled()) return call->callbacks.on_done(call->cancelled());

  std::shared_ptr<HttpClient> client;
  Status rejected;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->closed) {
      rejected = Status::unavailable("model '" + info_.name + "' is shutting down");
    } else if (shared_->max_concurrent <= 0 || shared_->active < shared_->max_concurrent) {
      ++shared_->active;
      client = shared_->client;
    } else if (shared_->waiting.size() < static_cast<size_t>(shared_->max_queue)) {
      shared_->waiting.push_back(call);
      schedule_sweep(shared_);
      return;
    } else {
      rejected = Status::resource_exhausted("model '" + info_.name + "': " + std::to_string(shared_->active) +
                                            " requests are in flight to its upstream and " +
                                            std::to_string(shared_->waiting.size()) +
                                            " are waiting; try again later");
    }
  }
  if (!rejected.is_ok()) return call->callbacks.on_done(rejected);
  start(std::move(call), client);
}

void RemoteProvider::start(std::shared_ptr<Call> call, const std::shared_ptr<HttpClient>& client) {
  HttpStreamCallbacks cb;
  cb.on_head = [call](const HttpResponseHead& head) {
    call->got_head = true;
    call->status = head.status;
    if (call->ok_status()) call->decoder->start(head);
  };
  cb.on_body = [call](std::string_view bytes) {
    if (!call->ok_status()) {
      size_t room = kMaxErrorBody - std::min(kMaxErrorBody, call->error_body.size());
      call->error_body.append(bytes.substr(0, room));
      return call->error_body.size() < kMaxErrorBody;
    }
    Status st = call->decoder->feed(bytes);
    if (!st) {
      call->stream_error = std::move(st);
      return false;
    }
    return true;
  };
  cb.on_done = [call](Status transport) { finish(call, std::move(transport)); };
  // The call keeps what its messages need (label, URL), not the body.
  HttpClientRequest http = call->http;
  http.body = std::move(call->http.body);
  CancelTokenPtr cancel = call->cancel;
  client->stream(std::move(http), std::move(cancel), std::move(cb));
}

void RemoteProvider::finish(const std::shared_ptr<Call>& call, Status transport) {
  Result<Completion> result = call->outcome(transport);
  Shared& shared = *call->shared;
  shared.requests_done.fetch_add(1);
  if (result) {
    shared.prompt_tokens.fetch_add(result->usage.prompt_tokens);
    shared.cached_prompt_tokens.fetch_add(result->usage.cached_prompt_tokens);
    shared.generated_tokens.fetch_add(result->usage.completion_tokens);
  } else {
    // The URL goes to the log only: client-facing messages name the model.
    // The upstream's own faults are warnings; a request it refused is not.
    const StatusCode code = result.status().code();
    const bool upstream_fault = code == StatusCode::kUnavailable || code == StatusCode::kDeadlineExceeded ||
                                code == StatusCode::kInternal;
    spdlog::log(upstream_fault ? spdlog::level::warn : spdlog::level::debug, "model '{}': upstream request to {} failed: {}",
                shared.model, call->http.url, result.status().to_string());
  }
  // Free the slot before telling the caller: the caller may drop the last
  // reference to the provider in on_done.
  release(call->shared);
  auto on_done = std::move(call->callbacks.on_done);
  call->callbacks = {};
  on_done(std::move(result));
}

void RemoteProvider::release(const std::shared_ptr<Shared>& shared) {
  std::shared_ptr<Call> next;
  std::shared_ptr<HttpClient> client;
  std::vector<std::shared_ptr<Call>> cancelled;
  {
    std::lock_guard<std::mutex> lock(shared->mu);
    --shared->active;
    while (!shared->waiting.empty()) {
      std::shared_ptr<Call> c = std::move(shared->waiting.front());
      shared->waiting.pop_front();
      if (c->cancel->cancelled()) {
        cancelled.push_back(std::move(c));
        continue;
      }
      if (!shared->client) break;
      next = std::move(c);
      client = shared->client;
      ++shared->active;
      break;
    }
  }
  for (auto& c : cancelled) c->callbacks.on_done(c->cancelled());
  if (next) start(std::move(next), client);
}

// Called with shared->mu held. Waiting requests that are cancelled end
// promptly instead of when a slot frees.
void RemoteProvider::schedule_sweep(const std::shared_ptr<Shared>& shared) {
  if (shared->sweeping || !shared->client) return;
  shared->sweeping = true;
  std::weak_ptr<Shared> weak = shared;
  shared->client->post_after(kSweepInterval, [weak] {
    auto s = weak.lock();
    if (!s) return;
    std::vector<std::shared_ptr<Call>> cancelled;
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->sweeping = false;
      for (auto it = s->waiting.begin(); it != s->waiting.end();) {
        if ((*it)->cancel->cancelled()) {
          cancelled.push_back(std::move(*it));
          it = s->waiting.erase(it);
        } else {
          ++it;
        }
      }
      if (!s->waiting.empty() && !s->closed) schedule_sweep(s);
    }
    for (auto& c : cancelled) c->callbacks.on_done(c->cancelled());
  });
}

ProviderStats RemoteProvider::stats() const {
  ProviderStats s;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    s.queued = static_cast<int64_t>(shared_->waiting.size());
    s.active_sequences = shared_->active;
  }
  s.parallel = settings_.max_concurrent;
  s.requests_done = shared_->requests_done.load();
  s.prompt_tokens = shared_->prompt_tokens.load();
  s.cached_prompt_tokens = shared_->cached_prompt_tokens.load();
  s.generated_tokens = shared_->generated_tokens.load();
  return s;
}

// ---------------------------------------------------------------------------
// OpenAiProvider

Result<json> tools_json(const std::vector<ToolSpec>& tools) {
  json out = json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const ToolSpec& t = tools[i];
    json fn = {{"name", t.name}};
    if (!t.description.empty()) fn["description"] = t.description;
    const std::string param = "tools[" + std::to_string(i) + "].function.parameters";
    Result<json> params = parse_json(t.parameters.empty() ? std::string_view("{}") : std::string_view(t.parameters),
                                     kDefaultJsonLimits, "'" + param + "'", param);
    if (!params) return params.status();
    if (!params->is_object()) return Status::invalid_argument("'" + param + "' must be a JSON schema object", param);
    fn["parameters"] = std::move(params).value();
    out.push_back({{"type", "function"}, {"function", std::move(fn)}});
  }
  return out;
}

// Written with no DOM, members sorted by name as json_text() writes a DOM's
// (the tests compare openai_request_json, its parse, against DOMs).
Status append_openai_request(std::string& out, const GenerateRequest& r, const std::string& upstream_model,
                             bool stream) {
  const SamplingParams& s = r.sampling;
  const bool chat = !r.prompt.has_value();
  const bool tools = chat && !r.tools.empty() && r.tool_choice != "none";
  // What can fail is checked first, so nothing half-written is returned.
  json tools_dom, schema;
  if (tools) {
    ASSIGN_OR_RETURN(tools_dom, tools_json(r.tools));
  }
  if (!s.json_schema.empty()) {
    ASSIGN_OR_RETURN(schema, parse_json(s.json_schema, kDefaultJsonLimits, "'response_format.json_schema.schema'",
                                        "response_format"));
  }
  size_t size = out.size() + 256 + upstream_model.size();  // no regrowing
  for (const auto& m : r.messages) size += 48 + m.content.size();
  if (r.prompt) size += r.prompt->size();
  out.reserve(size);
  JsonWriter w(out);
  w.begin_object();
  if (s.frequency_penalty != 0.0f) w.key("frequency_penalty").number(clean(s.frequency_penalty));
  if (s.ignore_eos) w.key("ignore_eos").boolean(true);
  if (!s.logit_bias.empty()) {
    json bias = json::object();  // a DOM: its keys sort as text, and a repeated token's last bias wins
    for (const auto& [token, value] : s.logit_bias) bias[std::to_string(token)] = clean(value);
    w.key("logit_bias").value(bias);
  }
  if (s.top_logprobs >= 0) {
    if (chat)
      w.key("logprobs").boolean(true);
    else
      w.key("logprobs").integer(s.top_logprobs);
  }
  if (s.max_tokens) w.key("max_tokens").integer(*s.max_tokens);
  if (chat) {
    w.key("messages").begin_array();
    for (const auto& m : r.messages) {
      w.begin_object().key("content");
      if (m.content.empty() && !m.tool_calls.empty())
        w.null();  // what OpenAI sends for a message that only calls tools
      else
        w.string(m.content);
      w.key("role").string(m.role);
      if (m.role == "tool") w.key("tool_call_id").string(m.tool_call_id);
      if (!m.tool_calls.empty()) {
        w.key("tool_calls");
        write_tool_calls(w, m.tool_calls);
      }
      w.end_object();
    }
    w.end_array();
  }
  if (s.min_p > 0.0f) w.key("min_p").number(clean(s.min_p));
  w.key("model").string(upstream_model);
  if (r.n != 1) w.key("n").integer(r.n);
  if (tools && !r.parallel_tool_calls) w.key("parallel_tool_calls").boolean(false);
  if (s.presence_penalty != 0.0f) w.key("presence_penalty").number(clean(s.presence_penalty));
  if (!chat) w.key("prompt").string(*r.prompt);
  if (s.penalty_last_n != 64) w.key("repeat_last_n").integer(s.penalty_last_n);
  if (s.repeat_penalty != 1.0f) w.key("repeat_penalty").number(clean(s.repeat_penalty));
  if (!s.json_schema.empty()) {
    w.key("response_format").begin_object().key("json_schema").begin_object().key("name").string("response");
    w.key("schema").value(schema).end_object().key("type").string("json_schema").end_object();
  } else if (s.json_object) {
    w.key("response_format").begin_object().key("type").string("json_object").end_object();
  }
  if (s.seed) w.key("seed").integer(*s.seed);
  if (!s.stop.empty()) {
    w.key("stop").begin_array();
    for (const auto& stop : s.stop) w.string(stop);
    w.end_array();
  }
  if (stream) {
    w.key("stream").boolean(true);
    w.key("stream_options").begin_object().key("include_usage").boolean(true).end_object();
  }
  w.key("temperature").number(clean(s.temperature));
  if (tools) {
    // A client's named function arrives as "required" with that one tool:
    // name it, which servers without "required" understand too.
    if (r.tool_choice == "required" && r.tools.size() == 1) {
      w.key("tool_choice").begin_object().key("function").begin_object().key("name").string(r.tools[0].name);
      w.end_object().key("type").string("function").end_object();
    } else if (r.tool_choice == "required") {
      w.key("tool_choice").string("required");
    }
    w.key("tools").value(tools_dom);
  }
  // llama.cpp and vLLM extras, sent only when set.
  if (s.top_k > 0) w.key("top_k").integer(s.top_k);
  if (s.top_logprobs >= 0 && chat) w.key("top_logprobs").integer(s.top_logprobs);
  if (s.top_p != 1.0f) w.key("top_p").number(clean(s.top_p));
  w.end_object();
  return Status::ok();
}

Result<json> openai_request_json(const GenerateRequest& r, const std::string& upstream_model, bool stream) {
  std::string text;
  RETURN_IF_ERROR(append_openai_request(text, r, upstream_model, stream));
  return parse_json(text).value();
}

Result<ProviderPtr> OpenAiProvider::create(const config::ModelConfig& config) {
  Result<RemoteSettings> settings = read_remote_settings(config);
  if (!settings) return settings.status();
  return ProviderPtr(new OpenAiProvider(model_info(config), std::move(settings).value()));
}

Result<RemoteProvider::UpstreamCall> OpenAiProvider::prepare(const GenerateRequest& request, bool stream) const {
  UpstreamCall call;
  RETURN_IF_ERROR(append_openai_request(call.body, request, settings().upstream_model, stream));
  const bool chat = !request.prompt.has_value();
  call.path = chat ? "/chat/completions" : "/completions";
  auto decoder = std::make_unique<OpenAiStreamDecoder>(chat, std::max(1, request.n), settings().label);
  if (!stream) decoder->expect_whole();
  call.decoder = std::move(decoder);
  return call;
}

}  // namespace llmpool::providers
