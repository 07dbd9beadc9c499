"""Drift: histograms closed on the right, PSI, and the verdict on in-distribution and shifted texts (library and
``python -m aidetect_infer drift``); the shipped bundle's reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aidetect_infer import BundleError, Detector, cli
from aidetect_infer.drift import (
    DRIFTING,
    FEATURES,
    MIN_TEXTS,
    NO_REFERENCE,
    NOT_ENOUGH,
    DriftMonitor,
    DriftReference,
    features,
    histogram,
    prediction_features,
    psi,
)

GREEK = "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο και τρέχει στο δάσος για να βρει φαγητό."


@pytest.fixture(scope="module")
def drift_detector(drift_bundle) -> Detector:
    return Detector.from_pretrained(drift_bundle, provider="cpu", threads=1)


def report_of(detector: Detector, texts: list[str]):
    monitor = DriftMonitor(DriftReference.from_metadata(detector.metadata.optional))
    monitor.observe(prediction_features(detector.predict(texts)))
    return monitor.report()


def test_unknown_tokens_counted_as_the_tokenizer_counts_them(drift_bundle, drift_detector):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(drift_bundle / "tokenizer.json"))
    unk = raw.token_to_id("[UNK]")
    assert unk is not None
    texts = [GREEK, "plain words only", "", "symbols \u2603\u2604 and \U0001f600 emoji " * 40, "mixed αβγ text"]
    predictions = drift_detector.predict(texts)
    expected = [raw.encode(t, add_special_tokens=False).ids.count(unk) for t in texts]
    assert [p.unknown_tokens for p in predictions] == expected and any(expected)
    assert drift_detector.explain(texts[3]).unknown_tokens == expected[3]
    # the service's features (from the predictions) equal the factory's (from the texts encoded again)
    values = prediction_features(predictions)
    rates = np.array(expected, dtype=np.float64) / np.maximum([p.tokens for p in predictions], 1)
    assert np.array_equal(values["unk_rate"], rates)
    assert np.array_equal(values["tokens"], [p.tokens for p in predictions])
    assert features([], [], [])["unk_rate"].shape == (0,)


def test_bins_close_on_the_right_and_psi():
    edges = (8, 16, 32)
    assert histogram(np.array([0, 8, 8.5, 16, 17, 32, 33, 1e9]), edges).tolist() == [2, 2, 2, 2]
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert psi([10, 20, 30], [30, 20, 10]) > 0.25
    assert np.isfinite(psi([0, 100], [100, 0]))


def test_in_distribution_texts_raise_no_alarm(drift_detector, drift_texts):
    report = report_of(drift_detector, drift_texts[1])
    assert report.texts == len(drift_texts[1])
    assert report.status != DRIFTING, report
    assert all(value < 0.1 for value in report.psi.values()), report.psi


def test_short_texts_drift_in_length(drift_detector, drift_texts):
    short = [" ".join(text.split()[:3]) for text in drift_texts[1]]
    report = report_of(drift_detector, short)
    assert report.status == DRIFTING and report.feature_status["tokens"] == DRIFTING, report


def test_unknown_tokens_drift(drift_detector, drift_texts):
    foreign = [f"{GREEK} {k}" for k in range(MIN_TEXTS)]
    report = report_of(drift_detector, foreign)
    assert report.status == DRIFTING and report.feature_status["unk_rate"] == DRIFTING, report


def test_few_texts_and_no_reference(drift_detector, detector, drift_texts):
    assert report_of(drift_detector, drift_texts[1][: MIN_TEXTS - 1]).status == NOT_ENOUGH
    assert report_of(detector, drift_texts[1][:10]).status == NO_REFERENCE  # the tiny bundle has none


def test_a_malformed_reference_is_refused():
    with pytest.raises(BundleError, match="drift_reference"):
        DriftReference.from_metadata({"drift_reference": {"texts": 1, "features": {}}})
    bad = {name: {"edges": [1, 2], "counts": [1, 2]} for name in FEATURES}
    with pytest.raises(BundleError, match="drift_reference"):
        DriftReference.from_metadata({"drift_reference": {"texts": 3, "features": bad}})


def test_the_drift_command(drift_bundle, drift_texts, tmp_path, capsys):
    model = ["--model", str(drift_bundle), "--provider", "cpu", "--threads", "1"]
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"text": t}) + "\n" for t in drift_texts[1]), encoding="utf-8")
    assert cli.main(["drift", str(same), *model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines[:3]] == list(FEATURES)
    assert lines[3] == f"{len(drift_texts[1])} texts: ok"
    short = tmp_path / "short.txt"
    short.write_text("".join(" ".join(t.split()[:3]) + "\n" for t in drift_texts[1]), encoding="utf-8")
    assert cli.main(["drift", str(short), "--json", *model]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == DRIFTING and answer["features"]["tokens"]["status"] == DRIFTING


def test_the_command_needs_a_reference(tiny_bundle, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("one text\n", encoding="utf-8")
    assert cli.main(["drift", str(path), "--model", str(tiny_bundle), "--provider", "cpu"]) == 2
    assert "drift_reference" in capsys.readouterr().err


def test_the_shipped_bundle_records_a_reference():
    from aidetect_infer.detector import DEFAULT_MODEL_DIR

    meta = json.loads((DEFAULT_MODEL_DIR / "aidetect.json").read_text(encoding="utf-8"))
    reference = DriftReference.from_metadata(meta)
    assert reference is not None and reference.texts == meta["decision"]["validation_texts"]
    assert all(sum(reference.counts[name]) == reference.texts for name in FEATURES)
