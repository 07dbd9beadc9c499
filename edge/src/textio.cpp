#include "textio.hpp"

#include <algorithm>
#include <cctype>
#include <iostream>

#include "aidetect/errors.hpp"
#include "unicode.hpp"

namespace aidetect {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

bool is_blank(const std::string& utf8) {
    for (char32_t c : unicode::decode_utf8(utf8)) {
        if (!unicode::is_python_space(c)) return false;
    }
    return true;
}

int hex_value(const std::string& s, std::size_t at) {
    if (at + 4 > s.size()) return -1;
    int v = 0;
    for (std::size_t k = at; k < at + 4; ++k) {
        const char c = s[k];
        const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

}  // namespace

bool is_jsonl_name(const std::string& path) {
    const std::string name = lower(path);
    return ends_with(name, ".jsonl") || ends_with(name, ".ndjson");
}

std::string replace_lone_surrogate_escapes(const std::string& line) {
    if (line.find("\\u") == std::string::npos) return line;
    std::string out;
    out.reserve(line.size());
    std::size_t i = 0;
    while (i < line.size()) {
        if (line[i] != '\\' || i + 1 >= line.size()) {
            out.push_back(line[i++]);
            continue;
        }
        if (line[i + 1] != 'u') {  // another escape: copy it whole, so "\\\\u" is not read as \u
            out.append(line, i, 2);
            i += 2;
            continue;
        }
        const int v = hex_value(line, i + 2);
        if (v >= 0xD800 && v <= 0xDBFF && line.compare(i + 6, 2, "\\u") == 0) {
            const int low = hex_value(line, i + 8);
            if (low >= 0xDC00 && low <= 0xDFFF) {
                out.append(line, i, 12);
                i += 12;
                continue;
            }
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            out.append("\\uFFFD");
        } else {
            out.append(line, i, v >= 0 ? 6 : 2);
        }
        i += v >= 0 ? 6 : 2;
    }
    return out;
}

TextReader::TextReader(std::vector<std::string> paths, bool force_jsonl)
    : paths_(paths.empty() ? std::vector<std::string>{"-"} : std::move(paths)), force_jsonl_(force_jsonl) {}

bool TextReader::open_next() {
    if (index_ >= paths_.size()) return false;
    const std::string& path = paths_[index_++];
    source_ = path == "-" ? "<stdin>" : path;
    jsonl_ = force_jsonl_ || is_jsonl_name(path);
    number_ = 0;
    pending_.clear();
    pending_at_ = 0;
    if (path == "-") {
        file_.reset();
        stream_ = &std::cin;
        return true;
    }
    if (ends_with(lower(path), ".gz")) {
        throw InvalidInputError(path + ": compressed input is not supported; decompress it first "
                                "(zcat " + path + " | aidetect-edge ...)");
    }
    file_ = std::make_unique<std::ifstream>(path, std::ios::binary);
    if (!*file_) throw InvalidInputError(path + ": cannot read input file");
    stream_ = file_.get();
    return true;
}

bool TextReader::next_line(std::string& line) {
    while (pending_at_ >= pending_.size()) {
        if (stream_ == nullptr && !open_next()) return false;
        std::string raw;
        if (!std::getline(*stream_, raw)) {
            stream_ = nullptr;
            continue;
        }
        // Universal newlines: a lone \r ends a line too; the \r of \r\n does not start a new one.
        pending_.clear();
        pending_at_ = 0;
        std::size_t start = 0;
        for (std::size_t cut; (cut = raw.find('\r', start)) != std::string::npos; start = cut + 1) {
            pending_.push_back(raw.substr(start, cut - start));
        }
        if (start < raw.size() || pending_.empty()) pending_.push_back(raw.substr(start));
    }
    line = unicode::sanitize_utf8(pending_[pending_at_++]);
    ++number_;
    return true;
}

bool TextReader::next(TextItem& item) {
    std::string line;
    while (next_line(line)) {
        if (is_blank(line)) continue;
        item.line = number_;
        item.id = nullptr;
        if (!jsonl_) {
            item.text = std::move(line);
            return true;
        }
        const std::string where = source_ + ":" + std::to_string(number_) + ": ";
        nlohmann::json record;
        try {
            record = nlohmann::json::parse(replace_lone_surrogate_escapes(line));
        } catch (const nlohmann::json::parse_error& exc) {
            throw InvalidInputError(where + "not valid JSON (" + exc.what() + ")");
        }
        if (!record.is_object() || !record.contains("text") || !record["text"].is_string()) {
            throw InvalidInputError(where + "expected a JSON object with a string \"text\" field");
        }
        item.text = record["text"].get<std::string>();
        if (record.contains("id")) item.id = record["id"];
        return true;
    }
    return false;
}

}  // namespace aidetect
