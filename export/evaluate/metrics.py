"""Classification metrics for detector scores, in plain numpy (no scikit-learn dependency).

All functions take ``labels`` (0 = human, 1 = AI) and ``scores`` (P(AI), higher = more likely AI).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _as_arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y, s


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC by the Mann-Whitney U statistic, ties counted as one half.

    Returns NaN when only one class is present.
    """
    y, s = _as_arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """False-positive rates, true-positive rates and thresholds (``score >= t`` is positive), descending t."""
    y, s = _as_arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[distinct].astype(np.float64)
    fps = (distinct + 1 - tps).astype(np.float64)
    n_pos, n_neg = max(y.sum(), 1), max(y.size - y.sum(), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, max_fpr: float) -> float:
    """The highest true-positive rate reachable with a false-positive rate of at most ``max_fpr``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def equal_error_threshold(labels: ArrayLike, scores: ArrayLike) -> float:
    """The threshold where the false-positive rate and the false-negative rate are closest (equal error rate)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fpr - fnr)[1:])) + 1  # skip the +inf sentinel
    return float(np.clip(thresholds[i], 0.0, 1.0))


def binary_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, float | int]:
    """ROC AUC, accuracy/precision/recall/F1 at ``threshold`` and TPR at 1% and 5% FPR."""
    y, s = _as_arrays(labels, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": int(y.size),
        "positives": int(y.sum()),
        "roc_auc": roc_auc(y, s),
        "accuracy": float(np.mean(pred == (y == 1))) if y.size else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01),
        "tpr_at_5pct_fpr": tpr_at_fpr(y, s, 0.05),
        "threshold": float(threshold),
    }


def grouped_metrics(
    labels: ArrayLike, scores: ArrayLike, keys: Sequence[str], threshold: float = 0.5
) -> dict[str, dict[str, float | int]]:
    """``binary_metrics`` for each distinct key (a domain or a generator), plus ``"all"``."""
    y, s = _as_arrays(labels, scores)
    keys_arr = np.asarray(list(keys), dtype=object)
    out = {"all": binary_metrics(y, s, threshold)}
    for key in sorted(set(keys_arr.tolist())):
        mask = keys_arr == key
        out[str(key)] = binary_metrics(y[mask], s[mask], threshold)
    return out
