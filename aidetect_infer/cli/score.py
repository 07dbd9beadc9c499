"""``python -m aidetect_infer score INPUT --out OUTPUT``: score a large file, resumably.

The scoring itself is :func:`aidetect_infer.streaming.score_file`; this module parses and reports.
``--engine ray`` runs the same job on a Ray cluster (:mod:`aidetect_infer.cli.score_ray`, imported only then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aidetect_infer.cli.common import Command, add_model_arguments, detector_options, load_detector
from aidetect_infer.errors import ExitCode, UsageError
from aidetect_infer.progress import ProgressBar
from aidetect_infer.streaming import CHUNK_TEXTS, check_distinct, check_paths, default_errors_path, score_file
from aidetect_infer.textio import open_text

HELP = "score a large file into a JSONL file of results, one per input line; --resume continues a stopped run"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` command's options."""
    parser.add_argument(
        "input",
        metavar="INPUT",
        help="JSONL with a 'text' field and optional 'id', or plain text with one text per line (.gz accepted)",
    )
    parser.add_argument("--out", required=True, metavar="OUTPUT", help="JSONL results, one per input line")
    parser.add_argument("--errors", metavar="PATH", help="unparseable lines (default: OUTPUT.errors.jsonl)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue a stopped run where its output ends")
    mode.add_argument("--overwrite", action="store_true", help="start over even if OUTPUT holds results")
    chunk_help = f"texts scored and written together (default {CHUNK_TEXTS})"
    parser.add_argument("--chunk", type=int, default=CHUNK_TEXTS, metavar="N", help=chunk_help)
    cluster = parser.add_argument_group("Ray (--engine ray, needs the [ray] extra)")
    cluster.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="where to score (default local: this process)"
    )
    cluster.add_argument("--address", metavar="auto|HOST:PORT", help="the Ray cluster (default: start one here)")
    cluster.add_argument("--actors", type=int, default=1, metavar="N", help="scoring actors, one model each (1)")
    cluster.add_argument("--text-column", default="text", metavar="NAME", help="CSV/Parquet text column (text)")
    cluster.add_argument("--id-column", default="id", metavar="NAME", help="CSV/Parquet id column, if any (id)")
    add_model_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    """Run ``score`` on parsed arguments: check the paths, load the model, score, print a summary."""
    if args.chunk < 1:
        raise UsageError(f"--chunk must be a positive integer, got {args.chunk}")
    if args.engine == "ray":
        return _run_on_ray(args)
    output = Path(args.out)
    errors = Path(args.errors) if args.errors else default_errors_path(output)
    check_paths(args.input, output, errors, resume=args.resume, overwrite=args.overwrite)
    detector = load_detector(args)
    total = 0
    if sys.stderr.isatty():  # a first pass for the bar's total; cheap next to scoring
        with open_text(str(args.input)) as stream:
            total = sum(1 for _ in stream)
    bar = ProgressBar(total, sys.stderr, enabled=total > 0)
    try:
        summary = score_file(
            detector,
            args.input,
            output,
            errors_path=errors,
            resume=args.resume,
            overwrite=args.overwrite,
            chunk_texts=args.chunk,
            on_progress=bar.update,
        )
    finally:
        bar.close()
    resumed = f", resumed after line {summary.resumed_after}" if args.resume else ""
    where = f" (see {errors})" if errors.exists() else ""
    counts = f"{summary.scored} scored, {summary.errors} errors{where}, {summary.blank} blank{resumed}"
    print(f"aidetect: {summary.lines} lines: {counts} -> {output}", file=sys.stderr)
    return ExitCode.OK


def _run_on_ray(args: argparse.Namespace) -> int:
    if args.resume:
        raise UsageError("--engine ray does not resume: a job is idempotent, run it again (it starts over)")
    if args.actors < 1:
        raise UsageError(f"--actors must be a positive integer, got {args.actors}")
    output = Path(args.out)
    errors = Path(args.errors) if args.errors else default_errors_path(output)
    check_distinct(Path(args.input), output, errors, what="paths")
    source = Path(args.input).resolve()
    if source.is_dir() and any(p.resolve().is_relative_to(source) for p in (output, errors)):
        raise UsageError(f"{output} and {errors} must be outside the input folder {args.input}: they would be read")
    if errors.is_dir():
        raise UsageError(f"{errors}: is a directory, not a file")
    held = output.is_file() and output.stat().st_size > 0 or output.is_dir() and any(output.iterdir())
    if held and not args.overwrite:
        raise UsageError(f"{output}: already holds results; pass --overwrite to replace them")
    try:
        from aidetect_infer.cli import score_ray
    except ImportError as exc:
        from aidetect_infer.errors import MissingExtraError
        from aidetect_infer.ray import RAY_EXTRA_HINT

        raise MissingExtraError(f"--engine ray needs {exc.name or 'ray[data]'}: {RAY_EXTRA_HINT}") from exc
    counts = score_ray.run_on_ray(args, output, errors, detector_options(args))
    where = f" (see {errors})" if counts.errors else ""
    print(f"aidetect: {counts.scored} scored, {counts.errors} errors{where} -> {output}", file=sys.stderr)
    return ExitCode.OK


COMMAND = Command("score", HELP, _add_arguments, _run)
