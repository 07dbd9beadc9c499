"""The CUDA path, tested without a GPU: options passed to ONNX Runtime, fp16 variant selection, IOBinding,
the errors and the fallback, the fp16 bundle's parity on the CPU, the GPU benchmark's dry run.

A GPU machine is imitated by reporting CUDA among the available providers and wrapping real CPU sessions in
one that reports the providers it was asked for, as ONNX Runtime does when CUDA loads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aidetect_infer import Detector, gpu
from aidetect_infer.errors import BundleError, InvalidInputError, ProviderUnavailableError
from aidetect_infer.gpu import GpuOptions
from aidetect_infer.session import (
    CPU,
    CUDA,
    TENSORRT,
    create_session,
    run_logits,
    validate_graph,
)

REPO = Path(__file__).resolve().parents[2]
GPU_BUILD = [TENSORRT, CUDA, CPU]
REAL_SESSION = ort.InferenceSession


def _load_gpubench() -> Any:
    spec = importlib.util.spec_from_file_location("gpubench", REPO / "benchmarks" / "gpu" / "gpubench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpubench = _load_gpubench()


@pytest.fixture(scope="module")
def variants(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A parent of ``fp32/`` (the tiny bundle) and ``fp16/`` (converted by the export code)."""
    parent = tmp_path_factory.mktemp("cuda_variants")
    shutil.copytree(tiny_bundle, parent / "fp32")
    gpubench.fp16_variant(parent / "fp32", parent / "fp16")
    return parent


class HostBinding:
    """An IOBinding that keeps "device" tensors on the host (no GPU here) and records every step."""

    def __init__(self, real: Any, log: list[tuple]) -> None:
        self.real, self.log = real, log

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.log.append(("bind_input", name))
        self.real.bind_ortvalue_input(name, value)

    def bind_output(self, name: str, device: str, device_id: int) -> None:
        self.log.append(("bind_output", name, device, device_id))
        self.real.bind_output(name, "cpu")

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        self.log.append(("copy_out",))
        return self.real.copy_outputs_to_cpu()


class FakeGpuSession:
    """A real CPU session that reports the providers it was asked for (``loads``) or only the CPU, and runs
    IOBinding through :class:`HostBinding`."""

    def __init__(
        self, path: str, *, sess_options: Any, providers: list[str], provider_options: list[dict], loads: bool
    ):
        self._real = REAL_SESSION(path, sess_options=sess_options, providers=[CPU])
        self._providers = list(providers) if loads else [CPU]
        self._options = {name: dict(opts) for name, opts in zip(providers, provider_options, strict=True)}
        self.log: list[tuple] = []

    def get_providers(self) -> list[str]:
        return self._providers

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {name: self._options.get(name, {}) for name in self._providers}

    def io_binding(self) -> HostBinding:
        return HostBinding(self._real.io_binding(), self.log)

    def run_with_iobinding(self, binding: HostBinding) -> None:
        self.log.append(("run_with_iobinding",))
        self._real.run_with_iobinding(binding.real)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("run",))
        return self._real.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def placed(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Records every tensor placed on a device (shape, dtype, device, id); the data stays on the host."""
    log: list[tuple] = []
    from_numpy = ort.OrtValue.ortvalue_from_numpy

    def place(array: np.ndarray, device: str = "cpu", device_id: int = 0) -> Any:
        log.append((array.shape, array.dtype, device, device_id))
        return from_numpy(array)

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(place))
    return log


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, placed: list[tuple]) -> Any:
    """Pretend to be a GPU machine; returns a controller recording every session requested."""

    class Controller:
        loads = True  # False: CUDA is offered but silently not loaded
        fails = False  # True: creating a session with a GPU provider raises (no device)
        calls: list[dict[str, Any]] = []
        sessions: list[FakeGpuSession] = []

        def session(self, path: str, sess_options: Any = None, providers: Any = None, provider_options: Any = None):
            self.calls.append({"path": path, "providers": list(providers), "options": list(provider_options)})
            if self.fails and set(providers) & {CUDA, TENSORRT}:
                raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
            session = FakeGpuSession(
                path,
                sess_options=sess_options,
                providers=providers,
                provider_options=provider_options,
                loads=self.loads,
            )
            self.sessions.append(session)
            return session

    controller = Controller()
    controller.calls, controller.sessions = [], []
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", controller.session)
    monkeypatch.setattr(gpu, "installed_ort_distributions", lambda: ("onnxruntime-gpu",))
    return controller


# --- provider options reach the session -------------------------------------------------------------------


def test_detector_passes_options_and_binds_on_the_device(variants, fake_gpu):
    detector = Detector.from_pretrained(variants, provider="cuda", threads=1, gpu_options=GpuOptions(device_id=1))
    (call,) = fake_gpu.calls
    assert call["providers"] == [CUDA, CPU]
    assert call["options"] == [GpuOptions(device_id=1).cuda(), {}]  # the exact dicts: test_gpu_options.py
    assert detector.providers == [CUDA, CPU]
    graph = detector._graph
    assert (graph.io_binding, graph.device, graph.device_id) == (True, "cuda", 1)


# --- variant selection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["cuda", "tensorrt", "auto"])
def test_fp16_is_chosen_on_a_gpu(variants, fake_gpu, provider):
    detector = Detector.from_pretrained(variants, provider=provider, threads=1)
    assert detector.metadata.precision == "fp16"
    assert Path(fake_gpu.calls[-1]["path"]).parent == variants / "fp16"


def test_cpu_keeps_fp32_and_variant_overrides(variants, fake_gpu):
    assert Detector.from_pretrained(variants, provider="cpu", threads=1).metadata.precision == "fp32"
    assert Detector.from_pretrained(variants, provider="cuda", variant="fp32", threads=1).metadata.precision == "fp32"


def test_auto_on_a_cpu_build_keeps_fp32(variants):
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    detector = Detector.from_pretrained(variants, provider="auto", threads=1)
    assert detector.metadata.precision == "fp32"
    assert detector.providers == [CPU]


# --- fallback and errors --------------------------------------------------------------------------------------


def test_auto_falls_back_when_cuda_does_not_load(variants, fake_gpu, caplog):
    fake_gpu.loads = False
    with caplog.at_level(logging.INFO, logger="aidetect_infer"):
        detector = Detector.from_pretrained(variants, provider="auto", threads=1)
    assert detector.providers == [CPU]
    assert detector.metadata.precision == "fp32", "the variant chosen for the GPU is swapped for the CPU one"
    assert not detector._graph.io_binding
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "provider='auto'" in r.getMessage()]
    assert len(warned) == 1 and "did not load, falling back to the CPU" in warned[0].getMessage()
    assert detector.predict_proba(["a short text"]).shape == (1,)


def test_auto_falls_back_when_cuda_fails_to_start(variants, fake_gpu, caplog):
    fake_gpu.fails = True
    with caplog.at_level(logging.WARNING, logger="aidetect_infer.session"):
        detector = Detector.from_pretrained(variants, provider="auto", threads=1)
    assert detector.providers == [CPU]
    assert "no CUDA-capable device" in caplog.text and "falling back to the CPU" in caplog.text


def test_explicit_cuda_that_fails_to_start_raises(variants, fake_gpu):
    fake_gpu.fails = True
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider not available: it failed to start"):
        Detector.from_pretrained(variants, provider="cuda", threads=1)


def test_explicit_cuda_that_silently_falls_back_raises(variants, fake_gpu):
    fake_gpu.loads = False
    with pytest.raises(ProviderUnavailableError, match="installed but did not load.*on this machine: "):
        Detector.from_pretrained(variants, provider="cuda", threads=1)


def test_a_corrupt_model_is_a_bundle_error_on_the_gpu_too(tmp_path, fake_gpu):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00not a model")
    fake_gpu.fails = True
    with pytest.raises(BundleError, match="ONNX Runtime cannot load it"):
        create_session(bad, provider="cuda")


def test_cuda_on_this_machine_names_what_is_missing(tiny_bundle):
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProviderUnavailableError) as caught:
        Detector.from_pretrained(tiny_bundle, provider="cuda")
    message = str(caught.value)
    assert "onnxruntime-gpu is not installed" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in message
    if not gpu.try_load("libcuda.so.1"):
        assert "no NVIDIA driver: libcuda.so.1" in message


# --- IOBinding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bundle_name", ["tiny_bundle", "tiny_bert_bundle"])
def test_io_binding_on_the_cpu_matches_session_run(request, sample_texts, bundle_name):
    bundle = request.getfixturevalue(bundle_name)
    texts = sample_texts[:24] + ["", "x " * 400]
    plain = Detector.from_pretrained(bundle, provider="cpu", threads=1, batch_size=5)
    bound = Detector.from_pretrained(bundle, provider="cpu", threads=1, batch_size=5, io_binding=True)
    assert bound._graph.io_binding and bound._graph.device == "cpu" and not plain._graph.io_binding
    np.testing.assert_allclose(bound.predict_proba(texts), plain.predict_proba(texts), atol=1e-6, rtol=0)


def test_io_binding_flag_must_be_a_bool(tiny_bundle):
    with pytest.raises(InvalidInputError, match="io_binding must be True, False or None"):
        Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, io_binding="yes")


def test_io_binding_serves_threads(tiny_bundle, sample_texts):
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, batch_size=3, io_binding=True)
    expected = detector.predict_proba(sample_texts[:12])
    results: list[np.ndarray] = [np.empty(0)] * 4

    def work(slot: int) -> None:
        results[slot] = detector.predict_proba(sample_texts[:12])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_cuda_binding_copies_each_tensor_once(tiny_bert_bundle, placed):
    """On CUDA each input is copied to the device once, the logits stay there until one copy back."""
    session = FakeGpuSession(
        str(tiny_bert_bundle / "model.onnx"),
        sess_options=None,
        providers=[CUDA, CPU],
        provider_options=[{"device_id": "1"}, {}],
        loads=True,
    )
    spec = validate_graph(session)
    assert (spec.io_binding, spec.device, spec.device_id) == (True, "cuda", 1)
    ids = np.array([[2, 40, 41, 42, 3], [2, 50, 3, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    logits = run_logits(session, spec, ids, mask)
    names = spec.inputs
    assert len(names) == 3  # input_ids, attention_mask and the zeros of token_type_ids
    assert placed == [((2, 5), np.int64, "cuda", 1)] * len(names)
    assert session.log == [
        *[("bind_input", n) for n in names],
        ("bind_output", "logits", "cuda", 1),
        ("run_with_iobinding",),
        ("copy_out",),
    ]
    expected = REAL_SESSION(str(tiny_bert_bundle / "model.onnx"), providers=[CPU]).run(["logits"], spec.feed(ids, mask))
    np.testing.assert_array_equal(logits, expected[0].astype(np.float64))


def test_detector_on_a_gpu_scores_through_the_binding(variants, fake_gpu, sample_texts):
    detector = Detector.from_pretrained(variants, provider="cuda", threads=1, variant="fp32", batch_size=4)
    texts = sample_texts[:10]
    scores = detector.predict_proba(texts)
    log = fake_gpu.sessions[-1].log
    assert ("run",) not in log
    batches = log.count(("run_with_iobinding",))
    assert batches >= 3 and log.count(("copy_out",)) == batches  # 10 texts in batches of 4, plus the load probe
    reference = Detector.from_pretrained(variants, provider="cpu", threads=1, variant="fp32")
    np.testing.assert_allclose(scores, reference.predict_proba(texts), atol=1e-6, rtol=0)


# --- the fp16 bundle ------------------------------------------------------------------------------------------


def test_fp16_bundle_is_fp16_and_matches_fp32_on_the_cpu(variants, sample_texts):
    model = onnx.load(str(variants / "fp16" / "model.onnx"))
    weights = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)]
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in weights) > len(weights) // 2
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    fp32 = Detector.from_pretrained(variants, provider="cpu", threads=1, variant="fp32", batch_size=16)
    fp16 = Detector.from_pretrained(variants, provider="cpu", threads=1, variant="fp16", batch_size=16)
    assert fp16.metadata.precision == "fp16" and fp32.metadata.precision == "fp32"
    texts = sample_texts[:96]
    reference, got = fp32.predict_proba(texts), fp16.predict_proba(texts)
    diff = np.abs(got.astype(np.float64) - reference)
    assert diff.max() < 1e-2
    assert diff.max() > 0, "an fp16 graph that gives fp32's exact scores was not converted"
    assert np.ptp(reference) > 0.05, "scores must spread for the comparison to mean anything"


# --- the GPU benchmark's code paths, dry run on the CPU -------------------------------------------------------


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_the_cpu(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu" / "driver.py"), str(out), "--device", "cpu"]
    command += [
        "--model",
        str(tiny_bundle),
        "--batches",
        "1",
        "4",
        "--rounds",
        "1",
        "--parity-texts",
        "16",
        "--threads",
        "1",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=_pythonpath())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "Dry run on the CPU" in report and "| aidetect-fp16 |" in report and "transformers-pytorch-fp32" in report
    summary = gpubench.summarize(json.loads((out / "benchmark.json").read_text()))
    assert set(summary["throughput"]) == {"aidetect-fp16", "aidetect-fp32", "transformers-pytorch-fp32"}
    assert all(set(per) == {"1", "4"} for per in summary["throughput"].values())
    assert set(summary["latency"]) == set(summary["throughput"])


def _pythonpath() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
