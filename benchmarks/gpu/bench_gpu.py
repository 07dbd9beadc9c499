"""pytest-benchmark cases of the GPU benchmark: throughput per batch size and latency at 128 tokens.

Not collected by a plain ``pytest`` run (the file name does not start with ``test_``): ``driver.py`` runs it
with ``$AIDETECT_GPU_BENCH`` naming its :class:`gpubench.Config`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gpubench
import pytest

if not os.environ.get(gpubench.CONFIG_ENV):
    pytest.skip(f"${gpubench.CONFIG_ENV} is not set: run benchmarks/gpu/run.sh", allow_module_level=True)

CONFIG = gpubench.Config.load(os.environ[gpubench.CONFIG_ENV])
WARMUP_ROUNDS = 3
LATENCY_ROUNDS_FACTOR = 3


@pytest.fixture(scope="module")
def engines() -> Callable[[str, int], gpubench.Engine]:
    """``engines(name, batch_size)``, each engine built once (sessions and models stay loaded)."""
    if CONFIG.device == "cuda":
        gpubench.prepare_cuda()
    built: dict[tuple[str, int], gpubench.Engine] = {}

    def get(name: str, batch_size: int) -> gpubench.Engine:
        if (name, batch_size) not in built:
            built[name, batch_size] = gpubench.make_engine(CONFIG, name, batch_size)
        return built[name, batch_size]

    return get


@pytest.mark.parametrize("batch", CONFIG.batches)
@pytest.mark.parametrize("engine", CONFIG.engines())
def test_throughput(benchmark, engines, engine: str, batch: int) -> None:
    run = engines(engine, batch)
    texts = CONFIG.texts[:batch]
    benchmark.group = f"throughput batch {batch}"
    benchmark.extra_info.update(kind="throughput", engine=engine, batch=batch, texts=len(texts))
    scores = benchmark.pedantic(run, args=(texts,), rounds=CONFIG.rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    assert len(scores) == len(texts)


@pytest.mark.parametrize("engine", CONFIG.engines())
def test_latency(benchmark, engines, engine: str) -> None:
    run = engines(engine, 1)
    benchmark.group = f"latency {gpubench.LATENCY_TOKENS} tokens"
    benchmark.extra_info.update(kind="latency", engine=engine, batch=1, texts=1, tokens=gpubench.LATENCY_TOKENS)
    texts = [CONFIG.latency_text]
    rounds = LATENCY_ROUNDS_FACTOR * CONFIG.rounds  # more rounds for a stable 95th percentile
    scores = benchmark.pedantic(run, args=(texts,), rounds=rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    assert len(scores) == 1
