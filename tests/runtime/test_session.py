"""Provider resolution and checking, session options, graph inputs read from the graph."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from aidetect_infer.errors import BundleError, InvalidValueError, ProviderUnavailableError
from aidetect_infer.session import (
    CPU,
    CUDA,
    TENSORRT,
    check_providers,
    create_session,
    default_threads,
    resolve_providers,
    session_options,
    validate_graph,
)

from .graphs import pooled_graph

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_BUILD = ["AzureExecutionProvider", "CPUExecutionProvider"]


def _names(specs):
    return [name for name, _ in specs]


@pytest.mark.parametrize(
    ("provider", "available", "expected"),
    [
        ("cpu", GPU_BUILD, [CPU]),
        ("auto", GPU_BUILD, [CUDA, CPU]),
        ("auto", CPU_BUILD, [CPU]),
        ("AUTO", CPU_BUILD, [CPU]),
        ("cuda", GPU_BUILD, [CUDA, CPU]),
        ("tensorrt", GPU_BUILD, [TENSORRT, CUDA, CPU]),
        ("tensorrt", [TENSORRT, CPU], [TENSORRT, CPU]),
    ],
)
def test_resolve_providers(provider, available, expected):
    specs = resolve_providers(provider, available)
    assert _names(specs) == expected
    assert all(isinstance(options, dict) for _, options in specs)


@pytest.mark.parametrize(("provider", "missing"), [("cuda", CUDA), ("tensorrt", TENSORRT)])
def test_explicit_provider_missing_from_the_build_raises(provider, missing):
    with pytest.raises(ProviderUnavailableError, match=rf"{missing} not available: install aidetect-infer\[gpu\]"):
        resolve_providers(provider, CPU_BUILD)


@pytest.mark.parametrize("provider", ["gpu", "", None, 1, "cuda:0"])
def test_unknown_provider_names_are_refused(provider):
    with pytest.raises(InvalidValueError, match="provider must be one of"):
        resolve_providers(provider, GPU_BUILD)


def test_check_providers_refuses_a_silent_cpu_fallback():
    """ONNX Runtime falls back to the CPU when CUDA fails to load; an explicit request must not."""
    with pytest.raises(ProviderUnavailableError, match="installed but did not load"):
        check_providers("cuda", [CPU])
    with pytest.raises(ProviderUnavailableError, match=TENSORRT):
        check_providers("tensorrt", [CUDA, CPU])
    check_providers("cuda", [CUDA, CPU])
    check_providers("cpu", [CPU])


def test_check_providers_logs_what_auto_got(caplog):
    with caplog.at_level(logging.INFO, logger="aidetect_infer.session"):
        check_providers("auto", [CPU])
    assert "CPUExecutionProvider" in caplog.text and "'auto'" in caplog.text


def test_session_options_are_explicit():
    options = session_options(3)
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.log_severity_level == 3
    assert session_options().intra_op_num_threads == default_threads() >= 1


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "4"])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(InvalidValueError, match="threads"):
        session_options(threads)


def test_inputs_are_read_from_the_graph(tmp_path):
    path = pooled_graph(tmp_path / "bert_like.onnx", inputs=("input_ids", "token_type_ids", "attention_mask"))
    session = create_session(path, provider="cpu", threads=1)
    spec = validate_graph(session)
    assert spec.inputs == ("input_ids", "token_type_ids", "attention_mask")
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    feed = spec.feed(ids, np.ones_like(ids))
    assert set(feed) == set(spec.inputs)
    assert feed["token_type_ids"].dtype == np.int64 and not feed["token_type_ids"].any()


def test_create_session_wraps_load_failures(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(BundleError, match="model.onnx: ONNX Runtime cannot load it"):
        create_session(bad, provider="cpu")
