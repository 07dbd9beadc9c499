"""Bundle loading and every refusal: missing files, corrupt files, checksums, versions, bad metadata, graphs."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from aidetect_infer import Detector
from aidetect_infer.bundle import BundleMetadata, load_bundle, read_metadata, resolve_bundle_dir
from aidetect_infer.errors import (
    BundleError,
    ChecksumMismatchError,
    ModelFilesMissingError,
    UnsupportedFormatError,
)

from .graphs import pooled_graph


def _copy(bundle: Path, tmp_path: Path, name: str = "bundle") -> Path:
    return Path(shutil.copytree(bundle, tmp_path / name))


def _edit_metadata(bundle: Path, **changes) -> None:
    path = bundle / "aidetect.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _refresh_checksums(bundle: Path) -> None:
    files = {}
    for name in ("model.onnx", "tokenizer.json"):
        blob = (bundle / name).read_bytes()
        files[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    _edit_metadata(bundle, files=files)


_DELETE = object()


def _load(path: Path) -> Detector:
    return Detector.from_pretrained(path, provider="cpu", threads=1)


def test_a_valid_bundle_loads(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.path == tiny_bundle
    assert bundle.metadata.labels == ("human", "ai")
    assert bundle.metadata.precision == "fp32"
    assert bundle.model_path.name == "model.onnx" and bundle.tokenizer_path.name == "tokenizer.json"


def test_metadata_is_frozen_and_round_trips(tiny_bundle):
    meta = read_metadata(tiny_bundle)
    with pytest.raises(AttributeError):
        meta.threshold = 0.1
    with pytest.raises(TypeError):
        meta.variant["precision"] = "int8"
    assert meta.optional["training"]["seed"] == 1234
    on_disk = json.loads((tiny_bundle / "aidetect.json").read_text())
    assert meta.to_dict() == on_disk
    assert BundleMetadata.from_dict(on_disk) == meta


@pytest.mark.parametrize("missing", ["model.onnx", "tokenizer.json", "aidetect.json"])
def test_missing_file_is_refused_naming_it(tiny_bundle, tmp_path, missing):
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / missing).unlink()
    with pytest.raises(ModelFilesMissingError, match=missing if missing != "aidetect.json" else "aidetect.json"):
        _load(bundle)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ModelFilesMissingError, match="does not exist"):
        _load(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ModelFilesMissingError, match="not a directory"):
        _load(tmp_path / "a_file")


def test_wrong_checksum_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    data = json.loads((bundle / "aidetect.json").read_text())
    data["files"]["model.onnx"]["sha256"] = "0" * 64
    (bundle / "aidetect.json").write_text(json.dumps(data))
    with pytest.raises(ChecksumMismatchError, match="model.onnx.*sha256"):
        _load(bundle)


def test_a_flipped_byte_is_caught_by_the_checksum(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    blob = bytearray((bundle / "tokenizer.json").read_bytes())
    blob[100] ^= 1
    (bundle / "tokenizer.json").write_bytes(bytes(blob))
    with pytest.raises(ChecksumMismatchError, match="tokenizer.json"):
        _load(bundle)


def test_a_truncated_file_is_caught_by_its_size(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    blob = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(blob[:-10])
    with pytest.raises(ChecksumMismatchError, match="bytes"):
        _load(bundle)


def test_corrupt_onnx_with_matching_checksum_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "model.onnx").write_bytes(b"this is not a protobuf" * 100)
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match="model.onnx: ONNX Runtime cannot load it"):
        _load(bundle)


def test_corrupt_tokenizer_with_matching_checksum_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match="tokenizer.json"):
        _load(bundle)


def test_corrupt_metadata_json_is_refused(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / "aidetect.json").write_text('{"format_version": 1,')
    with pytest.raises(BundleError, match="aidetect.json: not valid JSON"):
        _load(bundle)


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, None, True])
def test_unknown_format_version_is_refused(tiny_bundle, tmp_path, version):
    bundle = _copy(tiny_bundle, tmp_path)
    _edit_metadata(bundle, format_version=version)
    with pytest.raises(UnsupportedFormatError, match="format_version"):
        _load(bundle)


BAD_VALUES = [
    ("labels", ["ai"]),
    ("labels", ["ai", "ai"]),
    ("labels", "human,ai"),
    ("max_length", 4),
    ("max_length", 10_000),
    ("max_length", 128.0),
    ("window_stride", 0),
    ("window_stride", 127),
    ("threshold", 1.5),
    ("threshold", -0.1),
    ("threshold", math.nan),
    ("threshold", "0.5"),
    ("name", ""),
    ("variant", {"optimization": "O2"}),
    ("variant", "fp32"),
    ("architecture", {"layers": 2}),
    ("files", {"model.onnx": {"sha256": "0" * 64, "bytes": 1}}),
    ("files", {"model.onnx": {"sha256": "xyz", "bytes": 1}, "tokenizer.json": {"sha256": "0" * 64, "bytes": 1}}),
    ("files", {"model.onnx": {"sha256": "0" * 64, "bytes": -1}, "tokenizer.json": {"sha256": "0" * 64, "bytes": 1}}),
    ("threshold", _DELETE),
    ("files", _DELETE),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}"[:40] for k, v in BAD_VALUES])
def test_invalid_metadata_values_are_refused(tiny_bundle, tmp_path, key, value):
    bundle = _copy(tiny_bundle, tmp_path)
    _edit_metadata(bundle, **{key: value})
    with pytest.raises(BundleError, match=key) as info:
        _load(bundle)
    assert "aidetect.json" in str(info.value) and not isinstance(info.value, UnsupportedFormatError)


def test_top_level_must_be_an_object():
    with pytest.raises(BundleError, match="JSON object"):
        BundleMetadata.from_dict([1, 2])  # type: ignore[arg-type]


def test_unknown_keys_are_kept(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    _edit_metadata(bundle, future_field={"x": [1, 2]})
    assert load_bundle(bundle).metadata.optional["future_field"]["x"] == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"classes": 3}, "2 classes"),
        ({"output": "scores"}, "'logits' is missing"),
        ({"ids_type": 1}, "int64"),
        ({"inputs": ("input_ids",)}, "'attention_mask' is missing"),
        ({"inputs": ("input_ids", "attention_mask", "position_ids")}, "'position_ids' is not one"),
    ],
)
def test_graphs_the_runtime_cannot_feed_are_refused(tiny_bundle, tmp_path, kwargs, problem):
    bundle = _copy(tiny_bundle, tmp_path)
    pooled_graph(bundle / "model.onnx", **kwargs)
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match=problem):
        _load(bundle)


def test_a_well_formed_foreign_graph_is_accepted(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    pooled_graph(bundle / "model.onnx")
    _refresh_checksums(bundle)
    assert _load(bundle).predict_proba(["some words", ""]).shape == (2,)


@pytest.fixture
def variants(tiny_bundle, tmp_path) -> Path:
    parent = tmp_path / "variants"
    for name in ("fp32", "int8"):
        _copy(tiny_bundle, parent, name)
        _edit_metadata(parent / name, variant={"precision": name}, name=f"tiny-{name}")
    return parent


def test_variant_resolution(variants):
    assert _load(variants).metadata.precision == "int8"
    assert Detector.from_pretrained(variants, provider="cpu", variant="fp32").metadata.precision == "fp32"
    assert resolve_bundle_dir(variants, gpu=True) == variants / "int8"
    _copy(variants / "fp32", variants, "fp16")
    assert resolve_bundle_dir(variants, gpu=True) == variants / "fp16"
    assert resolve_bundle_dir(variants, gpu=False) == variants / "int8"
    shutil.rmtree(variants / "int8")
    assert resolve_bundle_dir(variants) == variants / "fp32"


def test_missing_variant_is_refused(variants, tmp_path):
    with pytest.raises(ModelFilesMissingError, match="no 'fp16' variant"):
        Detector.from_pretrained(variants, provider="cpu", variant="fp16")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFilesMissingError, match="no aidetect.json"):
        _load(tmp_path / "empty")


def test_variant_mismatch_on_a_single_bundle_is_refused(tiny_bundle):
    with pytest.raises(BundleError, match="variant 'int8' requested"):
        Detector.from_pretrained(tiny_bundle, provider="cpu", variant="int8")
