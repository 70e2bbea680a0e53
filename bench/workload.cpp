#include "workload.h"

#include <algorithm>
#include <iterator>
#include <cmath>
#include <numeric>

namespace llmpool::bench {
namespace {

// splitmix64: tiny, fast and the same on every platform (std's distributions
// are not), so a seed names the same prompts everywhere.
uint64_t next_random(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Common words, so that a BPE tokenizer spends about one token on each.
constexpr std::string_view kWords[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been",
    "if", "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may", "these",
    "about", "them", "than", "some", "time", "into", "only", "do", "could", "new", "many", "first",
    "then", "also", "any", "our", "like", "over", "such", "people", "after", "most", "made",
    "should", "between", "years", "where", "state", "before", "through", "world", "water", "under",
    "while", "city", "found", "house", "work", "place", "number", "part", "great", "small", "large",
    "every", "still", "light", "school", "night", "river", "country", "morning", "garden", "story",
    "music", "market", "window", "mountain", "letter", "history", "family", "system", "question",
    "friend", "answer", "problem", "reason", "station", "village", "picture", "summer", "winter",
    "street", "paper", "table", "evening", "machine", "engine", "simple", "quiet", "bright",
    "strong", "early", "later", "always", "never", "often", "almost", "together", "against",
    "around", "behind", "beyond", "during", "within", "without", "because", "although", "perhaps",
    "however", "travel", "follow", "change", "listen", "write", "build", "carry", "speak", "learn",
    "watch", "bring", "begin", "open", "close", "remember", "measure", "harbor", "forest", "bridge",
    "island", "valley", "stone", "cloud", "silver", "golden", "ancient", "modern", "careful",
    "gentle", "certain", "common", "distant", "famous", "narrow",
};

std::string trim_copy(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

std::optional<std::vector<LoadClass>> parse_mix(std::string_view text, std::string* error) {
  std::vector<LoadClass> classes;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string item = trim_copy(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    std::vector<std::string> parts;
    size_t pos = 0;
    while (true) {
      size_t colon = item.find(':', pos);
      parts.push_back(item.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos));
      if (colon == std::string::npos) break;
      pos = colon + 1;
    }
    if (parts.size() != 3 && parts.size() != 4) {
      *error = "mix entry '" + item + "' is not name:prompt_tokens:share[:max_tokens]";
      return std::nullopt;
    }
    LoadClass c;
    c.name = parts[0];
    try {
      size_t used = 0;
      c.prompt_tokens = std::stoi(parts[1], &used);
      if (used != parts[1].size()) throw std::invalid_argument("trailing");
      c.share = std::stod(parts[2], &used);
      if (used != parts[2].size()) throw std::invalid_argument("trailing");
      if (parts.size() == 4) {
        c.max_tokens = std::stoi(parts[3], &used);
        if (used != parts[3].size()) throw std::invalid_argument("trailing");
      }
    } catch (const std::exception&) {
      *error = "mix entry '" + item + "' has a non-numeric field";
      return std::nullopt;
    }
    if (c.name.empty() || c.prompt_tokens < 1 || c.prompt_tokens > 1000000 || !(c.share > 0) ||
        c.max_tokens < 0 || c.max_tokens > 1000000) {
      *error = "mix entry '" + item + "': name must be set, prompt_tokens 1-1000000, share > 0, max_tokens 1-1000000";
      return std::nullopt;
    }
    for (const LoadClass& other : classes) {
      if (other.name == c.name) {
        *error = "mix names class '" + c.name + "' twice";
        return std::nullopt;
      }
    }
    classes.push_back(c);
  }
  if (classes.empty()) {
    *error = "mix is empty";
    return std::nullopt;
  }
  return classes;
}

std::vector<int> assign_classes(const std::vector<LoadClass>& classes, int n, uint64_t seed) {
  std::vector<int> out;
  if (classes.empty() || n <= 0) return out;
  double total = 0;
  for (const LoadClass& c : classes) total += c.share;
  std::vector<int> counts(classes.size());
  std::vector<std::pair<double, size_t>> remainders;
  int given = 0;
  for (size_t i = 0; i < classes.size(); ++i) {
    double exact = n * classes[i].share / total;
    counts[i] = static_cast<int>(std::floor(exact));
    given += counts[i];
    remainders.emplace_back(exact - counts[i], i);
  }
  // Largest remainder first; ties go to the earlier class.
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; given < n; ++k, ++given) ++counts[remainders[k % remainders.size()].second];
  for (size_t i = 0; i < classes.size(); ++i) out.insert(out.end(), counts[i], static_cast<int>(i));
  uint64_t state = seed ^ 0x5eed5eed5eedULL;
  for (size_t i = out.size(); i > 1; --i) std::swap(out[i - 1], out[next_random(&state) % i]);
  return out;
}

std::string make_prompt(int target_tokens, double words_per_token, uint64_t seed, std::string_view tag,
                        bool shared_prefix) {
  uint64_t state = shared_prefix ? seed : seed ^ fnv1a(tag);
  const int words = std::max(1, static_cast<int>(std::lround(target_tokens * words_per_token)));
  std::string text;
  text.reserve(static_cast<size_t>(words) * 7 + tag.size() + 4);
  if (!shared_prefix) {
    text.append(tag);
    text.append(". ");
  }
  int left_in_sentence = 0;
  for (int i = 0; i < words; ++i) {
    if (left_in_sentence == 0) left_in_sentence = 6 + static_cast<int>(next_random(&state) % 9);
    std::string_view word = kWords[next_random(&state) % std::size(kWords)];
    bool first = text.empty() || text.back() == ' ';
    if (!first) text.push_back(' ');
    size_t at = text.size();
    text.append(word);
    if (first || (at >= 2 && text[at - 2] == '.')) {
      text[at] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[at])));
    }
    if (--left_in_sentence == 0 || i + 1 == words) text.push_back('.');
  }
  if (shared_prefix) {
    text.push_back(' ');
    text.append(tag);
    text.push_back('.');
  }
  return text;
}

namespace {

nlohmann::json body_head(const std::string& model, int max_tokens, uint64_t seed, bool stream,
                         const Sampling& sampling) {
  nlohmann::json body = {
      {"model", model},
      {"max_tokens", max_tokens},
      {"temperature", sampling.temperature},
      {"seed", seed},
      {"ignore_eos", true},
      {"stream", stream},
  };
  if (sampling.temperature > 0 && sampling.top_p < 1) body["top_p"] = sampling.top_p;
  if (stream) body["stream_options"] = {{"include_usage", true}};
  return body;
}

}  // namespace

std::string make_request_body(Endpoint endpoint, const std::string& model, const std::string& prompt,
                              int max_tokens, uint64_t seed, bool stream, const std::string& system,
                              const Sampling& sampling) {
  nlohmann::json body = body_head(model, max_tokens, seed, stream, sampling);
  if (endpoint == Endpoint::kChat) {
    body["messages"] = nlohmann::json::array();
    if (!system.empty()) body["messages"].push_back({{"role", "system"}, {"content", system}});
    body["messages"].push_back({{"role", "user"}, {"content", prompt}});
  } else {
    body["prompt"] = prompt;
  }
  return body.dump();
}

std::string make_chat_body(const std::string& model, const nlohmann::json& messages, int max_tokens, uint64_t seed,
                           bool stream, const Sampling& sampling) {
  nlohmann::json body = body_head(model, max_tokens, seed, stream, sampling);
  body["messages"] = messages;
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ResponseReader::ResponseReader(Endpoint endpoint, Clock::time_point start, int cls, int max_tokens, bool keep_raw)
    : endpoint_(endpoint), start_(start), keep_raw_(keep_raw) {
  out_.cls = cls;
  out_.max_tokens = max_tokens;
}

double ResponseReader::since_start(Clock::time_point t) const {
  return std::chrono::duration<double>(t - start_).count();
}

void ResponseReader::note(const std::string& text) {
  if (std::find(out_.notes.begin(), out_.notes.end(), text) == out_.notes.end()) out_.notes.push_back(text);
}

void ResponseReader::on_head(const ResponseHead& head) {
  status_ = head.status;
  out_.streamed = head.status == 200 && head.header("content-type").find("text/event-stream") != std::string::npos;
}

bool ResponseReader::on_body(std::string_view bytes, Clock::time_point at) {
  if (keep_raw_ && out_.raw.size() < (4u << 20)) out_.raw.append(bytes);
  if (!out_.streamed) {
    // An error or a whole JSON answer: keep it (bounded) to read at the end.
    if (body_.size() < (16u << 20)) body_.append(bytes);
    return true;
  }
  sse_.feed(bytes, [&](const std::string& data) {
    if (!done_) event(data, at);
  });
  return !done_;
}

void ResponseReader::content(const nlohmann::json& choice, Clock::time_point at) {
  const nlohmann::json* text = nullptr;
  if (endpoint_ == Endpoint::kChat) {
    auto delta = choice.find(out_.streamed ? "delta" : "message");
    if (delta == choice.end() || !delta->is_object()) {
      note(out_.streamed ? "chunk choice without delta" : "choice without message");
      return;
    }
    for (const char* key : {"content", "reasoning_content"}) {
      auto it = delta->find(key);
      if (it != delta->end() && it->is_string() && !it->get_ref<const std::string&>().empty()) text = &*it;
    }
  } else {
    auto it = choice.find("text");
    if (it != choice.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) text = &*it;
  }
  if (text == nullptr) return;
  if (out_.text.size() < (1u << 20)) out_.text += text->get_ref<const std::string&>();
  double t = since_start(at);
  if (out_.delta_times.empty()) out_.ttft_s = t;
  out_.delta_times.push_back(t);
}

void ResponseReader::usage(const nlohmann::json& message) {
  auto u = message.find("usage");
  if (u == message.end() || !u->is_object()) return;
  usage_seen_ = true;
  auto read = [&](const char* key, long* to) {
    auto it = u->find(key);
    if (it != u->end() && it->is_number_integer()) *to = it->get<long>();
  };
  read("prompt_tokens", &out_.prompt_tokens);
  read("completion_tokens", &out_.completion_tokens);
  if (auto d = u->find("prompt_tokens_details"); d != u->end() && d->is_object()) {
    auto c = d->find("cached_tokens");
    if (c != d->end() && c->is_number_integer()) out_.cached_tokens = c->get<long>();
  }
}

void ResponseReader::event(const std::string& data, Clock::time_point at) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  nlohmann::json chunk = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (chunk.is_discarded() || !chunk.is_object()) {
    if (stream_error_.empty()) stream_error_ = "malformed JSON in stream: " + data.substr(0, 120);
    return;
  }
  if (auto err = chunk.find("error"); err != chunk.end()) {
    if (stream_error_.empty()) {
      std::string msg = err->is_object() && err->contains("message") && (*err)["message"].is_string()
                            ? (*err)["message"].get<std::string>()
                            : err->dump();
      stream_error_ = "error event in stream: " + msg.substr(0, 200);
    }
    return;
  }
  const char* expected = endpoint_ == Endpoint::kChat ? "chat.completion.chunk" : "text_completion";
  if (auto obj = chunk.find("object"); obj == chunk.end() || *obj != expected) {
    note(std::string("chunk object is not ") + expected);
  }
  if (auto choices = chunk.find("choices"); choices != chunk.end() && choices->is_array()) {
    if (!choices->empty() && (*choices)[0].is_object()) content((*choices)[0], at);
  } else {
    note("chunk without choices array");
  }
  usage(chunk);
}

RequestOutcome ResponseReader::finish(const std::string& transport_error, Clock::time_point end) {
  out_.e2e_s = since_start(end);
  auto fail = [&](std::string why) {
    out_.ok = false;
    out_.error = std::move(why);
    return std::move(out_);
  };
  if (status_ != 200 && status_ != 0) {
    // Say what the server said: the OpenAI error message when there is one.
    std::string what = body_.substr(0, 200);
    nlohmann::json j = nlohmann::json::parse(body_, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("error")) {
      const auto& e = j["error"];
      what = e.is_object() && e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>()
                                                                                 : e.dump();
    }
    return fail("HTTP " + std::to_string(status_) + ": " + what);
  }
  if (!transport_error.empty()) return fail(transport_error);
  if (status_ == 0) return fail("no response");
  if (out_.streamed) {
    if (!stream_error_.empty()) return fail(stream_error_);
    if (!done_) note("stream ended without [DONE]");
  } else {
    nlohmann::json j = nlohmann::json::parse(body_, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail("answer is neither SSE nor a JSON object");
    if (j.contains("error")) return fail("error object in a 200 answer: " + j["error"].dump().substr(0, 200));
    note("answer not streamed");
    auto choices = j.find("choices");
    if (choices == j.end() || !choices->is_array() || choices->empty() || !(*choices)[0].is_object()) {
      return fail("answer without choices");
    }
    content((*choices)[0], end);
    usage(j);
  }
  if (!usage_seen_) note("no usage in answer");
  if (out_.delta_times.empty() && out_.completion_tokens <= 0) return fail("answer has no content");
  if (out_.completion_tokens >= 0 && out_.streamed &&
      static_cast<long>(out_.delta_times.size()) > out_.completion_tokens) {
    note("more content deltas than usage.completion_tokens");
  }
  out_.ok = true;
  return std::move(out_);
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

Summary summarize(std::vector<double> values) {
  Summary s;
  s.n = values.size();
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.p50 = percentile(values, 50);
  s.p99 = percentile(values, 99);
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  s.max = values.back();
  return s;
}

PhaseStats aggregate(const std::vector<RequestOutcome>& outcomes, double wall_s, int cls) {
  PhaseStats s;
  s.wall_s = wall_s;
  std::vector<double> ttft, itl, e2e, decode;
  double prompt_sum = 0, cached_sum = 0;
  int prompt_n = 0, cached_n = 0;
  for (const RequestOutcome& o : outcomes) {
    if (cls >= 0 && o.cls != cls) continue;
    if (!o.ok) {
      ++s.failed;
      ++s.errors[o.error];
      continue;
    }
    ++s.ok;
    for (const std::string& n : o.notes) ++s.notes[n];
    s.output_tokens += o.output_tokens();
    if (o.completion_tokens >= 0) ++s.usage_seen;
    if (o.streamed) ++s.streamed;
    if (o.output_tokens() < o.max_tokens) ++s.short_outputs;
    if (o.prompt_tokens >= 0) {
      prompt_sum += static_cast<double>(o.prompt_tokens);
      ++prompt_n;
    }
    if (o.cached_tokens >= 0) {
      cached_sum += static_cast<double>(o.cached_tokens);
      ++cached_n;
    }
    if (o.ttft_s >= 0) ttft.push_back(o.ttft_s * 1e3);
    e2e.push_back(o.e2e_s * 1e3);
    for (size_t i = 1; i < o.delta_times.size(); ++i) itl.push_back((o.delta_times[i] - o.delta_times[i - 1]) * 1e3);
    if (o.delta_times.size() >= 2) {
      double span = o.delta_times.back() - o.delta_times.front();
      if (span > 0) decode.push_back(static_cast<double>(o.delta_times.size() - 1) / span);
    }
  }
  s.output_tok_s = wall_s > 0 ? static_cast<double>(s.output_tokens) / wall_s : 0;
  s.requests_per_s = wall_s > 0 ? s.ok / wall_s : 0;
  s.prompt_tokens_mean = prompt_n > 0 ? prompt_sum / prompt_n : 0;
  s.cached_tokens_mean = cached_n > 0 ? cached_sum / cached_n : -1;
  s.ttft_ms = summarize(std::move(ttft));
  s.itl_ms = summarize(std::move(itl));
  s.e2e_ms = summarize(std::move(e2e));
  s.decode_tok_s = summarize(std::move(decode));
  return s;
}

nlohmann::json to_json(const Summary& s) {
  return {{"n", s.n}, {"p50", s.p50}, {"p99", s.p99}, {"mean", s.mean}, {"max", s.max}};
}

nlohmann::json to_json(const PhaseStats& s) {
  return {
      {"requests_ok", s.ok},
      {"requests_failed", s.failed},
      {"wall_s", s.wall_s},
      {"output_tokens", s.output_tokens},
      {"output_tok_s", s.output_tok_s},
      {"requests_per_s", s.requests_per_s},
      {"prompt_tokens_mean", s.prompt_tokens_mean},
      {"cached_tokens_mean", s.cached_tokens_mean >= 0 ? nlohmann::json(s.cached_tokens_mean) : nlohmann::json()},
      {"usage_seen", s.usage_seen},
      {"streamed", s.streamed},
      {"short_outputs", s.short_outputs},
      {"ttft_ms", to_json(s.ttft_ms)},
      {"itl_ms", to_json(s.itl_ms)},
      {"e2e_ms", to_json(s.e2e_ms)},
      {"decode_tok_s_per_stream", to_json(s.decode_tok_s)},
      {"errors", s.errors},
      {"notes", s.notes},
  };
}

HeaderCounts count_header(const std::vector<RequestOutcome>& outcomes, const std::string& header, double window_s) {
  HeaderCounts c;
  c.header = header;
  c.window_s = window_s;
  for (const RequestOutcome& r : outcomes) {
    const std::string key = !r.ok ? "(failed)" : r.header.empty() ? "(none)" : r.header;
    size_t w = static_cast<size_t>(std::max(0.0, r.start_s) / window_s);
    while (c.windows.size() <= w) {
      HeaderWindow hw;
      hw.start_s = static_cast<double>(c.windows.size()) * window_s;
      hw.end_s = hw.start_s + window_s;
      c.windows.push_back(std::move(hw));
    }
    c.windows[w].counts[key]++;
    c.total[key]++;
  }
  return c;
}

nlohmann::json to_json(const HeaderCounts& c) {
  nlohmann::json windows = nlohmann::json::array();
  for (const HeaderWindow& w : c.windows)
    windows.push_back({{"start_s", w.start_s}, {"end_s", w.end_s}, {"counts", w.counts}});
  return {{"header", c.header}, {"window_s", c.window_s}, {"windows", windows}, {"total", c.total}};
}

}  // namespace llmpool::bench
