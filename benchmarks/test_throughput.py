"""Throughput: texts/s end to end on the fixed corpus (strings in, probabilities out, tokenization included).

Batch size 16 runs the whole 512-text corpus; batch sizes 1 and 64 run its first 128 texts (``texts`` in
``extra_info`` says how many), which keeps the suite within its time budget on 2 cores. Every engine
truncates at the same ``max_length`` and sees the same tokens, which the agreement checks confirm: each
MiniLM-sized engine's P(AI) matches the PyTorch baseline's on the same texts, and each engine's scores match
its own at batch 16. fp32 engines must agree with the baseline to 2e-3 in every text; int8 engines are held to
the mean difference (quantization error), the largest recorded in ``extra_info``. The aidetect engines must also
be batch-invariant: their scores at batch 1 and 64 equal those at batch 16 within 1e-5 in every text (dynamic
int8 runs one window per call; see ``Detector(batch_invariant=...)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import CpuTimed, Settings
from benchmarks.engines import BASELINE, ENGINES, MAX_LENGTH, MINILM_ENGINES, THREADS, Engine
from benchmarks.models import Models
from benchmarks.roofline import workload

BATCH_SIZES = (16, 1, 64)
FULL_BATCH = 16
SUBSET = 128  # texts per round at the other batch sizes
# Seconds per benchmark: the round count (1 to 3) adapts to it, which keeps the whole suite near 12 minutes on
# 2 quiet cores (the slow engines run one round of the corpus, the fast ones three).
BUDGET_FULL_S = 20.0
BUDGET_SUBSET_S = 12.0
# Per precision: which statistic of |P(AI) difference| is checked, and its limit.
# int8: Optimum's avx512_vnni preset takes full-range s8 weights, whose u8 x s8 products saturate on a CPU
# without VNNI (measured on 2 AVX2 cores: mean 0.0305 against PyTorch at batch 64).
TOLERANCE = {"fp32": ("max", 2e-3), "int8": ("mean", 0.05)}
INVARIANCE = ("max", 1e-5)  # an aidetect engine's scores at another batch size against its own at batch 16
DETECTOR_CHUNK = 256  # aidetect_infer.Detector sorts windows by length within chunks of max(256, 16 x batch)


@pytest.fixture(scope="module")
def scores() -> dict[tuple[str, int], np.ndarray]:
    """Each run's P(AI), kept for the agreement checks of later runs."""
    return {}


def _sort_chunk(engine: str, batch_size: int) -> int | None:
    return max(DETECTOR_CHUNK, 16 * batch_size) if engine.startswith("aidetect-") else None


def _check_agreement(
    engine: Engine, batch_size: int, got: np.ndarray, scores: dict[tuple[str, int], np.ndarray]
) -> dict[str, float]:
    """Compare with the baseline and with the engine's own batch-16 scores; returns the measured differences."""
    statistic, limit = TOLERANCE.get(engine.precision, TOLERANCE["int8"])
    references = {}
    if engine.name in MINILM_ENGINES and engine.name != BASELINE and (BASELINE, batch_size) in scores:
        references["baseline"] = scores[(BASELINE, batch_size)]
    if batch_size != FULL_BATCH and (engine.name, FULL_BATCH) in scores:
        references[f"batch_{FULL_BATCH}"] = scores[(engine.name, FULL_BATCH)][: len(got)]
    measured = {}
    for what, reference in references.items():
        diff = np.abs(got - reference)
        measured[f"max_abs_diff_vs_{what}"] = float(diff.max())
        measured[f"mean_abs_diff_vs_{what}"] = float(diff.mean())
        stat, most = (statistic, limit)
        if what.startswith("batch_") and engine.name.startswith("aidetect-"):
            stat, most = INVARIANCE
        value = measured[f"{stat}_abs_diff_vs_{what}"]
        assert value <= most, f"{engine.name} vs {what}: {stat} |dP| {value:.3g} > {most}"
    return measured


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_throughput(
    benchmark: Any,
    engine_name: str,
    batch_size: int,
    engines: Callable[[str], Engine],
    models: Models,
    corpus: list[str],
    token_lengths: Callable[[str, list[str], int], list[int]],
    settings: Settings,
    scores: dict[tuple[str, int], np.ndarray],
) -> None:
    engine = engines(engine_name)
    texts = corpus if batch_size == FULL_BATCH else corpus[:SUBSET]
    max_length = min(MAX_LENGTH, engine.max_length)
    scorer = engine.scorer(batch_size, max_length)
    warm = texts[: max(batch_size, 8)]
    started = time.perf_counter()
    scorer(warm)
    estimate = (time.perf_counter() - started) * len(texts) / len(warm)
    lengths = token_lengths(engine_name, texts, max_length)
    arch = models.architecture(engine_name)
    work = workload(arch, lengths, batch_size, sort_chunk=_sort_chunk(engine_name, batch_size))
    benchmark.group = f"throughput, batch {batch_size}"
    benchmark.extra_info.update(
        kind="throughput", engine=engine_name, texts=len(texts), threads=THREADS, batch_size=batch_size,
        max_length=max_length, precision=engine.precision, disk_bytes=models.disk_bytes(engine_name), **work,
    )  # fmt: skip
    budget = BUDGET_FULL_S if batch_size == FULL_BATCH else BUDGET_SUBSET_S
    rounds = settings.rounds(estimate, budget, least=1, most=3)
    timed = CpuTimed(scorer)
    got = benchmark.pedantic(timed, args=(texts,), rounds=rounds, iterations=1)
    benchmark.extra_info["cpu_s"] = timed.median()
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == (len(texts),)
    assert np.all(np.isfinite(got)) and np.all((got >= 0.0) & (got <= 1.0))
    benchmark.extra_info.update(_check_agreement(engine, batch_size, got, scores))
    scores[(engine_name, batch_size)] = got
