// aidetect::Detector: scores texts as AI-generated or human-written with a model bundle, on ONNX Runtime.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aidetect/bundle.hpp"
#include "aidetect/tokenizer.hpp"

namespace aidetect {

/// The label of texts in the uncertain band, or too short to judge.
inline constexpr const char* kUncertain = "uncertain";

/// The verdict on one text.
struct Prediction {
    std::string label;  ///< labels[1] ("ai") when score >= threshold; "uncertain" in the bundle's uncertain
                        ///< band or for a text shorter than its min_tokens; else labels[0] ("human")
    double score = 0;   ///< calibrated P(AI); for a text split into windows, their P(AI) weighted by content tokens
    double threshold = 0.5;  ///< the AI threshold used
    int windows = 1;    ///< how many windows were scored
    std::int64_t tokens = 0;  ///< content tokens of the text (special tokens not counted)
};

/// How a score becomes a verdict (aidetect_infer.decision.DecisionPolicy): the bundle's "decision" object
/// at its own operating point or at the strictest one within a false-positive budget. Without "decision":
/// temperature 1, no uncertain band (human_threshold == threshold), min_tokens 0.
struct DecisionPolicy {
    double threshold = 0.5;        ///< score >= threshold is labels[1]
    double human_threshold = 0.5;  ///< score < human_threshold is labels[0]; in between, "uncertain"
    double temperature = 1.0;      ///< logits are divided by it before the softmax
    std::int64_t min_tokens = 0;   ///< texts with fewer content tokens are "uncertain"
    double false_positive_rate = std::numeric_limits<double>::quiet_NaN();  ///< of threshold; NaN if unknown

    /// The policy of a bundle; `max_false_positive_rate` picks the recorded operating point with the largest
    /// false-positive rate not above it.
    ///
    /// @throws InvalidInputError max_false_positive_rate outside (0, 1), the bundle records no operating
    ///         points, or none that low.
    static DecisionPolicy from_metadata(const BundleMetadata& metadata,
                                        std::optional<double> max_false_positive_rate = std::nullopt);

    /// The verdict on a text of `tokens` content tokens scoring `score`.
    std::string label(double score, std::int64_t tokens, const std::array<std::string, 2>& labels) const;
};

/// How a Detector runs.
struct DetectorOptions {
    int threads = 0;         ///< intra-op threads; 0 = every core this process may use
    int batch_size = 16;     ///< windows per ONNX Runtime call (1 for a batch-dependent graph, see below)
    /// A text's score must not depend on the texts it is scored with: a batch-dependent graph (dynamic int8,
    /// BundleMetadata::batch_dependent) runs one window per call. false batches such windows anyway.
    bool batch_invariant = true;
    bool truncation = false; ///< score only the first window of long texts
    int max_length = 0;      ///< tokens per window, at most the bundle's; 0 = the bundle's
    std::string variant;     ///< sub-bundle of a parent directory (fp32, int8); empty = int8, else fp32
    /// Decide at the bundle's operating point with the largest false-positive rate not above this (in (0, 1));
    /// unset = the bundle's own threshold.
    std::optional<double> max_false_positive_rate;
};

/// Scores texts with a bundle, by the same rules as the Python runtime's Detector: each window's logits are
/// divided by the bundle's temperature before the softmax; texts longer than one window are split into
/// overlapping windows whose P(AI) are averaged, weighted by their content-token counts;
/// windows are sorted by length and batched, each batch padded to its own longest row (one window per call for
/// a batch-dependent graph, so a text scores the same alone, in any batch and in the Python runtime). Invalid
/// UTF-8 is replaced with U+FFFD; an empty text is scored as the tokenizer frames it ([CLS] [SEP]).
///
/// predict() and predict_proba() keep no state, so one Detector may serve many threads at once.
class Detector {
  public:
    /// Load and verify a bundle and open its ONNX Runtime session (CPU).
    ///
    /// @throws ModelFilesMissingError the bundle or one of its files does not exist.
    /// @throws UnsupportedFormatError unknown bundle format version.
    /// @throws ChecksumMismatchError a file does not match its recorded sha256.
    /// @throws BundleError invalid metadata, a tokenizer this runner does not support, a corrupt model or a
    ///         graph whose inputs or outputs this runner cannot feed.
    /// @throws InvalidInputError an option out of range, or an operating point the bundle does not record.
    static Detector from_pretrained(const std::string& path, const DetectorOptions& options = {});

    Detector(Detector&&) noexcept;
    Detector& operator=(Detector&&) noexcept;
    ~Detector();

    /// Verdicts on UTF-8 texts, in input order (an empty vector gives an empty vector).
    std::vector<Prediction> predict(const std::vector<std::string>& texts) const;

    /// P(AI) of each text, as float32 like the Python runtime's predict_proba.
    std::vector<float> predict_proba(const std::vector<std::string>& texts) const;

    /// The metadata in use (max_length and window_stride as overridden, if they were).
    const BundleMetadata& metadata() const;

    /// The bundle directory loaded (a variant sub-directory when a parent was given).
    const std::string& bundle_path() const;

    /// Calibration, thresholds and the uncertain band in use.
    const DecisionPolicy& policy() const;

    /// The bundle's tokenizer.
    const Tokenizer& tokenizer() const;

    /// Intra-op threads of the session.
    int threads() const;

  private:
    struct Impl;
    explicit Detector(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// The version of the ONNX Runtime library loaded at run time.
std::string onnxruntime_version();

/// The number of CPU cores this process may use.
int default_threads();

}  // namespace aidetect
