"""Scoring a bundle over labelled data with the runtime's ``Detector``, and measuring its throughput.

The export gates score every variant exactly as a user will: through ``aidetect_infer.Detector`` on the staged
bundle, windows and all. Evaluation sets are named by ``[NAME=]PATH[@SUBSET]``:

- ``all`` (default): every record of the file;
- ``validation``: the validation groups of the checkpoint's training split (``val_fraction`` and
  ``split_salt`` from its ``training.json``), without the OUTFOX test half;
- ``test``: the OUTFOX test half (groups ``outfox:test:``), which may be evaluated but never tuned on;
- ``test-clean``: the OUTFOX test half without attacked essays.

``python -m export.onnx_eval --bundle DIR --eval SPEC ...`` prints the metrics of one bundle.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aidetect_infer import Detector
from export.data import filter_records, in_validation, load_records
from export.metrics import binary_metrics
from export.onnx_export import Checkpoint, pad_rows, torch_logits

logger = logging.getLogger(__name__)

SUBSETS = ("all", "validation", "test", "test-clean")


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


def load_eval_set(spec: str, *, training: Mapping[str, Any] | None = None, limit: int | None = None) -> EvalSet:
    """Read an evaluation set from a ``[NAME=]PATH[@SUBSET]`` spec.

    Args:
        spec: See the module docstring.
        training: The checkpoint's ``training.json`` (for the ``validation`` subset's split settings).
        limit: Keep a fixed random sample (seed 0) of at most this many records, in file order.

    Returns:
        The set.

    Raises:
        ValueError: An unknown subset, a bad limit, or a subset with no records.
        export.data.DataError: The file cannot be read.
    """
    name, _, rest = spec.rpartition("=") if "=" in spec.split("@")[0] else ("", "", spec)
    path_text, _, subset = rest.partition("@")
    subset = subset or "all"
    if subset not in SUBSETS:
        raise ValueError(f"{spec}: unknown subset {subset!r} (known: {', '.join(SUBSETS)})")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2, got {limit}")
    path = Path(path_text)
    records = load_records(path)
    if subset == "validation":
        config = (training or {}).get("config", {})
        fraction, salt = float(config.get("val_fraction", 0.1)), str(config.get("split_salt", "aidetect"))
        records = [r for r in filter_records(records, held_out=False) if in_validation(r.group, fraction, salt)]
    elif subset in ("test", "test-clean"):
        records = filter_records(records, held_out=True, attacks=["none"] if subset == "test-clean" else None)
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


def score_bundle(
    bundle_dir: str | os.PathLike[str],
    texts: Sequence[str],
    *,
    threads: int = 2,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    chunk: int = 256,
) -> NDArray[np.float32]:
    """P(AI) for each text, from the bundle loaded by ``Detector`` on the CPU.

    Args:
        bundle_dir: A bundle directory.
        texts: The texts.
        threads: ONNX Runtime intra-op threads.
        batch_size: Windows per ONNX Runtime call.
        progress: Called with the number of texts scored after each chunk.
        chunk: Texts per ``predict_proba`` call.

    Returns:
        float32 scores, one per text.
    """
    detector = Detector.from_pretrained(bundle_dir, provider="cpu", threads=threads, batch_size=batch_size)
    scores = []
    for start in range(0, len(texts), chunk):
        part = list(texts[start : start + chunk])
        scores.append(np.asarray(detector.predict_proba(part), dtype=np.float32))
        if progress is not None:
            progress(len(part))
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def batch_dependence(
    bundle_dir: str | os.PathLike[str], texts: Sequence[str], *, threads: int = 2, batch_size: int = 16, seed: int = 0
) -> float:
    """Largest change of a text's P(AI) between scoring it alone and inside a batch of all ``texts`` (shuffled).

    What a user meets who scores a document alone and then in a batch job; 0 for a batch-invariant bundle.
    """
    detector = Detector.from_pretrained(bundle_dir, provider="cpu", threads=threads, batch_size=batch_size)
    alone = np.asarray([detector.predict_proba(text)[0] for text in texts], dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(texts))
    together = np.empty(len(texts), dtype=np.float64)
    together[order] = detector.predict_proba([texts[i] for i in order])
    return float(np.max(np.abs(alone - together))) if len(texts) else 0.0


def set_metrics(eval_set: EvalSet, scores: NDArray[np.float32], threshold: float) -> dict[str, float | int]:
    """``export.metrics.binary_metrics`` of one set, with its source."""
    return {"source": eval_set.source, **binary_metrics(eval_set.labels, scores, threshold)}  # type: ignore[dict-item]


def bundle_throughput(
    bundle_dir: str | os.PathLike[str], texts: Sequence[str], *, threads: int = 2, batch_size: int = 16
) -> float:
    """Texts per second of ``Detector.predict_proba`` (first window of each text), after one warm-up call."""
    detector = Detector.from_pretrained(
        bundle_dir, provider="cpu", threads=threads, batch_size=batch_size, truncation=True
    )
    detector.predict_proba(list(texts[:batch_size]))
    start = time.perf_counter()
    detector.predict_proba(list(texts))
    return len(texts) / (time.perf_counter() - start)


def torch_throughput(
    checkpoint: Checkpoint, texts: Sequence[str], *, max_length: int, threads: int = 2, batch_size: int = 16
) -> float:
    """Texts per second of the PyTorch model doing the same work as :func:`bundle_throughput`.

    Tokenizes (first window), sorts by length, pads each batch to its longest text, runs the model, softmax.
    """
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)

    def run(batch_texts: Sequence[str]) -> None:
        rows = sorted((e.ids for e in tokenizer.encode_batch(list(batch_texts))), key=len)
        for i in range(0, len(rows), batch_size):
            feed = pad_rows(rows[i : i + batch_size], checkpoint.pad_id, checkpoint.input_names)
            torch.softmax(torch.from_numpy(torch_logits(checkpoint.model, feed)), dim=-1)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run(texts[:batch_size])
        start = time.perf_counter()
        run(texts)
        return len(texts) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.onnx_eval``: metrics of one bundle on evaluation sets."""
    parser = argparse.ArgumentParser(prog="python -m export.onnx_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle directory (or a parent of variant bundles)")
    parser.add_argument("--eval", required=True, nargs="+", metavar="SPEC", help="[NAME=]PATH[@SUBSET]")
    parser.add_argument("--limit", type=int, default=None, help="at most this many texts per set")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from aidetect_infer import load_bundle
    from aidetect_infer.errors import AidetectError
    from export.data import DataError

    try:
        metadata = load_bundle(args.bundle).metadata
        training = metadata.optional.get("training")  # the split settings behind @validation
        out = {}
        for spec in args.eval:
            eval_set = load_eval_set(spec, training=training, limit=args.limit)
            scores = score_bundle(args.bundle, eval_set.texts, threads=args.threads)
            out[eval_set.name] = set_metrics(eval_set, scores, metadata.threshold)
    except (AidetectError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
