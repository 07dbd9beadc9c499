// Reading tokenizer.json into Tokenizer::Impl; anything the runner cannot reproduce exactly is refused here.
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "aidetect/errors.hpp"
#include "tokenizer_impl.hpp"
#include "unicode.hpp"

namespace aidetect {
namespace {

using nlohmann::json;

[[noreturn]] void refuse(const std::string& source, const std::string& what) {
    throw BundleError(source + ": " + what + "; " + kRebuildHint);
}

std::string type_of(const json& node) {
    if (node.is_null()) return "null";
    if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) return "<no type>";
    return node["type"].get<std::string>();
}

bool flag(const json& node, const char* key, bool fallback) {
    if (!node.contains(key) || node[key].is_null()) return fallback;
    if (!node[key].is_boolean()) throw json::type_error::create(302, std::string(key) + " must be a boolean", &node);
    return node[key].get<bool>();
}

constexpr const char* kSupportedNormalizers =
    "BertNormalizer, Replace with a String pattern, a Sequence of them, or none";

/// Append the steps of one normalizer node (a Sequence's members, recursively, in order).
void read_normalizer(const json& node, const std::string& source, std::vector<NormalizerStep>& steps) {
    const std::string type = type_of(node);
    if (type == "null") return;
    if (type == "Sequence") {
        const json& members = node.at("normalizers");
        if (!members.is_array()) refuse(source, "normalizer Sequence needs a list \"normalizers\"");
        for (const auto& member : members) {
            if (member.is_null()) refuse(source, "normalizer Sequence has a null member");
            read_normalizer(member, source, steps);
        }
        return;
    }
    NormalizerStep step;
    if (type == "Replace") {
        const json& pattern = node.at("pattern");
        if (pattern.is_object() && pattern.contains("Regex")) {
            refuse(source, "normalizer Replace with a Regex pattern (" + pattern["Regex"].dump() +
                               ") is not supported by the C++ runner (String patterns only)");
        }
        if (!pattern.is_object() || !pattern.contains("String") || !pattern["String"].is_string()) {
            refuse(source, "normalizer Replace needs a pattern {\"String\": ...}, got " + pattern.dump());
        }
        if (pattern["String"].get_ref<const std::string&>().empty()) {
            // The reference matches an empty pattern at every character boundary and then panics on its own
            // offsets (tokenizers 0.22): nothing to reproduce.
            refuse(source, "normalizer Replace with an empty pattern is not supported (the tokenizers library "
                           "fails on it too)");
        }
        const json& content = node.at("content");
        if (!content.is_string()) refuse(source, "normalizer Replace needs a string content, got " + content.dump());
        step.kind = NormalizerStep::Kind::kReplace;
        step.replace.pattern = unicode::decode_utf8(pattern["String"].get<std::string>());
        step.replace.content = unicode::decode_utf8(content.get<std::string>());
        steps.push_back(std::move(step));
        return;
    }
    if (type != "BertNormalizer") {
        refuse(source, "normalizer " + type + " is not supported by the C++ runner (" + kSupportedNormalizers + ")");
    }
    step.kind = NormalizerStep::Kind::kBert;
    step.bert.clean_text = flag(node, "clean_text", true);
    step.bert.handle_chinese_chars = flag(node, "handle_chinese_chars", true);
    step.bert.lowercase = flag(node, "lowercase", true);
    step.bert.strip_accents = flag(node, "strip_accents", step.bert.lowercase);  // null follows lowercase
    steps.push_back(std::move(step));
}

std::vector<std::int64_t> ids_of(const json& node) {
    std::vector<std::int64_t> ids;
    for (const auto& id : node) ids.push_back(id.get<std::int64_t>());
    return ids;
}

/// The ids `processor` puts around a single sequence; false if its type is not supported.
bool read_processor(const json& node, std::vector<std::int64_t>& prefix, std::vector<std::int64_t>& suffix) {
    const std::string type = type_of(node);
    if (type == "null" || type == "ByteLevel") return true;
    if (type == "BertProcessing" || type == "RobertaProcessing") {
        prefix.insert(prefix.begin(), node.at("cls").at(1).get<std::int64_t>());
        suffix.push_back(node.at("sep").at(1).get<std::int64_t>());
        return true;
    }
    if (type == "TemplateProcessing") {
        std::vector<std::int64_t> before, after;
        bool seen_sequence = false;
        for (const auto& item : node.at("single")) {
            if (item.contains("Sequence")) {
                seen_sequence = true;
                continue;
            }
            const auto name = item.at("SpecialToken").at("id").get<std::string>();
            const auto ids = ids_of(node.at("special_tokens").at(name).at("ids"));
            auto& side = seen_sequence ? after : before;
            side.insert(side.end(), ids.begin(), ids.end());
        }
        prefix.insert(prefix.begin(), before.begin(), before.end());
        suffix.insert(suffix.end(), after.begin(), after.end());
        return true;
    }
    if (type == "Sequence") {
        for (const auto& inner : node.at("processors")) {
            if (!read_processor(inner, prefix, suffix)) return false;
        }
        return true;
    }
    return false;
}

void read_model(const json& model, Tokenizer::Impl& impl) {
    const std::string type = type_of(model);
    if (type != "WordPiece") {
        refuse(impl.source, "tokenizer model " + type + " is not supported by the C++ runner (BERT WordPiece only)");
    }
    for (const auto& [token, id] : model.at("vocab").items()) {
        impl.vocab.emplace(token, id.get<std::int64_t>());
    }
    if (model.contains("continuing_subword_prefix") && model["continuing_subword_prefix"].is_string()) {
        impl.continuing_prefix = model["continuing_subword_prefix"].get<std::string>();
    }
    if (model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"].is_number_unsigned()) {
        impl.max_input_chars_per_word = model["max_input_chars_per_word"].get<std::size_t>();
    }
    const auto unk = model.at("unk_token").get<std::string>();
    const auto it = impl.vocab.find(unk);
    if (it == impl.vocab.end()) refuse(impl.source, "the unknown token " + unk + " is not in the vocabulary");
    impl.unk_id = it->second;
    for (const auto& [token, id] : impl.vocab) {
        const bool continued = token.compare(0, impl.continuing_prefix.size(), impl.continuing_prefix) == 0;
        const std::size_t size = continued ? token.size() - impl.continuing_prefix.size() : token.size();
        impl.max_token_bytes = std::max(impl.max_token_bytes, size);
    }
}

void read_added_tokens(const json& list, Tokenizer::Impl& impl) {
    if (list.is_null()) return;
    for (const auto& entry : list) {
        const auto content = entry.at("content").get<std::string>();
        const auto id = entry.at("id").get<std::int64_t>();
        if (flag(entry, "single_word", false)) {
            refuse(impl.source, "added token " + content + " is single_word, which the C++ runner does not support");
        }
        impl.added[content] = id;
        if (content.empty()) continue;
        AddedTokenSpec spec{unicode::decode_utf8(content), id, flag(entry, "lstrip", false),
                            flag(entry, "rstrip", false)};
        // Special tokens are matched in the raw text; others ("normalized": true) after normalization.
        if (flag(entry, "normalized", !flag(entry, "special", false))) {
            spec.content = impl.normalize(spec.content);
            if (!spec.content.empty()) impl.normalized_tokens.push_back(std::move(spec));
        } else {
            impl.raw_tokens.push_back(std::move(spec));
        }
    }
}

}  // namespace

std::optional<std::int64_t> lookup(const Tokenizer::Impl& impl, const std::string& token) {
    if (const auto a = impl.added.find(token); a != impl.added.end()) return a->second;
    if (const auto v = impl.vocab.find(token); v != impl.vocab.end()) return v->second;
    return std::nullopt;
}

namespace {

/// Refuse ids without a token (two entries sharing an id, or a damaged file), as the Python runtime does.
void check_ids(Tokenizer::Impl& impl) {
    std::set<std::int64_t> ids;
    for (const auto& entry : impl.vocab) ids.insert(entry.second);
    for (const auto& entry : impl.added) ids.insert(entry.second);
    if (ids.empty()) refuse(impl.source, "the vocabulary is empty");
    impl.max_id = *ids.rbegin();
    if (*ids.begin() >= 0 && impl.max_id < static_cast<std::int64_t>(ids.size())) return;
    std::string missing;
    int shown = 0;
    for (std::int64_t id = 0; id < static_cast<std::int64_t>(ids.size()) && shown < 10; ++id) {
        if (ids.count(id) == 0) missing += (shown++ ? ", " : "") + std::to_string(id);
    }
    refuse(impl.source, "the vocabulary has no token with id [" + missing +
                            "] (entries of tokenizer.json that share an id or were damaged)");
}

void read_specials(const json& root, Tokenizer::Impl& impl) {
    const json& processor = root.contains("post_processor") ? root["post_processor"] : json();
    if (!read_processor(processor, impl.prefix, impl.suffix)) {
        refuse(impl.source, "post-processor " + type_of(processor) + " is not supported by the C++ runner");
    }
    if (impl.prefix.empty() && impl.suffix.empty()) {  // no post-processor: frame with [CLS]/[SEP] or <s>/</s>
        for (const auto& [first, last] : {std::pair{"[CLS]", "[SEP]"}, std::pair{"<s>", "</s>"}}) {
            const auto a = lookup(impl, first), b = lookup(impl, last);
            if (a && b) {
                impl.prefix = {*a};
                impl.suffix = {*b};
                return;
            }
        }
        refuse(impl.source, "the tokenizer has no post-processor and no [CLS]/[SEP] tokens, so windows cannot be framed");
    }
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw ModelFilesMissingError(path + ": missing; " + kRebuildHint);
    std::ostringstream text;
    text << file.rdbuf();
    return from_json(text.str(), path);
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source) {
    auto impl = std::make_unique<Impl>();
    impl->source = source;
    try {
        const json root = json::parse(text);
        if (!root.is_object()) refuse(source, "not a tokenizers tokenizer (top level is not an object)");
        read_normalizer(root.contains("normalizer") ? root["normalizer"] : json(), source, impl->normalizers);
        const std::string pre = type_of(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json());
        if (pre != "BertPreTokenizer" && pre != "null") {
            refuse(source, "pre-tokenizer " + pre + " is not supported by the C++ runner (BertPreTokenizer only)");
        }
        impl->bert_pre_tokenizer = pre == "BertPreTokenizer";
        read_model(root.at("model"), *impl);
        read_added_tokens(root.contains("added_tokens") ? root["added_tokens"] : json(), *impl);
        check_ids(*impl);
        read_specials(root, *impl);
    } catch (const json::exception& exc) {
        refuse(source, std::string("not a valid tokenizers tokenizer (") + exc.what() + ")");
    }
    for (const char* pad : {"[PAD]", "<pad>"}) {
        if (const auto id = lookup(*impl, pad)) {
            impl->pad_id = *id;
            break;
        }
    }
    return Tokenizer(std::move(impl));
}

}  // namespace aidetect
