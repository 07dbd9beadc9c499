"""``aidetect-edge`` scores against the Python ``Detector`` on the same bundles: P(AI) within 1e-5."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_support import LOOKALIKES, TOLERANCE, edge_records, folded

from aidetect_infer import Detector
from aidetect_infer.bundle import sha256_file
from aidetect_infer.detector import DEFAULT_MODEL_DIR


def assert_parity(records: list[dict], detector: Detector, texts: list[str]) -> float:
    """Scores within TOLERANCE, same window and token counts, same labels away from the threshold; the max
    difference."""
    expected = detector.predict(texts)
    ours = np.array([r["score"] for r in records])
    theirs = detector.predict_proba(texts).astype(np.float64)
    worst = float(np.abs(ours - theirs).max())
    assert worst < TOLERANCE, f"max |C++ - Python| = {worst:.3g}"
    print(f"max |C++ - Python| = {worst:.2e} over {len(texts)} texts")  # shown with pytest -s
    assert [r["windows"] for r in records] == [p.windows for p in expected]
    assert [r["tokens"] for r in records] == [p.tokens for p in expected]
    for record, prediction in zip(records, expected, strict=True):
        if abs(prediction.score - prediction.threshold) > TOLERANCE:
            assert record["label"] == prediction.label
    return worst


@pytest.fixture(scope="module")
def parity_texts(sample_texts: list[str]) -> list[str]:
    """Real texts, long ones (several windows at max_length 128) and odd ones."""
    long = [" ".join(sample_texts[i : i + 5]) for i in range(0, 50, 5)]
    odd = ["", "   ", "😀 日本語 café", "a\ud800b lone surrogate", "word " * 700, "x" * 3000, "[CLS] [SEP] [UNK]"]
    return sample_texts[:150] + long + odd


@pytest.mark.parametrize("which", ["tiny_bundle", "tiny_bert_bundle"])
def test_probabilities_match_python(run_edge, parity_texts, which, request):
    bundle = request.getfixturevalue(which)
    detector = Detector.from_pretrained(bundle, provider="cpu", threads=1)
    records = edge_records(run_edge, bundle, parity_texts)
    assert_parity(records, detector, parity_texts)
    assert max(r["windows"] for r in records) > 3  # long texts were really split


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("--truncate",), {"truncation": True}),
        (("--max-length", "40"), {"max_length": 40}),
        (("--max-length", "33", "--batch-size", "3"), {"max_length": 33, "batch_size": 3}),
    ],
    ids=["truncate", "max-length", "odd-length-and-batch"],
)
def test_options_match_python(run_edge, tiny_bundle, parity_texts, args, options):
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, **options)
    assert_parity(edge_records(run_edge, tiny_bundle, parity_texts, *args), detector, parity_texts)


@pytest.mark.parametrize("batch_size", ["1", "7", "64"])
def test_default_model_matches_python_in_any_batch(run_edge, parity_texts, batch_size):
    """The shipped dynamic-int8 model runs one window per call on both sides, so the C++ runner equals the Python
    Detector whatever batch size and stdin chunking either side uses."""
    if not DEFAULT_MODEL_DIR.exists():
        pytest.skip(f"no shipped default model at {DEFAULT_MODEL_DIR}")
    detector = Detector.from_pretrained(DEFAULT_MODEL_DIR, provider="cpu", threads=1, batch_size=16)
    records = edge_records(run_edge, DEFAULT_MODEL_DIR, parity_texts, "--batch-size", batch_size)
    assert_parity(records, detector, parity_texts)


def test_variant_parent_directory(run_edge, tiny_bundle, tmp_path):
    parent = tmp_path / "variants"
    shutil.copytree(tiny_bundle, parent / "fp32")
    texts = ["a short text", "another one"]
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)
    assert_parity(edge_records(run_edge, parent, texts), detector, texts)
    assert_parity(edge_records(run_edge, parent, texts, "--variant", "fp32"), detector, texts)
    done = run_edge("--model", parent, "--variant", "int8", input="text\n")
    assert done.returncode == 2 and "no 'int8' variant here (found fp32)" in done.stderr


def test_plain_output_matches_the_python_cli(run_edge, tiny_bundle, sample_texts, tmp_path):
    """Same file, same format: ``label<TAB>score`` with four decimals (ids first for JSONL records)."""
    path = tmp_path / "texts.jsonl"
    records = [json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(sample_texts[:40])]
    path.write_text("".join(records), encoding="utf-8")
    python = subprocess.run(
        [
            sys.executable,
            "-m",
            "aidetect_infer",
            "--model",
            str(tiny_bundle),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--file",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.splitlines()
    done = run_edge("--model", tiny_bundle, "--threads", "1", path)
    assert done.returncode == 0, done.stderr
    ours = done.stdout.splitlines()
    assert len(ours) == len(python) == 40
    for mine, theirs in zip(ours, python, strict=True):
        m_id, m_label, m_score = mine.split("\t")
        t_id, t_label, t_score = theirs.split("\t")
        assert (m_id, m_label) == (t_id, t_label)
        assert abs(float(m_score) - float(t_score)) <= 1e-4 + 1e-9


def test_folding_tokenizer_matches_python(run_edge, tiny_bundle, sample_texts, tmp_path):
    """A bundle whose tokenizer folds look-alikes (Sequence[Replace ..., BertNormalizer]): same scores, tokens."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    tokenizer = bundle / "tokenizer.json"
    tokenizer.write_text(folded(tiny_bundle / "tokenizer.json"), encoding="utf-8")
    meta = json.loads((bundle / "aidetect.json").read_text(encoding="utf-8"))
    meta["files"]["tokenizer.json"] = {"sha256": sha256_file(tokenizer), "bytes": tokenizer.stat().st_size}
    (bundle / "aidetect.json").write_text(json.dumps(meta), encoding="utf-8")
    latin = {letter: char for char, letter in LOOKALIKES.items()}
    attacked = ["".join(latin.get(c, c) for c in t) for t in sample_texts[:60]]
    texts = sample_texts[:60] + attacked + ["Неllо wоrld", "ТНЕ СОМРАNY", "α β ο", ""]
    detector = Detector.from_pretrained(bundle, provider="cpu", threads=1)
    records = edge_records(run_edge, bundle, texts)
    assert_parity(records, detector, texts)
    # The look-alikes are read as the letters they imitate: the swapped texts score as the originals.
    assert [r["score"] for r in records[:60]] == [r["score"] for r in records[60:120]]
