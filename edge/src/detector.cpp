// The Detector: windows, length-sorted padded batches and score aggregation, as aidetect_infer/detector.py.
#include "aidetect/detector.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>

#include "aidetect/errors.hpp"
#include "session.hpp"

namespace aidetect {
namespace {

constexpr std::size_t kMinTextsPerChunk = 256;

struct Span {
    std::size_t start;
    std::size_t stop;
};

/// The content-token spans scored for a text of `n` tokens (aidetect_infer.tokenization.window_spans).
std::vector<Span> window_spans(std::size_t n, std::size_t length, std::size_t stride, bool truncation) {
    if (n <= length) return {{0, n}};
    if (truncation) return {{0, length}};
    std::vector<Span> spans;
    for (std::size_t s = 0; s + length <= n; s += stride) spans.push_back({s, s + length});
    if (spans.back().stop < n) spans.push_back({n - length, n});
    return spans;
}

/// The bundle's metadata with a smaller max_length, the stride scaled to keep its overlap ratio.
BundleMetadata effective_metadata(BundleMetadata meta, int max_length) {
    if (max_length == 0 || max_length == meta.max_length) return meta;
    if (max_length < kMinMaxLength || max_length > meta.max_length) {
        throw InvalidInputError("max_length must be in [" + std::to_string(kMinMaxLength) + ", " +
                                std::to_string(meta.max_length) + "] (the bundle's max_length), got " +
                                std::to_string(max_length));
    }
    const double ratio = static_cast<double>(meta.window_stride) / (meta.max_length - 2);
    std::fesetround(FE_TONEAREST);  // nearbyint rounds half to even, like Python's round()
    const int scaled = static_cast<int>(std::nearbyint(ratio * (max_length - 2)));
    meta.window_stride = std::min(max_length - 2, std::max(1, scaled));
    meta.max_length = max_length;
    return meta;
}

/// The shortest decimal that reads back as `value` (Python's repr of a float, in messages).
std::string shortest(double value) {
    char buffer[32];
    for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(buffer, sizeof buffer, "%.*g", digits, value);
        if (std::strtod(buffer, nullptr) == value) break;
    }
    return buffer;
}

}  // namespace

DecisionPolicy DecisionPolicy::from_metadata(const BundleMetadata& metadata, std::optional<double> max_fpr) {
    if (max_fpr && !(*max_fpr > 0.0 && *max_fpr < 1.0)) {
        throw InvalidInputError("max_false_positive_rate must be in (0, 1), got " + shortest(*max_fpr));
    }
    DecisionPolicy policy;
    policy.threshold = policy.human_threshold = metadata.threshold;
    if (!metadata.decision) {
        if (max_fpr) {
            throw InvalidInputError("this bundle records no operating points (no 'decision' in aidetect.json), so "
                                    "max_false_positive_rate cannot be applied; use predict_proba with your own "
                                    "threshold");
        }
        return policy;
    }
    const DecisionSpec& decision = *metadata.decision;
    const auto& points = decision.operating_points;  // sorted by false_positive_rate
    constexpr double kSlack = 1e-12;                 // as the Python runtime
    /// The last point with a false-positive rate within `limit`, or null.
    const auto last_within = [&](double limit) -> const OperatingPoint* {
        const OperatingPoint* found = nullptr;
        for (const auto& point : points) {
            if (point.false_positive_rate <= limit + kSlack) found = &point;
        }
        return found;
    };
    OperatingPoint ai{decision.false_positive_rate, metadata.threshold};
    if (max_fpr) {
        const OperatingPoint* within = last_within(*max_fpr);
        if (within == nullptr) {
            std::string recorded;
            for (std::size_t i = 0; i < points.size(); ++i) {
                recorded += (i ? ", " : "") + shortest(points[i].false_positive_rate);
            }
            throw InvalidInputError("max_false_positive_rate " + shortest(*max_fpr) +
                                    " is below the lowest validated operating point (" +
                                    shortest(points.front().false_positive_rate) + "); recorded: " + recorded);
        }
        ai = *within;
    }
    policy.threshold = policy.human_threshold = ai.threshold;
    if (decision.uncertain_false_positive_rate) {
        if (const OperatingPoint* looser = last_within(*decision.uncertain_false_positive_rate)) {
            policy.human_threshold = std::min(ai.threshold, looser->threshold);
        }
    }
    policy.temperature = decision.temperature;
    policy.min_tokens = decision.min_tokens;
    policy.false_positive_rate = ai.false_positive_rate;
    return policy;
}

std::string DecisionPolicy::label(double score, std::int64_t tokens, const std::array<std::string, 2>& labels) const {
    if (tokens < min_tokens) return kUncertain;
    if (score >= threshold) return labels[1];
    if (score >= human_threshold) return kUncertain;
    return labels[0];
}

int default_threads() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
}

struct Detector::Impl {
    std::string path;
    BundleMetadata metadata;
    DecisionPolicy policy;
    Tokenizer tokenizer;
    Session session;
    int threads;
    std::size_t batch_size;
    std::size_t callers;  ///< threads issuing calls at once (one window per call), else 1
    bool truncation;
    std::size_t content_length;
    std::size_t stride;

    /// Scores, window counts and content-token counts of a chunk of texts.
    void score_chunk(const std::vector<std::string>& texts, std::size_t begin, std::size_t end,
                     std::vector<double>& scores, std::vector<int>& windows, std::vector<std::int64_t>& tokens) const;
    /// Frame rows with the special tokens and right-pad them to the longest; then run them.
    std::vector<double> run_batch(const std::vector<const std::int64_t*>& data,
                                  const std::vector<std::size_t>& sizes) const;
};

std::vector<double> Detector::Impl::run_batch(const std::vector<const std::int64_t*>& data,
                                              const std::vector<std::size_t>& sizes) const {
    const auto& prefix = tokenizer.prefix();
    const auto& suffix = tokenizer.suffix();
    const std::size_t longest = *std::max_element(sizes.begin(), sizes.end());
    const std::size_t columns = longest + prefix.size() + suffix.size();
    std::vector<std::int64_t> ids(sizes.size() * columns, tokenizer.pad_id());
    std::vector<std::int64_t> mask(sizes.size() * columns, 0);
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        auto* row = ids.data() + k * columns;
        row = std::copy(prefix.begin(), prefix.end(), row);
        row = std::copy(data[k], data[k] + sizes[k], row);
        std::copy(suffix.begin(), suffix.end(), row);
        std::fill_n(mask.data() + k * columns, prefix.size() + sizes[k] + suffix.size(), 1);
    }
    return session.run(ids, mask, static_cast<std::int64_t>(sizes.size()), static_cast<std::int64_t>(columns));
}

void Detector::Impl::score_chunk(const std::vector<std::string>& texts, std::size_t begin, std::size_t end,
                                 std::vector<double>& scores, std::vector<int>& windows,
                                 std::vector<std::int64_t>& tokens) const {
    std::vector<std::vector<std::int64_t>> encoded;
    encoded.reserve(end - begin);
    std::vector<std::size_t> owners;
    std::vector<Span> rows;
    for (std::size_t i = begin; i < end; ++i) {
        encoded.push_back(tokenizer.encode(texts[i]));
        tokens[i] = static_cast<std::int64_t>(encoded.back().size());
        for (const auto& span : window_spans(encoded.back().size(), content_length, stride, truncation)) {
            owners.push_back(i - begin);
            rows.push_back(span);
        }
    }
    // Longest windows first (stable, as Python's sorted), so each batch pads to rows of nearly equal length.
    std::vector<std::size_t> order(rows.size());
    std::iota(order.begin(), order.end(), 0);
    const auto size = [&](std::size_t k) { return rows[k].stop - rows[k].start; };
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return size(a) > size(b); });
    std::vector<double> p_ai(rows.size());
    const std::size_t batches = (order.size() + batch_size - 1) / batch_size;
    const auto run_one = [&](std::size_t batch) {
        const std::size_t first = batch * batch_size;
        const std::size_t last = std::min(order.size(), first + batch_size);
        std::vector<const std::int64_t*> data;
        std::vector<std::size_t> sizes;
        for (std::size_t j = first; j < last; ++j) {
            const std::size_t k = order[j];
            data.push_back(encoded[owners[k]].data() + rows[k].start);
            sizes.push_back(size(k));
        }
        const auto logits = run_batch(data, sizes);
        for (std::size_t j = first; j < last; ++j) {
            // float64 logits / temperature, then the softmax with the max subtracted (as Python's _softmax_ai).
            const double a = logits[2 * (j - first)] / policy.temperature;
            const double b = logits[2 * (j - first) + 1] / policy.temperature;
            const double top = std::max(a, b);
            const double ea = std::exp(a - top), eb = std::exp(b - top);
            p_ai[order[j]] = eb / (ea + eb);
        }
    };
    const std::size_t workers = std::min(callers, batches);
    if (workers <= 1) {
        for (std::size_t b = 0; b < batches; ++b) run_one(b);
    } else {
        // One window per call: the calls are independent, so they run from several threads at once (as the
        // Python runtime does); each writes its own entries of p_ai.
        std::atomic<std::size_t> next{0};
        std::exception_ptr failure;
        std::mutex failure_lock;
        std::vector<std::thread> pool;
        pool.reserve(workers);
        for (std::size_t w = 0; w < workers; ++w) {
            pool.emplace_back([&] {
                try {
                    for (std::size_t b = next++; b < batches; b = next++) run_one(b);
                } catch (...) {
                    const std::lock_guard<std::mutex> hold(failure_lock);
                    if (!failure) failure = std::current_exception();
                    next = batches;
                }
            });
        }
        for (auto& t : pool) t.join();
        if (failure) std::rethrow_exception(failure);
    }
    std::vector<double> total(end - begin, 0.0), weighted(end - begin, 0.0);
    for (std::size_t k = 0; k < rows.size(); ++k) {
        const double weight = static_cast<double>(std::max<std::size_t>(size(k), 1));
        total[owners[k]] += weight;
        weighted[owners[k]] += weight * p_ai[k];
        windows[begin + owners[k]] += 1;
    }
    for (std::size_t i = begin; i < end; ++i) scores[i] = weighted[i - begin] / total[i - begin];
}

Detector::Detector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Detector::Detector(Detector&&) noexcept = default;
Detector& Detector::operator=(Detector&&) noexcept = default;
Detector::~Detector() = default;

Detector Detector::from_pretrained(const std::string& path, const DetectorOptions& options) {
    if (options.batch_size < 1) {
        throw InvalidInputError("batch_size must be a positive integer, got " + std::to_string(options.batch_size));
    }
    if (options.threads < 0) {
        throw InvalidInputError("threads must be a positive integer (or 0 for every core), got " +
                                std::to_string(options.threads));
    }
    Bundle bundle = load_bundle(path, options.variant);
    BundleMetadata metadata = effective_metadata(bundle.metadata, options.max_length);
    DecisionPolicy policy = DecisionPolicy::from_metadata(bundle.metadata, options.max_false_positive_rate);
    Tokenizer tokenizer = Tokenizer::from_file(bundle.tokenizer_path());
    const std::size_t specials = tokenizer.prefix().size() + tokenizer.suffix().size();
    if (static_cast<std::size_t>(metadata.max_length) <= specials) {
        throw BundleError(bundle.tokenizer_path() + ": max_length " + std::to_string(metadata.max_length) +
                          " leaves no room after the special tokens");
    }
    const std::int64_t top = tokenizer.max_id();
    if (bundle.metadata.vocab_size >= 0 && top >= bundle.metadata.vocab_size) {
        throw BundleError(bundle.tokenizer_path() + ": has " + std::to_string(top + 1) +
                          " tokens, but the model's embedding table (architecture.vocab_size) has " +
                          std::to_string(bundle.metadata.vocab_size) +
                          ": it is not the tokenizer the model was trained with; " + kRebuildHint);
    }
    const int threads = options.threads > 0 ? options.threads : default_threads();
    const bool one_per_call = options.batch_invariant && bundle.metadata.batch_dependent;
    const std::size_t batch_size = one_per_call ? 1 : static_cast<std::size_t>(options.batch_size);
    Session session(bundle.model_path(), threads);
    const std::size_t content = static_cast<std::size_t>(metadata.max_length) - specials;
    const std::size_t stride = std::min(static_cast<std::size_t>(metadata.window_stride), content);
    auto impl = std::unique_ptr<Impl>(new Impl{bundle.path, std::move(metadata), policy, std::move(tokenizer),
                                               std::move(session), threads,
                                               batch_size, one_per_call ? static_cast<std::size_t>(std::min(threads, 8)) : 1,
                                               options.truncation,
                                               content, stride});
    // One probe batch at load, the highest token id and an empty text: a tokenizer larger than the embedding
    // table, a class axis not 2 wide or NaN weights are refused here instead of failing (or scoring NaN) later.
    const std::int64_t probe = top;
    try {
        impl->run_batch({&probe, &probe}, {1, 0});
    } catch (const BundleError&) {
        throw;
    } catch (const std::exception& exc) {
        throw BundleError(bundle.model_path() + ": fails on a probe batch holding the tokenizer's highest token id " +
                          std::to_string(top) + " (" + exc.what() + "); is tokenizer.json the tokenizer the model was "
                          "trained with? " + kRebuildHint);
    }
    return Detector(std::move(impl));
}

std::vector<Prediction> Detector::predict(const std::vector<std::string>& texts) const {
    std::vector<double> scores(texts.size(), 0.0);
    std::vector<int> windows(texts.size(), 0);
    std::vector<std::int64_t> tokens(texts.size(), 0);
    const std::size_t chunk = std::max(kMinTextsPerChunk, 16 * impl_->batch_size);
    for (std::size_t begin = 0; begin < texts.size(); begin += chunk) {
        impl_->score_chunk(texts, begin, std::min(texts.size(), begin + chunk), scores, windows, tokens);
    }
    const auto& policy = impl_->policy;
    const auto& labels = impl_->metadata.labels;
    std::vector<Prediction> out;
    out.reserve(texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
        out.push_back(Prediction{policy.label(scores[i], tokens[i], labels), scores[i], policy.threshold, windows[i],
                                 tokens[i]});
    }
    return out;
}

std::vector<float> Detector::predict_proba(const std::vector<std::string>& texts) const {
    std::vector<float> out;
    out.reserve(texts.size());
    for (const auto& p : predict(texts)) out.push_back(static_cast<float>(p.score));
    return out;
}

const BundleMetadata& Detector::metadata() const { return impl_->metadata; }
const std::string& Detector::bundle_path() const { return impl_->path; }
const DecisionPolicy& Detector::policy() const { return impl_->policy; }
const Tokenizer& Detector::tokenizer() const { return impl_->tokenizer; }
int Detector::threads() const { return impl_->threads; }

}  // namespace aidetect
