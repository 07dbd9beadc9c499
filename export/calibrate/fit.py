"""Decide how a bundle decides: calibration, operating points, the "uncertain" band and a per-domain report.

    python -m export.calibrate --bundle runs/default/bundles/int8 --data detectgpt_family.jsonl.gz \\
        outfox_essays.jsonl.gz l2r_rewrites.jsonl.gz assistant_synth.jsonl.gz

Everything is chosen on the **validation groups of every data set** (the split recorded in the bundle's
training record); the OUTFOX ``test`` half is scored for the report only, after every choice is made.

1. Temperature: P(AI) = softmax(logits / T), T fitted by minimising the domain-balanced log loss of the first
   window of each validation text (``export.data.mix`` weights: every data set, domain and label its share).
2. Operating points: for each false-positive rate in :data:`FALSE_POSITIVE_RATES`, the lowest threshold at
   which at most that share of the validation human texts (domain-balanced, every domain together) scores at
   or above it. The bundle's ``threshold`` becomes the point of ``--false-positive-rate`` (default 1%); scores
   between it and the point of ``--uncertain-false-positive-rate`` (default 10%) are "uncertain".
3. Shortest text judged: every validation text cut to N content tokens, for N in :data:`LENGTHS`; ``min_tokens``
   is the smallest N at which the human texts flagged at the AI threshold stay within twice the target rate
   and the model still ranks (ROC AUC of the cut texts at least ``min_length_auc``, default 0.7); shorter texts
   are "uncertain".
4. Report: per data set and domain (validation groups, and the held-out OUTFOX test half), ROC AUC, TPR at 1%
   FPR, human texts flagged as AI and AI texts caught at the shipped threshold, and the uncertain share; per
   generator the catch rate; written to ``aidetect.json`` (``decision``, ``metrics.domains``), printed, and
   added to the model card.

``aidetect.json`` is metadata (the sha256 checks cover ``model.onnx`` and ``tokenizer.json``), so the bundle is
updated in place, atomically, and re-verified by loading it. The validation texts' scores, lengths and
unknown-token rates also go in, binned, as ``drift_reference`` (:mod:`export.calibrate.drift`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.bundle.card import threshold_sentence
from export.calibrate.drift import drift_reference
from export.calibrate.report import DECISIONS_HEADING, card_section, group_report, report_row
from export.data import mix
from export.data.records import Record, filter_records, load_records
from export.data.split import Split
from export.evaluate import metrics
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)

FALSE_POSITIVE_RATES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
LENGTHS = (4, 8, 16, 24, 32, 48, 64, 96, 128)


@dataclass(frozen=True)
class CalibrateConfig:
    """What :func:`calibrate_bundle` does (see the module docstring)."""

    bundle: str
    data: tuple[str, ...]
    false_positive_rate: float = 0.01
    uncertain_false_positive_rate: float = 0.1
    threads: int | None = None
    shares: dict[str, float] | None = None
    min_length_auc: float = 0.7

    def __post_init__(self) -> None:
        if not 0.5 <= self.min_length_auc < 1:
            raise ValueError(f"min_length_auc must be in [0.5, 1), got {self.min_length_auc!r}")
        if not self.data:
            raise ValueError("at least one --data file is needed")
        if self.false_positive_rate not in FALSE_POSITIVE_RATES:
            raise ValueError(f"false_positive_rate must be one of {FALSE_POSITIVE_RATES}")
        if not self.false_positive_rate < self.uncertain_false_positive_rate < 1:
            raise ValueError("uncertain_false_positive_rate must lie above false_positive_rate and below 1")


def bundle_split(bundle_meta: dict[str, Any]) -> tuple[float, str, dict[str, float] | None]:
    """The bundle's training split and mix shares (a pruned checkpoint's shares are its source run's)."""
    training = TrainingRecord.from_dict(bundle_meta.get("training") or {})
    source = TrainingRecord.from_dict((training.source or {}).get("training") or {})
    split = training.split
    return split.val_fraction, split.salt, training.shares or source.shares


def split_records(paths: Sequence[str], val_fraction: float, salt: str) -> tuple[list[Record], list[Record]]:
    """The validation groups of every file (never the OUTFOX test half), and the OUTFOX test half (for the
    report only), each file read once."""
    val: list[Record] = []
    test: list[Record] = []
    for path in paths:
        records = load_records(path)
        val += Split(val_fraction, salt).validation(records)
        test += filter_records(records, held_out=True)
    return val, test


def fit_temperature(margins: NDArray[np.float64], labels: NDArray[np.int64], weights: NDArray[np.float64]) -> float:
    """The T minimising the weighted log loss of sigmoid(margin / T) (grid, then a finer grid around the best)."""

    def loss(t: float) -> float:
        z = margins / t
        # log(1 + exp(-z)) for AI, log(1 + exp(z)) for human, written to stay finite
        per = np.where(labels == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
        return float(np.sum(weights * per) / np.sum(weights))

    grid = np.geomspace(0.05, 20.0, 121)
    best = grid[int(np.argmin([loss(t) for t in grid]))]
    fine = np.geomspace(best / 1.06, best * 1.06, 41)
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


def weighted_threshold(scores: NDArray[np.float64], weights: NDArray[np.float64], rate: float) -> float:
    """The lowest threshold t with weighted share of ``scores >= t`` at most ``rate``."""
    order = np.argsort(-scores, kind="stable")
    s, w = scores[order], weights[order] / weights.sum()
    cumulative = np.cumsum(w)
    # walk down the sorted scores; a threshold just above a score excludes it and everything below
    allowed = np.nonzero(cumulative <= rate + 1e-12)[0]
    if allowed.size == 0:
        return float(np.nextafter(s[0], np.inf))
    k = int(allowed[-1])
    # all of s[:k+1] may be flagged; ties with s[k+1] must not be, so the threshold is s[k] unless s[k+1] == s[k]
    t = float(s[k])
    if k + 1 < s.size and s[k + 1] == s[k]:
        t = float(np.nextafter(s[k], np.inf))
    return min(1.0, t)


def _share(mask: NDArray[np.bool_], weights: NDArray[np.float64]) -> float:
    return float(np.sum(weights[mask]) / np.sum(weights)) if np.sum(weights) > 0 else math.nan


def operating_points(
    scores: NDArray[np.float64], labels: NDArray[np.int64], weights: NDArray[np.float64]
) -> list[dict[str, float]]:
    """The threshold of each false-positive rate on the (weighted) human texts, with its measured rates."""
    human, ai = labels == 0, labels == 1
    points = []
    for rate in FALSE_POSITIVE_RATES:
        t = weighted_threshold(scores[human], weights[human], rate)
        points.append(
            {
                "false_positive_rate": rate,
                "threshold": t,
                "measured_false_positive_rate": _share(scores[human] >= t, weights[human]),
                "true_positive_rate": _share(scores[ai] >= t, weights[ai]),
            }
        )
    return points


def predicted(detector: Any, records: Sequence[Record]) -> tuple[list[Any], NDArray[np.float64], NDArray[np.int64]]:
    """``detector``'s predictions for ``records``, with their scores and content-token counts as arrays."""
    preds = detector.predict([r.text for r in records])
    scores = np.array([p.score for p in preds], dtype=np.float64)
    return preds, scores, np.array([p.tokens for p in preds], dtype=np.int64)


def calibrate_bundle(cfg: CalibrateConfig) -> dict[str, Any]:
    """Write ``decision`` and ``metrics.domains`` into the bundle's ``aidetect.json``; return what was written.

    Raises:
        export.data.DataError: Unusable data.
        ValueError: Too few validation texts of a class.
    """
    from aidetect_infer import Detector
    from aidetect_infer.bundle import BundleMetadata, load_bundle
    from aidetect_infer.session import create_session
    from aidetect_infer.tokenization import load_tokenizer

    bundle = Path(cfg.bundle)
    meta_path = bundle / "aidetect.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.pop("decision", None)
    val_fraction, salt, recorded_shares = bundle_split(meta)
    shares = cfg.shares if cfg.shares is not None else recorded_shares
    val, test = split_records(cfg.data, val_fraction, salt)
    y = np.array([r.label for r in val], dtype=np.int64)
    if (y == 0).sum() < 50 or (y == 1).sum() < 50:
        raise ValueError(f"calibration needs at least 50 validation texts of each class, got {np.bincount(y)}")
    weights = mix.balanced_weights(val, shares)
    threads = cfg.threads or os.cpu_count() or 1
    # one verified bundle and one session for every pass; the passes differ only in the metadata they decide by
    loaded = load_bundle(bundle)
    session = create_session(loaded.model_path, provider="cpu", threads=threads)
    tokenizer = load_tokenizer(loaded.tokenizer_path)

    def detector(decision: dict[str, Any] | None, **options: Any) -> Detector:
        parsed = BundleMetadata.from_dict({**meta, **({"decision": decision} if decision else {})})
        return Detector(session=session, tokenizer=tokenizer, metadata=parsed, **options)

    first = detector(None, truncation=True)  # uncalibrated: the margins are the model's own
    p = np.clip(first.predict_proba([r.text for r in val]).astype(np.float64), 1e-7, 1 - 1e-7)
    temperature = fit_temperature(np.log(p) - np.log1p(-p), y, weights)
    logger.info("temperature %.3f (domain-balanced log loss on %d validation texts)", temperature, len(val))

    # the temperature alone (the one operating point is the bundle's own threshold, so nothing else changes)
    scaled = {
        "temperature": temperature,
        "operating_points": [{"false_positive_rate": 0.5, "threshold": meta["threshold"]}],
    }
    calibrated = detector(scaled)
    preds, scores, tokens = predicted(calibrated, val)
    drift = drift_reference(preds, cfg.data)
    points = operating_points(scores, y, weights)
    ai_point = next(pt for pt in points if pt["false_positive_rate"] == cfg.false_positive_rate)
    band = next(pt for pt in points if pt["false_positive_rate"] == cfg.uncertain_false_positive_rate)
    threshold, human_threshold = ai_point["threshold"], min(ai_point["threshold"], band["threshold"])

    by_length = []
    human = y == 0
    for n in (n for n in LENGTHS if n + 2 <= calibrated.metadata.max_length):
        cut = detector(scaled, max_length=max(8, n + 2), truncation=True)
        s = cut.predict_proba([r.text for r in val]).astype(np.float64)
        by_length.append(
            {
                "tokens": n,
                "roc_auc": metrics.roc_auc(y, s),
                "flagged_human": _share(s[human] >= threshold, weights[human]),
                "caught_ai": _share(s[~human] >= threshold, weights[~human]),
            }
        )
    min_tokens = next(
        (
            row["tokens"]
            for row in by_length
            if row["flagged_human"] <= 2 * cfg.false_positive_rate and row["roc_auc"] >= cfg.min_length_auc
        ),
        by_length[-1]["tokens"],
    )

    decision = {
        "temperature": temperature,
        "false_positive_rate": cfg.false_positive_rate,
        "uncertain_false_positive_rate": cfg.uncertain_false_positive_rate,
        "operating_points": points,
        "min_tokens": int(min_tokens),
        "by_length": by_length,
        "validation_texts": len(val),
        "rule": (
            f"temperature by domain-balanced log loss; AI threshold: at most {cfg.false_positive_rate:.1%} of the "
            f"validation human texts (every domain together, domain-balanced) at or above it; 'uncertain' between "
            f"the {cfg.uncertain_false_positive_rate:.0%} point and it, and below {min_tokens} content tokens (the "
            "shortest cut of the validation texts whose human false-positive rate stays within twice the target "
            f"and whose ROC AUC is at least {cfg.min_length_auc:g})"
        ),
    }
    report_val = group_report(val, scores, "domain", threshold, human_threshold, min_tokens, tokens)
    gens_val = group_report(val, scores, "generator", threshold, human_threshold, min_tokens, tokens)
    report_test: list[dict[str, Any]] = []
    if test:
        _, ts, tt = predicted(calibrated, test)
        attacks = sorted({r.attack for r in test if r.label == 1} | {"none"})
        by_attack: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(test):
            for name in attacks if r.label == 0 else [r.attack]:
                by_attack[name].append(i)  # the human texts belong to every attack's set
        for attack, idx in sorted(by_attack.items()):
            name = f"{test[idx[0]].dataset}/test, {'no attack' if attack == 'none' else attack}"
            labels = [test[i].label for i in idx]
            report_test.append(report_row(name, labels, ts[idx], tt[idx], threshold, human_threshold, min_tokens))
        gens_test = group_report(test, ts, "generator", threshold, human_threshold, min_tokens, tt)
        report_test += [{**r, "set": r["set"] + " (test)"} for r in gens_test]

    meta["threshold"] = threshold
    meta["decision"] = decision
    meta["drift_reference"] = drift
    meta.setdefault("metrics", {})["domains"] = {
        "validation": report_val,
        "validation_generators": gens_val,
        "held_out": report_test,
        "note": "validation groups chose every setting; the held-out OUTFOX test half is reported only",
    }
    write_metadata(meta_path, meta)
    Detector.from_pretrained(bundle, provider="cpu", threads=1)  # still loads, with the new decision
    card = bundle / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8").split("\n" + DECISIONS_HEADING)[0].rstrip()
        # the export wrote the training run's threshold; the calibrated one replaces it
        text = re.sub(
            r"^Decision threshold: .*$",
            lambda _: threshold_sentence(threshold, "", decision),
            text,
            flags=re.M,
        )
        card.write_text(text + "\n\n" + card_section(decision, report_val, gens_val, report_test) + "\n", "utf-8")
    return {"decision": decision, "validation": report_val, "generators": gens_val, "held_out": report_test}


def write_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Replace the bundle's ``aidetect.json`` with ``meta`` (written beside it, then renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
