// The prefix cache's policy: which idle KV sequence a new request takes and
// which sequence's prefix it reuses.
//
// The store is the model's KV sequences themselves. Every sequence, idle or
// busy, keeps the KV of the tokens it last held (prompt and output), so with
// `parallel` sequences up to `parallel` distinct prefixes stay cached; an
// idle sequence is only overwritten when a request needs it. Each sequence
// holds one path of tokens, so the set of sequences is a radix tree whose
// leaves are the sequences: the longest match is the longest common prefix
// over all of them (O(sequences x prompt) integer compares per admission,
// microseconds next to one decode step).
//
// A request takes the idle sequence that maximises
//   reused tokens - value of the cached tokens it destroys,
// where reused tokens are either the sequence's own common prefix with the
// prompt (the tail after it is dropped) or another sequence's longer prefix
// copied in (llama_memory_seq_cp: a cell share in the unified KV cache, a
// stream copy otherwise, which costs `copy_cost` tokens' worth), and the
// value of cached tokens is their count weighted by recency (LRU x length):
// tokens / (1 + turns since the sequence was last used), a turn being one
// request per sequence (two engine ticks, admission and finish, each). So a
// request that
// matches only a few template tokens takes an empty sequence, or the one
// whose content is shortest and oldest, instead of wiping a long recent
// prefix; a repeated prompt, a regeneration or the next turn of a chat takes
// its own sequence; a shared system prompt is copied into a fresh sequence.
//
// Pure functions over plain data, no llama.cpp: the engine thread calls them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace llmpool::engine {

// What one KV sequence holds, as the planner sees it.
struct SequenceView {
  const std::vector<int32_t>* tokens = nullptr;  // tokens whose KV it holds (positions 0..n-1)
  uint64_t last_used = 0;                        // engine tick of its last admission or finish
  bool idle = false;                             // free to take a request
};

struct PrefixPlan {
  int32_t target = -1;  // index of the idle sequence that takes the request; -1: none idle
  int32_t donor = -1;   // index of the sequence whose prefix is copied into target; -1: none
  size_t reuse = 0;     // leading prompt tokens whose KV is reused (at most prompt size - 1)
};

// The longest common prefix of `a` and `b`.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

// The recency-weighted worth of `tokens` cached tokens last used at
// `last_used`, seen at tick `now`, among `sequences` sequences.
double cached_value(size_t tokens, uint64_t last_used, uint64_t now, size_t sequences);

// Picks the target and donor for `prompt` (non-empty) among `seqs` at tick
// `now`. `copy_cost`: the tokens a prefix copy is worth (0 in the unified
// cache). Ties go to the plan without a copy, then to the older sequence.
PrefixPlan plan_prefix(const std::vector<int32_t>& prompt, const std::vector<SequenceView>& seqs, uint64_t now,
                       size_t copy_cost);

// The idle sequences other than `exclude`, least valuable first (for the
// extra choices of an n > 1 request, which wipe what they take).
std::vector<int32_t> eviction_order(const std::vector<SequenceView>& seqs, uint64_t now, int32_t exclude);

}  // namespace llmpool::engine
