"""Scoring on a Ray cluster: :func:`score_dataset` maps a :class:`Detector` over a ``ray.data.Dataset``.

Install the ``[ray]`` extra. ``import aidetect_infer`` never imports Ray; this module does, on first use.

Each actor of a fixed pool loads one :class:`~aidetect_infer.Detector` once and scores batch after batch. The
bundle travels through Ray's object store (its files, about 23 MB for the default model), so worker nodes
need neither a checkout nor a shared file system for the model. An actor killed mid-batch is restarted by Ray
and its batch scored again (Ray Data's actor pools retry their tasks), so every input row comes out exactly
once; the int8 bundles give each text the score it gets alone (one window per call), so a retried batch, or a
batch of other neighbours, gives the same numbers as the single-process ``score``.

Example::

    import ray
    from aidetect_infer.ray import score_dataset

    ray.init(address="auto")
    ds = score_dataset(ray.data.read_parquet("posts/"), text_column="body", num_actors=8, threads_per_actor=4)
    ds.write_parquet("scored/")
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aidetect_infer.bundle import is_bundle_dir
from aidetect_infer.errors import InvalidInputError, InvalidValueError, ModelFilesMissingError

if TYPE_CHECKING:
    import ray.data

    from aidetect_infer.detector import Detector

RAY_EXTRA_HINT = "install the ray extra: pip install 'aidetect-infer[ray]'"
RESULT_COLUMNS = ("score", "label", "windows", "tokens")
DEFAULT_BATCH_SIZE = 64
MAX_BUNDLE_BYTES = 1 << 30


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        from aidetect_infer.errors import MissingExtraError

        raise MissingExtraError(f"scoring on Ray needs {exc.name or 'ray[data]'}: {RAY_EXTRA_HINT}") from exc
    return ray


def bundle_files(model: str | os.PathLike[str] | None) -> dict[str, bytes]:
    """The files of a bundle (or of a directory of variant bundles), by path relative to it.

    Raises:
        ModelFilesMissingError: No bundle at ``model`` (``None``: the default model).
        InvalidValueError: The bundle is larger than 1 GiB (put it on a shared file system instead).
    """
    from aidetect_infer.detector import default_model_path

    root = Path(model) if model is not None else default_model_path()
    variants = [p for p in sorted(root.iterdir()) if p.is_dir() and is_bundle_dir(p)] if root.is_dir() else []
    if not (root.is_dir() and (is_bundle_dir(root) or variants)):
        raise ModelFilesMissingError(f"{root}: not a model bundle (no aidetect.json)")
    files = {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}
    size = sum(p.stat().st_size for p in files.values())
    if size > MAX_BUNDLE_BYTES:
        raise InvalidValueError(f"{root}: {size} bytes is too large to ship through the object store")
    return {name: path.read_bytes() for name, path in files.items()}


@dataclass(frozen=True, slots=True)
class ActorOptions:
    """How each actor builds its :class:`Detector` (the keywords of :meth:`Detector.from_pretrained`)."""

    detector: Mapping[str, Any]
    text_column: str = "text"
    mode: str = "column"  # "column": keep every input column; "parsed": rows made by aidetect_infer.cli.ray_score


class DetectorActor:
    """One actor of the pool: unpacks the bundle into a temporary folder once, then scores batches.

    Args:
        bundle: ``[ObjectRef]`` of :func:`bundle_files` (in a list, so Ray hands over the reference itself).
        options: The detector's keywords, the text column and the mode.
    """

    def __init__(self, bundle: list[Any], options: ActorOptions) -> None:
        import ray

        from aidetect_infer.detector import Detector

        self._folder = tempfile.TemporaryDirectory(prefix="aidetect-bundle-")
        root = Path(self._folder.name)
        for name, data in ray.get(bundle[0]).items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.detector: Detector = Detector.from_pretrained(root, **dict(options.detector))
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.options.mode == "parsed":
            return _score_parsed(self.detector, batch)
        return _score_column(self.detector, batch, self.options.text_column)


def _score_column(detector: Detector, batch: dict[str, np.ndarray], column: str) -> dict[str, np.ndarray]:
    if column not in batch:
        raise InvalidValueError(f"the dataset has no column {column!r} (columns: {', '.join(batch)})")
    taken = [name for name in RESULT_COLUMNS if name in batch]
    if taken:
        raise InvalidValueError(f"the dataset already has column(s) {', '.join(taken)}: rename them first")
    texts = batch[column].tolist()
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInputError(f"column {column!r} holds a {type(text).__name__} in a row (texts must be str)")
    predictions = detector.predict(texts) if texts else []
    return {**batch, **_result_columns(predictions)}


def _result_columns(predictions: list[Any]) -> dict[str, np.ndarray]:
    return {
        "score": np.array([p.score for p in predictions], dtype=np.float64),
        "label": np.array([p.label for p in predictions], dtype=object),
        "windows": np.array([p.windows for p in predictions], dtype=np.int64),
        "tokens": np.array([p.tokens for p in predictions], dtype=np.int64),
    }


def _score_parsed(detector: Detector, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows of ``line``, ``text`` (None for an error row), ``id`` (JSON text), ``error``, ``excerpt``, ``file``:
    scores the texts (one by one when the batch fails: :func:`aidetect_infer.streaming.predict_chunk`, as the local
    ``score`` does) and drops them."""
    from aidetect_infer.streaming import TextChunk, predict_chunk

    texts = batch["text"].tolist()
    errors = batch["error"].tolist()
    excerpts = batch["excerpt"].tolist()
    rows = [k for k, t in enumerate(texts) if t is not None]
    chunk = TextChunk(lines=rows, texts=[texts[k] for k in rows])
    predictions: list[Any] = [None] * len(texts)
    for k, prediction in zip(rows, predict_chunk(detector, chunk) if rows else [], strict=True):
        predictions[k] = prediction
    for k, error, excerpt in chunk.errors:  # texts that could not be scored, by row
        errors[k], excerpts[k] = error, excerpt
    out: dict[str, np.ndarray] = {name: batch[name] for name in ("file", "line", "id")}
    out["error"], out["excerpt"] = np.array(errors, dtype=object), np.array(excerpts, dtype=object)
    for name in RESULT_COLUMNS:
        out[name] = np.array([None if p is None else getattr(p, name) for p in predictions], dtype=object)
    return out


def score_dataset(
    ds: ray.data.Dataset,
    *,
    model: str | os.PathLike[str] | None = None,
    text_column: str = "text",
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_actors: int = 1,
    threads_per_actor: int = 1,
    num_gpus_per_actor: float = 0,
    **detector_options: Any,
) -> ray.data.Dataset:
    """``ds`` with ``score`` (P(AI)), ``label``, ``windows`` and ``tokens`` added to every row (lazy, like any
    Ray Data transformation: nothing runs until the result is consumed or written).

    Args:
        ds: A Ray dataset with a string column ``text_column``; every column is kept.
        model: A bundle directory on the driver (default: the default model); its files are shipped to the
            actors through the object store.
        text_column: The column holding the texts.
        batch_size: Rows per actor call.
        num_actors: Actors in the pool (each loads the model once; it holds ~100 MB).
        threads_per_actor: Intra-op threads of each actor's session, and the logical CPUs it reserves: actors
            times threads should match the cores a node has.
        num_gpus_per_actor: GPUs each actor reserves (``1`` with ``provider="cuda"``: one actor per GPU).
        detector_options: More keywords of :meth:`Detector.from_pretrained` (``provider``, ``variant``,
            ``max_false_positive_rate``, ``truncation``, ``max_length``, ``batch_size`` is the windows per ONNX
            Runtime call and is named ``detector_batch_size`` here).

    Returns:
        The scored dataset. A row whose text is not a string fails its batch with :class:`InvalidInputError`.

    Raises:
        InvalidValueError: A size out of range, or an unknown detector option.
        ModelFilesMissingError: No bundle at ``model``.
        MissingExtraError: Ray Data is not installed.
    """
    return map_detector(
        ds,
        model=model,
        options=actor_options(text_column, "column", threads_per_actor, num_gpus_per_actor, detector_options),
        batch_size=batch_size,
        num_actors=num_actors,
        threads_per_actor=threads_per_actor,
        num_gpus_per_actor=num_gpus_per_actor,
    )


DETECTOR_KEYWORDS = frozenset(
    {"provider", "variant", "max_false_positive_rate", "truncation", "max_length", "detector_batch_size"}
)


def actor_options(text_column: str, mode: str, threads: int, gpus: float, options: Mapping[str, Any]) -> ActorOptions:
    """The options every scoring actor is built with.

    Args:
        text_column: The column holding the texts.
        mode: ``"column"`` (a dataset's text column) or ``"parsed"`` (rows the line datasource parsed).
        threads: Intra-op threads of each actor's session.
        gpus: GPUs reserved per actor (0: CPU; above 0 the provider defaults to CUDA).
        options: ``Detector`` keywords (``detector_batch_size`` is the Detector's ``batch_size``).

    Raises:
        InvalidValueError: An unknown detector option.
    """
    unknown = sorted(set(options) - DETECTOR_KEYWORDS)
    if unknown:
        raise InvalidValueError(f"unknown detector option(s) {', '.join(unknown)}; known: {sorted(DETECTOR_KEYWORDS)}")
    detector = {k: v for k, v in options.items() if k != "detector_batch_size" and v is not None}
    if "detector_batch_size" in options and options["detector_batch_size"] is not None:
        detector["batch_size"] = options["detector_batch_size"]
    detector.setdefault("provider", "cuda" if gpus else "cpu")
    detector["threads"] = threads
    return ActorOptions(detector=detector, text_column=text_column, mode=mode)


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")


def map_detector(
    ds: ray.data.Dataset,
    *,
    model: str | os.PathLike[str] | None,
    options: ActorOptions,
    batch_size: int,
    num_actors: int,
    threads_per_actor: int,
    num_gpus_per_actor: float = 0,
) -> ray.data.Dataset:
    """``ds.map_batches`` with a fixed pool of :class:`DetectorActor` (what :func:`score_dataset` runs)."""
    for name, value in (("batch_size", batch_size), ("num_actors", num_actors), ("threads", threads_per_actor)):
        _positive(name, value)
    if not isinstance(num_gpus_per_actor, (int, float)) or num_gpus_per_actor < 0:
        raise InvalidValueError(f"num_gpus_per_actor must be >= 0, got {num_gpus_per_actor!r}")
    ray = _ray()
    bundle = ray.put(bundle_files(model))
    return ds.map_batches(
        DetectorActor,
        fn_constructor_args=([bundle], options),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=threads_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )


def id_text(value: Any) -> str:
    """An id as the JSON text carried between the read tasks, the actors and the driver (``""``: none)."""
    return json.dumps(value, sort_keys=True)
