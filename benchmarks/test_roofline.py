"""The machine's measured peak: large matrix products in fp32 (numpy, ONNX Runtime) and int8 (ONNX Runtime).

The report divides each engine's FLOPs by its time and compares the result with these (the fastest round,
``min``; the higher of the two fp32 figures), for fp32 engines against the fp32 peak and for int8 engines
against the int8 one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import Settings
from benchmarks.engines import THREADS
from benchmarks.roofline import PEAK_SIZE, fp32_matmul, ort_matmul

ROUNDS = 10


def _info(benchmark: Any, precision: str, source: str, flops: int) -> None:
    benchmark.group = "peak"
    benchmark.extra_info.update(
        kind="peak", precision=precision, source=source, flops=flops, threads=THREADS, size=PEAK_SIZE
    )


def test_peak_fp32_matmul_numpy(benchmark: Any, settings: Settings) -> None:
    run, flops = fp32_matmul(PEAK_SIZE, threads=THREADS)
    _info(benchmark, "fp32", "numpy", flops)
    out = benchmark.pedantic(run, rounds=3 if settings.quick else ROUNDS, iterations=1, warmup_rounds=1)
    assert out.shape == (PEAK_SIZE, PEAK_SIZE) and np.all(np.isfinite(out))


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_peak_matmul_onnxruntime(benchmark: Any, settings: Settings, tmp_path: Path, precision: str) -> None:
    run, ops, (activation, weight) = ort_matmul(tmp_path, precision, PEAK_SIZE, threads=THREADS)
    _info(benchmark, precision, "onnxruntime", ops)
    out = benchmark.pedantic(run, rounds=3 if settings.quick else ROUNDS, iterations=1, warmup_rounds=1)[0]
    assert out.shape == (PEAK_SIZE, PEAK_SIZE)
    if precision == "int8":  # exact integer reference on a few rows
        np.testing.assert_array_equal(out[:4], activation[:4].astype(np.int64) @ weight.astype(np.int64))
    else:
        np.testing.assert_allclose(out[:4], activation[:4] @ weight, rtol=1e-3, atol=1e-2)
