"""Fixtures of the export tests: labelled data files and one full export of the tiny checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

EVAL_TEXTS = 96


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run ``python -m export.to_onnx`` in this process; return (exit status, stdout, stderr)."""
    from export.to_onnx import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def cli() -> Any:
    """:func:`run_cli`."""
    return run_cli


@pytest.fixture(scope="session")
def jsonl() -> Any:
    """:func:`write_jsonl`."""
    return write_jsonl


@pytest.fixture(scope="session")
def eval_file(sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL evaluation set of real texts, both labels, one group per text."""
    rows = [{"text": t, "label": i % 2, "group": f"doc{i}"} for i, t in enumerate(sample_texts[:EVAL_TEXTS])]
    return write_jsonl(tmp_path_factory.mktemp("data") / "eval.jsonl", rows)


@pytest.fixture(scope="session")
def built(tiny_checkpoint: Path, eval_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """All three variants of the tiny DistilBERT, exported once by the command (default gates)."""
    out = tmp_path_factory.mktemp("export") / "bundles"
    code, stdout, stderr = run_cli(
        "--checkpoint", tiny_checkpoint, "--out", out, "--variant", "fp32", "int8", "fp16",
        "--eval", f"heldout={eval_file}", "--max-length", 128, "--bench-texts", 16,
    )  # fmt: skip
    return {"out": out, "code": code, "stdout": stdout, "stderr": stderr}
