// The model bundle (docs/bundle-format.md): aidetect.json parsed and validated, files checked, variants resolved.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aidetect {

inline constexpr int kMinMaxLength = 8;
inline constexpr int kMaxMaxLength = 8192;

/// sha256 and size of one bundle file, as aidetect.json records them.
struct FileEntry {
    std::string sha256;
    std::uint64_t bytes = 0;
};

/// A threshold and the share of validation human texts at or above it (aidetect_infer.decision.OperatingPoint).
struct OperatingPoint {
    double false_positive_rate = 0;
    double threshold = 0;
    double true_positive_rate = std::numeric_limits<double>::quiet_NaN();  ///< NaN when not recorded
};

/// The optional "decision" object of aidetect.json, validated: calibration, operating points and the
/// "uncertain" band (see aidetect_infer/decision.py). DecisionPolicy (detector.hpp) turns it into thresholds.
struct DecisionSpec {
    double temperature = 1.0;                     ///< logits are divided by it before the softmax
    std::vector<OperatingPoint> operating_points; ///< at least one, by increasing false_positive_rate (stable)
    std::optional<double> uncertain_false_positive_rate;  ///< the human threshold's operating point
    std::int64_t min_tokens = 0;                  ///< texts with fewer content tokens are "uncertain"
    double false_positive_rate = std::numeric_limits<double>::quiet_NaN();  ///< of the shipped threshold
};

/// The validated contents of a bundle's aidetect.json (format version 1).
struct BundleMetadata {
    int format_version = 1;
    std::string name;
    std::array<std::string, 2> labels;  ///< {negative (human), positive (AI)}
    int max_length = 0;                 ///< tokens per window, special tokens included
    int window_stride = 0;              ///< content tokens a window advances by
    double threshold = 0.5;             ///< score >= threshold means labels[1]
    std::string precision;              ///< variant.precision: fp32, int8, fp16
    std::string model_type;             ///< architecture.model_type
    /// variant.quantization.mode is "dynamic": one activation scale per call, so a window's logits depend on the
    /// other rows of its batch (the Detector then runs one window per call).
    bool batch_dependent = false;
    std::int64_t vocab_size = -1;       ///< architecture.vocab_size (rows of the embedding table); -1 if absent
    FileEntry model;                    ///< files["model.onnx"]
    FileEntry tokenizer;                ///< files["tokenizer.json"]
    std::optional<DecisionSpec> decision;  ///< "decision", when present (and not null)

    /// Parse and validate aidetect.json contents; `source` names the file in error messages.
    ///
    /// @throws UnsupportedFormatError format_version is not one this runner knows.
    /// @throws BundleError invalid JSON, a required key missing or a value out of range (all problems listed),
    ///         or a malformed "decision" object. NaN and Infinity literals are read as Python's json reads them.
    static BundleMetadata parse(std::string_view json_text, const std::string& source);
};

/// A bundle directory whose files are present and verified.
struct Bundle {
    std::string path;
    BundleMetadata metadata;

    std::string model_path() const;
    std::string tokenizer_path() const;
};

/// The hex sha256 of a file.
///
/// @throws ModelFilesMissingError the file cannot be opened.
std::string sha256_file(const std::string& path);

/// The bundle directory to load: `path` itself, or its `int8/` (else `fp32/`) variant sub-bundle, or the
/// sub-bundle named by `variant`.
///
/// @throws ModelFilesMissingError no such directory, no bundle in it, or no such variant.
std::string resolve_bundle_dir(const std::string& path, const std::string& variant = "");

/// Read and validate `<dir>/aidetect.json` (no file checks).
///
/// @throws ModelFilesMissingError aidetect.json is missing.
/// @throws BundleError, UnsupportedFormatError see BundleMetadata::parse.
BundleMetadata read_metadata(const std::string& dir);

/// Check that model.onnx and tokenizer.json exist and match their recorded size and sha256.
///
/// @throws ModelFilesMissingError a file is missing.
/// @throws ChecksumMismatchError a size or sha256 differs.
void verify_files(const std::string& dir, const BundleMetadata& metadata);

/// Locate, parse and verify a bundle (the Python runtime's load_bundle).
Bundle load_bundle(const std::string& path, const std::string& variant = "");

}  // namespace aidetect
