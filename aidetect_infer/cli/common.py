"""What the commands share: the command record, the parser, the model options and loading the detector.

Nothing here imports a command module or the registry (:mod:`aidetect_infer.cli`), so each command module
imports this one alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from aidetect_infer.errors import UsageError

if TYPE_CHECKING:
    from aidetect_infer.detector import Detector

PROG = "python -m aidetect_infer"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`UsageError` (exit code 4) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand.

    Attributes:
        name: The first command-line argument that selects it.
        help: One line for the command list.
        add_arguments: Adds the command's options to its parser.
        run: Runs it on the parsed arguments and returns the exit code.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that loads a model shares."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="PATH", help="bundle directory (default: $AIDETECT_MODEL or models/default)")
    group.add_argument("--variant", choices=("fp32", "int8", "fp16"), help="variant of a multi-variant bundle")
    group.add_argument(
        "--provider",
        default="auto",
        choices=("auto", "cpu", "cuda", "tensorrt", "openvino"),  # session.PROVIDERS, without importing onnxruntime
        help="execution provider; 'openvino' needs the [openvino] extra (default: auto, which never picks it)",
    )
    group.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: all cores)")
    group.add_argument("--batch-size", type=int, default=16, metavar="N", help="windows per batch (default 16)")
    group.add_argument("--max-length", type=int, metavar="N", help="tokens per window, at most the bundle's")
    group.add_argument("--truncate", action="store_true", help="score only the first window of long texts")
    group.add_argument(
        "--max-false-positive-rate",
        type=float,
        metavar="RATE",
        help="decide at the bundle's validated operating point flagging at most this share of human texts",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log what the library does to stderr")


def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :meth:`Detector.from_pretrained` the model options describe."""
    return {
        "provider": args.provider,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "truncation": args.truncate,
        "variant": args.variant,
        "max_false_positive_rate": args.max_false_positive_rate,
    }


def load_detector(args: argparse.Namespace) -> Detector:
    """Build the Detector the model options describe (imported here, so ``--help`` stays fast)."""
    from aidetect_infer.detector import Detector

    return Detector.from_pretrained(args.model, **detector_options(args))
