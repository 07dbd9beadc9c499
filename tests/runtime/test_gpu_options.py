"""GPU provider options and the diagnosis of what a machine lacks for CUDA, without a GPU."""

from __future__ import annotations

import warnings

import pytest

from aidetect_infer import Detector, gpu
from aidetect_infer.errors import InvalidValueError
from aidetect_infer.gpu import GpuOptions
from aidetect_infer.session import CPU, CUDA, TENSORRT, resolve_providers

GPU_BUILD = [TENSORRT, CUDA, CPU]
DEFAULT_CUDA = {
    "device_id": "0",
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_algo_search": "DEFAULT",
    "do_copy_in_default_stream": "1",
}


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
