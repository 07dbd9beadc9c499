"""Peak resident memory per engine, measured in a fresh process that loads the engine and scores texts.

The process scores the corpus's first 64 texts at batch size 16 (truncated at the common ``max_length``) and
reports its peak resident set size (``VmHWM``); ``rss_loaded_mb`` is the resident size once the model is
loaded, before the first prediction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.engines import ENGINES, MAX_LENGTH, THREADS
from benchmarks.models import Models

TEXTS = 64
BATCH_SIZE = 16


@pytest.fixture(scope="module")
def texts_file(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """The texts every engine scores, as a JSON file, and their count."""
    texts = corpus[:TEXTS]
    path = tmp_path_factory.mktemp("memory") / "texts.json"
    path.write_text(json.dumps(texts), encoding="utf-8")
    return str(path), len(texts)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_memory(
    benchmark: Any,
    engine_name: str,
    models: Models,
    require: Callable[[str], None],
    probe: Callable[..., dict[str, Any]],
    texts_file: tuple[str, int],
    token_lengths: Callable[[str, list[str], int], list[int]],
    corpus: list[str],
) -> None:
    require(engine_name)
    path, count = texts_file
    args = ("--texts", path, "--batch-size", str(BATCH_SIZE), "--max-length", str(MAX_LENGTH))
    benchmark.group = "peak memory"
    result = benchmark.pedantic(lambda: probe(engine_name, *args), rounds=1, iterations=1)
    assert result["texts"] == count and result["peak_rss_mb"] >= result["rss_loaded_mb"] > 0
    benchmark.extra_info.update(
        kind="memory", engine=engine_name, texts=count, threads=THREADS, batch_size=BATCH_SIZE,
        max_length=MAX_LENGTH, tokens=sum(token_lengths(engine_name, corpus[:count], MAX_LENGTH)),
        peak_rss_mb=result["peak_rss_mb"], rss_loaded_mb=result["rss_loaded_mb"],
        disk_bytes=models.disk_bytes(engine_name),
    )  # fmt: skip
