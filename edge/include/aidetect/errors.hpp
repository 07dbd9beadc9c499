// The exceptions thrown by the aidetect C++ library, mirroring the Python runtime's aidetect_infer.errors.
#pragma once

#include <stdexcept>
#include <string>

namespace aidetect {

/// How to get a valid bundle back; appended to bundle errors.
inline constexpr const char* kRebuildHint =
    "rebuild the bundle with `python -m export.to_onnx --checkpoint <run dir> --out <bundle dir>` "
    "or point to another bundle";

/// Base class of every error thrown by the library.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// A model bundle is malformed: invalid metadata, a corrupt file, a graph or tokenizer the runner cannot use.
class BundleError : public Error {
  public:
    using Error::Error;
};

/// A bundle directory, or a file a bundle needs, does not exist.
class ModelFilesMissingError : public Error {
  public:
    using Error::Error;
};

/// A bundle file's sha256 or size differs from what aidetect.json records.
class ChecksumMismatchError : public BundleError {
  public:
    using BundleError::BundleError;
};

/// aidetect.json declares a format_version this runner does not know.
class UnsupportedFormatError : public BundleError {
  public:
    using BundleError::BundleError;
};

/// An argument or an input record is invalid (bad option value, malformed JSONL line).
class InvalidInputError : public Error {
  public:
    using Error::Error;
};

}  // namespace aidetect
