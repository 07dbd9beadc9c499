// Reading and verifying bundles, with the same rules and messages as aidetect_infer/bundle.py.
#include "aidetect/bundle.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "aidetect/errors.hpp"

namespace aidetect {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kMetadataFile = "aidetect.json";
constexpr const char* kModelFile = "model.onnx";
constexpr const char* kTokenizerFile = "tokenizer.json";
constexpr const char* kRequired[] = {"format_version", "name",         "labels", "max_length", "window_stride",
                                     "threshold",      "variant",      "architecture", "files"};
constexpr const char* kVariants[] = {"fp32", "int8", "fp16"};

bool is_int(const json& v) { return v.is_number_integer(); }  // booleans are not numbers in nlohmann

bool is_hex64(const json& v) {
    if (!v.is_string()) return false;
    const auto& s = v.get_ref<const std::string&>();
    return s.size() == 64 &&
           std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
    return out;
}

void check_files(const json& files, std::vector<std::string>& problems) {
    if (!files.is_object()) {
        problems.push_back("files must be an object with entries for [model.onnx, tokenizer.json]");
        return;
    }
    for (const char* name : {kModelFile, kTokenizerFile}) {
        const std::string key = std::string("files[\"") + name + "\"]";
        if (!files.contains(name) || !files[name].is_object()) {
            problems.push_back(key + " is missing");
            continue;
        }
        const json& entry = files[name];
        if (!entry.contains("sha256") || !is_hex64(entry["sha256"])) {
            problems.push_back(key + ".sha256 must be 64 lowercase hex digits");
        }
        if (!entry.contains("bytes") || !is_int(entry["bytes"]) || entry["bytes"].get<std::int64_t>() < 0) {
            problems.push_back(key + ".bytes must be a non-negative integer");
        }
    }
}

std::vector<std::string> validate(const json& d) {
    std::vector<std::string> problems;
    const json& name = d["name"];
    if (!name.is_string() || name.get<std::string>().find_first_not_of(" \t\r\n\f\v") == std::string::npos) {
        problems.push_back("name must be a non-empty string");
    }
    const json& labels = d["labels"];
    if (!labels.is_array() || labels.size() != 2 || !labels[0].is_string() || !labels[1].is_string() ||
        labels[0].get<std::string>().empty() || labels[1].get<std::string>().empty() || labels[0] == labels[1]) {
        problems.push_back("labels must be two distinct non-empty strings, got " + labels.dump());
    }
    const json& max_length = d["max_length"];
    const json& stride = d["window_stride"];
    if (!is_int(max_length) || max_length.get<std::int64_t>() < kMinMaxLength ||
        max_length.get<std::int64_t>() > kMaxMaxLength) {
        problems.push_back("max_length must be an integer in [" + std::to_string(kMinMaxLength) + ", " +
                           std::to_string(kMaxMaxLength) + "], got " + max_length.dump());
    } else if (const auto limit = max_length.get<std::int64_t>() - 2;
               !is_int(stride) || stride.get<std::int64_t>() < 1 || stride.get<std::int64_t>() > limit) {
        problems.push_back("window_stride must be an integer in [1, max_length - 2 = " + std::to_string(limit) +
                           "], got " + stride.dump());
    }
    const json& threshold = d["threshold"];
    if (!threshold.is_number() || !std::isfinite(threshold.get<double>()) || threshold.get<double>() < 0.0 ||
        threshold.get<double>() > 1.0) {
        problems.push_back("threshold must be a number in [0, 1], got " + threshold.dump());
    }
    const json& variant = d["variant"];
    if (!variant.is_object() || !variant.contains("precision") || !variant["precision"].is_string() ||
        variant["precision"].get<std::string>().empty()) {
        problems.push_back("variant must be an object with a string \"precision\" (fp32, int8, fp16)");
    }
    const json& arch = d["architecture"];
    if (!arch.is_object() || !arch.contains("model_type") || !arch["model_type"].is_string()) {
        problems.push_back("architecture must be an object with a string \"model_type\"");
    }
    check_files(d["files"], problems);
    return problems;
}

/// A JSON number as a double; NaN for null where Python's json would have read NaN (see parse_lenient).
bool number_of(const json& v, double& out) {
    if (!v.is_number()) return false;
    out = v.get<double>();
    return true;
}

std::string shown(const json& v) { return v.dump(); }

/// The "decision" object (aidetect_infer.decision.DecisionPolicy.from_metadata's checks), or nullopt when
/// absent or null; problems are appended to `problems`.
std::optional<DecisionSpec> read_decision(const json& d, std::vector<std::string>& problems) {
    if (!d.contains("decision") || d["decision"].is_null()) return std::nullopt;
    const json& raw = d["decision"];
    if (!raw.is_object()) {
        problems.push_back("decision must be an object, got " + shown(raw));
        return std::nullopt;
    }
    const std::size_t before = problems.size();
    DecisionSpec spec;
    if (raw.contains("temperature")) {
        const json& t = raw["temperature"];
        if (!number_of(t, spec.temperature) || !std::isfinite(spec.temperature) || spec.temperature <= 0.0) {
            problems.push_back("decision.temperature must be a positive finite number, got " + shown(t));
        }
    }
    if (raw.contains("min_tokens")) {
        const json& m = raw["min_tokens"];
        double value = 0;
        // Python's int(): integers, and floats truncated toward zero.
        if (m.is_number_integer()) {
            spec.min_tokens = m.get<std::int64_t>();
        } else if (number_of(m, value) && std::isfinite(value) && std::fabs(value) < 9e15) {
            spec.min_tokens = static_cast<std::int64_t>(std::trunc(value));
        } else {
            spec.min_tokens = -1;
        }
        if (spec.min_tokens < 0) problems.push_back("decision.min_tokens must be an integer >= 0, got " + shown(m));
    }
    if (raw.contains("false_positive_rate") && !raw["false_positive_rate"].is_null() &&
        !number_of(raw["false_positive_rate"], spec.false_positive_rate)) {
        problems.push_back("decision.false_positive_rate must be a number, got " + shown(raw["false_positive_rate"]));
    }
    if (raw.contains("uncertain_false_positive_rate") && !raw["uncertain_false_positive_rate"].is_null()) {
        double value = 0;
        if (number_of(raw["uncertain_false_positive_rate"], value)) {
            spec.uncertain_false_positive_rate = value;
        } else {
            problems.push_back("decision.uncertain_false_positive_rate must be a number, got " +
                               shown(raw["uncertain_false_positive_rate"]));
        }
    }
    const json points = raw.contains("operating_points") ? raw["operating_points"] : json();
    if (!points.is_array() || points.empty()) {
        problems.push_back("decision.operating_points must be a non-empty list of {false_positive_rate, threshold} "
                           "objects, got " + (points.is_null() ? std::string("none") : shown(points)));
    } else {
        for (std::size_t i = 0; i < points.size(); ++i) {
            const json& p = points[i];
            const std::string where = "decision.operating_points[" + std::to_string(i) + "]";
            OperatingPoint point;
            if (!p.is_object() || !p.contains("false_positive_rate") || !p.contains("threshold") ||
                !number_of(p["false_positive_rate"], point.false_positive_rate) ||
                !number_of(p["threshold"], point.threshold)) {
                problems.push_back(where + " must be an object with numbers false_positive_rate and threshold, got " +
                                   shown(p));
                continue;
            }
            if (!(point.threshold >= 0.0 && point.threshold <= 1.0)) {
                problems.push_back(where + ".threshold must be in [0, 1], got " + shown(p["threshold"]));
            }
            if (p.contains("true_positive_rate") && !p["true_positive_rate"].is_null() &&
                !number_of(p["true_positive_rate"], point.true_positive_rate)) {
                problems.push_back(where + ".true_positive_rate must be a number, got " + shown(p["true_positive_rate"]));
            }
            spec.operating_points.push_back(point);
        }
        std::stable_sort(spec.operating_points.begin(), spec.operating_points.end(),
                         [](const OperatingPoint& a, const OperatingPoint& b) {
                             return a.false_positive_rate < b.false_positive_rate;
                         });
    }
    if (problems.size() != before) return std::nullopt;
    return spec;
}

/// Python's json.loads reads the literals NaN, Infinity and -Infinity; nlohmann does not. They become null
/// (outside strings), which the checks then treat as Python treats NaN: refused where a finite number is needed.
std::string without_nan_literals(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            out.push_back(c);
            if (c == '\\' && i + 1 < text.size()) {
                out.push_back(text[++i]);
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') in_string = true;
        bool replaced = false;
        for (std::string_view literal : {std::string_view("NaN"), std::string_view("-Infinity"), std::string_view("Infinity")}) {
            if (text.compare(i, literal.size(), literal) == 0) {
                out += "null";
                i += literal.size() - 1;
                replaced = true;
                break;
            }
        }
        if (!replaced) out.push_back(c);
    }
    return out;
}

FileEntry file_entry(const json& entry) {
    return FileEntry{entry["sha256"].get<std::string>(), entry["bytes"].get<std::uint64_t>()};
}

}  // namespace

BundleMetadata BundleMetadata::parse(std::string_view text, const std::string& source) {
    json d;
    try {
        d = json::parse(text);
    } catch (const json::parse_error& exc) {
        try {
            d = json::parse(without_nan_literals(text));
        } catch (const json::parse_error&) {
            throw BundleError(source + ": not valid JSON (" + exc.what() + "); " + kRebuildHint);
        }
    }
    if (!d.is_object()) {
        throw BundleError(source + ": top level must be a JSON object, got " + d.type_name());
    }
    const json version = d.contains("format_version") ? d["format_version"] : json();
    if (!is_int(version) || version.get<std::int64_t>() != 1) {
        throw UnsupportedFormatError(source + ": format_version " + version.dump() +
                                     " is not supported (this runner reads 1); upgrade aidetect-edge or re-export "
                                     "the bundle");
    }
    std::vector<std::string> missing;
    for (const char* key : kRequired) {
        if (!d.contains(key)) missing.push_back(std::string("'") + key + "'");
    }
    if (!missing.empty()) {
        throw BundleError(source + ": missing required keys [" + join(missing, ", ") + "]; " + kRebuildHint);
    }
    auto problems = validate(d);
    auto decision = read_decision(d, problems);
    if (!problems.empty()) throw BundleError(source + ": " + join(problems, "; ") + "; " + kRebuildHint);
    BundleMetadata meta;
    meta.format_version = 1;
    meta.name = d["name"].get<std::string>();
    meta.labels = {d["labels"][0].get<std::string>(), d["labels"][1].get<std::string>()};
    meta.max_length = d["max_length"].get<int>();
    meta.window_stride = d["window_stride"].get<int>();
    meta.threshold = d["threshold"].get<double>();
    meta.precision = d["variant"]["precision"].get<std::string>();
    if (const json& q = d["variant"].value("quantization", json()); q.is_object()) {
        meta.batch_dependent = q.value("mode", json()) == json("dynamic");
    }
    meta.model_type = d["architecture"]["model_type"].get<std::string>();
    if (const json& vocab = d["architecture"].value("vocab_size", json()); is_int(vocab)) {
        meta.vocab_size = vocab.get<std::int64_t>();
    }
    meta.model = file_entry(d["files"][kModelFile]);
    meta.tokenizer = file_entry(d["files"][kTokenizerFile]);
    meta.decision = std::move(decision);
    return meta;
}

std::string Bundle::model_path() const { return (fs::path(path) / kModelFile).string(); }
std::string Bundle::tokenizer_path() const { return (fs::path(path) / kTokenizerFile).string(); }

std::string sha256_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw ModelFilesMissingError(path + ": cannot be read; " + kRebuildHint);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("sha256: OpenSSL failed");
    std::vector<char> buffer(1 << 20);
    while (file) {
        file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        if (file.gcount() > 0) EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<std::size_t>(file.gcount()));
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx.get(), digest, &size);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < size; ++i) {
        out.push_back(hex[digest[i] >> 4]);
        out.push_back(hex[digest[i] & 15]);
    }
    return out;
}

std::string resolve_bundle_dir(const std::string& path, const std::string& variant) {
    const fs::path root(path);
    std::error_code ec;
    if (!fs::exists(root, ec)) throw ModelFilesMissingError(path + ": bundle directory does not exist; " + kRebuildHint);
    if (!fs::is_directory(root, ec)) {
        throw ModelFilesMissingError(path + ": not a directory (a bundle is a directory); " + kRebuildHint);
    }
    if (fs::is_regular_file(root / kMetadataFile, ec)) return root.string();
    std::vector<std::string> present;
    for (const char* name : kVariants) {
        if (fs::is_regular_file(root / name / kMetadataFile, ec)) present.emplace_back(name);
    }
    const auto has = [&](const std::string& v) { return std::find(present.begin(), present.end(), v) != present.end(); };
    if (!variant.empty()) {
        if (has(variant)) return (root / variant).string();
        throw ModelFilesMissingError(path + ": no '" + variant + "' variant here (found " +
                                     (present.empty() ? "no bundle" : join(present, ", ")) + "); " + kRebuildHint);
    }
    for (const char* name : {"int8", "fp32"}) {  // fp16 is for GPUs; this runner uses the CPU
        if (has(name)) return (root / name).string();
    }
    throw ModelFilesMissingError(path + ": no aidetect.json here and no variant sub-bundle (fp32/, int8/, fp16/); " +
                                 kRebuildHint);
}

BundleMetadata read_metadata(const std::string& dir) {
    const fs::path meta_path = fs::path(dir) / kMetadataFile;
    std::ifstream file(meta_path, std::ios::binary);
    if (!file) throw ModelFilesMissingError(meta_path.string() + ": missing; " + kRebuildHint);
    std::ostringstream text;
    text << file.rdbuf();
    return BundleMetadata::parse(text.str(), meta_path.string());
}

void verify_files(const std::string& dir, const BundleMetadata& metadata) {
    for (const auto& [name, expected] : {std::pair{kModelFile, metadata.model}, std::pair{kTokenizerFile, metadata.tokenizer}}) {
        const fs::path file = fs::path(dir) / name;
        std::error_code ec;
        if (!fs::is_regular_file(file, ec)) {
            throw ModelFilesMissingError(file.string() + ": missing from the bundle; " + kRebuildHint);
        }
        const auto size = fs::file_size(file, ec);
        if (ec || size != expected.bytes) {
            throw ChecksumMismatchError(file.string() + ": " + std::to_string(size) + " bytes, but aidetect.json records " +
                                        std::to_string(expected.bytes) + " (truncated or replaced); " + kRebuildHint);
        }
        const std::string digest = sha256_file(file.string());
        if (digest != expected.sha256) {
            throw ChecksumMismatchError(file.string() + ": sha256 " + digest + " does not match " + expected.sha256 +
                                        " recorded in aidetect.json (corrupt or replaced); " + kRebuildHint);
        }
    }
}

Bundle load_bundle(const std::string& path, const std::string& variant) {
    const std::string dir = resolve_bundle_dir(path, variant);
    BundleMetadata metadata = read_metadata(dir);
    if (!variant.empty() && metadata.precision != variant && fs::path(dir) == fs::path(path)) {
        throw BundleError(dir + ": variant '" + variant + "' requested but this bundle is '" + metadata.precision +
                          "'; pass the parent directory of the variants or drop --variant");
    }
    verify_files(dir, metadata);
    return Bundle{dir, std::move(metadata)};
}

}  // namespace aidetect
