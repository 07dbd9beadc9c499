// Reading texts for the command line, as aidetect_infer/textio.py: one per non-blank line, or JSONL records
// with a string "text" field and an optional "id"; universal newlines; invalid UTF-8 replaced with U+FFFD.
#pragma once

#include <fstream>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace aidetect {

struct TextItem {
    std::string text;
    nlohmann::json id;  ///< the record's "id"; null when it has none
    long line = 0;      ///< 1-based line number in its input
};

/// Whether `path` names a JSONL file (.jsonl or .ndjson).
bool is_jsonl_name(const std::string& path);

/// Replace \uD800-\uDFFF escapes that do not form a surrogate pair with \uFFFD (Python's json module accepts
/// lone surrogates and the runtime then replaces them; nlohmann's parser refuses them).
std::string replace_lone_surrogate_escapes(const std::string& line);

/// Texts from a sequence of inputs (paths, "-" for stdin), read lazily.
class TextReader {
  public:
    /// @param paths inputs in order; empty means stdin.
    /// @param force_jsonl read every input as JSONL, whatever its name.
    TextReader(std::vector<std::string> paths, bool force_jsonl);

    /// The next text, or false at the end of the last input.
    ///
    /// @throws InvalidInputError an input cannot be read, or a JSONL line is malformed.
    bool next(TextItem& item);

  private:
    bool open_next();
    bool next_line(std::string& line);

    std::vector<std::string> paths_;
    bool force_jsonl_;
    std::size_t index_ = 0;
    std::unique_ptr<std::ifstream> file_;
    std::istream* stream_ = nullptr;
    std::string source_;
    bool jsonl_ = false;
    long number_ = 0;
    std::vector<std::string> pending_;  // lines split at a lone \r, not yet returned
    std::size_t pending_at_ = 0;
};

}  // namespace aidetect
