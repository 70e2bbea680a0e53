#include "engine/prefix_cache.h"

#include <algorithm>

namespace llmpool::engine {

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n), b.begin()).first -
                             a.begin());
}

double cached_value(size_t tokens, uint64_t last_used, uint64_t now, size_t sequences) {
  const uint64_t age = now > last_used ? now - last_used : 0;
  // Two ticks per request (admission, finish): age in turns of all sequences.
  const double turns = static_cast<double>(age) / (2.0 * static_cast<double>(std::max<size_t>(sequences, 1)));
  return static_cast<double>(tokens) / (1.0 + turns);
}

PrefixPlan plan_prefix(const std::vector<int32_t>& prompt, const std::vector<SequenceView>& seqs, uint64_t now,
                       size_t copy_cost) {
  PrefixPlan plan;
  if (prompt.empty()) return plan;
  const size_t cap = prompt.size() - 1;  // one token is always decoded, for the logits
  std::vector<size_t> lcp(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) lcp[i] = std::min(cap, common_prefix(*seqs[i].tokens, prompt));

  double best_net = 0.0;
  bool best_copies = false;
  for (size_t t = 0; t < seqs.size(); ++t) {
    if (!seqs[t].idle) continue;
    const size_t held = seqs[t].tokens->size();
    // Its own prefix: the tail past the match is lost.
    struct Option {
      int32_t donor;
      size_t reuse;
      double net;
    };
    std::vector<Option> options;
    options.push_back({-1, lcp[t],
                       static_cast<double>(lcp[t]) - cached_value(held - std::min(held, lcp[t]), seqs[t].last_used, now, seqs.size())});
    // The longest other prefix, copied in: everything the target held is lost.
    int32_t donor = -1;
    for (size_t d = 0; d < seqs.size(); ++d)
      if (d != t && lcp[d] > lcp[t] && (donor < 0 || lcp[d] > lcp[static_cast<size_t>(donor)]))
        donor = static_cast<int32_t>(d);
    if (donor >= 0) {
      const size_t r = lcp[static_cast<size_t>(donor)];
      options.push_back({donor, r,
                         static_cast<double>(r) - static_cast<double>(copy_cost) -
                             cached_value(held, seqs[t].last_used, now, seqs.size())});
    }
    for (const Option& o : options) {
      const bool copies = o.donor >= 0;
      bool better = plan.target < 0 || o.net > best_net;
      if (!better && o.net == best_net) {
        if (copies != best_copies) {
          better = !copies;
        } else {
          better = seqs[t].last_used < seqs[static_cast<size_t>(plan.target)].last_used;
        }
      }
      if (!better) continue;
      plan = {static_cast<int32_t>(t), o.donor, o.reuse};
      best_net = o.net;
      best_copies = copies;
    }
  }
  return plan;
}

std::vector<int32_t> eviction_order(const std::vector<SequenceView>& seqs, uint64_t now, int32_t exclude) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seqs[i].idle && static_cast<int32_t>(i) != exclude) out.push_back(static_cast<int32_t>(i));
  std::stable_sort(out.begin(), out.end(), [&](int32_t a, int32_t b) {
    const auto& sa = seqs[static_cast<size_t>(a)];
    const auto& sb = seqs[static_cast<size_t>(b)];
    const double va = cached_value(sa.tokens->size(), sa.last_used, now, seqs.size());
    const double vb = cached_value(sb.tokens->size(), sb.last_used, now, seqs.size());
    if (va != vb) return va < vb;
    return sa.last_used < sb.last_used;
  });
  return out;
}

}  // namespace llmpool::engine
