"""The accuracy gate: a reduced-precision variant against the fp32 model on held-out data.

For each evaluation set, both models' P(AI) are compared: the ROC AUC drop (fp32 minus variant), the agreement
of decisions at the bundle's threshold, and the max abs probability difference. A variant passes when on every
set the AUC drop is at most ``max_auc_drop`` and the agreement at least ``min_agreement`` (and, if set, the max
probability difference at most ``max_prob_diff``). A set with a single class has no AUC; only its agreement
and probability difference are judged there.

A variant must also be batch-invariant: a text's P(AI) scored alone and inside a batch of other texts may differ
by at most ``max_batch_diff`` (measured through the runtime by ``export.onnx_eval.batch_dependence``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from export.errors import GateFailedError
from export.evaluate.metrics import roc_auc


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class GateConfig:
    """The limits a variant must meet against fp32.

    Limits that no model can meet (``min_agreement=1.01``) are accepted: the gate then fails, which is how
    the failure path is exercised.

    Attributes:
        max_auc_drop: Largest allowed ``auc(fp32) - auc(variant)`` on any set.
        min_agreement: Smallest allowed share of texts whose decision at the threshold is the same.
        max_prob_diff: Largest allowed abs difference of P(AI) on any text; ``None`` only reports it.
        max_batch_diff: Largest allowed change of a text's P(AI) between scoring it alone and in a batch;
            ``None`` only reports it.
    """

    max_auc_drop: float = 0.005
    min_agreement: float = 0.99
    max_prob_diff: float | None = None
    max_batch_diff: float | None = 1e-5

    def __post_init__(self) -> None:
        _finite("max_auc_drop", self.max_auc_drop)
        _finite("min_agreement", self.min_agreement)
        if self.max_prob_diff is not None and _finite("max_prob_diff", self.max_prob_diff) < 0:
            raise ValueError(f"max_prob_diff must be >= 0, got {self.max_prob_diff!r}")
        if self.max_batch_diff is not None and _finite("max_batch_diff", self.max_batch_diff) < 0:
            raise ValueError(f"max_batch_diff must be >= 0, got {self.max_batch_diff!r}")

    def to_dict(self) -> dict[str, float | None]:
        """The limits, as ``aidetect.json``'s ``gates`` records them."""
        return {
            "max_auc_drop": self.max_auc_drop,
            "min_agreement": self.min_agreement,
            "max_prob_diff": self.max_prob_diff,
            "max_batch_diff": self.max_batch_diff,
        }


def compare_scores(
    labels: ArrayLike, reference: ArrayLike, candidate: ArrayLike, threshold: float
) -> dict[str, float | int]:
    """Measure a candidate's P(AI) against the reference's on one set.

    Args:
        labels: 0 (human) / 1 (AI) per text.
        reference: The fp32 model's P(AI).
        candidate: The variant's P(AI), same texts and order.
        threshold: The decision threshold (``score >= threshold`` is AI).

    Returns:
        ``n``, ``auc_reference``, ``auc_candidate``, ``auc_drop`` (NaN when a class is missing),
        ``agreement`` and ``max_prob_diff``.

    Raises:
        ValueError: Lengths differ, the set is empty, or a score is not finite.
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cand = np.asarray(candidate, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if not ref.size or ref.shape != cand.shape or ref.shape != y.shape:
        raise ValueError(f"need equal, non-empty lengths: labels {y.size}, reference {ref.size}, candidate {cand.size}")
    auc_ref, auc_cand = roc_auc(y, ref), roc_auc(y, cand)
    return {
        "n": int(ref.size),
        "auc_reference": auc_ref,
        "auc_candidate": auc_cand,
        "auc_drop": auc_ref - auc_cand,
        "agreement": float(np.mean((ref >= threshold) == (cand >= threshold))),
        "max_prob_diff": float(np.max(np.abs(ref - cand))),
    }


def gate_failures(per_set: Mapping[str, Mapping[str, float | int]], cfg: GateConfig) -> list[str]:
    """The reasons a variant fails the gate (empty when it passes), one per set and limit."""
    reasons = []
    for name, m in per_set.items():
        drop = float(m["auc_drop"])
        if not math.isnan(drop) and drop > cfg.max_auc_drop:
            reasons.append(f"{name}: ROC AUC drop {drop:.4f} > {cfg.max_auc_drop:g}")
        if m["agreement"] < cfg.min_agreement:
            reasons.append(f"{name}: agreement {m['agreement']:.4f} < {cfg.min_agreement:g}")
        if cfg.max_prob_diff is not None and m["max_prob_diff"] > cfg.max_prob_diff:
            reasons.append(f"{name}: max probability difference {m['max_prob_diff']:.4f} > {cfg.max_prob_diff:g}")
    return reasons


def apply_gate(
    variant: str,
    per_set: Mapping[str, Mapping[str, float | int]],
    cfg: GateConfig,
    *,
    batch_diff: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """Judge a variant and return the ``gates`` record for its ``aidetect.json``.

    Args:
        variant: The variant's name, for the message.
        per_set: :func:`compare_scores` per evaluation set.
        cfg: The limits.
        batch_diff: ``(texts, largest P(AI) change)`` between scoring alone and in a batch; ``None``: not measured.

    Returns:
        ``{"reference": "fp32", "limits": ..., "passed": True, "sets": per_set}``, with ``batch_invariance``
        (``texts``, ``max_abs_diff``) when measured.

    Raises:
        GateFailedError: A limit is not met on some set, or there is no set to judge on.
    """
    if not per_set:
        raise GateFailedError(f"{variant}: no evaluation data to gate on; pass --eval FILE")
    reasons = gate_failures(per_set, cfg)
    if batch_diff is not None and cfg.max_batch_diff is not None and not batch_diff[1] <= cfg.max_batch_diff:
        reasons.append(
            f"a text's P(AI) alone and in a batch differ by {batch_diff[1]:.3g} > {cfg.max_batch_diff:g} "
            f"({batch_diff[0]} texts)"
        )
    if reasons:
        raise GateFailedError(f"{variant} fails the accuracy gate against fp32: " + "; ".join(reasons))
    sets = {name: dict(m) for name, m in per_set.items()}
    record: dict[str, Any] = {"reference": "fp32", "limits": cfg.to_dict(), "passed": True, "sets": sets}
    if batch_diff is not None:
        record["batch_invariance"] = {"texts": batch_diff[0], "max_abs_diff": batch_diff[1]}
    return record
