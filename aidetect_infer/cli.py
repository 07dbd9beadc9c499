"""The command line: ``python -m aidetect_infer TEXT...`` (also the ``aidetect`` script).

Commands live in :data:`COMMANDS`; the first argument picks one, and anything else runs ``predict``, so the
bare ``TEXT...`` form works. To score a text that equals a command name, write ``predict`` first. New
commands (``score``, ``serve``) are added with :func:`register`.

Exit codes: 0 success, 2 a bundle error (missing, corrupt, invalid), 3 a provider error, 4 bad input
(including bad command-line usage), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from aidetect_infer import scoring
from aidetect_infer.errors import (
    AidetectError,
    BundleError,
    InvalidInputError,
    InvalidValueError,
    ModelFilesMissingError,
    ProviderUnavailableError,
)
from aidetect_infer.progress import ProgressBar
from aidetect_infer.textio import TextItem, read_file, read_lines

if TYPE_CHECKING:
    from aidetect_infer.detector import Detector, Prediction

PROG = "python -m aidetect_infer"
EXIT_OK, EXIT_BUNDLE, EXIT_PROVIDER, EXIT_INPUT, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
PROGRESS_MIN_TEXTS = 50
DEFAULT_COMMAND = "predict"


class UsageError(InvalidValueError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
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


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a subcommand (a later registration under the same name replaces the earlier one)."""
    COMMANDS[command.name] = command
    return command


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that loads a model shares."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="PATH", help="bundle directory (default: $AIDETECT_MODEL or models/default)")
    group.add_argument("--variant", choices=("fp32", "int8", "fp16"), help="variant of a multi-variant bundle")
    group.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
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


def load_detector(args: argparse.Namespace) -> Detector:
    """Build the Detector the model options describe (imported here, so ``--help`` stays fast)."""
    from aidetect_infer.detector import Detector

    return Detector.from_pretrained(
        args.model,
        provider=args.provider,
        threads=args.threads,
        batch_size=args.batch_size,
        max_length=args.max_length,
        truncation=args.truncate,
        variant=args.variant,
        max_false_positive_rate=args.max_false_positive_rate,
    )


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score (default: read stdin)")
    parser.add_argument(
        "--file",
        metavar="PATH",
        help="plain text, one text per line; or .jsonl/.ndjson with a 'text' field and optional 'id' "
        "(.gz accepted; '-' is stdin); blank lines are skipped",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line: index, id, label, score")
    add_model_arguments(parser)


def _gather(args: argparse.Namespace) -> list[TextItem]:
    if args.texts and args.file:
        raise UsageError("give texts or --file, not both")
    if args.texts:
        return [TextItem(text=t) for t in args.texts]
    if args.file:
        return read_file(args.file)
    if sys.stdin is None:
        raise UsageError("no texts given and no stdin to read")
    if sys.stdin.isatty():
        print("reading texts from stdin, one per line (Ctrl-D to end)", file=sys.stderr)
    return list(read_lines(sys.stdin, jsonl=False, source="<stdin>"))


def _format(index: int, item: TextItem, p: Prediction, *, as_json: bool) -> str:
    label, score, windows = p.label, p.score, p.windows
    if as_json:
        record: dict[str, object] = {"index": index}
        if item.id is not None:
            record["id"] = item.id
        if item.line is not None:
            record["line"] = item.line
        record.update(label=label, score=round(score, 6), windows=windows, tokens=p.tokens)
        line = json.dumps(record, ensure_ascii=False)
        # an id holding a lone surrogate cannot be written as UTF-8: fall back to JSON's \u escapes
        return line if line.isascii() or _utf8_safe(line) else json.dumps(record)
    prefix = f"{item.id}\t" if item.id is not None else ""
    return _utf8_text(f"{prefix}{label}\t{score:.4f}")


def _utf8_safe(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_text(text: str) -> str:
    """``text`` with unencodable code points (lone surrogates) written as backslash escapes."""
    return text if _utf8_safe(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _run_predict(args: argparse.Namespace) -> int:
    items = _gather(args)
    detector = load_detector(args)
    chunk = max(64, 4 * args.batch_size)
    bar = ProgressBar(len(items), sys.stderr, enabled=len(items) > PROGRESS_MIN_TEXTS and sys.stderr.isatty())
    try:
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            predictions = detector.predict([item.text for item in part])
            lines = [
                _format(begin + k, item, p, as_json=args.json)
                for k, (item, p) in enumerate(zip(part, predictions, strict=True))
            ]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            bar.update(len(part))
    finally:
        bar.close()
    return EXIT_OK


register(Command(DEFAULT_COMMAND, "score texts and print label and P(AI)", _predict_arguments, _run_predict))
register(Command("score", scoring.HELP, scoring.add_arguments, scoring.run))


def exit_code(exc: BaseException) -> int:
    """The exit code for an error: 2 bundle, 3 provider, 4 bad input."""
    if isinstance(exc, ProviderUnavailableError):
        return EXIT_PROVIDER
    if isinstance(exc, (BundleError, ModelFilesMissingError)):
        return EXIT_BUNDLE
    if isinstance(exc, (InvalidInputError, InvalidValueError)):
        return EXIT_INPUT
    return 1


def _one_line(message: str) -> str:
    return " ".join(message.split())


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of command ``name``."""
    command = COMMANDS[name]
    others = ", ".join(sorted(COMMANDS))
    parser = _Parser(
        prog=PROG if name == DEFAULT_COMMAND else f"{PROG} {name}",
        description=command.help,
        epilog=f"commands: {others} (the first argument; default {DEFAULT_COMMAND}). "
        "Exit codes: 2 bundle error, 3 provider error, 4 bad input.",
    )
    command.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = DEFAULT_COMMAND
    if args and args[0] in COMMANDS:
        name, args = args[0], args[1:]
    handler: logging.Handler | None = None
    library_logger = logging.getLogger("aidetect_infer")
    try:
        namespace = build_parser(name).parse_args(args)
        if getattr(namespace, "verbose", False):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            library_logger.addHandler(handler)
            library_logger.setLevel(logging.INFO)
        return COMMANDS[name].run(namespace)
    except AidetectError as exc:
        print(f"aidetect: error: {_one_line(str(exc))}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("aidetect: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        if handler is not None:
            library_logger.removeHandler(handler)
            library_logger.setLevel(logging.NOTSET)


# Commands defined in their own modules register themselves when imported (FastAPI etc. load only on use).
import aidetect_infer.serve.command  # noqa: E402, F401
