"""The evaluation sets: one vocabulary of subsets for every evaluation (PyTorch or ONNX), and the metrics of each.

A data file's records are selected by a subset name:

- ``all``: every record of the file;
- ``validation``: the validation groups of the training run's split (:class:`export.data.Split`), without the
  OUTFOX test half;
- ``test``: the OUTFOX test half (groups ``outfox:test:``), attacked essays included: evaluated, never tuned on;
- ``test-clean``: the OUTFOX test half without the attacked essays;
- ``test-attacked``: the attacked AI essays of the test half with the same half's human essays (attacks apply to
  AI texts only, so the ROC AUC is defined).

``python -m export.onnx_eval`` and the export's ``--eval`` name one set as ``[NAME=]PATH[@SUBSET]``;
``python -m export.evaluate --split`` names what to report per file: ``auto`` (``test-clean`` and
``test-attacked`` for a file with a test half, ``validation`` otherwise), ``validation``, ``test`` (its
``test-clean`` and ``test-attacked`` sets), or ``all``; sets are keyed ``<file>/<subset>``. Metrics (ROC AUC,
accuracy, F1, TPR at 1% and 5% FPR) are reported for each set, and by domain, generator and attack inside it.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.data.records import Record, filter_records, load_records
from export.data.split import Split
from export.evaluate import metrics
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)

SUBSETS = ("all", "validation", "test", "test-clean", "test-attacked")
"""The subset names of one data file."""
SPLITS = ("auto", "validation", "test", "all")
"""What ``python -m export.evaluate --split`` reports per file."""
DEPRECATED = {"val": "validation"}
"""Old spellings, still read (with a deprecation warning)."""

Scorer = Callable[[list[str]], np.ndarray]


def canonical(name: str, known: Sequence[str]) -> str:
    """``name`` in the current vocabulary (an old spelling warns and is replaced).

    Raises:
        ValueError: A name outside ``known`` and its old spellings.
    """
    if name in DEPRECATED:
        warnings.warn(f"{name!r} is deprecated; say {DEPRECATED[name]!r}", DeprecationWarning, stacklevel=3)
        logger.warning("%r is deprecated; say %r", name, DEPRECATED[name])
        name = DEPRECATED[name]
    if name not in known:
        raise ValueError(f"unknown subset {name!r} (known: {', '.join(known)})")
    return name


def select(records: Sequence[Record], subset: str, split: Split) -> list[Record]:
    """The records of one subset (see the module docstring) of a file's records."""
    subset = canonical(subset, SUBSETS)
    if subset == "all":
        return list(records)
    if subset == "validation":
        return split.validation(records)
    held = filter_records(records, held_out=True)
    if subset == "test":
        return held
    if subset == "test-clean":
        return filter_records(held, attacks=["none"])
    attacked = [r for r in held if r.attack != "none"]
    return [r for r in held if r.label == 0] + attacked if attacked else []


@dataclass(frozen=True)
class EvalSet:
    """Labelled texts to evaluate on.

    Attributes:
        name: The key under which metrics are recorded.
        source: The spec it was read from (path and subset).
        texts: The texts.
        labels: 0 (human) / 1 (AI) per text.
    """

    name: str
    source: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]


def _default_name(path: Path, subset: str) -> str:
    stem = path.name.split(".")[0]
    return stem if subset == "all" else f"{stem}_{subset.replace('-', '_')}"


def load_eval_set(spec: str, *, training: TrainingRecord | None = None, limit: int | None = None) -> EvalSet:
    """Read an evaluation set from a ``[NAME=]PATH[@SUBSET]`` spec (subset ``all`` when not given).

    Args:
        spec: See the module docstring.
        training: The checkpoint's training record (the ``validation`` subset's split).
        limit: Keep a fixed random sample (seed 0) of at most this many records, in file order.

    Returns:
        The set.

    Raises:
        ValueError: An unknown subset, a bad limit, or a subset with no records.
        export.errors.DataError: The file cannot be read.
    """
    name, _, rest = spec.rpartition("=") if "=" in spec.split("@")[0] else ("", "", spec)
    path_text, _, subset = rest.partition("@")
    try:
        subset = canonical(subset or "all", SUBSETS)
    except ValueError as exc:
        raise ValueError(f"{spec}: {exc}") from None
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2, got {limit}")
    path = Path(path_text)
    records = select(load_records(path), subset, (training or TrainingRecord()).split)
    if not records:
        raise ValueError(f"{spec}: no records in subset {subset!r}")
    if limit is not None and len(records) > limit:
        keep = sorted(random.Random(0).sample(range(len(records)), limit))
        records = [records[i] for i in keep]
    return EvalSet(
        name=name or _default_name(path, subset),
        source=f"{path.name}@{subset}",
        texts=tuple(r.text for r in records),
        labels=tuple(r.label for r in records),
    )


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
    """Named held-out record sets per file, keyed ``<file>/<subset>`` (see the module docstring).

    Args:
        split: One of :data:`SPLITS` (``val`` is read as ``validation``, with a deprecation warning).
        val_fraction, salt: The training run's split (:class:`export.data.Split`).
        max_samples: cap each set to a seeded random sample of this many records.
    """
    split = canonical(split, SPLITS)
    groups = Split(val_fraction, salt)
    sets: dict[str, list[Record]] = {}
    for path in paths:
        records = load_records(path)
        stem = _stem(path)
        has_test = bool(filter_records(records, held_out=True))
        if split == "all":
            names = ["all"]
        elif split == "test" or (split == "auto" and has_test):
            names = ["test-clean", "test-attacked"]
        else:
            names = ["validation"]
        for subset in names:
            sets[f"{stem}/{subset}"] = select(records, subset, groups)
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
        logger.info("%s: n=%d roc_auc=%.4f acc=%.4f", name, len(recs), res["all"]["roc_auc"], res["all"]["accuracy"])
    return results


def checkpoint_scorer(checkpoint: str | Path, max_length: int = 256, threads: int | None = None) -> Scorer:
    """Score texts with a PyTorch checkpoint (truncated at ``max_length`` tokens, as in training)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from export.train.loop import load_tokenizer, score

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
