"""Latency: one text per call, 16 to 512 tokens (special tokens included), median and p95 per engine.

The text is a prefix of the corpus's longest text cut to exactly the wanted token count, so no engine
truncates it. An engine whose model takes fewer tokens than the text (``aidetect-default`` at 512 tokens when
its bundle's ``max_length`` is 256) scores it as ``Detector`` does by default, in overlapping windows, all in
one call; ``windows`` in ``extra_info`` says so. ``p95_s`` is computed from the rounds' timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import CpuTimed, Settings
from benchmarks.corpus import text_of_tokens
from benchmarks.engines import ENGINES, THREADS, Engine
from benchmarks.models import CACHE_DIR, Models
from benchmarks.roofline import sequence_flops

TOKENS = (16, 64, 128, 256, 512)
BUDGET_S = 3.0  # seconds per benchmark; rounds adapt to it (10 to 200)
WARMUP = 3


@pytest.fixture(scope="module")
def source_text() -> str:
    """The longest text of the full corpus (well over 512 tokens)."""
    from benchmarks.corpus import CorpusUnavailableError, load_corpus

    try:
        return max(load_corpus(CACHE_DIR), key=len)
    except CorpusUnavailableError as exc:
        pytest.skip(str(exc))


def _windows(engine: Engine, tokens: int) -> int:
    """How many windows ``Detector`` scores for a text of ``tokens`` tokens (``[CLS]``/``[SEP]`` framing)."""
    from aidetect_infer.tokenization import window_spans

    content = engine.max_length - 2
    return len(window_spans(tokens - 2, content, min(engine.window_stride or content, content)))


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_latency(
    benchmark: Any,
    engine_name: str,
    tokens: int,
    engines: Callable[[str], Engine],
    models: Models,
    tokenizer_of: Callable[[str], Any],
    source_text: str,
    settings: Settings,
) -> None:
    engine = engines(engine_name)
    text = text_of_tokens(tokenizer_of(engine_name), source_text, tokens)
    windowed = tokens > engine.max_length
    if windowed:
        scorer = engine.scorer(16, engine.max_length, truncation=False)
    else:
        scorer = engine.scorer(1, tokens)
    for _ in range(WARMUP):
        started = time.perf_counter()
        scorer([text])
    estimate = time.perf_counter() - started
    arch = models.architecture(engine_name)
    windows = _windows(engine, tokens) if windowed else 1
    length = engine.max_length if windowed else tokens
    benchmark.group = f"latency, {tokens} tokens"
    benchmark.extra_info.update(
        kind="latency", engine=engine_name, texts=1, tokens=tokens, threads=THREADS, batch_size=1,
        max_length=length, precision=engine.precision, windows=windows,
        flops=windows * sequence_flops(arch, length),
    )  # fmt: skip
    rounds = settings.rounds(estimate, BUDGET_S, least=10, most=200)
    timed = CpuTimed(scorer)
    got = benchmark.pedantic(timed, args=([text],), rounds=rounds, iterations=1)
    benchmark.extra_info["cpu_s"] = timed.median()
    assert np.asarray(got).shape == (1,) and 0.0 <= float(got[0]) <= 1.0
    data = benchmark.stats.stats.data
    benchmark.extra_info["p95_s"] = float(np.percentile(data, 95))
