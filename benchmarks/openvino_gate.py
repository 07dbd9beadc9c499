"""``python -m benchmarks.openvino_gate BUNDLE``: the int8 gate's measures for ``provider="openvino"``.

Scores the evaluation sets three ways, each through :class:`aidetect_infer.Detector`: the bundle on ONNX
Runtime (its int8 graph), the bundle on OpenVINO (``provider="openvino"``: the int8 weights in floating point,
OpenVINO's inference precision), and the reference, the bundle's dequantized graph in fp32 on ONNX Runtime
(``export.recover.dequantized_detector``: the same weights, no activation quantization). For each backend against
the reference: ROC AUC and its drop (sets with both classes), the share flagged as AI, the share of texts whose
decision at the bundle's AI threshold agrees, and the largest change of P(AI); and texts/s, tokenization
included. Writes JSON (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SETS = (
    "data/detectgpt_family.jsonl.gz@validation",
    "data/l2r_rewrites.jsonl.gz@validation",
    "data/outfox_essays.jsonl.gz@validation",
    "data/assistant_synth.jsonl.gz@validation",
)
"""Validation groups only: which backend a user should run is not chosen on the OUTFOX test half."""


def measure(bundle: Path, specs: Sequence[str], *, limit: int | None, threads: int) -> dict[str, Any]:
    """The table's rows, per set and backend."""
    from aidetect_infer import Detector
    from export.evaluate.metrics import roc_auc
    from export.evaluate.sets import load_eval_set
    from export.recover import dequantized_detector

    detectors = {
        "reference fp32 (ONNX Runtime)": dequantized_detector(bundle, threads=threads),
        "int8 (ONNX Runtime)": Detector.from_pretrained(bundle, provider="cpu", threads=threads),
        "openvino": Detector.from_pretrained(bundle, provider="openvino", threads=threads),
    }
    threshold = detectors["int8 (ONNX Runtime)"].threshold
    out: dict[str, Any] = {"bundle": str(bundle), "threshold": threshold, "sets": {}}
    out["openvino_precision"] = detectors["openvino"]._session.precision  # noqa: SLF001 (reported, not used)
    for spec in specs:
        eval_set = load_eval_set(spec, limit=limit)
        labels = np.asarray(eval_set.labels)
        scores, seconds = {}, {}
        for name, detector in detectors.items():
            start = time.perf_counter()
            scores[name] = np.asarray(detector.predict_proba(list(eval_set.texts)), dtype=np.float64)
            seconds[name] = time.perf_counter() - start
        ref = scores["reference fp32 (ONNX Runtime)"]
        rows = {}
        both = len(set(labels.tolist())) == 2  # an AI-only or human-only set has no ROC AUC
        for name, p in scores.items():
            rows[name] = {
                "roc_auc": roc_auc(labels, p) if both else None,
                "auc_drop": roc_auc(labels, ref) - roc_auc(labels, p) if both else None,
                "flagged": float(np.mean(p >= threshold)),
                "agreement": float(np.mean((p >= threshold) == (ref >= threshold))),
                "max_prob_diff": float(np.max(np.abs(p - ref))),
                "texts_per_s": len(p) / seconds[name],
            }
        out["sets"][eval_set.name] = {"n": len(labels), "backends": rows}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Threshold {result['threshold']:.4f}; OpenVINO precision {result['openvino_precision']}.",
        "",
        "| set | n | backend | ROC AUC | AUC drop | flagged as AI | agreement | max dP | texts/s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in result["sets"].items():
        for backend, r in s["backends"].items():
            auc = "n/a | n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.4f} | {r['auc_drop']:.4f}"
            lines.append(
                f"| {name} | {s['n']} | {backend} | {auc} | "
                f"{100 * r['flagged']:.2f}% | {100 * r['agreement']:.2f}% | {r['max_prob_diff']:.4f} | "
                f"{r['texts_per_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openvino_gate", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--set", action="append", dest="sets", help="PATH[@SUBSET], repeatable")
    parser.add_argument("--limit", type=int, default=None, help="texts per set (a fixed random sample)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    result = measure(args.bundle, args.sets or DEFAULT_SETS, limit=args.limit, threads=args.threads)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
