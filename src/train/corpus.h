// Training text for `llmpool train`: reads fortune-style files into
// documents (docs/train.md).
//
// A corpus is one or more paths. A file is read whole; a directory
// contributes its regular files (not recursively), in byte order of their
// names, skipping `*.dat` (strfile indexes) and files that resolve to one
// already read (Debian's `*.u8` links). Each file is split into documents at
// lines that hold only `%` (the fortune separator). Within a document every
// line is trimmed, runs of spaces and tabs become one space, control
// characters other than newline are dropped, and empty lines at either end
// are removed. A file that holds a NUL byte or is not valid UTF-8 is an
// error naming the file (a corpus is text: a binary file is a mistake).
//
// Thread-compatible free functions; no state.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace llmpool::train {

struct CorpusLimits {
  size_t max_files = 4096;
  size_t max_file_bytes = 64u << 20;
  size_t max_total_bytes = 256u << 20;
  // Longer documents are dropped (a demo model learns from short ones).
  size_t max_document_bytes = 4096;
};

struct Corpus {
  std::vector<std::string> files;      // in the order read
  std::vector<std::string> documents;  // normalised, non-empty
  size_t bytes_read = 0;
  size_t dropped_long = 0;             // documents over max_document_bytes
};

// Splits `text` (the content of one file) into normalised documents
// (see above) and appends them to `out`; returns how many documents were
// dropped for being longer than `max_document_bytes`.
size_t split_documents(std::string_view text, size_t max_document_bytes, std::vector<std::string>& out);

// Reads every path in `paths` (see above). Returns InvalidArgument with
// param "corpus" and the file's name for an empty path list, a binary or
// non-UTF-8 file, too many files or bytes, or a corpus without any
// document; NotFound for a missing path.
Result<Corpus> read_corpus(const std::vector<std::string>& paths, const CorpusLimits& limits = {});

}  // namespace llmpool::train
