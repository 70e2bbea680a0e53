// Host-memory copies of KV sequences that the prefix cache had to overwrite
// (llama-server's --cache-ram): with `parallel` sequences only `parallel`
// prefixes stay in the KV cache, so a prompt repeated after more than that
// many others (a regeneration, the next turn of one chat among many, the same
// document asked about again) would be computed again. Before an idle
// sequence's tokens are dropped for a new request, the engine copies that
// sequence's state (llama_state_seq_get_data) here; a later prompt that
// shares more with a saved copy than with any sequence restores it
// (llama_state_seq_set_data) and computes only the rest.
//
// Plain data, no llama.cpp: entries are token paths with opaque state bytes,
// kept under a byte budget, least recently used first out. Owned and called
// only by the model's engine thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <vector>

namespace llmpool::engine {

class SavedPrompts {
 public:
  struct Entry {
    std::vector<int32_t> tokens;  // the tokens whose KV `state` holds (positions 0..n-1)
    std::vector<uint8_t> state;   // llama_state_seq_get_data's bytes
  };
  struct Match {
    const Entry* entry = nullptr;  // the entry with the longest common prefix; null: none shares a token
    size_t common = 0;             // tokens it shares with the prompt
  };

  explicit SavedPrompts(size_t budget_bytes) : budget_(budget_bytes) {}

  // The entry sharing the longest prefix with `prompt` (the most recent one
  // among equals).
  Match best(const std::vector<int32_t>& prompt) const;

  // Keeps a copy, unless one already saved holds these tokens or more (it is
  // then only marked as recent). An entry whose tokens are a prefix of these
  // is replaced; the least recently used go until the rest fits the budget.
  // A state larger than the whole budget is not kept. Returns whether kept.
  bool put(std::vector<int32_t> tokens, std::vector<uint8_t> state);

  // Removes `entry` (from best()) and returns it: its KV is in a sequence
  // again, and is saved anew when that sequence is next overwritten.
  Entry take(const Entry* entry);

  size_t bytes() const { return bytes_; }
  size_t size() const { return entries_.size(); }
  size_t budget() const { return budget_; }

 private:
  size_t budget_;
  size_t bytes_ = 0;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace llmpool::engine
