"""Scoring a bundle over texts with the runtime's ``Detector``, and measuring its throughput.

The export gates score every variant exactly as a user will: through ``aidetect_infer.Detector`` on the staged
bundle, windows and all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from aidetect_infer import Detector
from export.evaluate.metrics import binary_metrics
from export.evaluate.sets import EvalSet
from export.onnx.export import Checkpoint, pad_rows, torch_logits


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
