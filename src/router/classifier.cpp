#include "router/classifier.h"

#include <algorithm>
#include <cmath>
#include <string_view>
#include <unordered_map>

namespace llmpool::router {

namespace {

// Word classes; a word may be in several.
enum : uint8_t {
  kCode = 1,        // a programming keyword or language name
  kReason = 2,      // asks for reasoning
  kTech = 4,        // a technical term
  kSeq = 8,         // a sequence word on its own ("finally")
  kSeqFirst = 16,   // opens "first ... then"
  kSeqThen = 32,    // closes it
};

constexpr std::string_view kCodeWords[] = {
    "function", "def", "class", "return", "import", "struct", "const", "let", "var", "void", "int", "public",
    "private", "static", "lambda", "async", "await", "fn", "impl", "println", "printf", "cout", "std", "namespace",
    "template", "typename", "nullptr", "null", "undefined", "console", "elif", "endif", "func", "nil", "mut",
    "bool", "boolean", "python", "javascript", "typescript", "java", "rust", "golang", "cpp", "bash", "regex",
    "json", "yaml", "html", "css", "sql", "compile", "compiler", "debug", "bug", "stacktrace", "traceback",
    "exception", "segfault", "refactor", "snippet", "code", "script", "implement", "variable", "array",
    "recursion", "recursive", "method", "endpoint", "git", "dockerfile", "kubectl", "npm", "cmake", "unittest",
    "pytest", "api", "boilerplate", "syntax", "foreach", "enum", "typedef", "malloc", "iterator",
};

constexpr std::string_view kReasonWords[] = {
    "why", "prove", "proof", "explain", "derive", "derivation", "justify", "analyze", "analyse", "analysis",
    "compare", "contrast", "evaluate", "reason", "reasoning", "calculate", "compute", "solve", "deduce", "infer",
    "therefore", "hence", "theorem", "lemma", "hypothesis", "tradeoff", "tradeoffs", "verify", "demonstrate",
    "logically", "implications", "consequences", "critique", "assess", "rigorous", "rigorously",
};

constexpr std::string_view kTechWords[] = {
    "algorithm", "algorithms", "complexity", "database", "latency", "throughput", "kubernetes", "docker",
    "concurrency", "concurrent", "thread", "threads", "mutex", "deadlock", "compiler", "kernel", "protocol",
    "tcp", "udp", "http", "https", "dns", "tls", "encryption", "cryptography", "hash", "distributed",
    "consensus", "cache", "memory", "cpu", "gpu", "neural", "transformer", "gradient", "matrix", "eigenvalue",
    "vector", "integral", "derivative", "probability", "statistics", "regression", "bayesian", "entropy",
    "quantum", "polynomial", "asymptotic", "microservice", "microservices", "architecture", "scalability",
    "replication", "sharding", "schema", "bandwidth", "firmware", "runtime", "allocation", "pointer", "heap",
    "optimization", "convergence", "topology", "semaphore", "idempotent", "serialization", "api", "latencies",
    "benchmark", "compiler", "inference", "quantization", "tokenizer", "backpropagation",
};

constexpr std::string_view kSeqWords[] = {"finally", "afterwards", "subsequently", "lastly", "secondly", "thirdly"};
constexpr std::string_view kFirstWords[] = {"first", "firstly"};
constexpr std::string_view kThenWords[] = {"then", "next", "second"};

const std::unordered_map<std::string_view, uint8_t>& word_table() {
  static const auto* table = [] {
    auto* t = new std::unordered_map<std::string_view, uint8_t>();
    auto add = [t](auto& words, uint8_t cls) {
      for (std::string_view w : words) (*t)[w] |= cls;
    };
    add(kCodeWords, kCode);
    add(kReasonWords, kReason);
    add(kTechWords, kTech);
    add(kSeqWords, kSeq);
    add(kFirstWords, kSeqFirst);
    add(kThenWords, kSeqThen);
    return t;
  }();
  return *table;
}

constexpr size_t kMaxWord = 24;

inline bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool is_word_char(unsigned char c) { return is_alpha(c) || is_digit(c) || c == '_'; }
inline bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
inline bool is_code_symbol(unsigned char c) {
  switch (c) {
    case '{': case '}': case '[': case ']': case '(': case ')': case ';': case '=': case '<': case '>':
    case '&': case '|':
      return true;
    default:
      return false;
  }
}
inline bool is_math_operator(unsigned char c) {
  switch (c) {
    case '+': case '-': case '*': case '/': case '^': case '=': case '<': case '>': case '%':
      return true;
    default:
      return false;
  }
}

// Length of the UTF-8 sequence that starts with `c` (1 for stray bytes).
inline size_t utf8_len(unsigned char c) {
  if (c < 0xC0) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return 4;
}

// Mathematical Operators (U+2200-U+22FF), and × ÷ ± π.
inline bool is_math_symbol(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0; };
  if (b(0) == 0xE2 && b(1) >= 0x88 && b(1) <= 0x8B) return true;
  if (b(0) == 0xC3 && (b(1) == 0x97 || b(1) == 0xB7)) return true;
  if (b(0) == 0xC2 && b(1) == 0xB1) return true;
  if (b(0) == 0xCF && b(1) == 0x80) return true;
  return false;
}

struct Counts {
  int32_t fences = 0;  // ``` occurrences
  int32_t code_keywords = 0;
  int32_t code_tokens = 0;
  int64_t symbols = 0;
  int64_t nonspace = 0;
  int32_t reasoning_markers = 0;
  int32_t math_ops = 0;
  int32_t list_items = 0;
  int32_t sequence_markers = 0;
  int32_t technical_terms = 0;
};

class Scanner {
 public:
  explicit Scanner(Counts& c) : c_(c), table_(word_table()) {}

  void scan(std::string_view s) {
    seen_first_ = false;
    phrase_ = Phrase::kNone;
    after_step_ = false;
    size_t i = 0;
    const size_t n = s.size();
    bool line_start = true;
    unsigned char line_last = 0;  // last non-space byte class of the line
    bool last_was_number = false;
    while (i < n) {
      unsigned char ch = static_cast<unsigned char>(s[i]);
      if (ch == '\n') {
        end_line(line_last);
        line_last = 0;
        line_start = true;
        last_was_number = false;
        ++i;
        continue;
      }
      if (line_start) {
        line_start = false;
        while (i < n && (s[i] == ' ' || s[i] == '\t')) ++i;
        size_t k = i;
        while (k < n && k - i < 3 && is_digit(static_cast<unsigned char>(s[k]))) ++k;
        if (k > i && k + 1 < n && (s[k] == '.' || s[k] == ')') && s[k + 1] == ' ') ++c_.list_items;
        continue;
      }
      if (ch == ' ' || ch == '\t' || ch == '\r') {
        ++i;
        continue;
      }
      ++c_.nonspace;
      if (is_alpha(ch)) {
        size_t j = i;
        bool underscore = false, inner_upper = false, prev_lower = false;
        while (j < n && is_word_char(static_cast<unsigned char>(s[j]))) {
          unsigned char w = static_cast<unsigned char>(s[j]);
          if (w == '_' && j > i) underscore = true;
          if (w >= 'A' && w <= 'Z' && prev_lower) inner_upper = true;
          prev_lower = (w >= 'a' && w <= 'z');
          ++j;
        }
        on_word(s.substr(i, j - i));
        if (underscore || inner_upper) ++c_.code_tokens;
        if (j < n && s[j] == '(') ++c_.code_tokens;  // a call: f(x)
        c_.nonspace += static_cast<int64_t>(j - i) - 1;
        i = j;
        line_last = 'a';
        last_was_number = false;
        continue;
      }
      if (is_digit(ch)) {
        size_t j = i;
        while (j < n && (is_digit(static_cast<unsigned char>(s[j])) || s[j] == '.')) ++j;
        if (after_step_) ++c_.sequence_markers;  // "step 2"
        after_step_ = false;
        phrase_ = Phrase::kNone;
        c_.nonspace += static_cast<int64_t>(j - i) - 1;
        i = j;
        line_last = '0';
        last_was_number = true;
        continue;
      }
      if (ch >= 0x80) {
        if (is_math_symbol(s, i)) ++c_.math_ops;
        size_t len = utf8_len(ch);
        i += len;
        line_last = 'u';
        last_was_number = false;
        continue;
      }
      // ASCII punctuation and symbols.
      if (ch == '`' && i + 2 < n && s[i + 1] == '`' && s[i + 2] == '`') {
        ++c_.fences;
        c_.nonspace += 2;
        i += 3;
        line_last = '`';
        last_was_number = false;
        continue;
      }
      if (ch == '#' && s.compare(i, 8, "#include") == 0) ++c_.code_keywords;
      if (i + 1 < n) {
        char nx = s[i + 1];
        if ((ch == '-' && nx == '>') || (ch == ':' && nx == ':') || (ch == '=' && nx == '>')) ++c_.code_tokens;
      }
      if (is_code_symbol(ch)) ++c_.symbols;
      if (last_was_number && is_math_operator(ch)) {
        size_t k = i + 1;
        while (k < n && s[k] == ' ') ++k;
        if (k < n && (is_digit(static_cast<unsigned char>(s[k])) || s[k] == '(' ||
                      is_alpha(static_cast<unsigned char>(s[k]))))
          ++c_.math_ops;
      }
      last_was_number = false;
      line_last = ch;
      ++i;
    }
    end_line(line_last);
  }

 private:
  enum class Phrase { kNone, kStep, kStepBy };

  void end_line(unsigned char last) {
    if (last == ';' || last == '{' || last == '}') ++c_.code_tokens;
  }

  void on_word(std::string_view word) {
    if (word.size() > kMaxWord) {
      phrase_ = Phrase::kNone;
      after_step_ = false;
      return;
    }
    char buf[kMaxWord];
    for (size_t k = 0; k < word.size(); ++k) {
      char w = word[k];
      buf[k] = (w >= 'A' && w <= 'Z') ? static_cast<char>(w - 'A' + 'a') : w;
    }
    std::string_view lw(buf, word.size());

    auto it = table_.find(lw);
    uint8_t cls = it == table_.end() ? 0 : it->second;
    if (cls & kCode) ++c_.code_keywords;
    if (cls & kReason) ++c_.reasoning_markers;
    if (cls & kTech) ++c_.technical_terms;
    if (cls & kSeq) ++c_.sequence_markers;
    if ((cls & kSeqThen) && seen_first_) {
      ++c_.sequence_markers;
      seen_first_ = false;
    }
    if (cls & kSeqFirst) seen_first_ = true;

    // "step by step" is a strong request for reasoning; "step 2" a sequence.
    bool is_step = lw == "step";
    if (is_step && phrase_ == Phrase::kStepBy) {
      c_.reasoning_markers += 2;
      phrase_ = Phrase::kNone;
    } else if (is_step) {
      phrase_ = Phrase::kStep;
    } else if (lw == "by" && phrase_ == Phrase::kStep) {
      phrase_ = Phrase::kStepBy;
    } else {
      phrase_ = Phrase::kNone;
    }
    after_step_ = is_step;
  }

  Counts& c_;
  const std::unordered_map<std::string_view, uint8_t>& table_;
  bool seen_first_ = false;
  Phrase phrase_ = Phrase::kNone;
  bool after_step_ = false;
};

inline double clamp01(double v) { return std::clamp(v, 0.0, 1.0); }

// Characters, split into ASCII and other code points.
void count_chars(std::string_view s, int64_t& ascii, int64_t& other) {
  int64_t a = 0, o = 0;
  for (unsigned char ch : s) {
    if (ch < 0x80) ++a;
    else if ((ch & 0xC0) != 0x80) ++o;  // a lead byte; continuation bytes are not characters
  }
  ascii += a;
  other += o;
}

bool is_instruction_role(const std::string& role) { return role == "system" || role == "developer"; }

void add_tag(std::vector<std::string>& tags, const char* tag) { tags.emplace_back(tag); }

// Everything the model reads: message text, tool calls and results, the raw
// prompt, and the tool definitions the template renders into the prompt.
void count_request_chars(const GenerateRequest& request, int64_t& ascii, int64_t& other) {
  for (const auto& m : request.messages) {
    count_chars(m.content, ascii, other);
    count_chars(m.reasoning_content, ascii, other);
    for (const auto& call : m.tool_calls) {
      count_chars(call.name, ascii, other);
      count_chars(call.arguments, ascii, other);
    }
  }
  if (request.prompt) count_chars(*request.prompt, ascii, other);
  if (request.tool_choice != "none") {
    for (const auto& t : request.tools) {
      count_chars(t.name, ascii, other);
      count_chars(t.description, ascii, other);
      count_chars(t.parameters, ascii, other);
    }
  }
}

}  // namespace

int64_t estimate_prompt_tokens(const GenerateRequest& request, const ClassifierOptions& options) {
  int64_t ascii = 0, other = 0;
  count_request_chars(request, ascii, other);
  double cpt = options.chars_per_token > 0 ? options.chars_per_token : 4.0;
  double tokens = std::ceil(static_cast<double>(ascii) / cpt) +
                  std::ceil(static_cast<double>(other) * std::max(0.0, options.non_ascii_tokens_per_char));
  tokens += static_cast<double>(request.messages.size()) * std::max(0, options.tokens_per_message);
  return static_cast<int64_t>(tokens);
}

Classifier::Classifier(ClassifierOptions options) : options_(options) {}

Classification Classifier::classify(const GenerateRequest& request) const {
  Classification out;
  Features& f = out.features;
  const ClassifierOptions& o = options_;

  int64_t ascii = 0, other = 0;
  count_request_chars(request, ascii, other);
  f.chars = ascii + other;
  f.messages = static_cast<int32_t>(request.messages.size());
  f.estimated_tokens = estimate_prompt_tokens(request, o);

  // Markers: the newest text first, within the scan budget. System and
  // developer messages are instructions about style, not the task.
  Counts c;
  Scanner scanner(c);
  int64_t budget = std::max(0, o.max_scan_bytes);
  auto scan_tail = [&](std::string_view s) {
    if (budget <= 0 || s.empty()) return;
    if (static_cast<int64_t>(s.size()) > budget) {
      size_t start = s.size() - static_cast<size_t>(budget);
      while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
      s = s.substr(start);
    }
    budget -= static_cast<int64_t>(s.size());
    scanner.scan(s);
  };
  if (request.prompt) scan_tail(*request.prompt);
  for (auto it = request.messages.rbegin(); it != request.messages.rend() && budget > 0; ++it) {
    if (!is_instruction_role(it->role)) scan_tail(it->content);
  }

  f.fence_blocks = (c.fences + 1) / 2;
  f.code_keywords = c.code_keywords;
  f.code_tokens = c.code_tokens;
  f.symbol_density = c.nonspace > 0 ? static_cast<double>(c.symbols) / static_cast<double>(c.nonspace) : 0.0;
  f.reasoning_markers = c.reasoning_markers;
  f.math_ops = c.math_ops;
  f.list_items = c.list_items;
  f.sequence_markers = c.sequence_markers;
  f.technical_terms = c.technical_terms;

  // Normalised features; docs/routing.md lists these formulas.
  int32_t sat = std::max(1, o.length_saturation_tokens);
  f.length = clamp01(static_cast<double>(f.estimated_tokens) / sat);
  f.code = f.fence_blocks > 0 ? 1.0
                              : clamp01(0.2 * f.code_keywords + 0.2 * f.code_tokens +
                                        0.4 * clamp01((f.symbol_density - 0.03) / 0.07));
  f.reasoning = clamp01(0.34 * f.reasoning_markers + 0.1 * f.math_ops);
  f.multi_step = clamp01((f.list_items >= 2 ? 0.25 * f.list_items : 0.0) + 0.34 * f.sequence_markers);
  f.technical = clamp01(0.2 * f.technical_terms);

  const ClassifierWeights& w = o.weights;
  double wsum = std::max(0.0, w.length) + std::max(0.0, w.code) + std::max(0.0, w.reasoning) +
                std::max(0.0, w.multi_step) + std::max(0.0, w.technical);
  if (wsum > 0) {
    out.complexity = clamp01((std::max(0.0, w.length) * f.length + std::max(0.0, w.code) * f.code +
                              std::max(0.0, w.reasoning) * f.reasoning + std::max(0.0, w.multi_step) * f.multi_step +
                              std::max(0.0, w.technical) * f.technical) /
                             wsum);
  }

  if (f.code >= o.code_required) {
    add_tag(out.required, "code");
  } else if (f.code >= o.code_preferred) {
    add_tag(out.preferred, "code");
  }
  if (f.reasoning >= o.reasoning_preferred) {
    if (out.complexity >= o.reasoning_required_complexity) add_tag(out.required, "reasoning");
    else add_tag(out.preferred, "reasoning");
  }
  if (!request.tools.empty() && request.tool_choice != "none") {
    add_tag(o.tools_required ? out.required : out.preferred, "tools");
  }
  if (out.complexity < o.fast_below && out.required.empty()) add_tag(out.preferred, "fast");
  return out;
}

}  // namespace llmpool::router
