"""The command line: ``python -m aidetect_infer TEXT...`` (also the ``aidetect`` script).

The first argument picks a command of :data:`COMMANDS`; anything else runs ``predict``, so the bare
``TEXT...`` form works (to score a text that equals a command name, write ``predict`` first). Each command is
a module of this package (``predict``, ``score``, ``serve``, ``drift``) that imports only
:mod:`aidetect_infer.cli.common`; this module is the registry and the entry point, and nothing imports it back.

Exit codes (:class:`aidetect_infer.errors.ExitCode`, shared with the factory's ``python -m export.*``):
0 success, 1 anything else, 2 a bundle error (missing, corrupt, invalid), 3 a provider error, 4 bad input
(including bad command-line usage), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aidetect_infer.cli import drift, predict, score, serve
from aidetect_infer.cli.common import PROG, Command, Parser
from aidetect_infer.errors import AidetectError, ExitCode, UsageError, exit_code

EXIT_OK, EXIT_FAILED, EXIT_BUNDLE, EXIT_PROVIDER, EXIT_INPUT, EXIT_INTERRUPTED = (
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.BUNDLE,
    ExitCode.PROVIDER,
    ExitCode.INPUT,
    ExitCode.INTERRUPTED,
)
DEFAULT_COMMAND = "predict"
COMMANDS: dict[str, Command] = {c.name: c for c in (predict.COMMAND, score.COMMAND, serve.COMMAND, drift.COMMAND)}

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "exit_code", "main"]


def _one_line(message: str) -> str:
    return " ".join(message.split())


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of command ``name``."""
    command = COMMANDS[name]
    others = ", ".join(sorted(COMMANDS))
    parser = Parser(
        prog=PROG if name == DEFAULT_COMMAND else f"{PROG} {name}",
        description=command.help,
        epilog=f"commands: {others} (the first argument; default {DEFAULT_COMMAND}). "
        "Exit codes: 1 failure, 2 bundle error, 3 provider error, 4 bad input, 130 interrupted.",
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
        return int(COMMANDS[name].run(namespace))
    except AidetectError as exc:
        print(f"aidetect: error: {_one_line(str(exc))}", file=sys.stderr)
        return int(exit_code(exc))
    except KeyboardInterrupt:
        print("aidetect: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(ExitCode.OK)
    finally:
        if handler is not None:
            library_logger.removeHandler(handler)
            library_logger.setLevel(logging.NOTSET)
