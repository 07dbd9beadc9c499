"""CUDA and TensorRT: provider options, and what a machine lacks when a GPU provider cannot load.

Nothing here needs a GPU: the options are plain dictionaries for ``onnxruntime.InferenceSession``, and the
diagnosis only reads package metadata and tries to load shared libraries, the way ONNX Runtime itself does.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from aidetect_infer.errors import InvalidValueError

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PACKAGE = "onnxruntime-gpu"
# Distributions that all install the same ``onnxruntime`` import package: two of them in one environment
# overwrite each other's files.
ORT_DISTRIBUTIONS = frozenset(
    {
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxruntime-directml",
        "onnxruntime-openvino",
        "onnxruntime-qnn",
        "onnxruntime-rocm",
        "ort-nightly",
        "ort-nightly-gpu",
    }
)
ARENA_STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
CUDA_MAJORS = (13, 12)  # onnxruntime-gpu >= 1.27 on PyPI is built for CUDA 13, 1.19 to 1.26 for CUDA 12
CONFLICT_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"

Loader = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class GpuOptions:
    """Options of the CUDA and TensorRT execution providers (ignored on the CPU).

    Attributes:
        device_id: The GPU to run on (as numbered by CUDA).
        memory_limit: Bytes of GPU memory ONNX Runtime's arena may hold; ``None`` for no limit.
        arena_extend_strategy: ``"kSameAsRequested"`` grows the arena by what each allocation needs (tight
            memory with varying batch shapes); ``"kNextPowerOfTwo"`` is ONNX Runtime's own default.
        cudnn_conv_algo_search: ``"DEFAULT"`` turns cuDNN's convolution benchmarking off (the model has no
            convolutions, so the search would only cost start-up time); ``"HEURISTIC"``/``"EXHAUSTIVE"``.
        tensorrt_fp16: Let TensorRT build fp16 engines.
        tensorrt_cache: A directory for TensorRT engines, so later processes skip the engine build.

    Raises:
        InvalidValueError: A value out of range.
    """

    device_id: int = 0
    memory_limit: int | None = None
    arena_extend_strategy: str = "kSameAsRequested"
    cudnn_conv_algo_search: str = "DEFAULT"
    tensorrt_fp16: bool = True
    tensorrt_cache: str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.device_id) or self.device_id < 0:
            raise InvalidValueError(f"device_id must be a non-negative integer, got {self.device_id!r}")
        if self.memory_limit is not None and (not _is_int(self.memory_limit) or self.memory_limit < 1):
            raise InvalidValueError(
                f"memory_limit must be a positive number of bytes or None, got {self.memory_limit!r}"
            )
        if self.arena_extend_strategy not in ARENA_STRATEGIES:
            raise InvalidValueError(
                f"arena_extend_strategy must be one of {ARENA_STRATEGIES}, got {self.arena_extend_strategy!r}"
            )
        if self.cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
            raise InvalidValueError(
                f"cudnn_conv_algo_search must be one of {CONV_ALGO_SEARCH}, got {self.cudnn_conv_algo_search!r}"
            )

    def cuda(self) -> dict[str, str]:
        """The ``CUDAExecutionProvider`` options, as the strings ONNX Runtime parses."""
        options = {
            "device_id": str(self.device_id),
            "arena_extend_strategy": self.arena_extend_strategy,
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "do_copy_in_default_stream": "1",
        }
        if self.memory_limit is not None:
            options["gpu_mem_limit"] = str(self.memory_limit)
        return options

    def tensorrt(self) -> dict[str, str]:
        """The ``TensorrtExecutionProvider`` options."""
        options = {"device_id": str(self.device_id), "trt_fp16_enable": str(bool(self.tensorrt_fp16))}
        if self.tensorrt_cache is not None:
            options["trt_engine_cache_enable"] = "True"
            options["trt_engine_cache_path"] = str(self.tensorrt_cache)
        if self.memory_limit is not None:
            options["trt_max_workspace_size"] = str(self.memory_limit)
        return options


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@functools.lru_cache(maxsize=1)
def installed_ort_distributions() -> tuple[str, ...]:
    """The installed distributions that provide the ``onnxruntime`` package, sorted (read once per process)."""
    found = []
    for name in sorted(ORT_DISTRIBUTIONS):  # one look-up per name: far cheaper than listing every package
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def conflict_message(distributions: Sequence[str]) -> str | None:
    """Why several ONNX Runtime distributions in one environment break, or ``None`` when there is one.

    Args:
        distributions: Installed distribution names (see :func:`installed_ort_distributions`).

    Returns:
        A message naming the packages and the command that fixes it, or ``None``.
    """
    found = sorted({_normalize(d) for d in distributions} & ORT_DISTRIBUTIONS)
    if len(found) < 2:
        return None
    return (
        f"{' and '.join(found)} are all installed: they share the `onnxruntime` package directory, so the one "
        "installed last has overwritten the other's files and the CUDA provider may be missing or fail to load; "
        f"keep only one: `{CONFLICT_FIX}`"
    )


def warn_if_conflicting(distributions: Sequence[str] | None = None) -> str | None:
    """Warn (``warnings.warn`` and a log record) when conflicting ONNX Runtime packages are installed.

    Args:
        distributions: Installed distribution names; ``None`` reads them from this environment.

    Returns:
        The conflict message, or ``None`` when there is no conflict.
    """
    message = conflict_message(installed_ort_distributions() if distributions is None else distributions)
    if message is not None:
        logger.warning("%s", message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return message


def ort_cuda_version() -> str:
    """The CUDA version the installed onnxruntime was built with (``""`` for a CPU build)."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return ""
    return str(getattr(info, "cuda_version", "") or "")


def try_load(name: str) -> bool:
    """Whether the dynamic loader can open the shared library ``name`` (as ONNX Runtime will)."""
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def _driver_library() -> str:
    return "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def driver_cuda_version() -> str:
    """The newest CUDA version the NVIDIA driver supports (``"12.4"``), or ``""`` without a driver."""
    try:
        driver = ctypes.CDLL(_driver_library())
        version = ctypes.c_int(0)
        if driver.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return ""
    except (OSError, AttributeError):
        return ""
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def cuda_libraries(major: int, *, tensorrt: bool = False) -> list[str]:
    """The CUDA, cuDNN (and TensorRT) libraries the GPU providers of a CUDA ``major`` build open."""
    if sys.platform == "win32":
        names = [f"cudart64_{major}.dll", f"cublasLt64_{major}.dll", f"cublas64_{major}.dll", "cudnn64_9.dll"]
        return names + (["nvinfer_10.dll"] if tensorrt else [])
    names = [f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}", "libcudnn.so.9"]
    return names + (["libnvinfer.so.10"] if tensorrt else [])


def _pip_library_dirs() -> list[Path]:
    """Library folders of NVIDIA's pip packages (``site-packages/nvidia/*/lib``), where present."""
    site = Path(sysconfig.get_paths()["purelib"]) / "nvidia"
    return sorted(p for p in site.glob("**/lib") if p.is_dir()) if site.is_dir() else []


def missing_libraries(names: Iterable[str], load: Loader = try_load) -> tuple[list[str], list[str]]:
    """Split ``names`` into those the loader cannot open, and of those the ones NVIDIA's pip packages hold.

    Returns:
        ``(missing, in_pip_packages)``: libraries that do not load, and the subset found under
        ``site-packages/nvidia`` (``onnxruntime.preload_dlls()`` loads those).
    """
    missing = [name for name in names if not load(name)]
    dirs = _pip_library_dirs() if missing else []
    in_pip = [name for name in missing if any((d / name).is_file() for d in dirs)]
    return missing, in_pip


def describe_missing(
    provider: str,
    available: Sequence[str],
    *,
    distributions: Sequence[str] | None = None,
    cuda_version: str | None = None,
    driver_version: str | None = None,
    load: Loader = try_load,
) -> str:
    """Say what this machine lacks for ``provider``: onnxruntime-gpu, the NVIDIA driver, CUDA libraries.

    Args:
        provider: ``CUDAExecutionProvider`` or ``TensorrtExecutionProvider``.
        available: ``onnxruntime.get_available_providers()``.
        distributions: Installed ONNX Runtime distributions; ``None`` reads them from this environment.
        cuda_version: The CUDA version onnxruntime was built with; ``None`` reads it (``""``: a CPU build).
        driver_version: The CUDA version the driver supports; ``None`` asks the driver (``""``: unknown).
        load: Tries to open a shared library (tests pass a fake).

    Returns:
        One line of ``;``-separated findings, each naming what is missing and how to get it.
    """
    dists = installed_ort_distributions() if distributions is None else tuple(distributions)
    build = ort_cuda_version() if cuda_version is None else cuda_version
    findings: list[str] = []
    conflict = conflict_message(dists)
    if conflict is not None:
        findings.append(conflict)
    elif provider not in available:
        if GPU_PACKAGE not in {_normalize(d) for d in dists}:
            found = ", ".join(dists) or "no onnxruntime package"
            findings.append(f"onnxruntime-gpu is not installed (found {found}): `{CONFLICT_FIX}`")
        else:
            findings.append(f"the installed onnxruntime-gpu was built without {provider} (it offers {list(available)})")
    majors = [int(build.split(".")[0])] if build[:2].isdigit() else list(CUDA_MAJORS)
    if not load(_driver_library()):
        findings.append(f"no NVIDIA driver: {_driver_library()} cannot be loaded (is there an NVIDIA GPU?)")
    else:
        supported = driver_cuda_version() if driver_version is None else driver_version
        if supported[:2].isdigit() and len(majors) == 1 and int(supported.split(".")[0]) < majors[0]:
            findings.append(
                f"the NVIDIA driver supports CUDA {supported} but onnxruntime was built for CUDA {build}: "
                "update the driver, or install an onnxruntime-gpu built for your CUDA (docs/cuda.md)"
            )
    results = [(m, *missing_libraries(cuda_libraries(m, tensorrt=provider == TENSORRT), load)) for m in majors]
    if all(missing for _, missing, _ in results):
        major, missing, in_pip = min(results, key=lambda r: len(r[1]))
        wanted = " or ".join(f"CUDA {m}" for m in majors)
        finding = f"{wanted} libraries not found: {', '.join(missing)}"
        if in_pip:
            finding += f" ({', '.join(in_pip)} are in NVIDIA's pip packages: call onnxruntime.preload_dlls() first)"
        else:
            finding += f" (install the CUDA {major} runtime and cuDNN 9, or `pip install onnxruntime-gpu[cuda,cudnn]`)"
        findings.append(finding)
    return "; ".join(findings) if findings else "the driver, the CUDA libraries and onnxruntime-gpu were all found"
