"""The calibration report: per data set, domain and generator, and the model card's "Decisions" section."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.data.records import Record
from export.evaluate import metrics

DECISIONS_HEADING = "## Decisions and where the model fails"
"""Where the calibration's section of a model card starts."""


def group_report(
    records: Sequence[Record],
    scores: NDArray[np.float64],
    key: str,
    threshold: float,
    human_threshold: float,
    min_tokens: int,
    tokens: NDArray[np.int64],
) -> list[dict[str, Any]]:
    """Per group (``dataset/domain`` or ``generator``): n, ROC AUC, TPR at 1% FPR, flagged, caught, uncertain."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        name = f"{r.dataset}/{r.domain}" if key == "domain" else f"{r.dataset}/{r.generator}"
        groups[name].append(i)
    bands = (threshold, human_threshold, min_tokens)
    return [
        report_row(name, [records[i].label for i in idx], scores[idx], tokens[idx], *bands)
        for name, idx in sorted(groups.items())
    ]


def report_row(
    name: str,
    labels: Sequence[int],
    scores: NDArray[np.float64],
    tokens: NDArray[np.int64],
    threshold: float,
    human_threshold: float,
    min_tokens: int,
) -> dict[str, Any]:
    """One line of the report: n, ROC AUC, TPR at 1% FPR, human flagged, AI caught, uncertain share."""
    y = np.asarray(labels)
    short = tokens < min_tokens
    ai_label = (scores >= threshold) & ~short
    uncertain = ((scores >= human_threshold) & (scores < threshold)) | short
    both = 0 < y.sum() < len(y)
    return {
        "set": name,
        "n": len(y),
        "human": int((y == 0).sum()),
        "ai": int((y == 1).sum()),
        "roc_auc": metrics.roc_auc(y, scores) if both else None,
        "tpr_at_1pct_fpr": metrics.tpr_at_fpr(y, scores, 0.01) if both else None,
        "flagged_human": float(ai_label[y == 0].mean()) if (y == 0).any() else None,
        "caught_ai": float(ai_label[y == 1].mean()) if (y == 1).any() else None,
        "uncertain": float(uncertain.mean()),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    head = "| " + title + " | n | human | AI | ROC AUC | TPR at 1% FPR | human flagged as AI | AI caught | uncertain |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cells = [r["set"], r["n"], r["human"], r["ai"], r["roc_auc"], r["tpr_at_1pct_fpr"]]
        cells += [r["flagged_human"], r["caught_ai"], r["uncertain"]]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def card_section(
    decision: dict[str, Any],
    val: Sequence[dict[str, Any]],
    gens: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
) -> str:
    """The model card's section on decisions and per-domain results."""
    points = "\n".join(
        f"| {p['false_positive_rate']:.3f} | {p['threshold']:.4f} | {p['measured_false_positive_rate']:.4f} "
        f"| {p['true_positive_rate']:.3f} |"
        for p in decision["operating_points"]
    )
    worst = sorted((r for r in val if r["flagged_human"] is not None), key=lambda r: -r["flagged_human"])[:5]
    lines = [
        DECISIONS_HEADING,
        "",
        f"Rule: {decision['rule']}. Temperature {decision['temperature']:.3f}; AI threshold at "
        f"{decision['false_positive_rate']:.1%} FPR; texts under {decision['min_tokens']} tokens are 'uncertain'.",
        "",
        "| target FPR | threshold | measured FPR (validation humans) | TPR (validation AI) |",
        "| ---: | ---: | ---: | ---: |",
        points,
        "",
        "Validation groups (they chose every setting above):",
        "",
        markdown(val, "data set / domain"),
        "",
        "Per generator (validation groups):",
        "",
        markdown(gens, "data set / generator"),
        "",
    ]
    if test:
        lines += ["Held out (OUTFOX test half, never used for any choice):", "", markdown(test, "set"), ""]
    lines.append(
        "Worst validation domains for false accusations: "
        + "; ".join(f"{r['set']} {r['flagged_human']:.1%}" for r in worst)
        + "."
    )
    return "\n".join(lines)
