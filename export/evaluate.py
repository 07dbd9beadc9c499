"""Evaluate a PyTorch checkpoint or an ONNX bundle on named held-out sets.

    python -m export.evaluate --checkpoint runs/minilm --data detectgpt_family.jsonl.gz \
        --data outfox_essays.jsonl.gz --out runs/minilm/eval.json
    python -m export.evaluate --bundle models/default --data ...

Held-out sets per data file (``--split auto``, the default):
- a file with OUTFOX ``test`` records: that half, as ``<file>/test`` (un-attacked texts) and
  ``<file>/test-attacked`` (the attacked AI texts with the same half's human texts; by attack inside it);
- any other file: its validation groups (the same group split as ``export.train``), as ``<file>/val``.
Metrics (ROC AUC, accuracy, F1, TPR at 1% and 5% FPR) are reported for each set, and by domain, generator
and attack inside each set.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from export import metrics
from export.data import Record, filter_records, load_records, split_by_group

log = logging.getLogger(__name__)

Scorer = Callable[[list[str]], np.ndarray]


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv"):
        name = name.removesuffix(suffix)
    return name


def held_out_sets(
    paths: Sequence[str | Path],
    *,
    split: str = "auto",
    val_fraction: float = 0.1,
    salt: str = "aidetect",
    max_samples: int | None = None,
    seed: int = 0,
) -> dict[str, list[Record]]:
    """Named held-out record sets, as described in the module docstring.

    Args:
        split: ``auto``, ``val`` (validation groups only), ``test`` (OUTFOX test half only) or ``all``.
        max_samples: cap each set to a seeded random sample of this many records.
    """
    if split not in ("auto", "val", "test", "all"):
        raise ValueError(f"split must be auto, val, test or all, got {split!r}")
    sets: dict[str, list[Record]] = {}
    for path in paths:
        records = load_records(path)
        stem = _stem(path)
        held = filter_records(records, held_out=True)
        if split == "all":
            sets[f"{stem}/all"] = records
            continue
        if split in ("auto", "test") and held:
            sets[f"{stem}/test"] = filter_records(held, attacks=["none"])
            attacked = [r for r in held if r.attack != "none"]
            if attacked:
                # attacks apply to AI texts only: pair them with the same half's human texts, so AUC is defined
                sets[f"{stem}/test-attacked"] = [r for r in held if r.label == 0] + attacked
        if split == "val" or (split == "auto" and not held):
            _, val = split_by_group(filter_records(records, held_out=False), val_fraction, salt)
            sets[f"{stem}/val"] = val
    rng = random.Random(seed)
    for name, recs in sets.items():
        if max_samples and len(recs) > max_samples:
            sets[name] = rng.sample(recs, max_samples)
    return {k: v for k, v in sets.items() if v}


def report(records: Sequence[Record], scores: np.ndarray, threshold: float) -> dict:
    """Metrics over a set, with breakdowns by domain, generator and attack (where there is more than one)."""
    y = np.array([r.label for r in records])
    out = {"all": metrics.binary_metrics(y, scores, threshold)}
    for key in ("domain", "generator", "attack"):
        values = [getattr(r, key) for r in records]
        if len(set(values)) > 1:
            groups = metrics.grouped_metrics(y, scores, values, threshold)
            groups.pop("all")
            out[f"by_{key}"] = groups
    return out


def evaluate_sets(score_fn: Scorer, sets: dict[str, list[Record]], threshold: float) -> dict[str, dict]:
    results = {}
    for name, recs in sets.items():
        started = time.perf_counter()
        scores = score_fn([r.text for r in recs])
        res = report(recs, scores, threshold)
        res["seconds"] = round(time.perf_counter() - started, 2)
        results[name] = res
        log.info("%s: n=%d roc_auc=%.4f acc=%.4f", name, len(recs), res["all"]["roc_auc"], res["all"]["accuracy"])
    return results


def checkpoint_scorer(checkpoint: str | Path, max_length: int = 256, threads: int | None = None) -> Scorer:
    """Score texts with a PyTorch checkpoint (truncated at ``max_length`` tokens, as in training)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from export.train import load_tokenizer, score

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tok = load_tokenizer(Path(checkpoint) / "tokenizer.json", max_length)
    pad_id = model.config.pad_token_id or 0

    def run(texts: list[str]) -> np.ndarray:
        return score(model, [e.ids for e in tok.encode_batch(texts)], pad_id)

    return run


def format_table(results: dict[str, dict]) -> str:
    lines = ["| set | n | ROC AUC | accuracy | F1 | TPR@1%FPR |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, res in results.items():
        a = res["all"]
        lines.append(
            f"| {name} | {a['n']} | {a['roc_auc']:.4f} | {a['accuracy']:.4f} | {a['f1']:.4f} | "
            f"{a['tpr_at_1pct_fpr']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a checkpoint directory written by export.train")
    what.add_argument("--bundle", help="an ONNX model bundle (or a parent of variant bundles)")
    p.add_argument("--data", action="append", required=True, help="data file; repeatable")
    p.add_argument("--split", default="auto", choices=["auto", "val", "test", "all"])
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--max-samples", type=int, help="cap each held-out set (seeded sample)")
    p.add_argument("--max-length", type=int, default=256, help="checkpoint only: truncation length")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's own)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="write the metrics as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.checkpoint:
        score_fn = checkpoint_scorer(args.checkpoint, args.max_length, args.threads)
        training = Path(args.checkpoint) / "training.json"
        default_threshold = json.loads(training.read_text())["threshold"] if training.is_file() else 0.5
    else:
        from aidetect_infer import Detector

        det = Detector.from_pretrained(args.bundle, provider="cpu", threads=args.threads)
        score_fn = lambda texts: det.predict_proba(texts).astype(np.float64)  # noqa: E731
        default_threshold = det.metadata.threshold
    threshold = args.threshold if args.threshold is not None else default_threshold
    sets = held_out_sets(args.data, split=args.split, val_fraction=args.val_fraction, max_samples=args.max_samples)
    results = evaluate_sets(score_fn, sets, threshold)
    print(format_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
