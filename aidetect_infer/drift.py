"""Drift: do the texts a detector sees still look like the ones its bundle was validated on?

Three features of every text are binned: its score (P(AI)), its length in content tokens and its unknown-token
rate (the share of its tokens that are the tokenizer's unknown token: foreign scripts, odd symbols). A bundle
records their histograms over its validation texts as ``drift_reference`` in ``aidetect.json`` (written by
``python -m export.calibrate``)::

    "drift_reference": {
      "texts": 3455,
      "source": "validation groups of detectgpt_family.jsonl.gz, ...",
      "features": {"score": {"edges": [0.1, ..., 0.9], "counts": [...]}, "tokens": {...}, "unk_rate": {...}}
    }

Bins close on the right, as Prometheus buckets do: bin ``i`` holds ``edges[i-1] < x <= edges[i]``, the first
everything up to ``edges[0]``, the last everything above ``edges[-1]`` (so ``counts`` has one entry more than
``edges``). The texts seen since are compared with it by the population stability index per feature,
``PSI = sum((a - e) * ln(a / e))`` over the bins' shares (each count plus 0.5, so an empty bin stays finite):
below :data:`WATCH_PSI` (0.1) ``ok``, up to :data:`DRIFTING_PSI` (0.25) ``watch``, above it ``drifting``; with
fewer than :data:`MIN_TEXTS` texts seen, ``not enough texts``. The overall status is the worst feature's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aidetect_infer.errors import REBUILD_HINT, BundleError

FEATURES = ("score", "tokens", "unk_rate")
EDGES: dict[str, tuple[float, ...]] = {
    "score": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "tokens": (8, 16, 32, 64, 128, 256, 512, 1024),
    "unk_rate": (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
}
"""The bins a factory writes; a bundle's own ``edges`` are used when it has a reference."""
WATCH_PSI = 0.1
DRIFTING_PSI = 0.25
MIN_TEXTS = 100
OK, WATCH, DRIFTING, NOT_ENOUGH, NO_REFERENCE = "ok", "watch", "drifting", "not enough texts", "no reference"
_ORDER = (OK, WATCH, DRIFTING)


def features(
    scores: Sequence[float], tokens: Sequence[int], unknown_tokens: Sequence[int]
) -> dict[str, NDArray[np.float64]]:
    """The three features of scored texts, from their predictions' ``score``, ``tokens`` and ``unknown_tokens``."""
    counts = np.asarray(tokens, dtype=np.float64)
    return {
        "score": np.asarray(scores, dtype=np.float64),
        "tokens": counts,
        "unk_rate": np.asarray(unknown_tokens, dtype=np.float64) / np.maximum(counts, 1.0),
    }


def prediction_features(predictions: Sequence[Any]) -> dict[str, NDArray[np.float64]]:
    """:func:`features` of :class:`~aidetect_infer.Prediction` or :class:`~aidetect_infer.Explanation` objects."""
    return features(
        [p.score for p in predictions], [p.tokens for p in predictions], [p.unknown_tokens for p in predictions]
    )


def histogram(values: NDArray[np.float64], edges: Sequence[float]) -> NDArray[np.int64]:
    """Counts of ``values`` in the bins of ``edges`` (closed on the right; ``len(edges) + 1`` bins)."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


def reference_record(values: Mapping[str, NDArray[np.float64]], source: str) -> dict[str, Any]:
    """The ``drift_reference`` record of a bundle, from the features of its validation texts."""
    return {
        "texts": int(len(values["score"])),
        "source": source,
        "features": {
            name: {"edges": list(EDGES[name]), "counts": [int(c) for c in histogram(values[name], EDGES[name])]}
            for name in FEATURES
        },
    }


@dataclass(frozen=True, slots=True)
class DriftReference:
    """A bundle's ``drift_reference``: per feature, the bin edges and the validation texts' counts."""

    texts: int
    edges: Mapping[str, tuple[float, ...]]
    counts: Mapping[str, tuple[int, ...]]

    @classmethod
    def from_metadata(cls, optional: Mapping[str, Any]) -> DriftReference | None:
        """The reference in a bundle's optional metadata, or ``None`` when it records none.

        Raises:
            BundleError: A ``drift_reference`` that is malformed.
        """
        raw = optional.get("drift_reference")
        if raw is None:
            return None
        try:
            edges = {name: tuple(float(e) for e in raw["features"][name]["edges"]) for name in FEATURES}
            counts = {name: tuple(int(c) for c in raw["features"][name]["counts"]) for name in FEATURES}
            texts = int(raw["texts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"aidetect.json: 'drift_reference' is malformed ({exc!r}); {REBUILD_HINT}") from exc
        for name in FEATURES:
            e = edges[name]
            if len(counts[name]) != len(e) + 1 or list(e) != sorted(set(e)) or min(counts[name]) < 0:
                raise BundleError(
                    f"aidetect.json: drift_reference.{name} needs increasing edges and one count more than edges; "
                    + REBUILD_HINT
                )
        return cls(texts=texts, edges=edges, counts=counts)


def psi(expected: Sequence[int], actual: Sequence[int]) -> float:
    """The population stability index of ``actual`` counts against ``expected`` (same bins)."""
    e = np.asarray(expected, dtype=np.float64) + 0.5
    a = np.asarray(actual, dtype=np.float64) + 0.5
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _status(value: float) -> str:
    return OK if value < WATCH_PSI else WATCH if value <= DRIFTING_PSI else DRIFTING


@dataclass(frozen=True, slots=True)
class DriftReport:
    """What :func:`compare` found.

    Attributes:
        status: ``ok``, ``watch``, ``drifting`` (the worst feature's), ``not enough texts`` or ``no reference``.
        texts: Texts seen.
        psi: PSI per feature (empty without a reference).
        feature_status: Status per feature.
    """

    status: str
    texts: int
    psi: Mapping[str, float]
    feature_status: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (also the body of ``GET /v1/drift``)."""
        return {
            "status": self.status,
            "texts": self.texts,
            "min_texts": MIN_TEXTS,
            "thresholds": {"watch": WATCH_PSI, "drifting": DRIFTING_PSI},
            "features": {name: {"psi": self.psi[name], "status": self.feature_status[name]} for name in self.psi},
        }


def compare(reference: DriftReference | None, counts: Mapping[str, Sequence[int]], texts: int) -> DriftReport:
    """PSI of each feature's ``counts`` (in the reference's bins) against the reference, and the verdict."""
    if reference is None:
        return DriftReport(NO_REFERENCE, texts, {}, {})
    values = {name: psi(reference.counts[name], counts[name]) for name in FEATURES}
    if texts < MIN_TEXTS:
        return DriftReport(NOT_ENOUGH, texts, values, {name: NOT_ENOUGH for name in FEATURES})
    statuses = {name: _status(value) for name, value in values.items()}
    worst = max(statuses.values(), key=_ORDER.index)
    return DriftReport(worst, texts, values, statuses)


class DriftMonitor:
    """Live histograms of the features of the texts scored, in the reference's bins (or :data:`EDGES`).

    Thread-safe: :meth:`observe` may be called from many threads at once.

    Args:
        reference: The bundle's reference, or ``None`` (the histograms are still kept, in :data:`EDGES`).
    """

    def __init__(self, reference: DriftReference | None) -> None:
        self.reference = reference
        self.edges = dict(reference.edges) if reference is not None else dict(EDGES)
        self._counts = {name: np.zeros(len(self.edges[name]) + 1, dtype=np.int64) for name in FEATURES}
        self._sums = dict.fromkeys(FEATURES, 0.0)
        self._texts = 0
        self._lock = threading.Lock()

    def observe(self, values: Mapping[str, NDArray[np.float64]]) -> None:
        """Count the features of a batch of texts (the output of :func:`features`)."""
        binned = {name: histogram(values[name], self.edges[name]) for name in FEATURES}
        with self._lock:
            for name in FEATURES:
                self._counts[name] += binned[name]
                self._sums[name] += float(np.sum(values[name]))
            self._texts += len(values["score"])

    def snapshot(self) -> tuple[int, dict[str, NDArray[np.int64]], dict[str, float]]:
        """Texts seen, the counts per feature and the sum of each feature's values."""
        with self._lock:
            return self._texts, {name: c.copy() for name, c in self._counts.items()}, dict(self._sums)

    def report(self) -> DriftReport:
        """:func:`compare` of what was seen so far."""
        texts, counts, _ = self.snapshot()
        return compare(self.reference, {name: counts[name].tolist() for name in FEATURES}, texts)
