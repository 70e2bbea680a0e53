#include "train/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>

namespace llmpool::train {

namespace {

namespace fs = std::filesystem;

// Length of the UTF-8 sequence at s[i], or 0 if it is not a valid one
// (overlong forms, surrogates and code points above U+10FFFF included).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t cp = 0;
  if ((c & 0xe0) == 0xc0) {
    n = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// One line: trimmed, inner runs of blanks as one space, control bytes gone.
std::string normalise_line(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  bool pending_space = false;
  for (char ch : line) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
      pending_space = !out.empty();
      continue;
    }
    if (c < 0x20 || c == 0x7f) continue;
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(ch);
  }
  return out;
}

void finish_document(std::vector<std::string>& lines, size_t max_bytes, std::vector<std::string>& out,
                     size_t& dropped) {
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  size_t first = 0;
  while (first < lines.size() && lines[first].empty()) ++first;
  std::string doc;
  for (size_t i = first; i < lines.size(); ++i) {
    if (i > first) doc.push_back('\n');
    doc += lines[i];
  }
  lines.clear();
  if (doc.empty()) return;
  if (doc.size() > max_bytes) {
    ++dropped;
    return;
  }
  out.push_back(std::move(doc));
}

Status read_file(const fs::path& path, const CorpusLimits& limits, Corpus& corpus) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return Status::not_found("cannot read corpus file " + path.string() + ": " + ec.message(), "corpus");
  if (size > limits.max_file_bytes) {
    return Status::invalid_argument("corpus file " + path.string() + " is larger than " +
                                        std::to_string(limits.max_file_bytes) + " bytes",
                                    "corpus");
  }
  if (corpus.bytes_read + size > limits.max_total_bytes) {
    return Status::invalid_argument("corpus is larger than " + std::to_string(limits.max_total_bytes) + " bytes",
                                    "corpus");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::not_found("cannot open corpus file " + path.string(), "corpus");
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.find('\0') != std::string::npos) {
    return Status::invalid_argument("corpus file " + path.string() + " holds a NUL byte (not text)", "corpus");
  }
  if (!valid_utf8(text)) {
    return Status::invalid_argument("corpus file " + path.string() + " is not valid UTF-8", "corpus");
  }
  corpus.bytes_read += text.size();
  corpus.files.push_back(path.string());
  corpus.dropped_long += split_documents(text, limits.max_document_bytes, corpus.documents);
  return Status::ok();
}

}  // namespace

size_t split_documents(std::string_view text, size_t max_document_bytes, std::vector<std::string>& out) {
  size_t dropped = 0;
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string line = normalise_line(text.substr(pos, end - pos));
    if (line == "%") {
      finish_document(lines, max_document_bytes, out, dropped);
    } else {
      lines.push_back(std::move(line));
    }
    pos = end + 1;
  }
  finish_document(lines, max_document_bytes, out, dropped);
  return dropped;
}

Result<Corpus> read_corpus(const std::vector<std::string>& paths, const CorpusLimits& limits) {
  if (paths.empty()) return Status::invalid_argument("no corpus given", "corpus");
  Corpus corpus;
  std::set<fs::path> seen;
  auto add = [&](const fs::path& p) -> Status {
    std::error_code ec;
    fs::path canonical = fs::canonical(p, ec);
    if (ec) return Status::not_found("corpus path not found: " + p.string(), "corpus");
    if (!seen.insert(canonical).second) return Status::ok();
    if (seen.size() > limits.max_files) {
      return Status::invalid_argument("corpus has more than " + std::to_string(limits.max_files) + " files",
                                      "corpus");
    }
    return read_file(p, limits, corpus);
  };
  for (const std::string& path : paths) {
    std::error_code ec;
    const fs::path p(path);
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> files;
      for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) {
        if (!it->is_regular_file(ec)) continue;  // follows links; skips folders and devices
        if (it->path().extension() == ".dat") continue;
        files.push_back(it->path());
        if (files.size() > limits.max_files) break;
      }
      if (ec) return Status::not_found("cannot list corpus folder " + path + ": " + ec.message(), "corpus");
      std::sort(files.begin(), files.end());
      for (const fs::path& f : files) RETURN_IF_ERROR(add(f));
    } else if (fs::exists(p, ec)) {
      if (!fs::is_regular_file(p, ec)) {
        return Status::invalid_argument("corpus path is not a file or folder: " + path, "corpus");
      }
      RETURN_IF_ERROR(add(p));
    } else {
      return Status::not_found("corpus path not found: " + path, "corpus");
    }
  }
  if (corpus.documents.empty()) return Status::invalid_argument("corpus holds no text", "corpus");
  return corpus;
}

}  // namespace llmpool::train
