"""Reading texts for the command line: plain text (one per line), JSONL with a ``text`` field, stdin."""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aidetect_infer.errors import InvalidValueError

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class TextItem:
    """One text to score and where it came from.

    Attributes:
        text: The text.
        id: The ``id`` field of a JSONL record, if it had one.
        line: 1-based line number in the input file or stdin; ``None`` for command-line arguments.
    """

    text: str
    id: Any = None
    line: int | None = None


def is_jsonl(path: str) -> bool:
    """Whether ``path`` names a JSONL file (``.jsonl``/``.ndjson``, optionally ``.gz``)."""
    name = path.lower().removesuffix(".gz")
    return name.endswith(JSONL_SUFFIXES)


def open_text(path: str) -> IO[str]:
    """``path`` opened for reading as UTF-8 text (``-`` is stdin, ``.gz`` is decompressed); undecodable bytes
    become U+FFFD."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by the caller


def read_lines(stream: IO[str], *, jsonl: bool, source: str) -> Iterator[TextItem]:
    """Texts from an open text stream: one per non-blank line, or one per JSONL record.

    Args:
        stream: The stream to read.
        jsonl: Each line is a JSON object with a string ``text`` field and an optional ``id``.
        source: The stream's name, for error messages.

    Yields:
        One :class:`TextItem` per non-blank line (blank lines are skipped).

    Raises:
        InvalidValueError: A JSONL line is not an object with a string ``text`` field.
    """
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if not jsonl:
            yield TextItem(text=line, line=number)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidValueError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InvalidValueError(f'{source}:{number}: expected a JSON object with a string "text" field')
        yield TextItem(text=record["text"], id=record.get("id"), line=number)


def read_file(path: str) -> list[TextItem]:
    """All texts in ``path`` (``-`` for stdin), JSONL when the name ends in ``.jsonl``/``.ndjson`` (+``.gz``).

    Raises:
        InvalidValueError: The file cannot be read or a JSONL line is malformed.
    """
    source = "<stdin>" if path == "-" else path
    try:
        with open_text(path) as stream:
            return list(read_lines(stream, jsonl=is_jsonl(path), source=source))
    except (OSError, EOFError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidValueError(f"{Path(source)}: cannot read input file ({reason})") from None
