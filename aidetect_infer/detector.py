"""The :class:`Detector` facade and its :class:`Prediction` results."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tokenizers import Tokenizer

from aidetect_infer.bundle import MIN_MAX_LENGTH, BundleMetadata
from aidetect_infer.decision import DecisionPolicy
from aidetect_infer.errors import InvalidInputError, InvalidValueError
from aidetect_infer.gpu import GpuOptions
from aidetect_infer.loading import (
    DEFAULT_MODEL_DIR,
    MODEL_ENV,
    checked_logits,
    default_model_path,
    existing_default,
    intra_op_threads,
    load_parts,
    probe,
)
from aidetect_infer.segments import MAX_SEGMENT_TOKENS, MIN_SEGMENT_TOKENS, Explanation, Segment, segment_spans
from aidetect_infer.session import run_logits, validate_graph
from aidetect_infer.tokenization import TextEncoder

__all__ = ["DEFAULT_MODEL_DIR", "MODEL_ENV", "Detector", "Explanation", "Prediction", "Segment", "default_model_path"]

_MIN_TEXTS_PER_CHUNK = 256


@dataclass(frozen=True, slots=True)
class Prediction:
    """The verdict on one text.

    Attributes:
        label: ``labels[1]`` (``"ai"``) when ``score >= threshold``; ``"uncertain"`` when the score lies in the
            bundle's uncertain band or the text is too short to judge; else ``labels[0]`` (``"human"``). See
            :mod:`aidetect_infer.decision`.
        score: Calibrated P(AI) in [0, 1]; for a text split into windows, the windows' P(AI) averaged with
            weights equal to their content-token counts.
        threshold: The AI threshold used.
        windows: How many windows were scored (1 unless the text is longer than one window).
        tokens: Content tokens of the text (special tokens not counted).
        unknown_tokens: How many of them are the tokenizer's unknown token (0 for a tokenizer without one):
            foreign scripts and odd symbols, text unlike what the model was trained on.
    """

    label: str
    score: float
    threshold: float
    windows: int
    tokens: int = 0
    unknown_tokens: int = 0


_Scored = tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]
"""Scores, window counts, content-token counts and unknown-token counts of texts."""


def _equal_length_batches(order: list[int], lengths: list[int], size: int, alone_below: int = 0) -> list[list[int]]:
    """``order`` (sorted by length) cut into batches of at most ``size`` windows, each of one length; windows
    shorter than ``alone_below`` tokens go one per batch."""
    batches: list[list[int]] = []
    for k in order:
        fits = batches and len(batches[-1]) < size and lengths[batches[-1][0]] == lengths[k]
        if fits and lengths[k] >= alone_below:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


def _softmax_ai(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    """P(class 1) from ``(n, 2)`` logits, in float64 with the max subtracted (no overflow)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    p_ai: NDArray[np.float64] = exp[:, 1] / exp.sum(axis=1)
    return p_ai


def _as_texts(texts: object) -> tuple[list[str], bool]:
    """The texts as a list, and whether a single string was given."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, (bytes, bytearray)):
        raise InvalidInputError(f"texts must be str, got {type(texts).__name__}: decode it first (.decode('utf-8'))")
    if isinstance(texts, Mapping) or not isinstance(texts, Iterable):
        raise InvalidInputError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{index}] is {type(text).__name__}, not str")
    return items, False


def _effective_metadata(metadata: BundleMetadata, max_length: int | None) -> BundleMetadata:
    """``metadata`` with a smaller ``max_length`` (stride scaled to keep the bundle's overlap ratio)."""
    if max_length is None or max_length == metadata.max_length:
        return metadata
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        raise InvalidInputError(f"max_length must be an integer or None, got {type(max_length).__name__}")
    if not MIN_MAX_LENGTH <= max_length <= metadata.max_length:
        raise InvalidValueError(
            f"max_length must be in [{MIN_MAX_LENGTH}, {metadata.max_length}] (the bundle's max_length), "
            f"got {max_length}"
        )
    ratio = metadata.window_stride / (metadata.max_length - 2)
    stride = min(max_length - 2, max(1, round(ratio * (max_length - 2))))
    return dataclasses.replace(metadata, max_length=max_length, window_stride=stride)


class Detector:
    """Scores texts as AI-generated or human-written with an ONNX model bundle.

    ``Detector()`` loads the default bundle (see :func:`default_model_path`) on the CPU or CUDA;
    :meth:`from_pretrained` loads any bundle; the keyword-only constructor takes a ready session, tokenizer
    and metadata. One instance may serve many threads at once: calls keep no state on the instance.

    Texts longer than one window are split into overlapping windows whose P(AI) are averaged, weighted by
    their token counts (``truncation=True`` scores the first window only). An empty or whitespace-only text
    (or one the normalizer empties) is scored as the tokenizer frames it, ``[CLS] [SEP]``; lone surrogates
    are replaced with U+FFFD.

    Args:
        session: An ONNX Runtime session of a bundle's ``model.onnx``.
        tokenizer: The bundle's tokenizer (it is copied, never modified).
        metadata: The bundle's metadata.
        batch_size: Windows per ONNX Runtime call (a batch-dependent graph runs one per call; see
            ``batch_invariant``).
        truncation: Score only the first window of long texts.
        max_length: Tokens per window, at most the bundle's ``max_length``; ``None`` uses the bundle's.
        io_binding: Run batches through IOBinding; ``None`` does so exactly when the session runs on a GPU.
        max_false_positive_rate: Decide at the bundle's validated operating point with the largest
            false-positive rate on human texts not above this; ``None`` uses the bundle's own.
        batch_invariant: A text's score must not depend on the texts it is scored with. For a bundle whose
            graph quantizes activations per call (dynamic int8, :attr:`BundleMetadata.batch_dependent`) every
            window then gets a call of its own, the calls spread over the session's intra-op threads (no
            padding, so on CPU this is as fast as batching or faster); ``False`` batches such windows anyway,
            and a score then moves with its neighbours (by up to 0.2 P(AI) measured). Other graphs batch either
            way: their rows are computed independently.
        parallel_session: A second session of the same ``model.onnx`` with one intra-op thread: the one-window
            calls of a batch-dependent graph then run on it from as many threads as ``session`` has, which
            beats sharing one multi-threaded session (measured 1.2x on 2 cores, scores bit for bit the same); a
            text of one window still runs on ``session``. :meth:`from_pretrained` opens it on the CPU.

    Raises:
        InvalidInputError: Only some of ``session``/``tokenizer``/``metadata`` were given, or of a wrong type.
        InvalidValueError: ``batch_size``, ``max_length`` or ``max_false_positive_rate`` out of range, or an
            operating point the bundle does not record.
        ModelFilesMissingError: No argument given and the default bundle does not exist.
        BundleError: The graph or tokenizer does not fit this runtime.
    """

    def __init__(
        self,
        *,
        session: ort.InferenceSession | None = None,
        tokenizer: Tokenizer | None = None,
        metadata: BundleMetadata | None = None,
        batch_size: int = 16,
        truncation: bool = False,
        max_length: int | None = None,
        io_binding: bool | None = None,
        max_false_positive_rate: float | None = None,
        batch_invariant: bool = True,
        parallel_session: ort.InferenceSession | None = None,
    ) -> None:
        if session is None and tokenizer is None and metadata is None:
            session, tokenizer, metadata, parallel_session = load_parts(
                existing_default(), provider="auto", threads=None, variant=None, batch_invariant=batch_invariant
            )
        if session is None or tokenizer is None or metadata is None:
            raise InvalidInputError("pass session, tokenizer and metadata together, or none of them")
        if not isinstance(metadata, BundleMetadata):
            raise InvalidInputError(f"metadata must be a BundleMetadata, got {type(metadata).__name__}")
        if not isinstance(tokenizer, Tokenizer):
            raise InvalidInputError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if io_binding is not None and not isinstance(io_binding, bool):
            raise InvalidInputError(f"io_binding must be True, False or None, got {type(io_binding).__name__}")
        if io_binding and not getattr(session, "supports_io_binding", True):
            raise InvalidValueError(f"io_binding=True needs an ONNX Runtime session, not {type(session).__name__}")
        self._metadata = _effective_metadata(metadata, max_length)
        self._session = session
        self._graph = validate_graph(session, io_binding=io_binding)
        self._encoder = TextEncoder(
            tokenizer, max_length=self._metadata.max_length, window_stride=self._metadata.window_stride
        )
        if not isinstance(batch_invariant, bool):
            raise InvalidInputError(f"batch_invariant must be True or False, got {type(batch_invariant).__name__}")
        self._batch_size = batch_size
        # A backend whose rows are computed alone only without padding (OpenVINO) batches windows of one length.
        self._equal_lengths = batch_invariant and bool(getattr(session, "equal_length_batches", False))
        self._alone_below = int(getattr(session, "batched_from_length", 0))  # shorter windows: one per call
        self._one_per_call = batch_invariant and metadata.batch_dependent and not self._equal_lengths
        self._callers = intra_op_threads(session) if self._one_per_call else 1
        self._parallel = parallel_session if self._one_per_call and self._callers > 1 else None
        if self._parallel is not None:
            if validate_graph(self._parallel, io_binding=io_binding) != self._graph:
                raise InvalidInputError("parallel_session must be a session of the same model as session")
        self._truncation = bool(truncation)
        self._policy = DecisionPolicy.from_metadata(
            metadata.threshold, metadata.optional, max_false_positive_rate=max_false_positive_rate
        )
        probe(session, self._graph, self._encoder, tokenizer, self._metadata)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        provider: str = "auto",
        threads: int | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        truncation: bool = False,
        variant: str | None = None,
        gpu_options: GpuOptions | None = None,
        io_binding: bool | None = None,
        max_false_positive_rate: float | None = None,
        batch_invariant: bool = True,
    ) -> Detector:
        """Load a model bundle.

        Args:
            path: A bundle directory, or a parent holding ``fp32/ int8/ fp16/`` variants; ``None`` loads the
                default bundle.
            provider: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"`` or ``"openvino"``; an explicit GPU
                provider that is not available raises instead of falling back to the CPU. ``"openvino"`` (the
                ``[openvino]`` extra) runs the bundle's graph on the OpenVINO runtime, its int8 weights in
                floating point (bf16 on CPUs with AMX): see :mod:`aidetect_infer.openvino_backend`.
            threads: Intra-op threads; ``None`` uses every core this process may use.
            batch_size: Windows per ONNX Runtime call.
            max_length: Tokens per window, at most the bundle's; ``None`` uses the bundle's.
            truncation: Score only the first window of long texts.
            variant: Which variant of a parent directory to load; ``None`` picks ``fp16`` on a GPU when
                present, else ``int8``, else ``fp32``.
            gpu_options: CUDA/TensorRT device id, memory limit, arena and cuDNN settings (see
                :class:`~aidetect_infer.gpu.GpuOptions`); ignored on the CPU.
            io_binding: Run batches through IOBinding; ``None`` does so exactly on a GPU.
            max_false_positive_rate: See the class docstring.
            batch_invariant: See the class docstring.

        Returns:
            The detector.

        Raises:
            ModelFilesMissingError: The bundle or one of its files does not exist.
            UnsupportedFormatError: Unknown bundle format version.
            ChecksumMismatchError: A file does not match its recorded sha256.
            BundleError: Invalid metadata, a corrupt model or tokenizer, or a graph this runtime cannot feed.
            ProviderUnavailableError: The requested provider is not available or did not load.
            InvalidValueError: ``provider``, ``threads``, ``batch_size`` or ``max_length`` out of range.
        """
        bundle_path = existing_default() if path is None else Path(path)
        session, tokenizer, metadata, parallel = load_parts(
            bundle_path, provider=provider, threads=threads, variant=variant, gpu_options=gpu_options,
            batch_invariant=batch_invariant,
        )  # fmt: skip
        return cls(
            session=session,
            tokenizer=tokenizer,
            metadata=metadata,
            batch_size=batch_size,
            truncation=truncation,
            max_length=max_length,
            io_binding=io_binding,
            max_false_positive_rate=max_false_positive_rate,
            batch_invariant=batch_invariant,
            parallel_session=parallel,
        )

    @property
    def metadata(self) -> BundleMetadata:
        """The bundle metadata in use (``max_length``/``window_stride`` as overridden, if they were)."""
        return self._metadata

    @property
    def encoder(self) -> TextEncoder:
        """The bundle's tokenization in use (content-token ids, windows, padded batches; only read it)."""
        return self._encoder

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers the session really runs on, best first."""
        return list(self._session.get_providers())

    @property
    def threshold(self) -> float:
        """The AI threshold: ``score >= threshold`` means AI."""
        return self._policy.threshold

    @property
    def policy(self) -> DecisionPolicy:
        """Calibration, thresholds and the uncertain band in use."""
        return self._policy

    def __repr__(self) -> str:
        meta = self._metadata
        return f"Detector(name={meta.name!r}, variant={meta.precision!r}, providers={self.providers})"

    @overload
    def predict(self, texts: str) -> Prediction: ...

    @overload
    def predict(self, texts: list[str] | tuple[str, ...]) -> list[Prediction]: ...

    def predict(self, texts: str | list[str] | tuple[str, ...]) -> Prediction | list[Prediction]:
        """Classify one text or many.

        Args:
            texts: A string, or a list or tuple (any iterable works) of strings; an empty one gives an
                empty list.

        Returns:
            A :class:`Prediction` for a string; a list of them, in input order, for a sequence.

        Raises:
            InvalidInputError: ``texts`` is not a string or a sequence of strings (the message names the index
                and type of the first bad item).
        """
        items, single = _as_texts(texts)
        scores, windows, tokens, unknown = self._score(items)
        policy, labels = self._policy, self._metadata.labels
        predictions = [
            Prediction(
                label=policy.label(float(score), int(length), labels),
                score=float(score),
                threshold=policy.threshold,
                windows=int(count),
                tokens=int(length),
                unknown_tokens=int(unk),
            )
            for score, count, length, unk in zip(scores, windows, tokens, unknown, strict=True)
        ]
        return predictions[0] if single else predictions

    def predict_proba(self, texts: str | Iterable[str]) -> NDArray[np.float32]:
        """P(AI) of each text.

        Args:
            texts: A string or an iterable of strings.

        Returns:
            float32 array of shape ``(n,)`` in input order (``(1,)`` for a single string, ``(0,)`` for none).

        Raises:
            InvalidInputError: ``texts`` is not a string or a sequence of strings.
        """
        items, _ = _as_texts(texts)
        return self._score(items)[0].astype(np.float32)

    def explain(
        self, text: str, *, min_tokens: int = MIN_SEGMENT_TOKENS, max_tokens: int = MAX_SEGMENT_TOKENS
    ) -> Explanation:
        """Score a text and each of its segments: which part of it looks generated.

        The text is cut into sentence-aligned segments of about ``min_tokens`` to ``max_tokens`` tokens that
        tile it (see :mod:`aidetect_infer.segments`); the document and every segment are scored in one call,
        each exactly as :meth:`predict` scores it alone.

        Args:
            text: The text.
            min_tokens: A segment takes more sentences until it holds this many tokens.
            max_tokens: A segment takes no sentence that would carry it past this many.

        Returns:
            The document's verdict and its segments (none for the empty string; one for a whitespace-only text).

        Raises:
            InvalidInputError: ``text`` is not a string.
            InvalidValueError: ``min_tokens``/``max_tokens`` not positive integers, or ``min_tokens > max_tokens``.
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be str, got {type(text).__name__}")

        def count(pieces: list[str]) -> list[int]:
            return [len(ids) for ids in self._encoder.encode(pieces)]

        spans = segment_spans(text, count, min_tokens=min_tokens, max_tokens=max_tokens)
        document, *parts = self.predict([text, *(text[a:b] for a, b in spans)])
        segments = tuple(
            Segment(start=a, end=b, text=text[a:b], score=p.score, label=p.label, tokens=p.tokens)
            for (a, b), p in zip(spans, parts, strict=True)
        )
        return Explanation(
            label=document.label,
            score=document.score,
            threshold=document.threshold,
            windows=document.windows,
            tokens=document.tokens,
            segments=segments,
            unknown_tokens=document.unknown_tokens,
        )

    def _score(self, texts: list[str]) -> _Scored:
        """Scores (float64), window, content-token and unknown-token counts of ``texts``, in chunks (memory)."""
        scores = np.empty(len(texts), dtype=np.float64)
        windows, tokens, unknown = (np.empty(len(texts), dtype=np.int64) for _ in range(3))
        chunk = max(_MIN_TEXTS_PER_CHUNK, 16 * self._batch_size)
        for begin in range(0, len(texts), chunk):
            part = slice(begin, begin + chunk)
            scores[part], windows[part], tokens[part], unknown[part] = self._score_chunk(texts[part])
        return scores, windows, tokens, unknown

    def _logits(self, rows: list[NDArray[np.int64]], session: ort.InferenceSession) -> NDArray[np.float64]:
        """Logits of one batch of windows (content ids), framed and padded."""
        input_ids, attention_mask = self._encoder.pad_batch(rows)
        return checked_logits(run_logits(session, self._graph, input_ids, attention_mask), len(rows))

    def _score_chunk(self, texts: list[str]) -> _Scored:
        owners: list[int] = []
        rows: list[NDArray[np.int64]] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        unknown = np.zeros(len(texts), dtype=np.int64)
        unk_id = self._encoder.unk_id
        for index, ids in enumerate(self._encoder.encode(texts)):
            lengths[index] = len(ids)
            if unk_id is not None:
                unknown[index] = np.count_nonzero(ids == unk_id)
            for start, stop in self._encoder.spans(len(ids), truncation=self._truncation):
                owners.append(index)
                rows.append(ids[start:stop])
        # Longest windows first, so each batch pads to rows of nearly the same length (and, one window per call,
        # the long calls start first and the short ones fill in).
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k]))
        p_ai = np.empty(len(rows), dtype=np.float64)
        size = 1 if self._one_per_call else self._batch_size
        if self._equal_lengths:
            batches = _equal_length_batches(order, [len(row) for row in rows], size, self._alone_below)
        else:
            batches = [order[begin : begin + size] for begin in range(0, len(order), size)]
        if self._callers > 1 and len(batches) > 1:
            session = self._parallel or self._session
            with ThreadPoolExecutor(min(self._callers, len(batches))) as pool:
                logits = list(pool.map(lambda batch: self._logits([rows[k] for k in batch], session), batches))
        else:
            logits = [self._logits([rows[k] for k in batch], self._session) for batch in batches]
        for batch, values in zip(batches, logits, strict=True):
            p_ai[batch] = _softmax_ai(values / self._policy.temperature)
        owner = np.asarray(owners, dtype=np.int64)
        weight = np.asarray([max(len(r), 1) for r in rows], dtype=np.float64)
        total = np.bincount(owner, weights=weight, minlength=len(texts))
        scores = np.bincount(owner, weights=weight * p_ai, minlength=len(texts)) / total
        return scores, np.bincount(owner, minlength=len(texts)).astype(np.int64), lengths, unknown
