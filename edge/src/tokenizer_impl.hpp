// Internal state of aidetect::Tokenizer, filled from tokenizer.json (tokenizer_config.cpp) and used by the
// encoder (tokenizer.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "aidetect/tokenizer.hpp"

namespace aidetect {

struct AddedTokenSpec {
    std::u32string content;  // as matched: raw for normalized=false, normalized otherwise
    std::int64_t id = 0;
    bool lstrip = false;
    bool rstrip = false;
};

/// BertNormalizer settings.
struct BertNormalizerSpec {
    bool clean_text = true;
    bool handle_chinese_chars = true;
    bool strip_accents = true;
    bool lowercase = true;
};

/// Replace with a non-empty String pattern: every occurrence, left to right and non-overlapping, becomes
/// `content`.
struct ReplaceSpec {
    std::u32string pattern;
    std::u32string content;
};

/// One normalizer of the chain (a lone normalizer, or a Sequence's members in order).
struct NormalizerStep {
    enum class Kind { kBert, kReplace } kind = Kind::kBert;
    BertNormalizerSpec bert;
    ReplaceSpec replace;
};

/// A piece of text, or an added token already resolved to its id.
struct Piece {
    std::u32string text;
    std::int64_t id = -1;  // >= 0 for an added token
};

struct Tokenizer::Impl {
    std::string source;
    std::vector<NormalizerStep> normalizers;  // applied in order; empty = no normalizer
    bool bert_pre_tokenizer = true;
    std::unordered_map<std::string, std::int64_t> vocab;
    std::unordered_map<std::string, std::int64_t> added;  // added-token content -> id
    std::vector<AddedTokenSpec> raw_tokens;               // matched before normalization
    std::vector<AddedTokenSpec> normalized_tokens;        // matched after normalization
    std::string continuing_prefix = "##";
    std::int64_t unk_id = 0;
    std::size_t max_input_chars_per_word = 100;
    std::size_t max_token_bytes = 0;  // longest vocabulary entry, prefix stripped
    std::vector<std::int64_t> prefix;
    std::vector<std::int64_t> suffix;
    std::int64_t pad_id = 0;
    std::int64_t max_id = -1;

    /// The normalizers, in order, on one piece of text.
    std::u32string normalize(std::u32string_view text) const;
    /// Pieces of `text` after both added-token passes and normalization.
    std::vector<Piece> split(std::u32string_view text) const;
    /// Append the WordPiece ids of one pre-tokenized word.
    void word_ids(std::u32string_view word, std::vector<std::int64_t>& out) const;
    /// Call `emit` on each word BertPreTokenizer cuts from a normalized piece.
    template <typename Emit>
    void pre_tokenize(std::u32string_view text, Emit&& emit) const;
};

/// Id of a token, from the added tokens first, then the vocabulary.
std::optional<std::int64_t> lookup(const Tokenizer::Impl& impl, const std::string& token);

/// Split `pieces` further wherever one of `tokens` matches (leftmost-longest, as the reference's
/// Aho-Corasick), honouring lstrip/rstrip; used for both passes.
std::vector<Piece> split_on_tokens(std::vector<Piece> pieces, const std::vector<AddedTokenSpec>& tokens);

}  // namespace aidetect
