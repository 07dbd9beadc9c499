"""Loading a bundle into the parts a :class:`~aidetect_infer.detector.Detector` runs on, and checking them.

Where the default bundle is, the sessions (and the one-thread session a batch-dependent graph shares on a
multi-core CPU), the tokenizer and the metadata, and the probe run that refuses a graph or tokenizer that would
give wrong scores silently.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tokenizers import Tokenizer

from aidetect_infer.bundle import BundleMetadata, load_bundle
from aidetect_infer.errors import GET_MODEL_HINT, REBUILD_HINT, BundleError, ModelFilesMissingError
from aidetect_infer.gpu import GpuOptions
from aidetect_infer.session import (
    GPU_PROVIDERS,
    GraphSpec,
    create_session,
    resolve_providers,
    run_logits,
    validate_graph,
)
from aidetect_infer.tokenization import TextEncoder, load_tokenizer

logger = logging.getLogger(__name__)

MODEL_ENV = "AIDETECT_MODEL"
_PACKAGED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"  # inside an installed wheel
_CHECKOUT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"  # a checkout, editable install
DEFAULT_MODEL_DIR = _PACKAGED_MODEL_DIR if (_PACKAGED_MODEL_DIR / "aidetect.json").is_file() else _CHECKOUT_MODEL_DIR
"""The default bundle: carried as package data by the wheel, ``models/default`` in a checkout."""


def existing_default() -> Path:
    """:func:`default_model_path`, or a :class:`ModelFilesMissingError` saying where it looked."""
    path = default_model_path()
    if not path.exists():
        origin = f"${MODEL_ENV}" if os.environ.get(MODEL_ENV, "").strip() else "the default location"
        raise ModelFilesMissingError(f"{path}: no model bundle at {origin}; {GET_MODEL_HINT}")
    return path


def default_model_path() -> Path:
    """The bundle ``Detector()`` loads: ``$AIDETECT_MODEL`` if set, else :data:`DEFAULT_MODEL_DIR`."""
    env = os.environ.get(MODEL_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_MODEL_DIR


def intra_op_threads(session: ort.InferenceSession) -> int:
    """The session's intra-op thread count (0, ONNX Runtime's default, means one per usable core), at most 8."""
    threads = int(session.get_session_options().intra_op_num_threads)
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(threads, 8))


def checked_logits(logits: NDArray[np.float64], rows: int) -> NDArray[np.float64]:
    """``logits`` if finite and ``(rows, 2)`` (a symbolic class axis passes the static check), else a BundleError."""
    if logits.shape != (rows, 2):
        raise BundleError(
            f"model.onnx returned logits of shape {logits.shape} for {rows} windows, not [batch, 2]; {REBUILD_HINT}"
        )
    if not np.isfinite(logits).all():
        raise BundleError(
            "model.onnx returned non-finite logits (NaN or infinity): the model is damaged or numerically "
            f"unstable; {REBUILD_HINT}"
        )
    return logits


def probe(
    session: ort.InferenceSession,
    graph: GraphSpec,
    encoder: TextEncoder,
    tokenizer: Tokenizer,
    metadata: BundleMetadata,
) -> None:
    """Run the graph once, at load, on the tokenizer's highest token id and on an empty text.

    A tokenizer larger than the model's embedding table fails only on texts with the extra tokens, deep in
    ONNX Runtime; a class axis not 2 wide or NaN weights give wrong scores silently: all are refused here. On
    a GPU only the recorded vocabulary size is compared (a run would cost a warm-up or a TensorRT engine
    build at load); bad logits are still refused batch by batch.
    """
    top = max(tokenizer.get_vocab(with_added_tokens=True).values())
    declared = metadata.architecture.get("vocab_size")
    if isinstance(declared, int) and top >= declared:
        raise BundleError(
            f"tokenizer.json has {top + 1} tokens, but the model's embedding table (architecture.vocab_size) has "
            f"{declared}: it is not the tokenizer the model was trained with; {REBUILD_HINT}"
        )
    if GPU_PROVIDERS.intersection(session.get_providers()):
        return
    input_ids, attention_mask = encoder.pad_batch([np.asarray([top], dtype=np.int64), np.zeros(0, dtype=np.int64)])
    try:
        logits = run_logits(session, graph, input_ids, attention_mask)
    except Exception as exc:  # onnxruntime raises its own types (InvalidArgument, Fail, ...)
        raise BundleError(
            f"model.onnx fails on a probe batch holding the tokenizer's highest token id {top} ({exc}); is "
            f"tokenizer.json the tokenizer the model was trained with? {REBUILD_HINT}"
        ) from exc
    checked_logits(logits, 2)


def load_parts(
    path: Path,
    *,
    provider: str,
    threads: int | None,
    variant: str | None,
    gpu_options: GpuOptions | None = None,
    batch_invariant: bool = True,
) -> tuple[ort.InferenceSession, Tokenizer, BundleMetadata, ort.InferenceSession | None]:
    """Load and verify a bundle and open its session (and, for a batch-dependent graph on a CPU with several
    threads, the one-thread session its one-window calls share; see ``Detector(parallel_session=...)``)."""
    if isinstance(provider, str) and provider.lower() == "openvino":
        from aidetect_infer.openvino_backend import OpenVinoSession

        bundle = load_bundle(path, variant=variant, gpu=False)
        ov_session = OpenVinoSession(bundle.model_path, threads=threads)
        # Typed as the ONNX Runtime session whose methods it provides (see aidetect_infer.openvino_backend).
        return ov_session, load_tokenizer(bundle.tokenizer_path), bundle.metadata, None
    gpu = resolve_providers(provider, ort.get_available_providers(), gpu_options)[0][0] in GPU_PROVIDERS
    bundle = load_bundle(path, variant=variant, gpu=gpu)
    session = create_session(bundle.model_path, provider=provider, threads=threads, gpu_options=gpu_options)
    if gpu and not GPU_PROVIDERS.intersection(session.get_providers()):
        # "auto" fell back to the CPU: the variant picked for the GPU may not be the one for the CPU.
        cpu_bundle = load_bundle(path, variant=variant, gpu=False)
        if cpu_bundle.path != bundle.path:
            logger.info("%s: loading the %s variant for the CPU instead", path, cpu_bundle.metadata.precision)
            bundle = cpu_bundle
            session = create_session(bundle.model_path, provider="cpu", threads=threads)
    tokenizer = load_tokenizer(bundle.tokenizer_path)
    validate_graph(session, str(bundle.model_path))  # names the file; the constructor checks again
    parallel = None
    on_cpu = not GPU_PROVIDERS.intersection(session.get_providers())
    if batch_invariant and bundle.metadata.batch_dependent and on_cpu and intra_op_threads(session) > 1:
        parallel = create_session(bundle.model_path, provider="cpu", threads=1)
    return session, tokenizer, bundle.metadata, parallel
