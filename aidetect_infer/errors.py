"""The exceptions raised by :mod:`aidetect_infer`.

Every exception derives from :class:`AidetectError` and from the built-in exception it resembles, so callers
may catch either (``except FileNotFoundError`` still works for a missing bundle). Messages name the file, what
is wrong and the command that fixes it.
"""

from __future__ import annotations

REBUILD_HINT = (
    "rebuild the bundle with `python -m export.to_onnx --checkpoint <run dir> --out <bundle dir>` "
    "or point to another bundle"
)
GET_MODEL_HINT = (
    "build one with `python -m export.pipeline --out models/default` (see the README), "
    "or set AIDETECT_MODEL=<bundle dir>, or pass a bundle path (Detector.from_pretrained(path), CLI --model PATH)"
)


class AidetectError(Exception):
    """Base class of every error raised by :mod:`aidetect_infer`."""


class BundleError(AidetectError, ValueError):
    """A model bundle is malformed: invalid metadata, a corrupt file or a graph the runtime cannot feed."""


class ModelFilesMissingError(AidetectError, FileNotFoundError):
    """A bundle directory, or a file a bundle needs, does not exist."""


class ChecksumMismatchError(BundleError):
    """A bundle file's sha256 or size differs from what ``aidetect.json`` records."""


class UnsupportedFormatError(BundleError):
    """``aidetect.json`` declares a ``format_version`` this runtime does not know."""


class ProviderUnavailableError(AidetectError, RuntimeError):
    """An explicitly requested ONNX Runtime execution provider is not available or did not load."""


class InvalidInputError(AidetectError, TypeError):
    """An argument has the wrong type (a text that is not a string, a batch that is not a sequence)."""


class InvalidValueError(AidetectError, ValueError):
    """An argument has the right type but a value outside what is allowed (``batch_size=0``)."""
