"""The machine's measured peak: a large fp32 matrix product (numpy) and a u8 x s8 one (ONNX Runtime).

The report divides each engine's useful FLOPs by its time and compares the result with these (the fastest
round, ``min``), for fp32 engines against the fp32 peak and for int8 engines against the int8 one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.conftest import Settings
from benchmarks.engines import THREADS
from benchmarks.roofline import PEAK_SIZE, fp32_matmul, int8_matmul

ROUNDS = 10


def test_peak_fp32_matmul(benchmark: Any, settings: Settings) -> None:
    run, flops = fp32_matmul(PEAK_SIZE, threads=THREADS)
    benchmark.group = "peak"
    benchmark.extra_info.update(kind="peak", precision="fp32", flops=flops, threads=THREADS, size=PEAK_SIZE)
    out = benchmark.pedantic(run, rounds=3 if settings.quick else ROUNDS, iterations=1, warmup_rounds=1)
    assert out.shape == (PEAK_SIZE, PEAK_SIZE) and np.all(np.isfinite(out))


def test_peak_int8_matmul(benchmark: Any, settings: Settings, tmp_path: Path) -> None:
    run, ops, (activation, weight) = int8_matmul(tmp_path, PEAK_SIZE, threads=THREADS)
    benchmark.group = "peak"
    benchmark.extra_info.update(kind="peak", precision="int8", flops=ops, threads=THREADS, size=PEAK_SIZE)
    out = benchmark.pedantic(run, rounds=3 if settings.quick else ROUNDS, iterations=1, warmup_rounds=1)[0]
    assert out.shape == (PEAK_SIZE, PEAK_SIZE) and out.dtype == np.int32
    rows = activation[:4].astype(np.int64) @ weight.astype(np.int64)  # exact integer reference
    np.testing.assert_array_equal(out[:4], rows)
