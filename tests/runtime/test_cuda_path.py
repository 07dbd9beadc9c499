"""The CUDA path, tested without a GPU: options passed to ONNX Runtime, fp16 variant selection, IOBinding,
the errors and the fallback, the diagnosis of what a machine lacks, and the fp16 bundle's parity on the CPU.

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
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aidetect_infer import Detector, gpu
from aidetect_infer.errors import BundleError, InvalidInputError, InvalidValueError, ProviderUnavailableError
from aidetect_infer.gpu import GpuOptions
from aidetect_infer.session import (
    CPU,
    CUDA,
    TENSORRT,
    create_session,
    resolve_providers,
    run_logits,
    validate_graph,
)

REPO = Path(__file__).resolve().parents[2]
GPU_BUILD = [TENSORRT, CUDA, CPU]
REAL_SESSION = ort.InferenceSession
DEFAULT_CUDA = {
    "device_id": "0",
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_algo_search": "DEFAULT",
    "do_copy_in_default_stream": "1",
}


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


# --- provider options ---------------------------------------------------------------------------------------


def test_default_cuda_options():
    assert GpuOptions().cuda() == DEFAULT_CUDA
    assert GpuOptions().tensorrt() == {"device_id": "0", "trt_fp16_enable": "True"}


def test_chosen_options_reach_both_providers():
    options = GpuOptions(device_id=1, memory_limit=2**30, arena_extend_strategy="kNextPowerOfTwo", tensorrt_cache="c")
    assert options.cuda() == {
        **DEFAULT_CUDA,
        "device_id": "1",
        "arena_extend_strategy": "kNextPowerOfTwo",
        "gpu_mem_limit": str(2**30),
    }
    assert options.tensorrt() == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "c",
        "trt_max_workspace_size": str(2**30),
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"device_id": -1},
        {"device_id": True},
        {"device_id": "0"},
        {"memory_limit": 0},
        {"memory_limit": 1.5},
        {"arena_extend_strategy": "grow"},
        {"cudnn_conv_algo_search": "OFF"},
    ],
)
def test_bad_gpu_options_are_refused(kwargs):
    with pytest.raises(InvalidValueError, match=next(iter(kwargs))):
        GpuOptions(**kwargs)


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("cuda", [CUDA, CPU]),
        ("auto", [CUDA, CPU]),
        ("tensorrt", [TENSORRT, CUDA, CPU]),
        ("cpu", [CPU]),
    ],
)
def test_resolved_providers_carry_their_options(provider, expected):
    options = GpuOptions(device_id=2)
    specs = resolve_providers(provider, GPU_BUILD, options)
    assert [name for name, _ in specs] == expected
    wanted = {CUDA: options.cuda(), TENSORRT: options.tensorrt(), CPU: {}}
    assert all(opts == wanted[name] for name, opts in specs)


def test_detector_passes_options_and_binds_on_the_device(variants, fake_gpu):
    detector = Detector.from_pretrained(variants, provider="cuda", threads=1, gpu_options=GpuOptions(device_id=1))
    (call,) = fake_gpu.calls
    assert call["providers"] == [CUDA, CPU]
    assert call["options"] == [{**DEFAULT_CUDA, "device_id": "1"}, {}]
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


# --- diagnosis and package conflicts --------------------------------------------------------------------------


def _loader(present: set[str]):
    return lambda name: name in present


CUDA12 = {"libcuda.so.1", "libcudart.so.12", "libcublasLt.so.12", "libcublas.so.12", "libcudnn.so.9"}


def test_diagnosis_of_a_bare_machine():
    message = gpu.describe_missing(CUDA, [CPU], distributions=["onnxruntime"], cuda_version="", load=_loader(set()))
    assert "onnxruntime-gpu is not installed (found onnxruntime)" in message
    assert "no NVIDIA driver: libcuda.so.1" in message
    assert "CUDA 13 or CUDA 12 libraries not found" in message and "libcudnn.so.9" in message


def _diagnose_gpu_build(present: set[str], provider: str = CUDA, build: str = "12.8", driver: str = "13.0") -> str:
    """The diagnosis on a machine with onnxruntime-gpu (built for CUDA ``build``) and the libraries ``present``."""
    return gpu.describe_missing(
        provider,
        GPU_BUILD,
        distributions=["onnxruntime-gpu"],
        cuda_version=build,
        driver_version=driver,
        load=_loader(present),
    )


def test_diagnosis_names_only_what_is_missing():
    message = _diagnose_gpu_build(CUDA12 - {"libcudnn.so.9"})
    assert message.startswith("CUDA 12 libraries not found: libcudnn.so.9 (")
    assert "onnxruntime-gpu" not in message.split("(")[0] and "driver" not in message
    assert _diagnose_gpu_build(CUDA12) == "the driver, the CUDA libraries and onnxruntime-gpu were all found"
    old_driver = _diagnose_gpu_build(CUDA12, build="13.0", driver="12.4")
    assert old_driver.startswith("the NVIDIA driver supports CUDA 12.4 but onnxruntime was built for CUDA 13.0")
    assert "libcudart.so.13" in old_driver
    assert "libnvinfer.so.10" in _diagnose_gpu_build(CUDA12, provider=TENSORRT)


def test_both_packages_installed_is_a_conflict():
    assert gpu.conflict_message(["onnxruntime"]) is None
    assert gpu.conflict_message(["onnxruntime-gpu", "numpy"]) is None
    message = gpu.conflict_message(["onnxruntime", "onnxruntime_gpu"])
    assert message is not None
    assert message.startswith("onnxruntime and onnxruntime-gpu are all installed")
    assert gpu.CONFLICT_FIX in message
    diagnosis = gpu.describe_missing(
        CUDA, [CPU], distributions=["onnxruntime", "onnxruntime-gpu"], cuda_version="", load=_loader(CUDA12)
    )
    assert diagnosis == message


def test_conflict_is_reported_when_a_gpu_is_wanted(tiny_bundle, monkeypatch, caplog):
    monkeypatch.setattr(gpu, "installed_ort_distributions", lambda: ("onnxruntime", "onnxruntime-gpu"))
    with pytest.warns(RuntimeWarning, match="share the `onnxruntime` package directory"):
        Detector.from_pretrained(tiny_bundle, provider="auto", threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CPU provider does not care which package is installed
        Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)


def test_installed_distributions_are_read_from_metadata():
    from importlib.metadata import version

    found = gpu.installed_ort_distributions()
    assert found and set(found) <= gpu.ORT_DISTRIBUTIONS
    for name in found:
        assert version(name)


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
