// A BERT-family WordPiece tokenizer read from a `tokenizers` tokenizer.json, producing the same ids.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aidetect {

/// The tokenizer of a bundle: added (special) tokens, the normalizer (BertNormalizer, Replace with a String
/// pattern, or a Sequence of them), BertPreTokenizer and WordPiece, as the `tokenizers` library runs them. Immutable after loading, so one instance may serve many threads.
class Tokenizer {
  public:
    /// Read a tokenizer.json.
    ///
    /// @throws ModelFilesMissingError the file does not exist.
    /// @throws BundleError it is not valid JSON, or uses a normalizer, pre-tokenizer, model or post-processor
    ///         this runner does not support (the message names which).
    static Tokenizer from_file(const std::string& path);

    /// Parse tokenizer.json contents; `source` names it in error messages.
    static Tokenizer from_json(std::string_view json, const std::string& source);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    /// Content-token ids of a UTF-8 text: no special tokens, no truncation. Invalid UTF-8 is replaced with
    /// U+FFFD first.
    std::vector<std::int64_t> encode(std::string_view text) const;

    /// The pieces the model sees (added tokens and pre-tokenized words, after normalization), for diagnostics.
    std::vector<std::string> words(std::string_view text) const;

    /// Ids the post-processor puts before and after one sequence ([CLS] and [SEP] for BERT).
    const std::vector<std::int64_t>& prefix() const;
    const std::vector<std::int64_t>& suffix() const;

    /// Id of [PAD] (or <pad>; 0 if neither exists: padding is masked out anyway).
    std::int64_t pad_id() const;

    /// The highest token id of the vocabulary and added tokens.
    std::int64_t max_id() const;

    /// Id of a token, from the added tokens first, then the model's vocabulary.
    std::optional<std::int64_t> token_to_id(const std::string& token) const;

    struct Impl;  ///< opaque; defined inside the library

  private:
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace aidetect
