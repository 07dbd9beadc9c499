"""The bundle's model card (``README.md``), written from the same facts as its ``aidetect.json``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from export.train.record import TrainingRecord

CARD_METRICS = ("n", "roc_auc", "accuracy", "f1", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr")
GATE_FIGURES = ("n", "auc_reference", "auc_candidate", "auc_drop", "agreement", "max_prob_diff")

LIMITS = (
    "Scores are probabilities from one classifier, not proof: do not base decisions about a person on them.",
    "It learned the generators and domains of its training data; texts from other models, domains or languages "
    "(it was trained on English) can score far worse than the figures above, and a paraphrase or an adversarial "
    "prompt can evade it.",
    "Texts longer than one window are split into overlapping windows whose scores are averaged; very short texts "
    "carry little evidence.",
    "The int8 variant is tuned for x86 CPUs with AVX-512 VNNI; the fp16 variant is meant for the CUDA provider "
    "(it runs on the CPU, slowly).",
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _variant_line(variant: Mapping[str, Any]) -> str:
    parts = [f"precision {variant.get('precision')}", f"graph optimization {variant.get('optimization')}"]
    quant = variant.get("quantization")
    if isinstance(quant, Mapping):
        parts.append("quantization " + ", ".join(f"{k}={v}" for k, v in quant.items()))
    if variant.get("pruning"):
        parts.append(f"pruning {variant['pruning']}")
    return "; ".join(parts)


def _architecture_rows(arch: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows = [(k, v) for k, v in arch.items() if not isinstance(v, Mapping)]
    pruned = arch.get("pruned_heads")
    if isinstance(pruned, Mapping) and pruned and isinstance(arch.get("heads"), int):
        kept = sorted({arch["heads"] - len(v) for v in pruned.values() if isinstance(v, list)})
        per_layer = "/".join(map(str, kept))
        rows = [(k, f"{per_layer} of {v} per layer (structurally pruned)" if k == "heads" else v) for k, v in rows]
    return rows


def _stages(training: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The training runs a record descends from (``source.training``, each run's base), first to last: what each
    was (fine-tuning, the recovery after pruning, tuning after it, int8-aware or not), its seed and text counts."""
    chain: list[Mapping[str, Any]] = []
    record: Any = training
    while isinstance(record, Mapping) and len(chain) < 32:
        chain.append(record)
        source = record.get("source")
        record = source.get("training") if isinstance(source, Mapping) else None
    chain.reverse()
    stages = []
    for n, run in enumerate(chain):
        pruned, before = bool(run.get("pruning")), bool(n and chain[n - 1].get("pruning"))
        label = "tuning after pruning" if pruned and before else "recovery after pruning" if pruned else "fine-tuning"
        config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
        if config.get("int8_aware"):
            label += ", int8-aware"
        if run.get("seed") is not None:
            label += f" (seed {run['seed']})"
        counts = run.get("counts") if isinstance(run.get("counts"), Mapping) else {}
        stages.append((label, counts))
    return stages


def threshold_sentence(threshold: float, rule: str, decision: Mapping[str, Any] | None = None) -> str:
    """The card's line on the decision threshold: the calibrated rule where ``decision`` records one."""
    fpr = (decision or {}).get("false_positive_rate")
    if isinstance(fpr, int | float):
        return (
            f"Decision threshold: {threshold:.4f} (at most {fpr:.1%} of the validation human texts at or above it; "
            "see Decisions below). Accuracy and F1 below are at the export's threshold."
        )
    return f"Decision threshold: {threshold:.4f} ({rule})."


def _training_section(training: Mapping[str, Any] | None, sentence: str) -> list[str]:
    lines = ["## Training data", ""]
    if not training:
        lines.append("No `training.json` came with the checkpoint: the training data is not recorded.")
    else:
        record = TrainingRecord.from_dict(training)
        data = record.data if isinstance(record.data, tuple | list) else ()
        rows = [(d.get("file") or d.get("path"), d.get("sha256", "")[:16]) for d in data if isinstance(d, Mapping)]
        if rows:
            lines += _table(("file", "sha256 (first 16)"), rows) + [""]
        stages = _stages(training)
        if len(stages) > 1:
            lines.append("Training stages, first to last:")
            lines += [
                f"- {label}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "." for label, counts in stages
            ]
            lines.append("")
        elif stages and stages[0][1]:
            lines.append("Texts: " + ", ".join(f"{k} {v}" for k, v in stages[0][1].items()) + ".")
        if record.seed is not None:
            lines.append(f"Seed: {record.seed}.")
        lines.append("Splits are by source document (`group`); the OUTFOX `test` half is never trained or tuned on.")
    lines += ["", sentence, ""]
    return lines


def render_card(metadata: Mapping[str, Any], *, threshold_rule: str = "") -> str:
    """Write the Markdown model card of one bundle.

    Args:
        metadata: The bundle's ``aidetect.json`` contents (``files`` may be absent).
        threshold_rule: How the threshold was chosen.

    Returns:
        The card's Markdown text.
    """
    arch = metadata.get("architecture", {})
    variant = metadata.get("variant", {})
    labels = metadata.get("labels", ["human", "ai"])
    lines = [
        f"# {metadata.get('name', 'aidetect bundle')}",
        "",
        f"A {arch.get('model_type', 'transformer')} classifier that tells AI-generated text (`{labels[1]}`) from "
        f"human writing (`{labels[0]}`), as an aidetect-infer model bundle: `model.onnx`, `tokenizer.json`, "
        "`aidetect.json` (every fact on this card, machine-readable).",
        "",
        f"Variant: {_variant_line(variant)}.",
        "",
        "## Model",
        "",
        *_table(("property", "value"), _architecture_rows(arch)),
        "",
        f"Windows of {metadata.get('max_length')} tokens advancing by {metadata.get('window_stride')}.",
        "",
    ]
    sentence = threshold_sentence(float(metadata.get("threshold", 0.5)), threshold_rule, metadata.get("decision"))
    lines += _training_section(metadata.get("training"), sentence)
    metrics = metadata.get("metrics") or {}
    if metrics:
        lines += ["## Metrics on held-out data (measured on this variant at export)", ""]
        rows = [(name, m.get("source", ""), *(m.get(k) for k in CARD_METRICS)) for name, m in metrics.items()]
        lines += _table(("set", "source", *CARD_METRICS), rows) + [""]
    gates = metadata.get("gates") or {}
    if gates.get("sets"):
        limits = gates.get("limits", {})
        lines += [
            "## Accuracy gate against fp32",
            "",
            f"Passed: ROC AUC drop <= {limits.get('max_auc_drop')}, agreement at the threshold >= "
            f"{limits.get('min_agreement')} on every set.",
            "",
        ]
        rows = [(name, *(m.get(k) for k in GATE_FIGURES)) for name, m in gates["sets"].items()]
        lines += _table(("set", *GATE_FIGURES), rows) + [""]
    elif "parity_max_abs_logit_diff" in gates:
        lines += [
            "## Parity",
            "",
            f"Max abs logit difference against PyTorch: {gates['parity_max_abs_logit_diff']:.3g}.",
            "",
        ]
    recipe = metadata.get("recipe") or []
    if recipe:
        lines += ["## How it was made", ""]
        # the stage's name first, whatever order the metadata file keeps the keys in
        steps = [sorted(step.items(), key=lambda kv: kv[0] != "stage") for step in recipe]
        lines += [f"{i}. " + ", ".join(f"{k}: {v}" for k, v in step) for i, step in enumerate(steps, 1)]
        lines.append("")
    lines += ["## Limits", "", *(f"- {text}" for text in LIMITS), ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from aidetect_infer import Detector",
        'detector = Detector.from_pretrained("path/to/bundle")',
        'print(detector.predict("Some text"))',
        "```",
        "",
    ]
    return "\n".join(lines)
