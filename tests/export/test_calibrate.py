"""export.calibrate: temperature, operating points, the minimum length and the per-domain report."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aidetect_infer import Detector
from aidetect_infer.drift import DriftReference
from export.calibrate.fit import (
    FALSE_POSITIVE_RATES,
    CalibrateConfig,
    calibrate_bundle,
    fit_temperature,
    weighted_threshold,
)
from export.data.records import in_validation


def test_fit_temperature_recovers_the_true_one() -> None:
    rng = np.random.default_rng(0)
    true_margin = rng.normal(0, 2.0, 20_000)
    labels = (rng.random(true_margin.size) < 1 / (1 + np.exp(-true_margin))).astype(np.int64)
    # the model is overconfident by a factor of 3: the fitted temperature undoes it
    t = fit_temperature(3.0 * true_margin, labels, np.ones(true_margin.size))
    assert t == pytest.approx(3.0, rel=0.08)


def test_weighted_threshold_flags_at_most_the_rate() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random(5000)
    weights = rng.random(5000) + 0.1
    for rate in FALSE_POSITIVE_RATES:
        t = weighted_threshold(scores, weights, rate)
        flagged = weights[scores >= t].sum() / weights.sum()
        assert flagged <= rate + 1e-9
        below = scores[scores < t].max()  # the next score down would exceed the rate
        assert weights[scores >= below].sum() / weights.sum() > rate
    ties = np.array([0.9, 0.9, 0.9, 0.1])
    assert weighted_threshold(ties, np.ones(4), 0.5) > 0.9  # a tie is never split


def _write(path: Path, rows: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def data(sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Texts of two domains in validation groups, and a held-out OUTFOX-like test half."""
    rows = []
    for i, text in enumerate(sample_texts):
        # groups chosen so that about half fall on the validation side of the split
        rows.append({"text": text, "label": i % 2, "group": f"g{i}", "domain": "ab"[i % 3 == 0], "generator": "x"})
    for i, text in enumerate(sample_texts[:60]):
        rows.append({"text": text, "label": i % 2, "group": f"outfox:test:{i}", "domain": "essay", "generator": "y"})
    return _write(tmp_path_factory.mktemp("cal") / "mix.jsonl.gz", rows)


def _bundle(tiny_bundle: Path, out: Path) -> Path:
    shutil.copytree(tiny_bundle, out)
    meta = json.loads((out / "aidetect.json").read_text())
    meta["training"] = {"config": {"val_fraction": 0.5, "split_salt": "aidetect"}}
    (out / "aidetect.json").write_text(json.dumps(meta))
    return out


def test_calibrate_writes_a_decision_the_runtime_follows(tiny_bundle: Path, data: Path, tmp_path: Path) -> None:
    bundle = _bundle(tiny_bundle, tmp_path / "b")
    result = calibrate_bundle(CalibrateConfig(bundle=str(bundle), data=(str(data),), threads=1))
    decision = json.loads((bundle / "aidetect.json").read_text())["decision"]
    assert decision == json.loads(json.dumps(result["decision"]))
    points = decision["operating_points"]
    assert [p["false_positive_rate"] for p in points] == list(FALSE_POSITIVE_RATES)
    thresholds = [p["threshold"] for p in points]
    assert thresholds == sorted(thresholds, reverse=True)  # a looser budget never raises the threshold
    assert all(p["measured_false_positive_rate"] <= p["false_positive_rate"] + 1e-9 for p in points)
    assert decision["temperature"] > 0 and decision["min_tokens"] in [row["tokens"] for row in decision["by_length"]]
    # the shortest length judged is the first cut that ranks (ROC AUC >= 0.7) within twice the target FPR
    rows = decision["by_length"]
    judged = [r["tokens"] for r in rows if r["roc_auc"] >= 0.7 and r["flagged_human"] <= 0.02]
    assert decision["min_tokens"] == (judged[0] if judged else rows[-1]["tokens"])

    detector = Detector.from_pretrained(bundle, provider="cpu", threads=1)
    assert detector.threshold == pytest.approx(points[3]["threshold"])  # the 1% point
    assert detector.policy.human_threshold == pytest.approx(min(points[3]["threshold"], points[6]["threshold"]))
    sets = {row["set"] for row in result["validation"]}
    assert sets == {"mix/a", "mix/b"}
    held = {row["set"] for row in result["held_out"]}
    assert "mix/test, no attack" in held and all("essay" in s or "test" in s for s in held)
    card = (bundle / "README.md").read_text()
    assert "## Decisions and where the model fails" in card and card.count("## Decisions") == 1
    # the drift reference: every validation text in each feature's histogram, read back by the runtime
    reference = DriftReference.from_metadata(detector.metadata.optional)
    assert reference is not None and reference.texts == decision["validation_texts"]
    assert all(sum(counts) == reference.texts for counts in reference.counts.values())


def test_the_held_out_half_never_moves_a_decision(
    tiny_bundle: Path, data: Path, tmp_path: Path, sample_texts: list[str]
) -> None:
    rows = [json.loads(line) for line in gzip.open(data, "rt", encoding="utf-8")]
    flipped = [{**r, "label": 1 - r["label"]} if r["group"].startswith("outfox:test:") else r for r in rows]
    other = _write(tmp_path / "mix.jsonl.gz", flipped)
    a = calibrate_bundle(CalibrateConfig(bundle=str(_bundle(tiny_bundle, tmp_path / "a")), data=(str(data),)))
    b = calibrate_bundle(CalibrateConfig(bundle=str(_bundle(tiny_bundle, tmp_path / "b")), data=(str(other),)))
    assert a["decision"] == b["decision"]
    assert a["held_out"] != b["held_out"]
    assert any(in_validation(r["group"], 0.5, "aidetect") for r in rows if not r["group"].startswith("outfox"))


def test_bad_settings_are_refused(tiny_bundle: Path) -> None:
    with pytest.raises(ValueError, match="one of"):
        CalibrateConfig(bundle=str(tiny_bundle), data=("x",), false_positive_rate=0.03)
    with pytest.raises(ValueError, match="above"):
        CalibrateConfig(bundle=str(tiny_bundle), data=("x",), uncertain_false_positive_rate=0.005)
