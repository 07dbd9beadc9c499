"""Labelled data: loading, validation, filters and the split by group.

Formats:
- JSONL (optionally ``.gz``) with ``text``, ``label`` (1 = AI) and, where present, ``domain``, ``generator``,
  ``group``, ``attack``, ``style``, ``source`` (the layout of the repository's ``data/``);
- the Kaggle "LLM - Detect AI Generated Text" CSV layout (``text``, ``generated``; ``prompt_id`` as the group);
- any CSV/JSONL with the text and label columns named by ``text_column`` / ``label_column``.

Split rule: a record's group goes to validation when the first 8 bytes of
``sha256(salt + ":" + group)``, read as a big-endian integer over 2**64, fall below ``val_fraction``.
The split depends only on the group name and the salt, never on row order or file contents, so it is stable
across runs, files and machines, and no group is ever on both sides.

Where data lives: a data file may be named by path or by bare file name (``outfox_essays.jsonl.gz``); a bare
name is looked up in the data directory, which is, in this order, the one given to :func:`use_data_dir` (the
commands' ``--data-dir``, the pipeline's ``data_dir``), ``$AIDETECT_DATA``, or the repository's ``data/``. Records
of what was trained or evaluated on name files by file name and sha256 (:func:`describe_file`), never by a
path of the machine that built them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from export.errors import DataError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "AIDETECT_DATA"
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
"""The labelled sets shipped with the repository (see ``data/README.md``)."""

_data_dir_override: Path | None = None

HELD_OUT_PREFIX = "outfox:test:"
"""Groups of the OUTFOX ``test`` half: reported on, never trained, tuned or selected on."""

_KAGGLE_LABEL = "generated"


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled text."""

    text: str
    label: int
    group: str
    domain: str = "unknown"
    generator: str = "unknown"
    attack: str = "none"
    source: str = ""
    dataset: str = ""
    style: str = "none"

    @property
    def held_out(self) -> bool:
        """True for the OUTFOX ``test`` half, which may be evaluated but never trained on."""
        return self.group.startswith(HELD_OUT_PREFIX)


def use_data_dir(path: str | Path | None) -> None:
    """Set the directory where bare data file names are looked up (``None`` restores the default)."""
    global _data_dir_override
    _data_dir_override = Path(path) if path is not None else None


def data_dir() -> Path:
    """The directory where bare data file names are looked up (see the module docstring)."""
    if _data_dir_override is not None:
        return _data_dir_override
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else REPO_DATA_DIR


def resolve_data_file(path: str | Path) -> Path:
    """An existing path as it is; a bare file name inside :func:`data_dir`.

    Raises:
        DataError: Neither exists.
    """
    path = Path(path)
    if path.is_file():
        return path
    if len(path.parts) == 1:
        candidate = data_dir() / path
        if candidate.is_file():
            return candidate
        raise DataError(f"{path}: no such data file (looked in {data_dir()}; set --data-dir or ${DATA_DIR_ENV})")
    raise DataError(f"{path}: no such data file")


def dataset_name(path: str | Path) -> str:
    """``detectgpt_family`` for ``.../detectgpt_family.jsonl.gz``."""
    return Path(path).name.split(".")[0]


def describe_file(path: str | Path) -> dict[str, str]:
    """How records name a data file: its file name and sha256, never a machine's path."""
    resolved = resolve_data_file(path)
    return {"file": resolved.name, "sha256": sha256_file(resolved)}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    # strict decoding: a file with invalid UTF-8 is refused with its line number, not silently repaired
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        return "csv"
    raise DataError(f"{path}: unknown data format (expected .jsonl, .csv, optionally .gz)")


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    fmt = _format_of(path)
    with _open_text(path) as f:
        lines = enumerate(f, start=1)
        try:
            if fmt == "jsonl":
                for lineno, line in lines:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{lineno}: expected a JSON object per line")
                    yield lineno, row
            else:
                delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
                reader = csv.DictReader(f, delimiter=delimiter)
                for row in reader:
                    yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 near byte {exc.start} ({exc.reason})") from exc


def _parse_label(value: object, path: Path, lineno: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "0.0", "1.0", "true", "false"):
        return 1 if value.strip().lower() in ("1", "1.0", "true") else 0
    raise DataError(f"{path}:{lineno}: label {value!r} is not 0 or 1")


def load_records(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
) -> list[Record]:
    """Read every record of one file.

    Args:
        path: a JSONL or CSV file, optionally gzip-compressed.
        text_column: the column holding the text (default ``text``).
        label_column: the column holding the 0/1 label (default ``label``, or ``generated`` for the Kaggle layout).
        group_column: the column naming the source document (default ``group``, or ``prompt_id``); rows without
            a group become their own group (keyed by a hash of the text).

    Raises:
        DataError: a missing file or column, an empty file, invalid JSON or UTF-8, a label that is not 0/1,
            an empty text. The message names the file and the line.
    """
    path = resolve_data_file(path)
    name = dataset_name(path)
    records: list[Record] = []
    text_key = text_column or "text"
    for lineno, row in _rows(path):
        label_key = label_column or ("label" if "label" in row or _KAGGLE_LABEL not in row else _KAGGLE_LABEL)
        for key in (text_key, label_key):
            if key not in row:
                raise DataError(f"{path}:{lineno}: missing column {key!r} (columns: {sorted(row)})")
        text = row[text_key]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: column {text_key!r} is empty or not a string")
        group_key = group_column or ("group" if "group" in row else "prompt_id")
        group = row.get(group_key)
        if group in (None, ""):
            group = "text:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        records.append(
            Record(
                text=text,
                label=_parse_label(row[label_key], path, lineno),
                group=str(group),
                domain=str(row.get("domain") or "unknown"),
                generator=str(row.get("generator") or ("human" if row[label_key] in (0, "0") else "unknown")),
                attack=str(row.get("attack") or "none"),
                source=str(row.get("source") or ""),
                dataset=name,
                style=str(row.get("style") or "none"),
            )
        )
    if not records:
        raise DataError(f"{path}: no records (empty file)")
    return records


def filter_records(
    records: Iterable[Record],
    *,
    domains: Sequence[str] | None = None,
    generators: Sequence[str] | None = None,
    attacks: Sequence[str] | None = None,
    held_out: bool | None = None,
) -> list[Record]:
    """Keep records whose domain / generator / attack is in the given lists (``None`` keeps all).

    ``held_out=True`` keeps only the OUTFOX test half, ``False`` drops it, ``None`` keeps both.
    Human texts are kept by a generator filter (their generator is ``human``) only if ``human`` is listed.
    """
    out = []
    for r in records:
        if domains is not None and r.domain not in domains:
            continue
        if generators is not None and r.generator not in generators:
            continue
        if attacks is not None and r.attack not in attacks:
            continue
        if held_out is not None and r.held_out != held_out:
            continue
        out.append(r)
    return out


def refuse_held_out(records: Iterable[Record], path: str | Path = "<data>") -> None:
    """Raise if any record belongs to the OUTFOX test half, which may never be trained or tuned on."""
    for r in records:
        if r.held_out:
            raise DataError(
                f"{path}: group {r.group!r} belongs to the held-out OUTFOX test half; it can be evaluated "
                "(python -m export.evaluate) but never used for training, tuning or checkpoint selection"
            )


def in_validation(group: str, val_fraction: float, salt: str = "aidetect") -> bool:
    """Whether ``group`` falls in the validation side of the split (see the module docstring)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def split_by_group(
    records: Sequence[Record], val_fraction: float = 0.1, salt: str = "aidetect"
) -> tuple[list[Record], list[Record]]:
    """Split into (train, validation) by group: no group is ever on both sides.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = [], []
    for r in records:
        (val if in_validation(r.group, val_fraction, salt) else train).append(r)
    return train, val


def load_training_data(
    paths: Sequence[str | Path],
    *,
    val_fraction: float = 0.1,
    salt: str = "aidetect",
    text_column: str | None = None,
    label_column: str | None = None,
    domains: Sequence[str] | None = None,
    generators: Sequence[str] | None = None,
    attacks: Sequence[str] | None = None,
) -> tuple[list[Record], list[Record]]:
    """Load training files, drop the held-out half with a log line, apply filters, split by group.

    The OUTFOX test half is dropped here (and logged), so that ``--data outfox_essays.jsonl.gz`` trains on the
    ``valid`` half only; use :func:`refuse_held_out` where a file must contain no held-out record at all.
    """
    train: list[Record] = []
    val: list[Record] = []
    for path in paths:
        records = load_records(path, text_column=text_column, label_column=label_column)
        kept = filter_records(records, domains=domains, generators=generators, attacks=attacks, held_out=False)
        dropped = sum(r.held_out for r in records)
        if dropped:
            logger.info("%s: left out %d held-out OUTFOX test records", path, dropped)
        refuse_held_out(kept, path)
        t, v = split_by_group(kept, val_fraction, salt)
        logger.info("%s: %d train / %d validation records", path, len(t), len(v))
        train += t
        val += v
    if not train:
        raise DataError(f"no training records left in {', '.join(map(str, paths))} after filters")
    return train, val
