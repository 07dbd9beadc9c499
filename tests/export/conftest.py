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
    from export.onnx.__main__ import main

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
    """A JSONL evaluation set of real texts, alternating labels, one group per text."""
    rows = [{"text": t, "label": i % 2, "group": f"doc{i}"} for i, t in enumerate(sample_texts[:EVAL_TEXTS])]
    return write_jsonl(tmp_path_factory.mktemp("data") / "eval.jsonl", rows)


@pytest.fixture(scope="session")
def separable_eval(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, float]:
    """An evaluation set the tiny DistilBERT separates, and the threshold between its classes.

    A random 2-layer model has no real task, so the labels are its own PyTorch scores (first window) cut at
    their median, which also becomes the threshold: decisions then sit on both sides of it and the gate's
    agreement and AUC figures measure how far int8/fp16 move texts across it.
    """
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    tokenizer = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=128)
    texts = sample_texts[:EVAL_TEXTS]
    scores = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            scores.append(torch.softmax(model(input_ids=ids).logits, dim=-1)[0, 1].item())
    threshold = float(np.median(scores))
    labels = [int(s >= threshold) for s in scores]
    rows = [{"text": t, "label": y, "group": f"doc{i}"} for i, (t, y) in enumerate(zip(texts, labels, strict=True))]
    return write_jsonl(tmp_path_factory.mktemp("data") / "separable.jsonl", rows), threshold


GATE = {"max_auc_drop": 0.05, "min_agreement": 0.9}
"""Gate limits for the tiny random model, whose scores crowd around one value so that int8 noise weighs more
than on a trained model (the defaults, 0.005 and 0.99, are for trained checkpoints)."""


@pytest.fixture(scope="session")
def built(
    tiny_checkpoint: Path, separable_eval: tuple[Path, float], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """All three variants of the tiny DistilBERT, exported once by the command."""
    path, threshold = separable_eval
    out = tmp_path_factory.mktemp("export") / "bundles"
    code, stdout, stderr = run_cli(
        "--checkpoint", tiny_checkpoint, "--out", out, "--variant", "fp32", "int8", "fp16",
        "--eval", f"heldout={path}", "--max-length", 128, "--bench-texts", 16, "--threshold", threshold,
        "--gate-auc-drop", GATE["max_auc_drop"], "--gate-agreement", GATE["min_agreement"],
    )  # fmt: skip
    return {"out": out, "code": code, "stdout": stdout, "stderr": stderr, "threshold": threshold}
