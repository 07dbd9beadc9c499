"""ONNX Runtime sessions: provider resolution and checking, session options, graph validation, running.

ONNX Runtime falls back to the CPU silently when a requested provider cannot load, so the providers a
session really got are checked after creation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from aidetect_infer import gpu
from aidetect_infer.errors import REBUILD_HINT, BundleError, InvalidValueError, ProviderUnavailableError
from aidetect_infer.gpu import GpuOptions

logger = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt", "openvino")
CPU = "CPUExecutionProvider"
CUDA = gpu.CUDA
TENSORRT = gpu.TENSORRT
GPU_PROVIDERS = frozenset({CUDA, TENSORRT})
_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_ZERO_INPUTS = ("token_type_ids",)
_LOGITS = "logits"
_FLOAT_TYPES = ("tensor(float)", "tensor(float16)")
_INSTALL_HINT = {
    CUDA: "install aidetect-infer[gpu] (onnxruntime-gpu) and the CUDA 12 or 13 and cuDNN 9 libraries (docs/cuda.md)",
    TENSORRT: "install aidetect-infer[gpu] (onnxruntime-gpu), the CUDA 12 or 13 libraries and TensorRT 10",
}

ProviderSpec = tuple[str, dict[str, Any]]


def default_threads() -> int:
    """The number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_providers(
    provider: str, available: Sequence[str], gpu_options: GpuOptions | None = None
) -> list[ProviderSpec]:
    """Turn a provider name into the ONNX Runtime provider list, best first.

    The list depends only on the arguments (pass ``onnxruntime.get_available_providers()``); only the
    error message also looks at this machine, to say what it lacks.

    Args:
        provider: ``"auto"`` (CUDA when this onnxruntime build offers it, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"tensorrt"`` (``"openvino"`` is not an ONNX Runtime provider: see ``aidetect_infer.loading``).
        available: The providers the installed onnxruntime build offers.
        gpu_options: Options of the CUDA/TensorRT providers; ``None`` uses :class:`GpuOptions` defaults.

    Returns:
        ``[(provider name, provider options), ...]``, always ending with the CPU provider.

    Raises:
        InvalidValueError: ``provider`` is not one of :data:`PROVIDERS`.
        ProviderUnavailableError: ``provider`` names a provider that ``available`` lacks (the message says
            what is missing: onnxruntime-gpu, the NVIDIA driver, the CUDA libraries).
    """
    if not isinstance(provider, str) or provider.lower() not in PROVIDERS:
        raise InvalidValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    provider = provider.lower()
    options = gpu_options if gpu_options is not None else GpuOptions()
    specs: dict[str, ProviderSpec] = {TENSORRT: (TENSORRT, options.tensorrt()), CUDA: (CUDA, options.cuda())}
    cpu: ProviderSpec = (CPU, {})
    if provider == "cpu":
        return [cpu]
    if provider == "openvino":
        raise InvalidValueError(
            "provider 'openvino' runs on the OpenVINO runtime, not in an ONNX Runtime session: load the bundle with "
            "Detector.from_pretrained(path, provider='openvino')"
        )
    if provider == "auto":
        return [specs[CUDA], cpu] if CUDA in available else [cpu]
    wanted = [TENSORRT, CUDA] if provider == "tensorrt" else [CUDA]
    if wanted[0] not in available:
        raise ProviderUnavailableError(
            f"{wanted[0]} not available: {_INSTALL_HINT[wanted[0]]} "
            f"(this onnxruntime offers {list(available)}), or use provider='cpu'; "
            f"on this machine: {gpu.describe_missing(wanted[0], available)}"
        )
    return [specs[name] for name in wanted if name in available] + [cpu]


def check_providers(provider: str, got: Sequence[str]) -> None:
    """Check the providers a session really loaded against the one requested.

    Args:
        provider: What was requested (``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        got: ``session.get_providers()``.

    Raises:
        ProviderUnavailableError: ``"cuda"`` or ``"tensorrt"`` was requested and did not load.
    """
    wanted = {"cuda": CUDA, "tensorrt": TENSORRT}.get(provider.lower())
    if wanted is not None and wanted not in got:
        raise ProviderUnavailableError(
            f"{wanted} not available: it is installed but did not load (the session got {list(got)}); "
            f"{_INSTALL_HINT[wanted]}, check that they are on the library path, or use provider='cpu'; "
            f"on this machine: {gpu.describe_missing(wanted, ort.get_available_providers())}"
        )
    logger.info("ONNX Runtime session providers: %s (requested %r)", list(got), provider)


def checked_threads(threads: int | None) -> int:
    """``threads``, or every core this process may use for ``None``.

    Raises:
        InvalidValueError: ``threads`` is not a positive integer or ``None``.
    """
    if threads is None:
        return default_threads()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InvalidValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def session_options(threads: int | None = None, *, log_severity: int = 3) -> ort.SessionOptions:
    """The session options this library uses, and no others.

    Args:
        threads: Intra-op threads; ``None`` means every core this process may use.
        log_severity: ONNX Runtime log level (0 verbose ... 4 fatal); 3 shows errors only.

    Raises:
        InvalidValueError: ``threads`` is not a positive integer.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = checked_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.log_severity_level = log_severity
    return options


def _open(path: str, options: ort.SessionOptions, providers: list[ProviderSpec]) -> ort.InferenceSession:
    return ort.InferenceSession(
        path,
        sess_options=options,
        providers=[name for name, _ in providers],
        provider_options=[opts for _, opts in providers],
    )


def create_session(
    model_path: str | os.PathLike[str],
    *,
    provider: str = "auto",
    threads: int | None = None,
    gpu_options: GpuOptions | None = None,
) -> ort.InferenceSession:
    """Create and check an inference session for ``model_path``.

    ``"auto"`` falls back to the CPU when the GPU provider cannot start, with a log record saying why;
    an explicit ``"cuda"``/``"tensorrt"`` raises instead.

    Args:
        model_path: The bundle's ``model.onnx``.
        provider: See :func:`resolve_providers`.
        threads: See :func:`session_options`.
        gpu_options: See :func:`resolve_providers`.

    Returns:
        The session, with its providers checked.

    Raises:
        InvalidValueError: Bad ``provider`` or ``threads``.
        ProviderUnavailableError: The requested provider is not available or did not load.
        BundleError: ONNX Runtime cannot load the model file.
    """
    available = ort.get_available_providers()
    providers = resolve_providers(provider, available, gpu_options)
    options = session_options(threads)
    if provider.lower() != "cpu":
        gpu.warn_if_conflicting()
    wanted_gpu = [name for name, _ in providers if name in GPU_PROVIDERS]
    failed: Exception | None = None
    try:
        session = _open(str(model_path), options, providers)
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        if not wanted_gpu:
            raise BundleError(f"{model_path}: ONNX Runtime cannot load it ({exc}); {REBUILD_HINT}") from exc
        # A GPU provider that loads but cannot start (no device, a driver too old) fails the whole session;
        # a CPU session tells that apart from a model ONNX Runtime cannot read.
        try:
            session = _open(str(model_path), options, [(CPU, {})])
        except Exception:
            raise BundleError(f"{model_path}: ONNX Runtime cannot load it ({exc}); {REBUILD_HINT}") from exc
        if provider.lower() != "auto":
            raise ProviderUnavailableError(
                f"{wanted_gpu[0]} not available: it failed to start ({exc}); "
                f"on this machine: {gpu.describe_missing(wanted_gpu[0], available)}"
            ) from exc
        failed = exc
    check_providers(provider, session.get_providers())
    if provider.lower() == "auto" and not GPU_PROVIDERS.intersection(session.get_providers()):
        if wanted_gpu:
            logger.warning(
                "provider='auto': %s %s, falling back to the CPU (%s)",
                wanted_gpu[0],
                "did not load" if failed is None else f"failed to start ({failed})",
                gpu.describe_missing(wanted_gpu[0], available),
            )
        else:
            logger.info(
                "provider='auto': this onnxruntime build has no CUDA provider (%s); running on the CPU", available
            )
    return session


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """What a validated graph needs fed and where its logits are.

    Attributes:
        inputs: The graph's input names, in graph order.
        logits_type: ``tensor(float)`` or ``tensor(float16)``.
        io_binding: Run through IOBinding, inputs and outputs placed on ``device`` (CUDA/TensorRT sessions).
        device: Where bound tensors live: ``"cuda"`` or ``"cpu"``.
        device_id: The device's number (the provider's ``device_id``).
    """

    inputs: tuple[str, ...]
    logits_type: str
    io_binding: bool
    device: str = "cpu"
    device_id: int = 0

    def feed(self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64]) -> dict[str, NDArray[np.int64]]:
        """The input dict for one batch, built from the graph's own input names."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask}
        return {name: given[name] if name in given else np.zeros_like(input_ids) for name in self.inputs}


def validate_graph(
    session: ort.InferenceSession, source: str = "model.onnx", *, io_binding: bool | None = None
) -> GraphSpec:
    """Check that the graph takes what this runtime feeds and returns ``logits`` of two classes.

    Args:
        session: The session to inspect.
        source: The model path, for error messages.
        io_binding: Run through IOBinding; ``None`` does so exactly when the session runs on a GPU.

    Returns:
        The graph's :class:`GraphSpec`.

    Raises:
        BundleError: A required input is missing, an input is not int64 ``[batch, sequence]``, an input is
            one the runtime cannot feed, or the output ``logits`` is missing or not ``[batch, 2]`` floats.
    """
    problems: list[str] = []
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    for name in _REQUIRED_INPUTS:
        if name not in names:
            problems.append(f"required input {name!r} is missing (graph inputs: {names})")
    for i in inputs:
        if i.name not in _REQUIRED_INPUTS + _ZERO_INPUTS:
            problems.append(f"input {i.name!r} is not one this runtime can feed")
        elif i.type != "tensor(int64)" or len(i.shape) != 2:
            problems.append(f"input {i.name!r} must be int64 [batch, sequence], got {i.type} {i.shape}")
    outputs = {o.name: o for o in session.get_outputs()}
    logits = outputs.get(_LOGITS)
    if logits is None:
        problems.append(f"output {_LOGITS!r} is missing (graph outputs: {list(outputs)})")
    elif logits.type not in _FLOAT_TYPES or len(logits.shape) != 2:
        problems.append(f"output {_LOGITS!r} must be float [batch, 2], got {logits.type} {logits.shape}")
    elif isinstance(logits.shape[1], int) and logits.shape[1] != 2:
        problems.append(f"output {_LOGITS!r} must have 2 classes, got shape {logits.shape}")
    if problems:
        raise BundleError(f"{source}: " + "; ".join(problems) + f"; {REBUILD_HINT}")
    on_gpu = [name for name in session.get_providers() if name in GPU_PROVIDERS]
    device_id = int(session.get_provider_options().get(on_gpu[0], {}).get("device_id", 0)) if on_gpu else 0
    return GraphSpec(
        inputs=tuple(names),
        logits_type=outputs[_LOGITS].type,
        io_binding=bool(on_gpu) if io_binding is None else bool(io_binding),
        device="cuda" if on_gpu else "cpu",
        device_id=device_id,
    )


def run_logits(
    session: ort.InferenceSession,
    spec: GraphSpec,
    input_ids: NDArray[np.int64],
    attention_mask: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Run one batch and return its logits as float64, shape ``(batch, 2)``.

    With ``spec.io_binding`` (CUDA/TensorRT sessions) each input goes from the tokenizer's array straight
    into a buffer on ``spec.device`` (one host-to-device copy; on the CPU the array itself is bound), the
    logits stay on the device until one copy back; one binding per call, so concurrent calls share no
    state. Otherwise ``session.run``, which ONNX Runtime makes thread-safe.
    """
    feed = spec.feed(input_ids, attention_mask)
    if not spec.io_binding:
        return np.asarray(session.run([_LOGITS], feed)[0], dtype=np.float64)
    binding = session.io_binding()
    # The OrtValues must outlive the run: on the CPU they borrow the arrays' memory.
    bound = {name: ort.OrtValue.ortvalue_from_numpy(array, spec.device, spec.device_id) for name, array in feed.items()}
    for name, value in bound.items():
        binding.bind_ortvalue_input(name, value)
    binding.bind_output(_LOGITS, spec.device, spec.device_id)
    session.run_with_iobinding(binding)
    logits = binding.copy_outputs_to_cpu()[0]
    del bound
    return np.asarray(logits, dtype=np.float64)
