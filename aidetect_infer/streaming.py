"""Streaming batch scoring of a file that loses nothing (the library side of ``python -m aidetect_infer score``).

The input (JSONL with a ``text`` and an optional ``id``, or plain text, one text per line; ``.gz`` accepted)
is read line by line, never whole, and scored in chunks. Each chunk's results are appended to the output, one
JSON object per line, and flushed, so a killed run leaves complete lines and at most one partial line. Lines
that cannot be parsed go to an errors file with their line number; blank lines are skipped.

Resuming reads the output backwards from its end, drops a trailing partial or unreadable line, and continues
after the last complete result; errors past that line are dropped and found again. Within a chunk, errors
are written before results, so every error up to the last complete result is on disk: no line goes missing
and none is written twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from aidetect_infer.errors import AidetectError, InvalidValueError
from aidetect_infer.textio import is_jsonl, open_text

if TYPE_CHECKING:
    from aidetect_infer.detector import Prediction

logger = logging.getLogger(__name__)

ERRORS_SUFFIX = ".errors.jsonl"
CHUNK_TEXTS = 256
CHUNK_CHARS = 2_000_000
EXCERPT_CHARS = 120
_BLOCK = 1 << 16
MISSING = object()
"""The id of a line that gives none (a plain-text line, or a JSON record without ``id``)."""
_UNREAD = object()


class TextScorer(Protocol):
    """What :func:`score_file` needs of a detector: ``predict`` on a list of texts."""

    def predict(self, texts: list[str]) -> list[Prediction]: ...


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """What one :func:`score_file` run did.

    Attributes:
        scored: Results this run wrote.
        errors: Unparseable lines this run reported.
        blank: Blank lines this run skipped.
        resumed_after: Input lines already done when the run started (0 for a fresh start).
        lines: Input lines in total.
    """

    scored: int
    errors: int
    blank: int
    resumed_after: int
    lines: int


def default_errors_path(output: str | os.PathLike[str]) -> Path:
    """``OUTPUT.errors.jsonl`` next to the output (``out.jsonl`` gives ``out.errors.jsonl``)."""
    path = Path(output)
    return path.with_name(path.name.removesuffix(".jsonl") + ERRORS_SUFFIX)


def _lines_backward(f: IO[bytes], end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each line of ``f[:end]`` from the last to the first, without its newline."""
    buffer = b""
    pos = end
    while pos > 0:
        start = max(0, pos - _BLOCK)
        f.seek(start)
        buffer = f.read(pos - start) + buffer
        pos = start
        cut = buffer.rfind(b"\n")
        while cut >= 0:
            yield pos + cut + 1, buffer[cut + 1 :]
            buffer = buffer[:cut]
            cut = buffer.rfind(b"\n")
    yield 0, buffer


def _complete_record(line: bytes) -> dict[str, Any] | None:
    """One output or errors record, or ``None`` unless it is a JSON object with a positive integer ``line``."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    number = record.get("line")
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return record
    return None


def truncate_after(path: Path, limit: int | None = None) -> dict[str, Any] | None:
    """Cut ``path`` after its last complete record (the last with ``line <= limit``, if given).

    A record is complete when its line ends with a newline and parses as a JSON object with a positive
    integer ``line``. Whatever follows the last such record (a partial line left by a kill, garbage after a
    crash, records past ``limit``) is removed. A missing file is left missing.

    Args:
        path: An output or errors file.
        limit: Keep only records up to this input line.

    Returns:
        The last record kept, or ``None`` when none is left.
    """
    if not path.exists():
        return None
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        lines = _lines_backward(f, size)
        next(lines)  # what follows the last newline: nothing, or a partial line
        for offset, line in lines:
            record = _complete_record(line)
            if record is not None and (limit is None or record["line"] <= limit):
                keep = offset + len(line) + 1
                if keep < size:
                    logger.info("%s: dropped %d bytes after input line %d", path, size - keep, record["line"])
                f.truncate(keep)
                return record
        f.truncate(0)
    return None


def check_distinct(source: Path, output: Path, errors: Path, *, what: str) -> None:
    """Refuse an input, output and errors path that coincide, or an output whose directory is missing.

    ``what`` names the paths in the message: ``"files"`` for a file run, ``"paths"`` where the input may be a
    folder and the output a directory (``score --engine ray``).

    Raises:
        InvalidValueError: Two of the paths coincide, or the output's directory does not exist.
    """
    if len({source.resolve(), output.resolve(), errors.resolve()}) < 3:
        raise InvalidValueError(f"input {source}, output {output} and errors {errors} must be three different {what}")
    if not output.parent.is_dir():
        raise InvalidValueError(f"{output.parent}: the output directory does not exist")


def check_paths(
    input_path: str | os.PathLike[str], output: Path, errors: Path, *, resume: bool, overwrite: bool
) -> None:
    """Refuse paths a scoring run cannot use, before any model is loaded.

    Raises:
        InvalidValueError: The input is stdin or missing, two paths coincide, the output's directory is
            missing, or the output already holds results and neither ``resume`` nor ``overwrite`` is set.
    """
    if str(input_path) == "-":
        raise InvalidValueError("score reads a file, not stdin: it must read it again to resume")
    source = Path(input_path)
    if not source.exists() or source.is_dir():
        raise InvalidValueError(f"{source}: cannot read input file (no such file)")
    check_distinct(source, output, errors, what="files")
    if output.is_dir() or errors.is_dir():
        raise InvalidValueError(f"{output if output.is_dir() else errors}: is a directory, not a file")
    if output.is_file() and output.stat().st_size > 0 and not (resume or overwrite):
        raise InvalidValueError(f"{output}: already holds results; pass --resume to continue it or --overwrite")


def _parse(raw: str, *, jsonl: bool) -> tuple[str, Any]:
    """The text and id (or ``MISSING``) of one non-blank line; ``ValueError`` says why it has none."""
    if not jsonl:
        return raw, MISSING
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ValueError('expected a JSON object with a string "text" field')
    return record["text"], record.get("id", MISSING)


def _json(value: Any) -> str:
    return "" if value is MISSING else json.dumps(value, sort_keys=True)


def _skip_done(stream: IO[str], done: dict[str, Any] | None, *, jsonl: bool, source: str, output: Path) -> int:
    """Read past the input lines the output covers, checking that its last record belongs to this input."""
    if done is None:
        return 0
    target: int = done["line"]
    number, raw = 0, ""
    while number < target:
        raw = stream.readline()
        if not raw:
            raise InvalidValueError(
                f"{output}: has results up to input line {target}, but {source} has {number} lines; "
                "it was written for another input (use --overwrite to start over)"
            )
        number += 1
    try:
        found = _parse(raw.rstrip("\r\n"), jsonl=jsonl)[1] if raw.strip() else _UNREAD
    except ValueError:
        found = _UNREAD
    # Ids compare by their JSON text: NaN is never equal to itself, its text is.
    if found is _UNREAD or _json(found) != _json(done.get("id", MISSING)):
        raise InvalidValueError(
            f"{output}: its last result (input line {target}, id {done.get('id')!r}) does not match line "
            f"{target} of {source}; it was written for another input (use --overwrite to start over)"
        )
    return target


@dataclass(slots=True)
class TextChunk:
    """Input lines read together: the texts to score and the lines that could not be parsed."""

    lines: list[int] = field(default_factory=list)
    ids: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    blank: int = 0
    chars: int = 0
    read: int = 0


def read_chunks(stream: IO[str], *, first: int, jsonl: bool, texts: int, chars: int) -> Iterator[TextChunk]:
    """The rest of the input, numbered from ``first``, in chunks of at most ``texts`` texts or ~``chars``."""
    chunk = TextChunk()
    for number, raw in enumerate(stream, start=first):
        chunk.read += 1
        line = raw.rstrip("\r\n")
        if not line.strip():
            chunk.blank += 1
            continue
        try:
            text, id_ = _parse(line, jsonl=jsonl)
        except ValueError as exc:
            chunk.errors.append((number, str(exc), line[:EXCERPT_CHARS]))
            continue
        chunk.lines.append(number)
        chunk.ids.append(id_)
        chunk.texts.append(text)
        chunk.chars += len(text)
        if len(chunk.texts) >= texts or chunk.chars >= chars:
            yield chunk
            chunk = TextChunk()
    if chunk.read:
        yield chunk


def predict_chunk(detector: TextScorer, chunk: TextChunk) -> list[Prediction | None]:
    """Predictions for a chunk; if the batch fails, text by text, reporting the texts that fail as errors."""
    try:
        return list(detector.predict(chunk.texts))
    except AidetectError as exc:
        logger.warning("a chunk failed (%s); scoring its texts one by one", exc)
    predictions: list[Prediction | None] = []
    for number, text in zip(chunk.lines, chunk.texts, strict=True):
        try:
            predictions.append(detector.predict([text])[0])
        except AidetectError as exc:
            chunk.errors.append((number, f"cannot be scored: {exc}", text[:EXCERPT_CHARS]))
            predictions.append(None)
    chunk.errors.sort()
    return predictions


def _write(f: IO[bytes], records: list[dict[str, Any]]) -> None:
    if records:
        # ASCII output: ids and excerpts may hold lone surrogates, which UTF-8 cannot encode.
        f.write("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records).encode("ascii"))
        f.flush()


def score_file(
    detector: TextScorer,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    errors_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_texts: int = CHUNK_TEXTS,
    chunk_chars: int = CHUNK_CHARS,
    on_progress: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Score every line of a file into a JSONL file of results, in constant memory; resumable.

    Args:
        detector: A :class:`~aidetect_infer.Detector` (anything with its ``predict``).
        input_path: JSONL (``.jsonl``/``.ndjson``: a string ``text`` field, an optional ``id``) or plain
            text, one text per line; ``.gz`` accepted.
        output_path: Where results go, one JSON object per scored line: ``line`` (1-based input line),
            ``id`` (when the record has one), ``label``, ``score`` (P(AI), 6 decimals), ``windows``.
        errors_path: Where unparseable lines go (``line``, ``error``, ``excerpt``); default
            :func:`default_errors_path`. Created only when there is an error to report.
        resume: Continue a stopped run: keep the output's complete results and go on after the last one.
        overwrite: Start over even if the output holds results.
        chunk_texts: Texts scored and flushed together.
        chunk_chars: A chunk also ends once its texts hold this many characters (bounds memory).
        on_progress: Called with the number of input lines just finished (the skipped ones first).

    Returns:
        What the run did.

    Raises:
        InvalidValueError: Bad paths or chunk sizes, results in the output without ``resume`` or
            ``overwrite``, or an output to resume that was written for another input.
    """
    if chunk_texts < 1 or chunk_chars < 1:
        raise InvalidValueError(f"chunk sizes must be positive, got {chunk_texts} texts, {chunk_chars} characters")
    output = Path(output_path)
    errors = Path(errors_path) if errors_path is not None else default_errors_path(output)
    check_paths(input_path, output, errors, resume=resume, overwrite=overwrite)
    done = truncate_after(output) if resume else None
    if resume:
        truncate_after(errors, limit=done["line"] if done else 0)
    else:
        output.write_bytes(b"")
        errors.unlink(missing_ok=True)
    jsonl, source = is_jsonl(str(input_path)), str(input_path)
    scored = reported = blank = 0
    progress = on_progress or (lambda n: None)
    error_file: IO[bytes] | None = None
    try:
        with open_text(source) as stream, open(output, "ab") as out:
            resumed = last = _skip_done(stream, done, jsonl=jsonl, source=source, output=output)
            progress(resumed)
            for chunk in read_chunks(stream, first=resumed + 1, jsonl=jsonl, texts=chunk_texts, chars=chunk_chars):
                predictions = predict_chunk(detector, chunk) if chunk.texts else []
                if chunk.errors:
                    error_file = error_file or open(errors, "ab")  # noqa: SIM115 - closed below
                    _write(error_file, [{"line": n, "error": e, "excerpt": x} for n, e, x in chunk.errors])
                records = [
                    {"line": n, **({} if i is MISSING else {"id": i}), **_result(p)}
                    for n, i, p in zip(chunk.lines, chunk.ids, predictions, strict=True)
                    if p is not None
                ]
                _write(out, records)
                scored, reported, blank = scored + len(records), reported + len(chunk.errors), blank + chunk.blank
                last += chunk.read
                progress(chunk.read)
    finally:
        if error_file is not None:
            error_file.close()
    logger.info("%s: %d scored, %d errors, %d blank, resumed after line %d", output, scored, reported, blank, resumed)
    return ScoreSummary(scored=scored, errors=reported, blank=blank, resumed_after=resumed, lines=last)


def _result(prediction: Prediction) -> dict[str, Any]:
    return {
        "label": prediction.label,
        "score": round(prediction.score, 6),
        "windows": prediction.windows,
        "tokens": prediction.tokens,
    }
