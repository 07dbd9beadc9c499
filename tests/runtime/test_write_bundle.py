"""export.bundle.write_bundle: checksums, metadata, card, atomic placement, nothing half-written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aidetect_infer.bundle import load_bundle
from aidetect_infer.errors import BundleError
from export.bundle import write_bundle

from .graphs import pooled_graph


@pytest.fixture(scope="module")
def parts(tiny_bundle) -> dict:
    metadata = json.loads((tiny_bundle / "aidetect.json").read_text())
    for key in ("files", "created", "producer"):
        metadata.pop(key)
    return {
        "onnx_path": tiny_bundle / "model.onnx",
        "tokenizer_path": tiny_bundle / "tokenizer.json",
        "metadata": metadata,
    }


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir())


def test_writes_a_loadable_bundle_with_checksums(tmp_path, parts):
    out = write_bundle(tmp_path / "b", **parts)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "aidetect.json", "model.onnx", "tokenizer.json"]
    text = (out / "aidetect.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    for name, source in (("model.onnx", parts["onnx_path"]), ("tokenizer.json", parts["tokenizer_path"])):
        blob = source.read_bytes()
        assert (out / name).read_bytes() == blob
        assert data["files"][name] == {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    assert data["created"].endswith("+00:00") and "onnxruntime" in data["producer"]
    assert load_bundle(out).metadata.name == parts["metadata"]["name"]
    card = (out / "README.md").read_text()
    assert card.startswith(f"# {parts['metadata']['name']}") and "from_pretrained" in card
    assert _siblings(out) == ["b"]


def test_given_card_and_format_version_default(tmp_path, parts):
    metadata = dict(parts["metadata"])
    del metadata["format_version"]
    out = write_bundle(tmp_path / "b", **{**parts, "metadata": metadata}, card="# my card\n", verify=False)
    assert (out / "README.md").read_text() == "# my card\n"
    assert json.loads((out / "aidetect.json").read_text())["format_version"] == 1


def test_refuses_a_non_empty_directory_unless_overwrite(tmp_path, parts):
    out = tmp_path / "b"
    out.mkdir()
    write_bundle(out, **parts, verify=False)  # an empty directory is fine
    (out / "extra.txt").write_text("keep me?")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_bundle(out, **parts, verify=False)
    assert (out / "extra.txt").exists()
    write_bundle(out, **parts, verify=False, overwrite=True)
    assert not (out / "extra.txt").exists() and load_bundle(out)
    assert _siblings(out) == ["b"]


def test_invalid_metadata_leaves_nothing_behind(tmp_path, parts):
    with pytest.raises(BundleError, match="threshold"):
        write_bundle(tmp_path / "b", **{**parts, "metadata": {**parts["metadata"], "threshold": 3}})
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_that_fails_verification_is_not_written(tmp_path, parts):
    three_classes = pooled_graph(tmp_path / "three.onnx", classes=3)
    with pytest.raises(BundleError, match="2 classes"):
        write_bundle(tmp_path / "b", **{**parts, "onnx_path": three_classes})
    assert _siblings(tmp_path / "b") == ["three.onnx"]


def test_failed_overwrite_keeps_the_old_bundle(tmp_path, parts):
    out = write_bundle(tmp_path / "b", **parts, verify=False)
    before = (out / "aidetect.json").read_text()
    three_classes = pooled_graph(tmp_path / "three.onnx", classes=3)
    with pytest.raises(BundleError):
        write_bundle(out, **{**parts, "onnx_path": three_classes}, overwrite=True)
    assert (out / "aidetect.json").read_text() == before
    assert _siblings(out) == ["b", "three.onnx"]


def test_missing_sources_are_refused(tmp_path, parts):
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        write_bundle(tmp_path / "b", **{**parts, "onnx_path": tmp_path / "none.onnx"})
    assert list(tmp_path.iterdir()) == []
