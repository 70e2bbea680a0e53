// Builds a small SentencePiece-style ("llama" tokenizer model) vocabulary
// from training text, so that a demo model's output head is cheap
// (docs/train.md).
//
// The vocabulary is learned with byte-pair merges over the text as
// llama.cpp's SPM tokenizer sees it: spaces escaped to U+2581 ("▁") and one
// "▁" in front of each text. Merges never cross a "▁" word start, and a
// newline ends the word before it (so "▁assistant\n", ChatML's answer
// header, becomes one token). Each merged token's score is minus its merge
// rank, so llama.cpp's highest-score-first bigram merging applies the merges
// in the order they were learned. Characters outside the learned alphabet
// and control characters go through the 256 byte-fallback tokens
// <0x00>..<0xFF>.
//
// Token ids: 0 <unk>, 1 <s> (BOS), 2 </s>, 3 <|im_start|>, 4 <|im_end|>
// (EOS: the ChatML turn end, so a chat answer stops there), 5..260 the byte
// tokens, then the alphabet, then the merges.
//
// Deterministic: the same texts and options give the same vocabulary (ties
// are broken by the token texts, never by hash order). Thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace llmpool::train {

inline constexpr int32_t kUnkToken = 0;
inline constexpr int32_t kBosToken = 1;
inline constexpr int32_t kEndOfTextToken = 2;
inline constexpr int32_t kImStartToken = 3;
inline constexpr int32_t kImEndToken = 4;
inline constexpr int32_t kFirstByteToken = 5;
inline constexpr size_t kFixedTokens = 5 + 256;  // specials and bytes

struct VocabOptions {
  // Total tokens, specials and bytes included: 300 to 65536.
  size_t vocab_size = 2048;
  // At most this many distinct characters become tokens (the most frequent).
  size_t max_alphabet = 200;
  // A pair seen fewer times than this is not merged; merging stops early.
  uint64_t min_pair_count = 2;
};

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // llama_token_type values
  size_t alphabet = 0;         // characters that are tokens
  size_t merges = 0;           // tokens learned by merging
};

// " " -> "▁", with one "▁" in front when `prefix` (llama.cpp's SPM
// preprocessing with add_space_prefix).
std::string escape_spm(std::string_view text, bool prefix = true);

// Learns a vocabulary from `texts` (UTF-8; see above). Returns
// InvalidArgument with param "vocab_size" for a size out of range.
Result<Vocab> build_vocab(const std::vector<std::string>& texts, const VocabOptions& options = {});

// Writes `vocab` as a tokenizer-only GGUF file (like llama.cpp's
// models/ggml-vocab-*.gguf), which engine::write_model takes as its
// vocab_path. Written to `path + ".tmp"` and renamed into place. Returns
// Internal or NotFound (with the path) when the file cannot be written.
Status write_vocab_gguf(const Vocab& vocab, const std::string& path);

}  // namespace llmpool::train
