"""``python -m export.evaluate``: a PyTorch checkpoint or an ONNX bundle on named held-out sets; and
``python -m export.onnx_eval``: one bundle on ``[NAME=]PATH[@SUBSET]`` sets (:func:`main_bundle`).

    python -m export.evaluate --checkpoint runs/minilm --data detectgpt_family.jsonl.gz \
        --data outfox_essays.jsonl.gz --out runs/minilm/eval.json
    python -m export.evaluate --bundle models/default --data ...

The sets and their names are described in :mod:`export.evaluate.sets`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aidetect_infer.errors import AidetectError
from export.console import fail
from export.errors import ExportError
from export.evaluate.sets import (
    DEPRECATED,
    SPLITS,
    canonical,
    checkpoint_scorer,
    evaluate_sets,
    format_table,
    held_out_sets,
    load_eval_set,
)
from export.train.record import TrainingRecord


def _split_choice(value: str) -> str:
    try:
        return canonical(value, SPLITS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m export.evaluate``; returns the exit status (see :mod:`export.errors`)."""
    p = argparse.ArgumentParser(
        prog="python -m export.evaluate",
        description="Evaluate a PyTorch checkpoint or an ONNX bundle on named held-out sets.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a checkpoint directory written by export.train")
    what.add_argument("--bundle", help="an ONNX model bundle (or a parent of variant bundles)")
    p.add_argument("--data", action="append", required=True, help="data file; repeatable")
    p.add_argument(
        "--split", default="auto", type=_split_choice, metavar="{" + ",".join(SPLITS) + "}",
        help="sets per file (see export.evaluate.sets); "
        + ", ".join(f"{old} means {new} (deprecated)" for old, new in DEPRECATED.items()),
    )  # fmt: skip
    p.add_argument("--val-fraction", type=float, help="validation share of groups (default: the training run's)")
    p.add_argument("--max-samples", type=int, help="cap each held-out set (seeded sample)")
    p.add_argument("--max-length", type=int, default=256, help="checkpoint only: truncation length")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's own)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="write the metrics as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.checkpoint:
            training = TrainingRecord.read(args.checkpoint) or TrainingRecord()
            score_fn = checkpoint_scorer(args.checkpoint, args.max_length, args.threads)
            default_threshold = training.threshold if training.threshold is not None else 0.5
        else:
            from aidetect_infer import Detector

            det = Detector.from_pretrained(args.bundle, provider="cpu", threads=args.threads)
            training = TrainingRecord.from_dict(det.metadata.optional.get("training") or {})
            score_fn = lambda texts: det.predict_proba(texts).astype(np.float64)  # noqa: E731
            default_threshold = det.metadata.threshold
        threshold = args.threshold if args.threshold is not None else default_threshold
        split = training.split
        sets = held_out_sets(
            args.data, split=args.split, val_fraction=args.val_fraction or split.val_fraction, salt=split.salt,
            max_samples=args.max_samples,
        )  # fmt: skip
        results = evaluate_sets(score_fn, sets, threshold)
    except (ExportError, AidetectError, ValueError, OSError) as exc:
        return fail(exc)
    print(format_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


def main_bundle(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m export.onnx_eval``: metrics of one bundle on evaluation sets (exit status as above)."""
    parser = argparse.ArgumentParser(
        prog="python -m export.onnx_eval", description="Metrics of one bundle on evaluation sets."
    )
    parser.add_argument("--bundle", required=True, help="bundle directory (or a parent of variant bundles)")
    parser.add_argument("--eval", required=True, nargs="+", metavar="SPEC", help="[NAME=]PATH[@SUBSET]")
    parser.add_argument("--limit", type=int, default=None, help="at most this many texts per set")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from aidetect_infer import load_bundle
    from export.evaluate.bundle import score_bundle, set_metrics

    try:
        metadata = load_bundle(args.bundle).metadata
        # the split behind @validation: the training run's, as the export used it
        training = TrainingRecord.from_dict(metadata.optional.get("training") or {})
        out = {}
        for spec in args.eval:
            eval_set = load_eval_set(spec, training=training, limit=args.limit)
            scores = score_bundle(args.bundle, eval_set.texts, threads=args.threads)
            out[eval_set.name] = set_metrics(eval_set, scores, metadata.threshold)
    except (ExportError, AidetectError, ValueError, OSError) as exc:
        return fail(exc)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
