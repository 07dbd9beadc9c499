"""Atomic outputs: a result is written beside its destination and moved into place only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from export.errors import ExportError, StageError

T = TypeVar("T")


@contextmanager
def staged_file(out_path: Path, prefix: str) -> Iterator[Path]:
    """Yield a temporary path next to ``out_path``; move it into place only if the block succeeds."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{prefix}-") as tmp:
        staged = Path(tmp) / out_path.name
        yield staged
        os.replace(staged, out_path)


def run_stage(what: str, fn: Callable[[], T]) -> T:
    """Call ``fn``; an exception other than :class:`ExportError` becomes a :class:`StageError` naming ``what``."""
    try:
        return fn()
    except ExportError:
        raise
    except Exception as exc:  # torch, onnx and onnxruntime raise assorted types; keep the cause chained
        raise StageError(f"{what} failed: {exc}") from exc


def replace_dir(staging: Path, out: Path) -> None:
    """Rename directory ``staging`` to ``out``; an existing ``out`` is moved aside first and restored if the
    rename fails, then deleted. ``staging`` must be on the same filesystem (a sibling of ``out``)."""
    backup: Path | None = None
    if out.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        backup.rmdir()
        os.replace(out, backup)
    try:
        os.replace(staging, out)
    except OSError:
        if backup is not None:
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
