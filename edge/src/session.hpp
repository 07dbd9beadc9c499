// ONNX Runtime sessions for the Detector: options, graph validation, running one padded batch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace aidetect {

/// A CPU session of a bundle's model.onnx whose graph was checked to take what the runner feeds.
class Session {
  public:
    /// Open `model_path` with `threads` intra-op threads (one inter-op thread, sequential, all graph
    /// optimizations, memory arena on, errors-only logging).
    ///
    /// @throws BundleError ONNX Runtime cannot load the file, or the graph lacks input_ids/attention_mask,
    ///         declares an input the runner cannot feed, or has no float `logits` output of two classes.
    Session(const std::string& model_path, int threads);
    Session(Session&&) noexcept;
    Session& operator=(Session&&) noexcept;
    ~Session();

    /// Logits of one batch as doubles, row-major `rows x 2`; `input_ids` and `attention_mask` are row-major
    /// `rows x columns`. Safe to call from many threads at once.
    std::vector<double> run(const std::vector<std::int64_t>& input_ids, const std::vector<std::int64_t>& attention_mask,
                            std::int64_t rows, std::int64_t columns) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace aidetect
