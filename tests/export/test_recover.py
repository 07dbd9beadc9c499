"""export.recover: a checkpoint recovered from a bundle computes the bundle's weights in fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from export.errors import StageError  # noqa: E402
from export.pipeline.config import read_pipeline_config  # noqa: E402
from export.prune.sweep import int8_bundle  # noqa: E402
from export.recover import RECORD_FILE, main, recover  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["shipped", "decomposed"])
def shipped_recipe_bundle(
    request: pytest.FixtureRequest, tiny_checkpoint: Path, sample_texts: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    """The tiny checkpoint through the shipped int8 recipe: outlier split, int8 tables, LayerNorm rewrite (the
    shipped config's, and the plain operators of earlier bundles)."""
    recipe = {**read_pipeline_config(REPO / "configs" / "default.toml").export, "max_length": 64, "threads": 1}
    recipe.pop("eval")
    if request.param != "shipped":
        recipe["layernorm"] = request.param
    texts = sorted(sample_texts, key=len, reverse=True)[:8]
    out = tmp_path_factory.mktemp("recover") / "int8"
    return int8_bundle(tiny_checkpoint, out, texts=texts, name="tiny", recipe=recipe)


def _torch_logits(checkpoint: Path, ids: np.ndarray) -> np.ndarray:
    import torch
    from transformers import DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones_like(torch.from_numpy(ids)))
    return out.logits.numpy()


def test_recovered_weights_are_the_bundles_and_compute_its_function(
    shipped_recipe_bundle: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort
    from safetensors.numpy import load_file

    graph = onnx.load(str(shipped_recipe_bundle / "model.onnx")).graph
    assert any(n.name.endswith("/outlier_add") for n in graph.node)  # the split is there to be folded back
    assert any(n.name.endswith("/neurons/outliers") for n in graph.node)
    # the recovered LayerNorm weights are read off either rewrite (the embedding LayerNorm stays fused)
    meta = json.loads((shipped_recipe_bundle / "aidetect.json").read_text())
    mode = next(r["mode"] for r in meta["recipe"] if r["stage"] == "layernorm")
    norms = [n.op_type for n in graph.node if n.op_type in ("LayerNormalization", "ReduceMean")]
    assert norms and set(norms) == {{"standard": "LayerNormalization", "decomposed": "ReduceMean"}[mode]}
    record = recover(shipped_recipe_bundle, tmp_path / "ckpt")
    assert record["max_abs_logit_diff_vs_dequantized_graph"] <= 1e-4
    assert json.loads((tmp_path / "ckpt" / RECORD_FILE).read_text())["source"]["name"] == "tiny-int8"
    # every weight within int8 rounding of the checkpoint the bundle was exported from (computed another way:
    # the original safetensors, not the graph), the FFN's outlier neurons back in their own columns
    original = load_file(str(tiny_checkpoint / "model.safetensors"))
    recovered = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(recovered) == set(original)
    for name, weight in original.items():
        got = recovered[name]
        assert got.shape == weight.shape, name
        step = np.abs(weight).max(axis=-1, keepdims=True) / 127 if weight.ndim == 2 else np.abs(weight).max() / 127
        # per-channel int8 steps of the products; the tables and LayerNorm of the fused embedding node are
        # quantized per tensor (uint8, step range/255)
        bound = step if weight.ndim == 2 and "embeddings" not in name else (weight.max() - weight.min()) / 255
        assert np.all(np.abs(got - weight) <= bound + 1e-6), name
    # and it scores like the int8 graph, up to the activation quantization
    ids = np.random.default_rng(3).integers(5, 200, size=(2, 40), dtype=np.int64)
    session = ort.InferenceSession(str(shipped_recipe_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = np.concatenate(
        [session.run(None, {"input_ids": r[None], "attention_mask": np.ones_like(r[None])})[0] for r in ids]
    )
    assert np.abs(_torch_logits(tmp_path / "ckpt", ids) - int8).max() < 0.25
    # the bundle's training record travels with it (the threshold and split a re-export gates with)
    assert (tmp_path / "ckpt" / "training.json").is_file() or "training" not in json.loads(
        (shipped_recipe_bundle / "aidetect.json").read_text()
    )


def test_an_unfamiliar_graph_is_refused(shipped_recipe_bundle: Path, tmp_path: Path) -> None:
    import onnx

    from aidetect_infer.bundle import sha256_file

    bundle = tmp_path / "renamed"
    shutil.copytree(shipped_recipe_bundle, bundle)
    model = onnx.load(str(bundle / "model.onnx"))
    for node in model.graph.node:
        node.name = node.name.replace("ffn/lin1", "ffn/other")
    onnx.save(model, str(bundle / "model.onnx"))
    meta = json.loads((bundle / "aidetect.json").read_text())
    meta["files"]["model.onnx"] = {"sha256": sha256_file(bundle / "model.onnx"),
                                   "bytes": (bundle / "model.onnx").stat().st_size}  # fmt: skip
    (bundle / "aidetect.json").write_text(json.dumps(meta))
    with pytest.raises(StageError, match="not"):
        recover(bundle, tmp_path / "out")
    assert main([str(bundle), "--out", str(tmp_path / "out2")]) == 1
    assert not (tmp_path / "out2").exists()
    # no bundle at all, or one whose model does not match its checksum: the bundle exit code, nothing written
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "out3")]) == 2
    (bundle / "model.onnx").write_bytes(b"not a model")
    assert main([str(bundle), "--out", str(tmp_path / "out4")]) == 2
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out4").exists()
