"""The model bundle: ``aidetect.json`` parsed into :class:`BundleMetadata`, files checked, variants resolved.

The format is specified in ``docs/bundle-format.md``; this module is its reference reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeGuard

from aidetect_infer.errors import (
    REBUILD_HINT,
    BundleError,
    ChecksumMismatchError,
    ModelFilesMissingError,
    UnsupportedFormatError,
)

logger = logging.getLogger(__name__)

METADATA_FILE = "aidetect.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CHECKED_FILES = (MODEL_FILE, TOKENIZER_FILE)
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
VARIANT_NAMES = ("fp32", "int8", "fp16")
REQUIRED_KEYS = (
    "format_version",
    "name",
    "labels",
    "max_length",
    "window_stride",
    "threshold",
    "variant",
    "architecture",
    "files",
)
OPTIONAL_KEYS = ("training", "metrics", "gates", "recipe", "producer", "created", "decision", "drift_reference")
MIN_MAX_LENGTH, MAX_MAX_LENGTH = 8, 8192
_HASH_CHUNK = 1 << 20


def _freeze(value: Any) -> Any:
    """Deep read-only copy of parsed JSON: dicts become mapping proxies, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def to_plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists (undoes the read-only freezing), ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if _is_int(value):
        return True
    return isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class BundleMetadata:
    """The validated contents of a bundle's ``aidetect.json`` (format version 1).

    Construct it with :meth:`from_dict` (or :func:`load_bundle`); the constructor validates every field and
    raises :class:`~aidetect_infer.errors.BundleError` on a bad value. Mappings are read-only.

    Attributes:
        format_version: Bundle format version (only ``1`` is known).
        name: Human-readable bundle name.
        labels: ``(negative, positive)`` class names; the score is the probability of index 1 (AI).
        max_length: Tokens per window, special tokens included.
        window_stride: Content tokens a window advances by on long texts.
        threshold: ``score >= threshold`` means ``labels[1]``.
        variant: Precision, optimization, quantization and pruning applied.
        architecture: Model type and sizes.
        files: sha256 and byte size of ``model.onnx`` and ``tokenizer.json``.
        optional: The optional keys present (``training``, ``metrics``, ``gates``, ``recipe``, ``producer``,
            ``created``, ``decision``, ``drift_reference``) and any key this runtime does not know, kept as read.
    """

    format_version: int
    name: str
    labels: tuple[str, str]
    max_length: int
    window_stride: int
    threshold: float
    variant: Mapping[str, Any]
    architecture: Mapping[str, Any]
    files: Mapping[str, Mapping[str, Any]]
    optional: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise BundleError(f"{METADATA_FILE}: " + "; ".join(problems) + f"; {REBUILD_HINT}")
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "threshold", float(self.threshold))
        for name in ("variant", "architecture", "files", "optional"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BundleMetadata:
        """Parse and validate a decoded ``aidetect.json``.

        Args:
            data: The decoded JSON object.

        Returns:
            The validated metadata.

        Raises:
            UnsupportedFormatError: ``format_version`` is not one this runtime knows.
            BundleError: A required key is missing or a value is invalid.
        """
        if not isinstance(data, Mapping):
            raise BundleError(f"{METADATA_FILE}: top level must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if not _is_int(version) or version not in SUPPORTED_FORMAT_VERSIONS:
            known = ", ".join(str(v) for v in sorted(SUPPORTED_FORMAT_VERSIONS))
            raise UnsupportedFormatError(
                f"{METADATA_FILE}: format_version {version!r} is not supported (this runtime reads {known}); "
                "upgrade aidetect-infer (`pip install -U aidetect-infer`) or re-export the bundle"
            )
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise BundleError(f"{METADATA_FILE}: missing required keys {missing}; {REBUILD_HINT}")
        optional = {key: value for key, value in data.items() if key not in REQUIRED_KEYS}
        unknown = sorted(set(optional) - set(OPTIONAL_KEYS))
        if unknown:
            logger.debug("%s: keeping unknown keys %s", METADATA_FILE, unknown)
        return cls(**{key: data[key] for key in REQUIRED_KEYS}, optional=optional)

    def to_dict(self) -> dict[str, Any]:
        """The metadata as a plain JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        out = {key: to_plain(getattr(self, key)) for key in REQUIRED_KEYS}
        out.update(to_plain(self.optional))
        return out

    @property
    def precision(self) -> str:
        """The variant's precision (``fp32``, ``int8``, ``fp16``)."""
        return str(self.variant["precision"])

    @property
    def batch_dependent(self) -> bool:
        """Whether a window's logits depend on the other windows of its batch.

        True for dynamic int8 (``variant.quantization.mode == "dynamic"``): ONNX Runtime's
        ``DynamicQuantizeLinear`` takes one activation scale over the whole input tensor, every row and the
        padding, so a text's score would move with its neighbours. fp32, fp16, static (calibrated) and
        weight-only int8 compute each row on its own.
        """
        quantization = self.variant.get("quantization")
        return isinstance(quantization, Mapping) and quantization.get("mode") == "dynamic"


def _validate(meta: BundleMetadata) -> list[str]:
    problems: list[str] = []
    if not _is_int(meta.format_version) or meta.format_version not in SUPPORTED_FORMAT_VERSIONS:
        problems.append(f"format_version {meta.format_version!r} is not supported")
    if not isinstance(meta.name, str) or not meta.name.strip():
        problems.append("name must be a non-empty string")
    labels = meta.labels
    if (
        not isinstance(labels, (list, tuple))
        or len(labels) != 2
        or not all(isinstance(x, str) and x for x in labels)
        or labels[0] == labels[1]
    ):
        problems.append(f"labels must be two distinct non-empty strings, got {labels!r}")
    if not _is_int(meta.max_length) or not MIN_MAX_LENGTH <= meta.max_length <= MAX_MAX_LENGTH:
        problems.append(
            f"max_length must be an integer in [{MIN_MAX_LENGTH}, {MAX_MAX_LENGTH}], got {meta.max_length!r}"
        )
    elif not _is_int(meta.window_stride) or not 1 <= meta.window_stride <= meta.max_length - 2:
        problems.append(
            f"window_stride must be an integer in [1, max_length - 2 = {meta.max_length - 2}], "
            f"got {meta.window_stride!r}"
        )
    if not _is_number(meta.threshold) or not 0.0 <= meta.threshold <= 1.0:
        problems.append(f"threshold must be a number in [0, 1], got {meta.threshold!r}")
    variant = meta.variant
    if not isinstance(variant, Mapping) or not isinstance(variant.get("precision"), str) or not variant["precision"]:
        problems.append('variant must be an object with a string "precision" (fp32, int8, fp16)')
    arch = meta.architecture
    if not isinstance(arch, Mapping) or not isinstance(arch.get("model_type"), str):
        problems.append('architecture must be an object with a string "model_type"')
    problems.extend(_validate_files(meta.files))
    return problems


def _validate_files(files: object) -> list[str]:
    if not isinstance(files, Mapping):
        return [f"files must be an object with entries for {list(CHECKED_FILES)}"]
    problems = []
    for name in CHECKED_FILES:
        entry = files.get(name)
        if not isinstance(entry, Mapping):
            problems.append(f'files["{name}"] is missing')
            continue
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(f'files["{name}"].sha256 must be 64 lowercase hex digits')
        size = entry.get("bytes")
        if not _is_int(size) or size < 0:
            problems.append(f'files["{name}"].bytes must be a non-negative integer')
    return problems


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle directory whose files are present and verified.

    Attributes:
        path: The bundle directory.
        metadata: Its parsed ``aidetect.json``.
    """

    path: Path
    metadata: BundleMetadata

    @property
    def model_path(self) -> Path:
        """Path of ``model.onnx``."""
        return self.path / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        """Path of ``tokenizer.json``."""
        return self.path / TOKENIZER_FILE


def is_bundle_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding an ``aidetect.json``."""
    return (path / METADATA_FILE).is_file()


def resolve_bundle_dir(path: str | os.PathLike[str], *, variant: str | None = None, gpu: bool = False) -> Path:
    """Find the bundle directory to load: ``path`` itself, or one of its ``fp32/ int8/ fp16/`` variants.

    Args:
        path: A bundle directory, or a parent directory holding variant sub-bundles.
        variant: The variant sub-directory to pick; ``None`` picks ``fp16`` when ``gpu`` and present, else
            ``int8``, else ``fp32``.
        gpu: Whether the session will run on CUDA/TensorRT (makes ``fp16`` the first choice).

    Returns:
        The bundle directory.

    Raises:
        ModelFilesMissingError: ``path`` does not exist, holds no bundle, or lacks the requested variant.
        BundleError: ``path`` is a single bundle whose precision differs from ``variant``.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise ModelFilesMissingError(f"{root}: bundle directory does not exist; {REBUILD_HINT}")
    if not root.is_dir():
        raise ModelFilesMissingError(f"{root}: not a directory (a bundle is a directory); {REBUILD_HINT}")
    if is_bundle_dir(root):
        return root
    present = [name for name in VARIANT_NAMES if is_bundle_dir(root / name)]
    if variant is not None:
        if variant in present:
            return root / variant
        raise ModelFilesMissingError(
            f"{root}: no {variant!r} variant here (found {present or 'no bundle'}); {REBUILD_HINT}"
        )
    order = ("fp16", "int8", "fp32") if gpu else ("int8", "fp32")
    for name in order:
        if name in present:
            logger.info("%s: picked the %s variant of %s", root, name, present)
            return root / name
    raise ModelFilesMissingError(
        f"{root}: no {METADATA_FILE} here and no variant sub-bundle "
        f"({', '.join(f'{n}/' for n in VARIANT_NAMES)}); {REBUILD_HINT}"
    )


def read_metadata(bundle_dir: str | os.PathLike[str]) -> BundleMetadata:
    """Read and validate ``aidetect.json`` in ``bundle_dir`` (no file checks).

    Raises:
        ModelFilesMissingError: ``aidetect.json`` does not exist.
        BundleError: It is not valid JSON or not a valid version-1 metadata object.
    """
    meta_path = Path(bundle_dir) / METADATA_FILE
    try:
        text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFilesMissingError(f"{meta_path}: missing; {REBUILD_HINT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path}: cannot be read ({exc}); {REBUILD_HINT}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc}); {REBUILD_HINT}") from exc
    try:
        return BundleMetadata.from_dict(data)
    except BundleError as exc:
        raise type(exc)(f"{meta_path.parent}/{exc}") from None


def verify_files(bundle_dir: Path, metadata: BundleMetadata) -> None:
    """Check that ``model.onnx`` and ``tokenizer.json`` exist and match their recorded size and sha256.

    Raises:
        ModelFilesMissingError: A file is missing.
        ChecksumMismatchError: A file's size or sha256 differs from ``aidetect.json``.
    """
    for name in CHECKED_FILES:
        file_path = bundle_dir / name
        expected = metadata.files[name]
        if not file_path.is_file():
            raise ModelFilesMissingError(f"{file_path}: missing from the bundle; {REBUILD_HINT}")
        size = file_path.stat().st_size
        if size != expected["bytes"]:
            raise ChecksumMismatchError(
                f"{file_path}: {size} bytes, but {METADATA_FILE} records {expected['bytes']} "
                f"(truncated or replaced); {REBUILD_HINT}"
            )
        digest = sha256_file(file_path)
        if digest != expected["sha256"]:
            raise ChecksumMismatchError(
                f"{file_path}: sha256 {digest} does not match {expected['sha256']} recorded in "
                f"{METADATA_FILE} (corrupt or replaced); {REBUILD_HINT}"
            )


def load_bundle(path: str | os.PathLike[str], *, variant: str | None = None, gpu: bool = False) -> Bundle:
    """Locate, parse and verify a bundle.

    Args:
        path: A bundle directory, or a parent holding ``fp32/ int8/ fp16/`` sub-bundles.
        variant: Which sub-bundle to load from a parent directory (see :func:`resolve_bundle_dir`).
        gpu: Prefer the ``fp16`` variant (the session will run on CUDA/TensorRT).

    Returns:
        The verified :class:`Bundle`.

    Raises:
        ModelFilesMissingError: The directory or one of its files is missing.
        UnsupportedFormatError: Unknown ``format_version``.
        ChecksumMismatchError: ``model.onnx`` or ``tokenizer.json`` differ from their recorded sha256.
        BundleError: Invalid JSON or invalid metadata values.
    """
    bundle_dir = resolve_bundle_dir(path, variant=variant, gpu=gpu)
    metadata = read_metadata(bundle_dir)
    if variant is not None and metadata.precision != variant and bundle_dir == Path(path).expanduser():
        raise BundleError(
            f"{bundle_dir}: variant {variant!r} requested but this bundle is {metadata.precision!r}; "
            "pass the parent directory of the variants or drop variant="
        )
    verify_files(bundle_dir, metadata)
    logger.debug("loaded bundle %s (%s, %s)", bundle_dir, metadata.name, metadata.precision)
    return Bundle(path=bundle_dir, metadata=metadata)
