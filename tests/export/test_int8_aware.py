"""export.train.int8_aware: the training forward pass rounds weights as the int8 export does, so the export of
an int8-aware checkpoint holds the weights the training evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.data.split import Split  # noqa: E402
from export.pipeline.config import read_pipeline_config  # noqa: E402
from export.train import int8_aware  # noqa: E402
from export.train.batches import load_tokenizer  # noqa: E402
from export.train.config import TrainConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_rows_round_as_onnxruntime_quantizes_weights_and_gradients_pass_straight_through() -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    weight = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 3.0, 6)[:, None]
    weight.requires_grad_(True)
    rounded = int8_aware.round_rows(weight, columns=[3, 7], rows=[2])
    rounded.sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))  # straight-through
    w, r = weight.detach().numpy(), rounded.detach().numpy()
    # the kept entries are untouched; the others are ONNX Runtime's symmetric int8 of the row without them
    assert np.array_equal(r[2], w[2]) and np.array_equal(r[:, [3, 7]], w[:, [3, 7]])
    for row in (0, 1, 3, 4, 5):
        inliers = np.delete(w[row], [3, 7])
        zero, scale, q = quantize_data(inliers, TensorProto.INT8, symmetric=True)
        assert zero == 0
        np.testing.assert_allclose(np.delete(r[row], [3, 7]), (np.asarray(q, np.float32) * scale), atol=1e-6)
    # rounding is idempotent: a rounded checkpoint rounds to itself
    np.testing.assert_allclose(int8_aware.round_rows(rounded.detach(), [3, 7], [2]).numpy(), r, atol=1e-6)


def test_tables_round_as_the_embedding_node_quantizes_them() -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    table = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.1
    zero, scale, q = quantize_data(table.numpy().ravel(), TensorProto.UINT8, symmetric=False)
    expected = (np.asarray(q, np.float32) - zero) * scale
    np.testing.assert_allclose(int8_aware.round_table(table).numpy().ravel(), expected, atol=1e-6)
    assert torch.equal(int8_aware.round_table(torch.zeros(3, 3)), torch.zeros(3, 3))  # a constant table is exact


def test_the_int8_forward_is_the_rounded_model_and_the_fp32_weights_come_back(tiny_checkpoint: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    ids = torch.randint(5, 200, (3, 24), generator=torch.Generator().manual_seed(2))
    windows = [list(range(5, 45)), list(range(100, 130))]
    how = int8_aware.plan(model, windows, products="ffn_attention", k=2)
    # every layer's FFN products and attention output product; the FFN output's neurons fp32 in the FFN input too
    assert len(how.columns) == 3 * model.config.n_layers
    for name, columns in how.columns.items():
        assert len(columns) == 2 and columns == sorted(columns)
        if name.endswith("lin2"):
            assert how.rows[name.replace("lin2", "lin1")] == columns
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        fp32 = model(input_ids=ids).logits
        with int8_aware.int8_forward(model, how):
            int8 = model(input_ids=ids).logits
        with int8_aware.rounded_weights(model, how):
            held = model(input_ids=ids).logits
            assert not torch.equal(model.distilbert.embeddings.word_embeddings.weight, before[
                "distilbert.embeddings.word_embeddings.weight"])  # fmt: skip
        after = model(input_ids=ids).logits
    assert torch.equal(int8, held) and not torch.equal(int8, fp32)
    assert torch.equal(after, fp32)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_int8_aware_checkpoint_exports_to_the_weights_it_was_trained_with(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path
) -> None:
    """Through the shipped [export] recipe (outlier split, int8 tables) and back (export.recover): the weights of
    the rounded checkpoint, where a checkpoint that was not rounded moves nearly every weight."""
    from safetensors.numpy import load_file
    from transformers import AutoModelForSequenceClassification

    from export.prune.sweep import int8_bundle
    from export.recover import recover

    recipe = {**read_pipeline_config(REPO / "configs" / "default.toml").export, "max_length": 64, "threads": 1}
    recipe.pop("eval")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    tok = load_tokenizer(tiny_checkpoint / "tokenizer.json", 64)
    windows = int8_aware.calibration_windows(recipe["calibration"], tok, Split())
    how = int8_aware.plan(model, windows, products=recipe["outlier_products"])
    rounded = tmp_path / "rounded"
    shutil.copytree(tiny_checkpoint, rounded)
    with int8_aware.rounded_weights(model, how):
        model.save_pretrained(rounded, safe_serialization=True)
    texts = sorted(sample_texts, key=len, reverse=True)[:8]
    recovered = {}
    for name, ckpt in (("rounded", rounded), ("plain", tiny_checkpoint)):
        bundle = int8_bundle(ckpt, tmp_path / f"{name}-int8", texts=texts, name=name, recipe=recipe)
        recover(bundle, tmp_path / f"{name}-back")
        recovered[name] = load_file(str(tmp_path / f"{name}-back" / "model.safetensors"))
        meta = json.loads((bundle / "aidetect.json").read_text())
        chosen = next(r for r in meta["recipe"] if r["stage"] == "quantize")["outlier_channels_by_node"]
        assert len(chosen) == len(how.columns)

    def unchanged(saved: dict[str, np.ndarray], back: dict[str, np.ndarray]) -> float:
        names = [k for k in saved if saved[k].ndim == 2]
        same = sum(int(np.sum(np.abs(saved[k] - back[k]) <= 1e-6 * np.abs(saved[k]).max())) for k in names)
        return same / sum(saved[k].size for k in names)

    # all but the columns of a channel the export chose otherwise: two channels' peaks within 0.2% of each other
    # can swap places when the rounding depends on which is chosen (here 1 of 8 neurons in one FFN, 0.17%)
    assert unchanged(load_file(str(rounded / "model.safetensors")), recovered["rounded"]) > 0.995
    assert unchanged(load_file(str(tiny_checkpoint / "model.safetensors")), recovered["plain"]) < 0.1


def test_int8_aware_needs_calibration_windows_for_outlier_channels(tmp_path: Path) -> None:
    from export.errors import ConfigError

    with pytest.raises(ConfigError, match="int8_calibration"):
        TrainConfig(data=("x.jsonl",), out=str(tmp_path), int8_aware=True)
    with pytest.raises(ConfigError, match="int8_outlier_products"):
        TrainConfig(data=("x.jsonl",), out=str(tmp_path), int8_outlier_products="all")
    TrainConfig(data=("x.jsonl",), out=str(tmp_path), int8_aware=True, int8_outlier_products="none")
