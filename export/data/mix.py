"""Domain-balanced sampling of a training mix.

The data sets differ by two orders of magnitude in size and in their human/AI ratio (L2R has four AI rewrites
per human text; the assistant set has no human half at all). Sampled in proportion, the largest cells decide
what "AI" looks like: a domain with only AI texts teaches the model that its style *is* AI. So each record gets
a weight such that

1. every data set gets its share of the draws (``shares``, by file name; equal shares by default);
2. inside a data set, every domain gets the same share;
3. inside a domain, human and AI texts get the same share where both exist;
4. over the whole mix, human and AI texts get half the draws each (human texts of every domain are scaled up
   together, which is what pairs the AI-only sets with the human texts of the other sets).

Draws are seeded and made with replacement for training (a small cell is seen several times, each time with a
fresh augmentation) and without replacement for validation (no record counted twice in a metric).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from export.data.records import Record

logger = logging.getLogger(__name__)


def balanced_weights(records: Sequence[Record], shares: Mapping[str, float] | None = None) -> np.ndarray:
    """One non-negative weight per record, summing to 1 (see the module docstring).

    Args:
        records: The records, each with its ``dataset`` (file stem), ``domain`` and ``label``.
        shares: Relative share of each data set by name; data sets not named get the mean of the named ones
            (all equal when ``None``). A share of 0 leaves the data set out.

    Raises:
        ValueError: No records, a negative share, or a share for a data set that is not in ``records``.
    """
    if not records:
        raise ValueError("no records to weigh")
    datasets = sorted({r.dataset for r in records})
    shares = dict(shares or {})
    unknown = set(shares) - set(datasets)
    if unknown:
        raise ValueError(
            f"shares name data sets that are not loaded: {', '.join(sorted(unknown))} (loaded: {datasets})"
        )
    if any(v < 0 for v in shares.values()):
        raise ValueError(f"shares must be >= 0, got {shares}")
    default = float(np.mean(list(shares.values()))) if shares else 1.0
    share = {d: float(shares.get(d, default)) for d in datasets}
    if sum(share.values()) <= 0:
        raise ValueError("every data set has share 0")

    cells = Counter((r.dataset, r.domain, r.label) for r in records)
    domains: dict[str, set[str]] = defaultdict(set)
    labels: dict[tuple[str, str], set[int]] = defaultdict(set)
    for dataset, domain, label in cells:
        domains[dataset].add(domain)
        labels[(dataset, domain)].add(label)
    w = np.array(
        [
            share[r.dataset]
            / len(domains[r.dataset])
            / len(labels[(r.dataset, r.domain)])
            / cells[(r.dataset, r.domain, r.label)]
            for r in records
        ],
        dtype=np.float64,
    )
    y = np.array([r.label for r in records])
    for label in (0, 1):
        mass = w[y == label].sum()
        if mass > 0:
            w[y == label] *= 0.5 / mass
    return w / w.sum()


def describe(records: Sequence[Record], weights: np.ndarray) -> dict[str, dict[str, float]]:
    """Share of the draws per data set and label, for the training record and the log."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (dataset, label), mass in _sum_by(records, weights).items():
        out[dataset]["ai" if label else "human"] = round(mass, 4)
    return dict(out)


def _sum_by(records: Sequence[Record], weights: np.ndarray) -> dict[tuple[str, int], float]:
    sums: dict[tuple[str, int], float] = defaultdict(float)
    for r, w in zip(records, weights, strict=True):
        sums[(r.dataset, r.label)] += float(w)
    return sums


def draw(
    records: Sequence[Record],
    n: int,
    *,
    seed: int,
    shares: Mapping[str, float] | None = None,
    replace: bool = True,
) -> list[int]:
    """``n`` record indices drawn by :func:`balanced_weights` (seeded).

    Without replacement, ``n`` is capped at the number of records with a non-zero weight.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    w = balanced_weights(records, shares)
    rng = np.random.default_rng(seed)
    if not replace:
        n = min(n, int(np.count_nonzero(w)))
    return [int(i) for i in rng.choice(len(records), size=n, replace=replace, p=w)]
