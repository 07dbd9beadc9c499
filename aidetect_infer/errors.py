"""The exceptions raised by :mod:`aidetect_infer`.

Every exception derives from :class:`AidetectError` and from the built-in exception it resembles, so callers
may catch either (``except FileNotFoundError`` still works for a missing bundle). Messages name the file, what
is wrong and the command that fixes it. :class:`ExitCode` is the one table of exit codes every command uses.
"""

from __future__ import annotations

import enum

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


class MissingExtraError(AidetectError, ImportError):
    """An optional dependency (the ``[serve]`` or ``[ray]`` extra) is not installed; the message names the extra."""


class UsageError(InvalidValueError):
    """Bad command-line arguments (a command's options out of range, or two that exclude each other)."""


class ExitCode(enum.IntEnum):
    """The exit codes of every command, the runtime's (``python -m aidetect_infer``) and the factory's.

    ``python -m export.*`` commands use the same numbers for the same causes, plus their own from 10 up.
    """

    OK = 0
    FAILED = 1  # anything else: an unexpected error, a server that did not start
    BUNDLE = 2  # a bundle is missing, corrupt or invalid
    PROVIDER = 3  # an explicitly requested execution provider is unavailable
    INPUT = 4  # bad input or bad command-line usage
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code a command returns for ``exc``: 2 bundle, 3 provider, 4 bad input, else 1."""
    if isinstance(exc, ProviderUnavailableError):
        return ExitCode.PROVIDER
    if isinstance(exc, (BundleError, ModelFilesMissingError)):
        return ExitCode.BUNDLE
    if isinstance(exc, (InvalidInputError, InvalidValueError)):
        return ExitCode.INPUT
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.FAILED
