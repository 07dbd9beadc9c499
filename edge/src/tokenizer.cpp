// Encoding: added tokens, the normalizers (Replace, BertNormalizer), BertPreTokenizer and WordPiece, in the
// reference's order.
#include <algorithm>
#include <utility>

#include "aidetect/tokenizer.hpp"
#include "tokenizer_impl.hpp"
#include "unicode.hpp"

namespace aidetect {

using unicode::is_whitespace;

namespace {

std::u32string bert_normalize(std::u32string_view text, const BertNormalizerSpec& normalizer) {
    std::u32string out;
    out.reserve(text.size() + text.size() / 8);
    for (char32_t c : text) {
        if (normalizer.clean_text) {
            const bool keep_control = c == '\t' || c == '\n' || c == '\r';
            if (c == 0 || c == unicode::kReplacement || (!keep_control && unicode::is_other(c))) continue;
            if (keep_control || is_whitespace(c)) c = ' ';
        }
        if (normalizer.handle_chinese_chars && unicode::is_chinese_char(c)) {
            out.push_back(' ');
            out.push_back(c);
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    if (normalizer.strip_accents) {
        std::u32string decomposed;
        decomposed.reserve(out.size());
        for (char32_t c : out) unicode::append_nfd(c, decomposed);
        unicode::canonical_order(decomposed);
        decomposed.erase(std::remove_if(decomposed.begin(), decomposed.end(), unicode::is_nonspacing_mark),
                         decomposed.end());
        out = std::move(decomposed);
    }
    if (normalizer.lowercase) {
        std::u32string lowered;
        lowered.reserve(out.size());
        for (char32_t c : out) unicode::append_lowercase(c, lowered);
        out = std::move(lowered);
    }
    return out;
}

/// The reference's Replace: the literal pattern is found left to right, each match resuming after the last.
std::u32string replace_all(std::u32string_view text, const ReplaceSpec& replace) {
    if (text.empty()) return std::u32string();  // the reference finds no match in an empty string
    std::u32string out;
    out.reserve(text.size());
    const std::u32string_view pattern = replace.pattern;  // never empty (refused at load)
    std::size_t done = 0;
    for (std::size_t at = text.find(pattern); at != std::u32string_view::npos; at = text.find(pattern, done)) {
        out.append(text.substr(done, at - done));
        out += replace.content;
        done = at + pattern.size();
    }
    out.append(text.substr(done));
    return out;
}

}  // namespace

std::u32string Tokenizer::Impl::normalize(std::u32string_view text) const {
    std::u32string out(text);
    for (const auto& step : normalizers) {
        out = step.kind == NormalizerStep::Kind::kReplace ? replace_all(out, step.replace)
                                                          : bert_normalize(out, step.bert);
    }
    return out;
}

std::vector<Piece> split_on_tokens(std::vector<Piece> pieces, const std::vector<AddedTokenSpec>& tokens) {
    if (tokens.empty()) return pieces;
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (auto& piece : pieces) {
        if (piece.id >= 0) {
            out.push_back(std::move(piece));
            continue;
        }
        const std::u32string& s = piece.text;
        std::size_t done = 0;  // end of the last match (the reference's start_offset)
        std::size_t i = 0;
        while (i < s.size()) {
            const AddedTokenSpec* best = nullptr;
            for (const auto& token : tokens) {
                const std::size_t size = token.content.size();
                if (size <= s.size() - i && (best == nullptr || size > best->content.size()) &&
                    s.compare(i, size, token.content) == 0) {
                    best = &token;
                }
            }
            if (best == nullptr) {
                ++i;
                continue;
            }
            std::size_t start = i;
            std::size_t stop = i + best->content.size();
            if (best->lstrip) {
                while (start > done && is_whitespace(s[start - 1])) --start;
            }
            if (best->rstrip) {
                while (stop < s.size() && is_whitespace(s[stop])) ++stop;
            }
            if (done < start) out.push_back(Piece{s.substr(done, start - done), -1});
            out.push_back(Piece{best->content, best->id});
            done = i = stop;
        }
        if (done < s.size()) out.push_back(Piece{s.substr(done), -1});
    }
    return out;
}

std::vector<Piece> Tokenizer::Impl::split(std::u32string_view text) const {
    std::vector<Piece> pieces;
    pieces.push_back(Piece{std::u32string(text), -1});
    pieces = split_on_tokens(std::move(pieces), raw_tokens);
    for (auto& piece : pieces) {
        if (piece.id < 0) piece.text = normalize(piece.text);
    }
    return split_on_tokens(std::move(pieces), normalized_tokens);
}

template <typename Emit>
void Tokenizer::Impl::pre_tokenize(std::u32string_view text, Emit&& emit) const {
    if (!bert_pre_tokenizer) {
        if (!text.empty()) emit(text);
        return;
    }
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char32_t c = text[i];
        const bool space = is_whitespace(c);
        if (!space && !unicode::is_bert_punctuation(c)) continue;
        if (i > start) emit(text.substr(start, i - start));
        if (!space) emit(text.substr(i, 1));  // punctuation is its own word
        start = i + 1;
    }
    if (start < text.size()) emit(text.substr(start));
}

void Tokenizer::Impl::word_ids(std::u32string_view word, std::vector<std::int64_t>& out) const {
    if (word.size() > max_input_chars_per_word) {
        out.push_back(unk_id);
        return;
    }
    std::string bytes;
    std::vector<std::size_t> bounds;  // byte offset of each character, then the end
    bounds.reserve(word.size() + 1);
    for (char32_t c : word) {
        bounds.push_back(bytes.size());
        unicode::append_utf8(bytes, c);
    }
    bounds.push_back(bytes.size());
    const std::size_t first = out.size();
    std::string key;
    std::size_t start = 0;
    while (start < word.size()) {
        std::size_t end = word.size();
        while (end > start && bounds[end] - bounds[start] > max_token_bytes) --end;  // longer never matches
        bool found = false;
        for (; end > start; --end) {
            key.assign(start > 0 ? continuing_prefix : std::string());
            key.append(bytes, bounds[start], bounds[end] - bounds[start]);
            const auto it = vocab.find(key);
            if (it != vocab.end()) {
                out.push_back(it->second);
                found = true;
                break;
            }
        }
        if (!found) {  // one piece cannot be matched: the whole word is unknown
            out.resize(first);
            out.push_back(unk_id);
            return;
        }
        start = end;
    }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<std::int64_t> Tokenizer::encode(std::string_view text) const {
    std::vector<std::int64_t> ids;
    for (const auto& piece : impl_->split(unicode::decode_utf8(text))) {
        if (piece.id >= 0) {
            ids.push_back(piece.id);
            continue;
        }
        impl_->pre_tokenize(piece.text, [&](std::u32string_view word) { impl_->word_ids(word, ids); });
    }
    return ids;
}

std::vector<std::string> Tokenizer::words(std::string_view text) const {
    std::vector<std::string> words;
    for (const auto& piece : impl_->split(unicode::decode_utf8(text))) {
        if (piece.id >= 0) {
            words.push_back(unicode::encode_utf8(piece.text));
            continue;
        }
        impl_->pre_tokenize(piece.text,
                            [&](std::u32string_view word) { words.push_back(unicode::encode_utf8(word)); });
    }
    return words;
}

const std::vector<std::int64_t>& Tokenizer::prefix() const { return impl_->prefix; }
const std::vector<std::int64_t>& Tokenizer::suffix() const { return impl_->suffix; }
std::int64_t Tokenizer::pad_id() const { return impl_->pad_id; }
std::int64_t Tokenizer::max_id() const { return impl_->max_id; }
std::optional<std::int64_t> Tokenizer::token_to_id(const std::string& token) const { return lookup(*impl_, token); }

}  // namespace aidetect
