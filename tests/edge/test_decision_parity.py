"""``aidetect-edge`` decides as the Python runtime: temperature, operating points, the "uncertain" band, min_tokens.

A copy of the tiny bundle gets a ``decision`` object (aidetect_infer/decision.py) whose thresholds are placed
between the fixture texts' calibrated scores, so that every label occurs and none hangs on the last digit.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_support import TOLERANCE, Runner, edge_records, jsonl

from aidetect_infer import Detector
from aidetect_infer.decision import UNCERTAIN
from aidetect_infer.errors import BundleError, InvalidValueError

TEMPERATURE = 1.7
MIN_TOKENS = 12
MARGIN = 1e-4  # every threshold lies at least this far from every score, so labels cannot flip on rounding
SHORT_TEXTS = [
    "",
    "hi",
    "Two words",
    "It was a long day.",
    "one two three four five six seven eight nine ten eleven",
    "one two three four five six seven eight nine ten eleven twelve",
    "The results of the study were reported to the school government.",
    "\u0001\u200b 😀",
]


def write_decision(bundle: Path, decision: Any, threshold: float | None = None) -> None:
    """Set (or, with ``None``, remove) the bundle's ``decision``; aidetect.json is not checksummed."""
    path = bundle / "aidetect.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["decision"] = decision
    if threshold is not None:
        meta["threshold"] = threshold
    path.write_text(json.dumps(meta), encoding="utf-8")  # NaN and Infinity as Python writes them


def between(scores: np.ndarray, quantile: float) -> float:
    """A threshold near ``quantile`` of ``scores`` in a gap between two of them wider than 2 * MARGIN."""
    values = np.unique(scores)
    gaps = [k for k in range(len(values) - 1) if values[k + 1] - values[k] > 2 * MARGIN]
    k = min(gaps, key=lambda g: abs(g - quantile * len(values)))
    return float((values[k] + values[k + 1]) / 2)


@pytest.fixture(scope="module")
def decision_texts(sample_texts: list[str]) -> list[str]:
    """Real texts, long ones (several windows) and short ones around min_tokens."""
    long = [" ".join(sample_texts[i : i + 5]) for i in range(0, 30, 5)]
    return sample_texts[:120] + long + SHORT_TEXTS


@pytest.fixture(scope="module")
def decision_bundle(tiny_bundle: Path, decision_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with temperature 1.7, min_tokens 12 and an uncertain band over about 40% of the texts."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("decision") / "bundle"))
    placeholder = {"temperature": TEMPERATURE, "operating_points": [{"false_positive_rate": 0.5, "threshold": 0.5}]}
    write_decision(bundle, placeholder)
    scores = Detector.from_pretrained(bundle, provider="cpu", threads=1).predict_proba(decision_texts)
    ai, middle, human = (between(scores.astype(np.float64), q) for q in (0.7, 0.5, 0.3))
    points = [
        {"false_positive_rate": 0.01, "threshold": ai, "true_positive_rate": 0.4},
        {"false_positive_rate": 0.2, "threshold": human, "true_positive_rate": math.nan},  # as the factory may write
        {"false_positive_rate": 0.05, "threshold": middle, "measured_false_positive_rate": 0.049},
    ]
    decision = {
        "temperature": TEMPERATURE,
        "false_positive_rate": 0.01,
        "operating_points": points,
        "uncertain_false_positive_rate": 0.2,
        "min_tokens": MIN_TOKENS,
        "rule": "test fixture",
    }
    write_decision(bundle, decision, threshold=ai)
    return bundle


def assert_same_decisions(records: list[dict], detector: Detector, texts: list[str]) -> None:
    expected = detector.predict(texts)
    ours = np.array([r["score"] for r in records])
    theirs = np.array([p.score for p in expected])
    worst = float(np.abs(ours - theirs).max())
    assert worst < TOLERANCE, f"max |C++ - Python| = {worst:.3g}"
    assert [r["tokens"] for r in records] == [p.tokens for p in expected]
    assert [r["windows"] for r in records] == [p.windows for p in expected]
    assert [r["label"] for r in records] == [p.label for p in expected]


def test_decisions_match_python(run_edge: Runner, decision_bundle, tiny_bundle, decision_texts):
    detector = Detector.from_pretrained(decision_bundle, provider="cpu", threads=1)
    policy = detector.policy
    assert policy.temperature == TEMPERATURE and policy.min_tokens == MIN_TOKENS
    assert policy.human_threshold < policy.threshold
    records = edge_records(run_edge, decision_bundle, decision_texts)
    assert_same_decisions(records, detector, decision_texts)
    labels = [r["label"] for r in records]
    assert {"human", "ai", UNCERTAIN} <= set(labels)
    in_band = [r for r in records if r["tokens"] >= MIN_TOKENS and policy.human_threshold <= r["score"]]
    assert any(r["score"] < policy.threshold and r["label"] == UNCERTAIN for r in in_band)
    short = [r for r in records if r["tokens"] < MIN_TOKENS]
    assert short and all(r["label"] == UNCERTAIN for r in short)
    assert any(r["score"] >= policy.threshold or r["score"] < policy.human_threshold for r in short)
    assert max(r["windows"] for r in records) > 1
    # The temperature changed the scores: the uncalibrated bundle scores otherwise.
    plain = np.array([r["score"] for r in edge_records(run_edge, tiny_bundle, decision_texts)])
    assert np.abs(plain - np.array([r["score"] for r in records])).max() > 0.01


def test_plain_output_labels(run_edge: Runner, decision_bundle, decision_texts):
    detector = Detector.from_pretrained(decision_bundle, provider="cpu", threads=1)
    texts = [t for t in decision_texts if t.strip()]
    done = run_edge("--model", decision_bundle, "--threads", "1", "--jsonl", input=jsonl(texts))
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    expected = detector.predict(texts)
    assert [label for label, _ in rows] == [p.label for p in expected]
    assert all(abs(float(score) - p.score) <= 5e-5 + 1e-9 for (_, score), p in zip(rows, expected, strict=True))


@pytest.mark.parametrize("rate", [0.01, 0.03, 0.05, 0.2, 0.5])
def test_operating_points_match_python(run_edge: Runner, decision_bundle, decision_texts, rate):
    detector = Detector.from_pretrained(decision_bundle, provider="cpu", threads=1, max_false_positive_rate=rate)
    records = edge_records(run_edge, decision_bundle, decision_texts, "--max-false-positive-rate", str(rate))
    assert_same_decisions(records, detector, decision_texts)


@pytest.mark.parametrize("rate", ["0.001", "0", "1", "-0.5", "nan"])
def test_operating_point_errors_match_python(run_edge: Runner, decision_bundle, rate):
    with pytest.raises(InvalidValueError) as python:
        Detector.from_pretrained(decision_bundle, provider="cpu", threads=1, max_false_positive_rate=float(rate))
    done = run_edge("--model", decision_bundle, "--max-false-positive-rate", rate, input="text\n")
    assert done.returncode == 4, done.stderr
    if rate == "0.001":
        assert str(python.value) in done.stderr  # "... below the lowest validated operating point (0.01); ..."
    else:
        assert "max_false_positive_rate must be in (0, 1)" in done.stderr


def test_operating_point_needs_a_decision(run_edge: Runner, tiny_bundle):
    done = run_edge("--model", tiny_bundle, "--max-false-positive-rate", "0.05", input="text\n")
    assert done.returncode == 4 and "records no operating points (no 'decision' in aidetect.json)" in done.stderr
    done = run_edge("--model", tiny_bundle, "--max-false-positive-rate", "low", input="text\n")
    assert done.returncode == 4 and "--max-false-positive-rate needs a number, got 'low'" in done.stderr


GOOD = {
    "operating_points": [
        {"false_positive_rate": 0.01, "threshold": 0.6},
        {"false_positive_rate": 0.1, "threshold": 0.4},
    ]
}


@pytest.mark.parametrize(
    "decision",
    [
        pytest.param(None, id="null"),
        pytest.param(GOOD, id="defaults"),
        pytest.param({**GOOD, "uncertain_false_positive_rate": None, "min_tokens": 3.0}, id="null-band"),
        pytest.param({**GOOD, "uncertain_false_positive_rate": 0.001}, id="band-below-every-point"),
        pytest.param({**GOOD, "uncertain_false_positive_rate": 0.1, "false_positive_rate": math.nan}, id="nan-rate"),
        pytest.param({**GOOD, "uncertain_false_positive_rate": 0.1, "temperature": 0.25}, id="sharper"),
    ],
)
def test_accepted_decisions_match_python(run_edge: Runner, tiny_bundle, tmp_path, sample_texts, decision):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    write_decision(bundle, decision, threshold=0.55)
    texts = sample_texts[:30] + SHORT_TEXTS
    detector = Detector.from_pretrained(bundle, provider="cpu", threads=1)
    assert_same_decisions(edge_records(run_edge, bundle, texts), detector, texts)


POINT = {"false_positive_rate": 0.01, "threshold": 0.5}


@pytest.mark.parametrize(
    "decision",
    [
        pytest.param({"operating_points": []}, id="no-points"),
        pytest.param({"temperature": 2.0}, id="points-missing"),
        pytest.param({"operating_points": [{"threshold": 0.5}]}, id="point-without-rate"),
        pytest.param({"operating_points": [{"false_positive_rate": 0.01}]}, id="point-without-threshold"),
        pytest.param({"operating_points": POINT}, id="points-not-a-list"),
        pytest.param({"operating_points": [POINT, "0.5"]}, id="point-not-an-object"),
        pytest.param({"operating_points": [{"false_positive_rate": "low", "threshold": 0.5}]}, id="rate-a-string"),
        pytest.param({"operating_points": [{"false_positive_rate": 0.01, "threshold": 1.5}]}, id="threshold-above-1"),
        pytest.param({"operating_points": [POINT, {"false_positive_rate": 0.1, "threshold": -0.1}]}, id="negative"),
        pytest.param({"operating_points": [{**POINT, "threshold": math.nan}]}, id="threshold-nan"),
        pytest.param({"operating_points": [POINT], "temperature": 0}, id="temperature-0"),
        pytest.param({"operating_points": [POINT], "temperature": -1.5}, id="temperature-negative"),
        pytest.param({"operating_points": [POINT], "temperature": "hot"}, id="temperature-a-string"),
        pytest.param({"operating_points": [POINT], "temperature": math.nan}, id="temperature-nan"),
        pytest.param({"operating_points": [POINT], "temperature": math.inf}, id="temperature-infinite"),
        pytest.param({"operating_points": [POINT], "temperature": None}, id="temperature-null"),
        pytest.param({"operating_points": [POINT], "min_tokens": -1}, id="min-tokens-negative"),
        pytest.param({"operating_points": [POINT], "min_tokens": "many"}, id="min-tokens-a-string"),
        pytest.param("calibrated", id="a-string"),
        pytest.param([POINT], id="a-list"),
    ],
)
def test_malformed_decisions_are_refused(run_edge: Runner, tiny_bundle, tmp_path, decision):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    write_decision(bundle, decision)
    with pytest.raises(BundleError, match="decision"):
        Detector.from_pretrained(bundle, provider="cpu", threads=1)
    done = run_edge("--model", bundle, input="some text\n")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("aidetect-edge: error: ") and done.stderr.count("\n") == 1
    assert f"{bundle / 'aidetect.json'}: " in done.stderr and "decision" in done.stderr
    assert "export.to_onnx" in done.stderr  # the rebuild hint, as for every bundle error
