// TextStream: turns generated token pieces into text that is safe to hand
// to a client as it comes. It holds back an incomplete UTF-8 character at
// the end and any tail that could be the start of a stop string, and
// reports a stop string as soon as it is complete (the stop string itself
// and everything after it are never delivered). Not thread-safe: one per
// generated choice, used by the engine thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llmpool::engine {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops = {});

  // Appends a piece; returns the text that is now safe to deliver (maybe
  // empty). After a stop string completes, stopped() is true and further
  // pushes return nothing.
  std::string push(std::string_view piece);
  // The held-back tail at the end of generation ("" after a stop), without
  // an incomplete UTF-8 character at its end.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

// Bytes at the end of `s` that form an incomplete UTF-8 character (0-3).
size_t incomplete_utf8_tail(std::string_view s);

}  // namespace llmpool::engine
