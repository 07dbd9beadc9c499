"""Calibration, operating points and the "uncertain" label (aidetect_infer.decision)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aidetect_infer import Detector
from aidetect_infer.decision import UNCERTAIN, DecisionPolicy
from aidetect_infer.errors import BundleError, InvalidValueError

POINTS = [
    {"false_positive_rate": 0.01, "threshold": 0.9, "true_positive_rate": 0.5},
    {"false_positive_rate": 0.05, "threshold": 0.7, "true_positive_rate": 0.7},
    {"false_positive_rate": 0.1, "threshold": 0.6, "true_positive_rate": 0.8},
]


def _decision(**overrides: Any) -> dict[str, Any]:
    return {
        "temperature": 1.0,
        "false_positive_rate": 0.01,
        "operating_points": POINTS,
        "uncertain_false_positive_rate": 0.1,
        "min_tokens": 0,
        "rule": "test",
        **overrides,
    }


def _with_decision(bundle: Path, out: Path, threshold: float, **decision: Any) -> Path:
    shutil.copytree(bundle, out)
    meta = json.loads((out / "aidetect.json").read_text())
    meta["threshold"] = threshold
    meta["decision"] = _decision(**decision)
    (out / "aidetect.json").write_text(json.dumps(meta))
    return out


def test_labels_follow_the_band_and_the_length() -> None:
    policy = DecisionPolicy.from_metadata(0.9, {"decision": _decision(min_tokens=10)})
    labels = ("human", "ai")
    assert (policy.threshold, policy.human_threshold, policy.false_positive_rate) == (0.9, 0.6, 0.01)
    assert policy.label(0.95, 50, labels) == "ai"
    assert policy.label(0.9, 50, labels) == "ai"
    assert policy.label(0.7, 50, labels) == UNCERTAIN
    assert policy.label(0.6, 50, labels) == UNCERTAIN
    assert policy.label(0.59, 50, labels) == "human"
    assert policy.label(0.99, 9, labels) == UNCERTAIN  # too short to judge, whatever the score
    assert policy.label(0.01, 9, labels) == UNCERTAIN


def test_an_operating_point_within_a_false_positive_budget() -> None:
    meta = {"decision": _decision()}
    assert DecisionPolicy.from_metadata(0.9, meta, max_false_positive_rate=0.05).threshold == 0.7
    assert DecisionPolicy.from_metadata(0.9, meta, max_false_positive_rate=0.07).threshold == 0.7
    loose = DecisionPolicy.from_metadata(0.9, meta, max_false_positive_rate=0.5)
    assert loose.threshold == loose.human_threshold == 0.6  # no band left below the AI threshold
    with pytest.raises(InvalidValueError, match="below the lowest"):
        DecisionPolicy.from_metadata(0.9, meta, max_false_positive_rate=0.001)
    for bad in (0.0, 1.0, -0.1, "0.01"):
        with pytest.raises(InvalidValueError, match=r"in \(0, 1\)"):
            DecisionPolicy.from_metadata(0.9, meta, max_false_positive_rate=bad)  # type: ignore[arg-type]


def test_a_bundle_without_decision_decides_by_its_threshold() -> None:
    policy = DecisionPolicy.from_metadata(0.4, {})
    assert (policy.threshold, policy.human_threshold, policy.temperature, policy.min_tokens) == (0.4, 0.4, 1.0, 0)
    assert policy.label(0.4, 0, ("human", "ai")) == "ai" and policy.label(0.39, 0, ("human", "ai")) == "human"
    assert math.isnan(policy.false_positive_rate)
    with pytest.raises(InvalidValueError, match="no operating points"):
        DecisionPolicy.from_metadata(0.4, {}, max_false_positive_rate=0.01)


@pytest.mark.parametrize(
    "decision",
    [
        {"operating_points": []},
        {"operating_points": [{"threshold": 0.5}]},
        {"temperature": 0},
        {"temperature": "hot"},
        {"min_tokens": -1},
        {"operating_points": [{"false_positive_rate": 0.01, "threshold": 1.5}]},
    ],
)
def test_a_malformed_decision_is_refused(decision: dict[str, Any]) -> None:
    with pytest.raises(BundleError, match="decision"):
        DecisionPolicy.from_metadata(0.5, {"decision": _decision(**decision)})


def test_detector_calibrates_and_labels(tiny_bundle: Path, tmp_path: Path, sample_texts: list[str]) -> None:
    texts = sample_texts[:40] + ["", "two words"]
    plain = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)
    raw = plain.predict_proba(texts).astype(np.float64)
    logit = np.log(raw) - np.log1p(-raw)  # the margin logit(AI) - logit(human) of single-window texts

    hot = Detector.from_pretrained(
        _with_decision(tiny_bundle, tmp_path / "b", 0.9, temperature=2.0, min_tokens=5), provider="cpu", threads=1
    )
    windows = np.array([p.windows for p in plain.predict(texts)])
    single = windows == 1
    expected = 1.0 / (1.0 + np.exp(-logit / 2.0))
    np.testing.assert_allclose(hot.predict_proba(texts)[single], expected[single], atol=1e-5)

    thresholds = {p["threshold"] for p in POINTS}
    for prediction in hot.predict(texts):
        assert prediction.threshold == 0.9
        if prediction.tokens < 5:
            assert prediction.label == UNCERTAIN
        elif prediction.score >= 0.9:
            assert prediction.label == "ai"
        elif prediction.score >= 0.6:
            assert prediction.label == UNCERTAIN
        else:
            assert prediction.label == "human"
    assert hot.predict("").tokens == 0 and hot.predict("").label == UNCERTAIN
    assert hot.policy.human_threshold in thresholds

    strict = Detector.from_pretrained(tmp_path / "b", provider="cpu", threads=1, max_false_positive_rate=0.05)
    assert strict.threshold == 0.7


def test_prediction_counts_content_tokens(detector: Detector) -> None:
    short, long = detector.predict(["hello", "word " * 500])
    assert short.tokens >= 1 and long.tokens >= 500 and long.windows > 1
