"""The factory's errors, one hierarchy under :class:`ExportError`, and the exit code a command returns for each.

Library code raises these (never ``SystemExit``); a command (``python -m export.<stage>``) catches them, prints
the message and returns :func:`exit_code`. The codes are the runtime's (``python -m aidetect_infer``) for the
same causes, and the factory's own from 10 up:

====  ==================  ==========================================================================
code  name                cause
====  ==================  ==========================================================================
0     ``OK``              done
1     ``FAILED``          a stage failed unexpectedly (an exporter or optimizer error, anything else)
2     ``BUNDLE``          a bundle to read is missing, incomplete or corrupt
4     ``INPUT``           bad input: options, configuration, checkpoint, data files, output directory
10    ``CHECK_FAILED``    a verification failed (parity, accuracy gate, reload): nothing was written
130   ``INTERRUPTED``     Ctrl-C
====  ==================  ==========================================================================
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit codes of the factory's commands (the runtime's numbers for the same causes)."""

    OK = 0
    FAILED = 1
    BUNDLE = 2
    INPUT = 4
    CHECK_FAILED = 10
    INTERRUPTED = 130


class ExportError(Exception):
    """A failure of the model factory (input, a stage, a verification)."""


class StageError(ExportError):
    """A stage failed for a reason of its own (the exporter, the optimizer or the quantizer raised)."""


class InputError(ExportError, ValueError):
    """Input that cannot be used: an option, a configuration file, a checkpoint, data or an output path."""


class ConfigError(InputError):
    """A configuration (command line or TOML file) with an unknown, missing or out-of-range option."""


class DataError(InputError):
    """A data file that cannot be read, or records that cannot be used as asked; the message names the file."""


class CheckpointError(InputError):
    """A checkpoint directory that cannot be used; the message names the path and what is wrong."""


class BaseModelError(InputError):
    """A base model that cannot be found or converted."""


class PruneError(InputError):
    """A pruning request the model cannot satisfy: more heads, neurons or layers than it has, or not DistilBERT."""


class OutputError(InputError):
    """An output directory that cannot be written (not empty, not a directory, not writable)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output directory that already holds files (pass ``--overwrite`` to replace it)."""


class CheckFailedError(ExportError):
    """A verification that a stage runs on its own result failed; the result was not written."""


class ParityError(CheckFailedError):
    """An ONNX graph whose logits differ from the reference by more than the tolerance."""


class GateFailedError(CheckFailedError):
    """A variant that misses the accuracy gate against fp32."""


class ReloadError(CheckFailedError, PruneError):
    """A written checkpoint that, read back, does not reproduce the model in memory."""


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code a command returns for ``exc`` (see the module docstring)."""
    from aidetect_infer.errors import AidetectError, BundleError, ModelFilesMissingError

    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, CheckFailedError):
        return ExitCode.CHECK_FAILED
    if isinstance(exc, (BundleError, ModelFilesMissingError)):
        return ExitCode.BUNDLE
    if isinstance(exc, (InputError, AidetectError, ValueError, OSError)):
        return ExitCode.INPUT
    return ExitCode.FAILED
