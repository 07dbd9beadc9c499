#include "session.hpp"

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>

#include "aidetect/detector.hpp"
#include "aidetect/errors.hpp"

namespace aidetect {
namespace {

constexpr const char* kLogits = "logits";

Ort::Env& environment() {
    static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "aidetect");
    return env;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
    std::string out = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
    return out + "]";
}

}  // namespace

struct Session::Impl {
    std::string path;
    Ort::Session session{nullptr};
    std::vector<std::string> input_names;
    bool logits_fp16 = false;
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

    void validate(const std::string& source);
};

void Session::Impl::validate(const std::string& source) {
    std::vector<std::string> problems;
    Ort::AllocatorWithDefaultOptions allocator;
    for (std::size_t i = 0; i < session.GetInputCount(); ++i) {
        input_names.emplace_back(session.GetInputNameAllocated(i, allocator).get());
    }
    const auto has = [&](const char* name) {
        return std::find(input_names.begin(), input_names.end(), name) != input_names.end();
    };
    for (const char* name : {"input_ids", "attention_mask"}) {
        if (!has(name)) problems.push_back(std::string("required input '") + name + "' is missing");
    }
    for (std::size_t i = 0; i < input_names.size(); ++i) {
        const auto& name = input_names[i];
        if (name != "input_ids" && name != "attention_mask" && name != "token_type_ids") {
            problems.push_back("input '" + name + "' is not one this runner can feed");
            continue;
        }
        const auto type_info = session.GetInputTypeInfo(i);  // owns what `info` points into
        const auto info = type_info.GetTensorTypeAndShapeInfo();
        if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 || info.GetShape().size() != 2) {
            problems.push_back("input '" + name + "' must be int64 [batch, sequence], got shape " +
                               shape_text(info.GetShape()));
        }
    }
    bool found = false;
    for (std::size_t i = 0; i < session.GetOutputCount(); ++i) {
        if (std::string(session.GetOutputNameAllocated(i, allocator).get()) != kLogits) continue;
        found = true;
        const auto type_info = session.GetOutputTypeInfo(i);
        const auto info = type_info.GetTensorTypeAndShapeInfo();
        const auto type = info.GetElementType();
        const auto shape = info.GetShape();
        logits_fp16 = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
        if ((type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && !logits_fp16) || shape.size() != 2) {
            problems.push_back("output 'logits' must be float [batch, 2], got shape " + shape_text(shape));
        } else if (shape[1] >= 0 && shape[1] != 2) {
            problems.push_back("output 'logits' must have 2 classes, got shape " + shape_text(shape));
        }
    }
    if (!found) problems.push_back("output 'logits' is missing");
    if (problems.empty()) return;
    std::string message = source + ": ";
    for (std::size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : "") + problems[i];
    throw BundleError(message + "; " + kRebuildHint);
}

Session::Session(const std::string& model_path, int threads) : impl_(std::make_unique<Impl>()) {
    Ort::SessionOptions options;
    options.SetIntraOpNumThreads(threads);
    options.SetInterOpNumThreads(1);
    options.SetExecutionMode(ORT_SEQUENTIAL);
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    options.EnableCpuMemArena();
    options.SetLogSeverityLevel(3);
    try {
        impl_->session = Ort::Session(environment(), model_path.c_str(), options);
    } catch (const Ort::Exception& exc) {
        throw BundleError(model_path + ": ONNX Runtime cannot load it (" + exc.what() + "); " + kRebuildHint);
    }
    impl_->path = model_path;
    impl_->validate(model_path);
}

Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

std::vector<double> Session::run(const std::vector<std::int64_t>& input_ids,
                                 const std::vector<std::int64_t>& attention_mask, std::int64_t rows,
                                 std::int64_t columns) const {
    const std::int64_t shape[2] = {rows, columns};
    const std::vector<std::int64_t> zeros(input_ids.size(), 0);
    std::vector<Ort::Value> values;
    std::vector<const char*> names;
    for (const auto& name : impl_->input_names) {
        const auto& source = name == "input_ids" ? input_ids : name == "attention_mask" ? attention_mask : zeros;
        // ONNX Runtime only reads inputs; the C API takes a non-const pointer.
        auto* data = const_cast<std::int64_t*>(source.data());
        values.push_back(Ort::Value::CreateTensor<std::int64_t>(impl_->memory, data, source.size(), shape, 2));
        names.push_back(name.c_str());
    }
    const char* output = kLogits;
    auto outputs = impl_->session.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(), &output, 1);
    const auto got = outputs.empty() ? std::vector<std::int64_t>() : outputs[0].GetTensorTypeAndShapeInfo().GetShape();
    if (got != std::vector<std::int64_t>{rows, 2}) {
        throw BundleError(impl_->path + ": returned logits of shape " + shape_text(got) + " for " +
                          std::to_string(rows) + " windows, not [batch, 2]; " + kRebuildHint);
    }
    const auto count = static_cast<std::size_t>(rows) * 2;
    std::vector<double> logits(count);
    if (impl_->logits_fp16) {
        const auto* half = outputs[0].GetTensorData<Ort::Float16_t>();
        for (std::size_t i = 0; i < count; ++i) logits[i] = static_cast<double>(half[i].ToFloat());
    } else {
        const float* data = outputs[0].GetTensorData<float>();
        for (std::size_t i = 0; i < count; ++i) logits[i] = static_cast<double>(data[i]);
    }
    if (!std::all_of(logits.begin(), logits.end(), [](double x) { return std::isfinite(x); })) {
        throw BundleError(impl_->path + ": returned non-finite logits (NaN or infinity): the model is damaged or "
                          "numerically unstable; " + kRebuildHint);
    }
    return logits;
}

std::string onnxruntime_version() { return Ort::GetVersionString(); }

}  // namespace aidetect
