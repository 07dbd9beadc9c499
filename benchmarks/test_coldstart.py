"""Cold start: a fresh process, from its start to the first prediction (imports, model load, first call).

Each round spawns ``python -m benchmarks.probe``, which exits the moment its first prediction is printed, so
the timed wall clock is spawn to first prediction. The files are in the OS page cache after the first round
(the median of the rounds is reported); ``extra_info`` holds the median import, load and first-call times.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.conftest import Settings
from benchmarks.engines import ENGINES, MAX_LENGTH, THREADS
from benchmarks.models import Models

ROUNDS = 3


@pytest.mark.parametrize("engine_name", ENGINES)
def test_coldstart(
    benchmark: Any,
    engine_name: str,
    models: Models,
    require: Callable[[str], None],
    probe: Callable[..., dict[str, Any]],
    settings: Settings,
) -> None:
    require(engine_name)
    results: list[dict[str, Any]] = []

    def once() -> dict[str, Any]:
        result = probe(engine_name, "--max-length", str(MAX_LENGTH), "--batch-size", "1")
        results.append(result)
        return result

    benchmark.group = "cold start"
    rounds = 1 if settings.quick else ROUNDS
    benchmark.pedantic(once, rounds=rounds, iterations=1)
    median = {k: statistics.median(r[k] for r in results) for k in ("import_s", "load_s", "first_call_s")}
    to_first = statistics.median(r["first_prediction"] - r["spawned"] for r in results)
    benchmark.extra_info.update(
        kind="coldstart", engine=engine_name, texts=1, threads=THREADS, batch_size=1, max_length=MAX_LENGTH,
        to_first_prediction_s=to_first, rss_loaded_mb=statistics.median(r["rss_loaded_mb"] for r in results),
        **median,
    )  # fmt: skip
    assert all(0.0 < r["first_prediction"] - r["spawned"] < 600 for r in results)
