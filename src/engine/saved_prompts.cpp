#include "engine/saved_prompts.h"

#include <algorithm>

#include "engine/prefix_cache.h"

namespace llmpool::engine {

SavedPrompts::Match SavedPrompts::best(const std::vector<int32_t>& prompt) const {
  Match m;
  for (const Entry& e : entries_) {
    const size_t c = common_prefix(prompt, e.tokens);
    if (c > m.common) m = {&e, c};
  }
  return m;
}

bool SavedPrompts::put(std::vector<int32_t> tokens, std::vector<uint8_t> state) {
  if (tokens.empty() || state.empty() || state.size() > budget_) return false;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const size_t c = common_prefix(tokens, it->tokens);
    if (c == tokens.size()) {  // already saved, with as much or more
      entries_.splice(entries_.begin(), entries_, it);
      return false;
    }
    if (c == it->tokens.size()) {  // a shorter copy of the same path
      bytes_ -= it->state.size();
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  while (!entries_.empty() && bytes_ + state.size() > budget_) {
    bytes_ -= entries_.back().state.size();
    entries_.pop_back();
  }
  bytes_ += state.size();
  entries_.push_front({std::move(tokens), std::move(state)});
  return true;
}

SavedPrompts::Entry SavedPrompts::take(const Entry* entry) {
  auto it = std::find_if(entries_.begin(), entries_.end(), [entry](const Entry& e) { return &e == entry; });
  if (it == entries_.end()) return {};
  Entry out = std::move(*it);
  bytes_ -= out.state.size();
  entries_.erase(it);
  return out;
}

}  // namespace llmpool::engine
