"""Loading each contender and running it the same way: a list of strings in, P(AI) per text out.

Every contender truncates at the same ``max_length`` (special tokens included), runs ``batch_size`` texts per
model call and uses ``threads`` intra-op threads. The Hugging Face contenders run through
``transformers.pipeline("text-classification")`` (Optimum's ``ORTModelForSequenceClassification`` plugs into
it); the aidetect ones through :class:`aidetect_infer.Detector` with ``truncation=True``, so every engine sees
exactly the same tokens. Heavy libraries are imported only when an engine is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.models import BASELINE, BUNDLE_MAX_LENGTH, ENGINES, MINILM_ENGINES, ON_OPENVINO, PEERS, Models

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINE",
    "ENGINES",
    "MINILM_ENGINES",
    "THREADS",
    "MAX_LENGTH",
    "Engine",
    "Scorer",
    "load_engine",
    "load_hf_model",
]

THREADS = 2
MAX_LENGTH = 256  # the truncation length of the throughput runs (the default bundle's own, when smaller)
AI_LABEL = "ai"

Scorer = Callable[[Sequence[str]], NDArray[np.float64]]


@dataclass(frozen=True)
class Engine:
    """A loaded contender.

    Attributes:
        name: One of :data:`ENGINES`.
        max_length: The longest input the model takes (tokens, special tokens included).
        precision: ``"fp32"`` or ``"int8"`` (the bundle's own for ``aidetect-default``).
        window_stride: Tokens between windows of a longer text (aidetect engines), else ``None``.
        make_scorer: ``make_scorer(batch_size, max_length, truncation)`` returns the scorer for those settings.
    """

    name: str
    max_length: int
    precision: str
    make_scorer: Callable[[int, int, bool], Scorer]
    window_stride: int | None = None

    def scorer(self, batch_size: int, max_length: int, *, truncation: bool = True) -> Scorer:
        """A scorer that runs ``batch_size`` texts per call, truncated at ``max_length`` (capped at the model's).

        Args:
            batch_size: Texts (windows, for the aidetect engines) per model call.
            max_length: Tokens per text or window, special tokens included.
            truncation: ``False`` scores every window of a longer text (aidetect engines only; the default
                behaviour of ``Detector``).

        Raises:
            ValueError: ``batch_size`` or ``max_length`` below 1, or ``truncation=False`` for a pipeline engine.
        """
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be positive, got {batch_size}, {max_length}")
        if not truncation and not self.name.startswith("aidetect-"):  # pipelines and peers truncate
            raise ValueError(f"{self.name}: a text-classification pipeline truncates; it cannot score windows")
        return self.make_scorer(batch_size, min(max_length, self.max_length), truncation)


def _load_aidetect(models: Models, name: str, threads: int) -> Engine:
    from aidetect_infer import Detector
    from aidetect_infer.loading import load_parts

    path = models.files(name)
    if path is None:
        raise FileNotFoundError(f"{name}: no default bundle (models/default or $AIDETECT_MODEL)")
    # The parts Detector.from_pretrained runs on, opened once: the session and, for a batch-dependent graph, the
    # one-thread session its one-window calls share (measured 1.2-1.4x the single session alone).
    # On OpenVINO (ON_OPENVINO) the same bundle through provider="openvino", as from_pretrained opens it.
    provider = "openvino" if name in ON_OPENVINO else "cpu"
    session, tokenizer, meta, parallel = load_parts(path, provider=provider, threads=threads, variant=None)

    def make(batch_size: int, max_length: int, truncation: bool) -> Scorer:
        detector = Detector(
            session=session, tokenizer=tokenizer, metadata=meta, batch_size=batch_size,
            truncation=truncation, max_length=max_length, parallel_session=parallel,
        )  # fmt: skip
        return lambda texts: detector.predict_proba(list(texts)).astype(np.float64)

    return Engine(name, meta.max_length, meta.precision, make, window_stride=meta.window_stride)


def load_hf_model(models: Models, name: str, threads: int = THREADS) -> Any:
    """The Hugging Face contender's model: PyTorch, or Optimum's ONNX Runtime model on ``threads`` threads."""
    if name.startswith("transformers-"):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(models.files(name)).eval()
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    file_name = "model_quantized.onnx" if name.endswith("int8") else "model.onnx"
    return ORTModelForSequenceClassification.from_pretrained(
        models.files(name), file_name=file_name, session_options=options, provider="CPUExecutionProvider"
    )


def _load_pipeline(models: Models, name: str, threads: int) -> Engine:
    import torch
    from transformers import AutoTokenizer, pipeline

    torch.set_num_threads(threads)
    # DistilBERT takes no token_type_ids; the tokenizer saved with the checkpoint would return them.
    tokenizer = AutoTokenizer.from_pretrained(models.minilm, model_input_names=["input_ids", "attention_mask"])
    model = load_hf_model(models, name, threads)
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")

    def make(batch_size: int, max_length: int, truncation: bool) -> Scorer:
        def predict(texts: Sequence[str]) -> NDArray[np.float64]:
            out = pipe(list(texts), batch_size=batch_size, truncation=True, max_length=max_length, top_k=None)
            return np.asarray([next(d["score"] for d in row if d["label"] == AI_LABEL) for row in out])

        return predict

    precision = "int8" if name.endswith("int8") else "fp32"
    return Engine(name, int(model.config.max_position_embeddings), precision, make)


def _load_peer(models: Models, name: str, threads: int) -> Engine:
    from benchmarks import peers

    where = models.files(name)
    tokenizer = models.tokenizer_file(name)
    if name == "ctranslate2-int8":
        make = peers.ctranslate2_scorer(where, tokenizer, threads=threads)
    else:
        make = peers.openvino_scorer(where / "model.xml", tokenizer, threads=threads)
    return Engine(
        name, BUNDLE_MAX_LENGTH, "int8", lambda batch_size, max_length, truncation: make(batch_size, max_length)
    )


def load_engine(models: Models, name: str, *, threads: int = THREADS) -> Engine:
    """Load a contender.

    Args:
        models: The built models (see :func:`benchmarks.models.build_models`).
        name: One of :data:`ENGINES`.
        threads: Intra-op threads (PyTorch's ``set_num_threads`` for the PyTorch engines).

    Returns:
        The loaded engine.

    Raises:
        ValueError: An unknown engine name.
        FileNotFoundError: ``aidetect-default`` without a default bundle.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; one of {ENGINES}")
    if name.startswith("aidetect-"):
        return _load_aidetect(models, name, threads)
    if name in PEERS:
        return _load_peer(models, name, threads)
    return _load_pipeline(models, name, threads)
