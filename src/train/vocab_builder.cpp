#include "train/vocab_builder.h"

#include <gguf.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <queue>
#include <memory>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace llmpool::train {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space
constexpr size_t kMinVocab = 300;
constexpr size_t kMaxVocab = 65536;

// llama_token_type (llama.h), kept here as plain numbers.
constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeUnknown = 2;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeByte = 6;

size_t utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) return 2;
  if ((c & 0xf0) == 0xe0) return 3;
  if ((c & 0xf8) == 0xf0) return 4;
  return 1;  // a stray byte stands alone (byte fallback)
}

// The UTF-8 characters of `s`.
std::vector<std::string_view> characters(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Word units of escaped text: each starts at "▁" or after a newline, and a
// newline ends the unit it follows ("▁assistant\n" can become one token, so
// even a model that sees little context knows where an answer starts).
void count_units(std::string_view escaped, std::unordered_map<std::string, uint64_t>& units) {
  size_t start = 0;
  auto flush = [&](size_t end) {
    if (end > start) ++units[std::string(escaped.substr(start, end - start))];
    start = end;
  };
  for (size_t i = 0; i < escaped.size();) {
    if (escaped[i] == '\n') {
      flush(i + 1);
      ++i;
      continue;
    }
    if (escaped.compare(i, kSpace.size(), kSpace) == 0) {
      flush(i);
      i += kSpace.size();
      continue;
    }
    ++i;
  }
  flush(escaped.size());
}

struct Word {
  std::vector<int32_t> symbols;
  uint64_t count = 0;
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct GgufDeleter {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};

}  // namespace

std::string escape_spm(std::string_view text, bool prefix) {
  std::string out;
  out.reserve(text.size() + text.size() / 4 + 3);
  if (prefix) out += kSpace;
  for (char c : text) {
    if (c == ' ') {
      out += kSpace;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<Vocab> build_vocab(const std::vector<std::string>& texts, const VocabOptions& options) {
  if (options.vocab_size < kMinVocab || options.vocab_size > kMaxVocab) {
    return Status::invalid_argument("vocab_size must be in [" + std::to_string(kMinVocab) + ", " +
                                        std::to_string(kMaxVocab) + "], got " + std::to_string(options.vocab_size),
                                    "vocab_size");
  }
  Vocab v;
  auto add = [&](std::string text, float score, int32_t type) {
    v.tokens.push_back(std::move(text));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0.0f, kTypeUnknown);
  add("<s>", 0.0f, kTypeControl);
  add("</s>", 0.0f, kTypeControl);
  add("<|im_start|>", 0.0f, kTypeControl);
  add("<|im_end|>", 0.0f, kTypeControl);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    add(name, 0.0f, kTypeByte);
  }

  std::unordered_map<std::string, uint64_t> unit_counts;
  for (const std::string& t : texts) count_units(escape_spm(t, true), unit_counts);

  // The alphabet: the most frequent characters (ties by text), newline and
  // other control characters excepted (they go through the byte tokens).
  std::map<std::string, uint64_t> char_counts;
  for (const auto& [unit, count] : unit_counts) {
    for (std::string_view c : characters(unit)) {
      if (c.size() == 1 && static_cast<unsigned char>(c[0]) < 0x20 && c[0] != '\n') continue;
      char_counts[std::string(c)] += count;
    }
  }
  std::vector<std::pair<std::string, uint64_t>> chars(char_counts.begin(), char_counts.end());
  std::stable_sort(chars.begin(), chars.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  const size_t room = options.vocab_size - kFixedTokens;
  chars.resize(std::min({chars.size(), options.max_alphabet, room}));
  std::sort(chars.begin(), chars.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::unordered_map<std::string, int32_t> id_of;
  for (const auto& [c, count] : chars) {
    id_of.emplace(c, static_cast<int32_t>(v.tokens.size()));
    add(c, 0.0f, kTypeNormal);
  }
  v.alphabet = chars.size();

  // Words as symbol sequences; a character outside the alphabet splits a
  // unit (nothing merges across it). Sorted, so the order is the same on
  // every run whatever the hash map did.
  std::map<std::vector<int32_t>, uint64_t> word_counts;
  for (const auto& [unit, count] : unit_counts) {
    std::vector<int32_t> symbols;
    auto flush = [&] {
      if (symbols.size() >= 2) word_counts[symbols] += count;
      symbols.clear();
    };
    for (std::string_view c : characters(unit)) {
      auto it = id_of.find(std::string(c));
      if (it == id_of.end()) {
        flush();
      } else {
        symbols.push_back(it->second);
      }
    }
    flush();
  }
  std::vector<Word> words;
  words.reserve(word_counts.size());
  for (auto& [symbols, count] : word_counts) words.push_back(Word{symbols, count});

  // Pair counts, the words each pair occurs in (entries may be stale: a
  // word is checked before it is merged), and a max-heap of (count, pair)
  // whose stale entries are skipped when they reach the top.
  std::unordered_map<uint64_t, int64_t> pairs;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;
  struct Entry {
    int64_t count;
    uint64_t key;
  };
  const auto lower_priority = [&v](const Entry& x, const Entry& y) {
    if (x.count != y.count) return x.count < y.count;
    // Ties go to the smaller (left, right) text.
    return std::tie(v.tokens[x.key >> 32], v.tokens[x.key & 0xffffffffu]) >
           std::tie(v.tokens[y.key >> 32], v.tokens[y.key & 0xffffffffu]);
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower_priority)> heap(lower_priority);
  const auto update = [&](const Word& w, uint32_t wi, int64_t sign) {
    for (size_t i = 1; i < w.symbols.size(); ++i) {
      const uint64_t key = pair_key(w.symbols[i - 1], w.symbols[i]);
      int64_t& count = pairs[key];
      count += sign * static_cast<int64_t>(w.count);
      if (sign > 0) where[key].push_back(wi);
      if (count > 0) heap.push(Entry{count, key});
    }
  };
  for (uint32_t wi = 0; wi < words.size(); ++wi) update(words[wi], wi, +1);

  const auto min_count = static_cast<int64_t>(std::max<uint64_t>(options.min_pair_count, 1));
  while (v.tokens.size() < options.vocab_size) {
    while (!heap.empty() && pairs[heap.top().key] != heap.top().count) heap.pop();
    if (heap.empty() || heap.top().count < min_count) break;
    const uint64_t best = heap.top().key;
    heap.pop();
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xffffffffu);
    std::string merged = v.tokens[a] + v.tokens[b];
    int32_t id;
    if (auto it = id_of.find(merged); it != id_of.end()) {
      id = it->second;  // the same text reached through another split
    } else {
      id = static_cast<int32_t>(v.tokens.size());
      id_of.emplace(merged, id);
      add(std::move(merged), -static_cast<float>(v.merges + 1), kTypeNormal);
      ++v.merges;
    }
    std::vector<uint32_t> candidates = std::move(where[best]);
    where.erase(best);
    for (uint32_t wi : candidates) {
      Word& w = words[wi];
      bool has = false;
      for (size_t i = 1; i < w.symbols.size() && !has; ++i) has = w.symbols[i - 1] == a && w.symbols[i] == b;
      if (!has) continue;
      update(w, wi, -1);
      std::vector<int32_t> out;
      out.reserve(w.symbols.size());
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == a && w.symbols[i + 1] == b) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(out);
      update(w, wi, +1);
    }
  }
  return v;
}

Status write_vocab_gguf(const Vocab& vocab, const std::string& path) {
  if (vocab.tokens.size() != vocab.scores.size() || vocab.tokens.size() != vocab.types.size() ||
      vocab.tokens.size() < kFixedTokens) {
    return Status::invalid_argument("malformed vocabulary", "vocab");
  }
  std::unique_ptr<gguf_context, GgufDeleter> ctx{gguf_init_empty()};
  gguf_set_val_str(ctx.get(), "tokenizer.ggml.model", "llama");
  std::vector<const char*> texts;
  texts.reserve(vocab.tokens.size());
  for (const std::string& t : vocab.tokens) texts.push_back(t.c_str());
  gguf_set_arr_str(ctx.get(), "tokenizer.ggml.tokens", texts.data(), texts.size());
  gguf_set_arr_data(ctx.get(), "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, vocab.scores.data(), vocab.scores.size());
  gguf_set_arr_data(ctx.get(), "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab.types.data(), vocab.types.size());
  gguf_set_val_u32(ctx.get(), "tokenizer.ggml.bos_token_id", kBosToken);
  gguf_set_val_u32(ctx.get(), "tokenizer.ggml.eos_token_id", kImEndToken);
  gguf_set_val_u32(ctx.get(), "tokenizer.ggml.unknown_token_id", kUnkToken);
  gguf_set_val_bool(ctx.get(), "tokenizer.ggml.add_bos_token", true);
  gguf_set_val_bool(ctx.get(), "tokenizer.ggml.add_eos_token", false);
  gguf_set_val_bool(ctx.get(), "tokenizer.ggml.add_space_prefix", true);

  const std::string tmp = path + ".tmp";
  if (!gguf_write_to_file(ctx.get(), tmp.c_str(), /*only_meta=*/false)) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    return Status::internal("cannot write vocabulary file " + path);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return Status::internal("cannot write vocabulary file " + path + ": " + ec.message());
  }
  return Status::ok();
}

}  // namespace llmpool::train
