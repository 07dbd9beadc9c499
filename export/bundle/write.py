"""Writing model bundles: files copied, checksums filled, metadata validated, verified, moved into place.

A bundle is built in a temporary sibling directory and renamed into place only once it has been validated
(and, by default, loaded and run), so a failed write never leaves a half-written bundle behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aidetect_infer.bundle import (
    METADATA_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    BundleMetadata,
    load_bundle,
    sha256_file,
    to_plain,
)
from aidetect_infer.errors import BundleError
from export.files import replace_dir

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
VERIFY_TEXTS = (
    "The committee met on Tuesday to review the budget proposal for the coming year.",
    "honestly i dont know what to write here lol, my cat sat on the keyboard again",
)


def _producer() -> dict[str, str]:
    """Versions of the libraries writing the bundle (those that are importable)."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ("aidetect-infer", "onnxruntime", "onnx", "tokenizers", "torch", "transformers", "optimum"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return versions


def _table(rows: Mapping[str, Any]) -> list[str]:
    return [f"| {key} | {value} |" for key, value in rows.items()]


def model_card(metadata: BundleMetadata) -> str:
    """A minimal model card (``README.md``) written from the bundle metadata.

    Args:
        metadata: The bundle's validated metadata.

    Returns:
        Markdown text.
    """
    arch = dict(metadata.architecture)
    variant = dict(metadata.variant)
    lines = [
        f"# {metadata.name}",
        "",
        "A classifier that tells AI-generated text from human writing, packaged as an aidetect-infer bundle.",
        f"`score` = P({metadata.labels[1]}); `score >= {metadata.threshold}` means `{metadata.labels[1]}`.",
        "",
        "| property | value |",
        "| --- | --- |",
        *_table(
            {
                "architecture": arch.get("model_type"),
                "precision": variant.get("precision"),
                "max_length": metadata.max_length,
                "window_stride": metadata.window_stride,
                **{key: value for key, value in arch.items() if key != "model_type"},
            }
        ),
    ]
    metrics = metadata.optional.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        lines += ["", "## Metrics measured at export", "", "| held-out set | metric | value |"]
        lines.append("| --- | --- | --- |")
        for set_name, values in metrics.items():
            if isinstance(values, Mapping):
                lines += [f"| {set_name} | {key} | {value} |" for key, value in values.items()]
    training = metadata.optional.get("training")
    if isinstance(training, Mapping) and training:
        as_json = json.dumps(to_plain(training), indent=2, sort_keys=True)
        lines += ["", "## Training", "", "```json", as_json, "```"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from aidetect_infer import Detector",
        'detector = Detector.from_pretrained("path/to/this/bundle")',
        'print(detector.predict("Some text"))',
        "```",
        "",
    ]
    return "\n".join(lines)


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _verify(bundle_dir: Path) -> None:
    """Load the bundle with the runtime on the CPU and score two texts."""
    from aidetect_infer.detector import Detector

    detector = Detector.from_pretrained(bundle_dir, provider="cpu", threads=1)
    scores = detector.predict_proba(list(VERIFY_TEXTS))
    if scores.shape != (len(VERIFY_TEXTS),) or not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores):
        raise BundleError(f"{bundle_dir}: verification scores are not probabilities: {scores.tolist()}")
    logger.info("verified %s: scores %s", bundle_dir, [round(float(s), 4) for s in scores])


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass overwrite=True to replace it")


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    card: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write a model bundle directory (see ``docs/bundle-format.md``).

    Args:
        out_dir: The bundle directory to create.
        onnx_path: The ONNX model to copy in as ``model.onnx`` (a single file, no external data).
        tokenizer_path: The ``tokenizer.json`` the model was trained with, copied byte for byte.
        metadata: ``aidetect.json`` contents; ``files`` is filled in here (any given value is replaced),
            ``format_version`` defaults to 1, ``created`` and ``producer`` are added when absent.
        card: The model card for ``README.md``; ``None`` writes one generated from the metadata.
        overwrite: Replace an existing non-empty ``out_dir``.
        verify: Load the written bundle with the runtime on the CPU and score two texts before moving it
            into place.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is false.
        FileNotFoundError: ``onnx_path`` or ``tokenizer_path`` does not exist.
        BundleError: The metadata is invalid, or the written bundle fails to load or to score.
    """
    out = Path(out_dir)
    _check_target(out, overwrite)
    sources = {MODEL_FILE: Path(onnx_path), TOKENIZER_FILE: Path(tokenizer_path)}
    for name, source in sources.items():
        if not source.is_file():
            raise FileNotFoundError(f"{source}: not found (wanted as the bundle's {name})")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, source in sources.items():
            shutil.copyfile(source, staging / name)
        data = to_plain(metadata)
        data.setdefault("format_version", 1)
        data.setdefault("created", datetime.now(timezone.utc).replace(microsecond=0).isoformat())
        data.setdefault("producer", _producer())
        data["files"] = {name: _file_entry(staging / name) for name in sources}
        parsed = BundleMetadata.from_dict(data)
        as_json = json.dumps(parsed.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)
        (staging / METADATA_FILE).write_text(as_json + "\n", encoding="utf-8")
        (staging / CARD_FILE).write_text(card if card is not None else model_card(parsed), encoding="utf-8")
        load_bundle(staging)
        if verify:
            _verify(staging)
        _check_target(out, overwrite)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote bundle %s (%s)", out, parsed.precision)
    return out
