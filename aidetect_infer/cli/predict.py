"""``python -m aidetect_infer [predict] TEXT...``: score texts given as arguments, in a file or on stdin."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from aidetect_infer.cli.common import Command, add_model_arguments, load_detector
from aidetect_infer.errors import ExitCode, UsageError
from aidetect_infer.progress import ProgressBar
from aidetect_infer.textio import TextItem, read_file, read_lines

if TYPE_CHECKING:
    from aidetect_infer.detector import Prediction
    from aidetect_infer.segments import Explanation

PROGRESS_MIN_TEXTS = 50
PREVIEW_CHARS = 60


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score (default: read stdin)")
    parser.add_argument(
        "--file",
        metavar="PATH",
        help="plain text, one text per line; or .jsonl/.ndjson with a 'text' field and optional 'id' "
        "(.gz accepted; '-' is stdin); blank lines are skipped",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line: index, id, label, score")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also score each text's sentence-aligned segments (start and end offsets, label, score)",
    )
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


def _utf8_safe(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_text(text: str) -> str:
    """``text`` with unencodable code points (lone surrogates) written as backslash escapes."""
    return text if _utf8_safe(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_line(record: dict[str, object]) -> str:
    line = json.dumps(record, ensure_ascii=False)
    # an id holding a lone surrogate cannot be written as UTF-8: fall back to JSON's \u escapes
    return line if line.isascii() or _utf8_safe(line) else json.dumps(record)


def _record(index: int, item: TextItem, p: Prediction | Explanation) -> dict[str, object]:
    record: dict[str, object] = {"index": index}
    if item.id is not None:
        record["id"] = item.id
    if item.line is not None:
        record["line"] = item.line
    record.update(label=p.label, score=round(p.score, 6), windows=p.windows, tokens=p.tokens)
    return record


def format_line(index: int, item: TextItem, p: Prediction, *, as_json: bool) -> str:
    """One output line: ``[id<TAB>]label<TAB>score``, or a JSON object with ``--json``."""
    if as_json:
        return _json_line(_record(index, item, p))
    prefix = f"{item.id}\t" if item.id is not None else ""
    return _utf8_text(f"{prefix}{p.label}\t{p.score:.4f}")


def format_explanation(index: int, item: TextItem, e: Explanation, *, as_json: bool) -> str:
    """The lines of ``--explain``: the text's line, then ``<TAB>start-end<TAB>label<TAB>score<TAB>preview`` per
    segment; with ``--json`` one object whose ``segments`` hold ``start``, ``end``, ``label``, ``score``,
    ``tokens`` (offsets in Unicode code points, as Python indexes strings)."""
    if as_json:
        record = _record(index, item, e)
        record["segments"] = [
            {"start": s.start, "end": s.end, "label": s.label, "score": round(s.score, 6), "tokens": s.tokens}
            for s in e.segments
        ]
        return _json_line(record)
    prefix = f"{item.id}\t" if item.id is not None else ""
    lines = [f"{prefix}{e.label}\t{e.score:.4f}"]
    for s in e.segments:
        preview = " ".join(s.text.split())
        if len(preview) > PREVIEW_CHARS:
            preview = preview[: PREVIEW_CHARS - 1] + "\u2026"
        lines.append(f"\t{s.start}-{s.end}\t{s.label}\t{s.score:.4f}\t{preview}")
    return _utf8_text("\n".join(lines))


def _run(args: argparse.Namespace) -> int:
    items = _gather(args)
    detector = load_detector(args)
    chunk = max(64, 4 * args.batch_size)
    bar = ProgressBar(len(items), sys.stderr, enabled=len(items) > PROGRESS_MIN_TEXTS and sys.stderr.isatty())
    try:
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            if args.explain:
                lines = [
                    format_explanation(begin + k, item, detector.explain(item.text), as_json=args.json)
                    for k, item in enumerate(part)
                ]
            else:
                predictions = detector.predict([item.text for item in part])
                lines = [
                    format_line(begin + k, item, p, as_json=args.json)
                    for k, (item, p) in enumerate(zip(part, predictions, strict=True))
                ]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            bar.update(len(part))
    finally:
        bar.close()
    return ExitCode.OK


COMMAND = Command("predict", "score texts and print label and P(AI)", _add_arguments, _run)
