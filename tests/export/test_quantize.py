"""The graph stages one by one (optimize, int8, fp16) and the accuracy gate, on the tiny checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.errors import ExportError, GateFailedError
from export.evaluate.metrics import roc_auc
from export.onnx.export import ExportConfig, export_onnx, load_checkpoint, parity_set
from export.onnx.gates import GateConfig, apply_gate, compare_scores
from export.onnx.optimize import OptimizeConfig, optimize
from export.onnx.quantize import QuantizeConfig, convert_fp16, quantize

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def stage_inputs(tiny_checkpoint: Path, sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny DistilBERT's parity set and its exported fp32 graph."""
    ckpt = load_checkpoint(tiny_checkpoint)
    parity = parity_set(ckpt, sample_texts, MAX_LENGTH)
    raw = export_onnx(
        ckpt, tmp_path_factory.mktemp("stages") / "raw.onnx", ExportConfig(max_length=MAX_LENGTH), parity=parity
    )
    return ckpt, parity, raw


def ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def probabilities(parity: Any, path: Path) -> np.ndarray:
    """P(AI) of the graph on the parity feeds, via onnxruntime directly."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    logits = np.concatenate(
        [session.run(["logits"], {k: v for k, v in f.items() if k in names})[0] for f in parity.feeds]
    )
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[:, 1]


def test_optimize_fuses_attention_and_keeps_parity(stage_inputs: Any, tmp_path: Path) -> None:
    ckpt, parity, raw = stage_inputs
    recipe: list[dict[str, Any]] = []
    out = optimize(
        raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity, recipe=recipe
    )
    assert recipe[0]["fusions"]["Attention"] == ops(out).count("Attention") == 2
    assert recipe[0]["fusions"]["SkipLayerNormalization"] == ops(out).count("SkipLayerNormalization")
    assert recipe[0]["parity_max_abs_logit_diff"] < 1e-4
    assert parity.max_abs_diff(out) == pytest.approx(recipe[0]["parity_max_abs_logit_diff"])
    same = optimize(raw, tmp_path / "o0.onnx", OptimizeConfig("O0"), architecture=ckpt.architecture(), parity=parity)
    assert ops(same) == ops(raw)


def test_optimize_config_is_validated() -> None:
    with pytest.raises(ValueError, match="O0"):
        OptimizeConfig("O5")
    with pytest.raises(ValueError, match="atol"):
        OptimizeConfig("O2", atol=0.0)
    assert OptimizeConfig("O3").tolerance > OptimizeConfig("O2").tolerance
    with pytest.raises(dataclasses.FrozenInstanceError):
        OptimizeConfig().level = "O1"  # type: ignore[misc]


@pytest.mark.parametrize("fused", [False, True])
def test_dynamic_int8_quantizes_matmuls(stage_inputs: Any, tmp_path: Path, fused: bool) -> None:
    ckpt, parity, raw = stage_inputs
    src = raw
    if fused:
        src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    recipe: list[dict[str, Any]] = []
    out = quantize(src, tmp_path / "int8.onnx", QuantizeConfig.avx512_vnni(), parity=parity, recipe=recipe)
    found = set(ops(out))
    assert found & {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}
    assert "MatMul" not in found or ops(out).count("MatMul") < ops(src).count("MatMul")
    assert recipe[0]["mode"] == "dynamic" and recipe[0]["parity_max_abs_logit_diff"] > 0
    assert np.abs(probabilities(parity, out) - probabilities(parity, src)).max() < 0.05


def test_excluded_nodes_stay_float(stage_inputs: Any, tmp_path: Path) -> None:
    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    lin2 = [n.name for n in onnx.load(str(src)).graph.node if "ffn/lin2" in n.name]
    assert len(lin2) == 2
    cfg = dataclasses.replace(QuantizeConfig.avx512_vnni(), exclude=("ffn/lin2",))
    out = quantize(src, tmp_path / "int8.onnx", cfg)
    kept = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert all(kept[name] == "MatMul" for name in lin2)
    assert "MatMulInteger" in kept.values() or "DynamicQuantizeMatMul" in kept.values()
    assert cfg.to_dict()["exclude"] == ["ffn/lin2"]


@pytest.mark.parametrize("preset", ["avx512_vnni_mixed", "weight_only"])
def test_weight_only_blocks(stage_inputs: Any, tmp_path: Path, preset: str) -> None:
    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    out = quantize(src, tmp_path / "int8.onnx", getattr(QuantizeConfig, preset)(), parity=parity)
    nodes = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    lin2 = [name for name in nodes if "ffn/lin2" in name]
    assert len(lin2) == 2 and all(nodes[name] == "MatMulNBits" for name in lin2)
    if preset == "weight_only":
        assert "MatMul" not in nodes.values() and "Attention" in nodes.values()
        assert not {"DynamicQuantizeLinear", "MatMulInteger", "QAttention"} & set(nodes.values())  # float activations
    else:
        assert "QAttention" in nodes.values() and "MatMulInteger" in nodes.values()
    assert np.abs(probabilities(parity, out) - probabilities(parity, src)).max() < 0.05


def test_static_qdq_needs_and_uses_calibration(stage_inputs: Any, tmp_path: Path) -> None:
    ckpt, parity, raw = stage_inputs
    cfg = QuantizeConfig.static_qdq(size=4)
    with pytest.raises(ExportError, match="calibration"):
        quantize(raw, tmp_path / "q.onnx", cfg)
    assert not (tmp_path / "q.onnx").exists()
    calibration = [{k: v[i : i + 1] for k, v in parity.feeds[0].items()} for i in range(4)]
    recipe: list[dict[str, Any]] = []
    out = quantize(raw, tmp_path / "q.onnx", cfg, calibration=calibration, parity=parity, recipe=recipe)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops(out))
    assert recipe[0]["calibration_windows"] == 4 and recipe[0]["format"] == "QDQ"
    assert np.abs(probabilities(parity, out) - probabilities(parity, raw)).max() < 0.1


def test_fp16_keeps_the_contract(stage_inputs: Any, tmp_path: Path) -> None:
    ckpt, parity, raw = stage_inputs
    fused = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    out = convert_fp16(fused, tmp_path / "fp16.onnx", parity=parity)
    graph = onnx.load(str(out)).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.INT64] * 2
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert np.abs(probabilities(parity, out) - probabilities(parity, fused)).max() < 1e-2


def test_quantize_config_presets_and_validation() -> None:
    vnni = QuantizeConfig.avx512_vnni()
    assert (vnni.mode, vnni.weight_type, vnni.per_channel, vnni.reduce_range) == ("dynamic", "QInt8", True, False)
    assert QuantizeConfig.avx2().reduce_range
    assert QuantizeConfig.weight_only().to_dict() == {
        "mode": "weight_only",
        "bits": 8,
        "block_size": 32,
        "accuracy_level": 4,
    }
    mixed = QuantizeConfig.avx512_vnni_mixed()
    assert mixed.exclude_weight_only and mixed.to_dict()["excluded_as"].startswith("weight_only")
    static = QuantizeConfig.static_qdq("entropy", 32)
    assert static.to_dict()["calibration_method"] == "entropy" and static.calibration_size == 32
    for bad in (
        {"mode": "fancy"},
        {"weight_type": "int4"},
        {"activation_type": "QInt16"},
        {"calibration_method": "mse"},
        {"calibration_size": 0},
        {"op_types": ()},
        {"exclude": ("",)},
        {"exclude": ("(",)},
        {"block_size": 24},
        {"exclude": "lin2"},
    ):
        with pytest.raises(ValueError):
            QuantizeConfig(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vnni.mode = "static"  # type: ignore[misc]


def test_export_config_is_validated() -> None:
    with pytest.raises(ValueError, match="opset >= 18"):
        ExportConfig(exporter="dynamo", opset=17)
    with pytest.raises(ValueError, match="exporter"):
        ExportConfig(exporter="jit")
    with pytest.raises(ValueError, match="max_length"):
        ExportConfig(max_length=4)


def test_compare_scores_by_hand() -> None:
    labels = [0, 0, 1, 1]
    ref = [0.1, 0.4, 0.6, 0.9]
    cand = [0.1, 0.7, 0.6, 0.9]  # one decision flips, one pair is now misordered
    m = compare_scores(labels, ref, cand, threshold=0.5)
    assert m["auc_reference"] == 1.0 and m["auc_candidate"] == 0.75 and m["auc_drop"] == 0.25
    assert m["agreement"] == 0.75 and m["max_prob_diff"] == pytest.approx(0.3) and m["n"] == 4
    with pytest.raises(ValueError):
        compare_scores([0, 1], [0.1, 0.2], [0.3], 0.5)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1), st.floats(-0.2, 0.2)), min_size=2, max_size=60),
    st.floats(0.05, 0.95),
)
def test_gate_figures_match_their_definitions(rows: list[tuple[int, float, float]], threshold: float) -> None:
    labels = np.array([r[0] for r in rows])
    ref = np.array([r[1] for r in rows])
    cand = np.clip(ref + np.array([r[2] for r in rows]), 0, 1)
    m = compare_scores(labels, ref, cand, threshold)
    flips = sum((a >= threshold) != (b >= threshold) for a, b in zip(ref, cand, strict=True))
    assert m["agreement"] == pytest.approx(1 - flips / len(rows))
    assert m["max_prob_diff"] == pytest.approx(np.abs(ref - cand).max())
    if 0 < labels.sum() < len(labels):
        assert m["auc_drop"] == pytest.approx(roc_auc(labels, ref) - roc_auc(labels, cand))
    same = compare_scores(labels, ref, ref, threshold)
    assert same["agreement"] == 1.0 and same["max_prob_diff"] == 0.0
    assert np.isnan(same["auc_drop"]) or same["auc_drop"] == 0.0


def test_apply_gate_limits() -> None:
    ok = {"set": {"n": 10, "auc_reference": 0.9, "auc_candidate": 0.899, "auc_drop": 0.001, "agreement": 1.0,
                  "max_prob_diff": 0.01}}  # fmt: skip
    record = apply_gate("int8", ok, GateConfig())
    assert record["passed"] and record["sets"]["set"]["auc_drop"] == 0.001
    with pytest.raises(GateFailedError, match="agreement 1.0000 < 1.01"):
        apply_gate("int8", ok, GateConfig(min_agreement=1.01))
    with pytest.raises(GateFailedError, match="ROC AUC drop 0.0010 > -1"):
        apply_gate("int8", ok, GateConfig(max_auc_drop=-1))
    with pytest.raises(GateFailedError, match="probability difference"):
        apply_gate("int8", ok, GateConfig(max_prob_diff=0.001))
    with pytest.raises(GateFailedError, match="no evaluation data"):
        apply_gate("int8", {}, GateConfig())
    with pytest.raises(GateFailedError, match="alone and in a batch differ by 0.002 > 1e-05"):
        apply_gate("int8", ok, GateConfig(), batch_diff=(32, 0.002))
    measured = apply_gate("int8", ok, GateConfig(), batch_diff=(32, 0.0))
    assert measured["batch_invariance"] == {"texts": 32, "max_abs_diff": 0.0}
    assert apply_gate("int8", ok, GateConfig(max_batch_diff=None), batch_diff=(32, 0.3))["passed"]  # reported only
    one_class = {"set": {**ok["set"], "auc_drop": float("nan")}}
    assert apply_gate("fp16", one_class, GateConfig())["passed"]
    for bad in (
        {"max_auc_drop": float("nan")},
        {"min_agreement": "high"},
        {"max_prob_diff": -0.1},
        {"max_batch_diff": -1e-6},
    ):
        with pytest.raises(ValueError):
            GateConfig(**bad)


@pytest.mark.parametrize("preset", ["avx512_vnni", "weight_only"])
def test_embedding_tables_quantized_on_request(stage_inputs: Any, tmp_path: Path, preset: str) -> None:
    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    cfg = getattr(QuantizeConfig, preset)()
    plain = quantize(src, tmp_path / "plain.onnx", cfg)
    tables = quantize(src, tmp_path / "tables.onnx", dataclasses.replace(cfg, embeddings=True))
    assert "EmbedLayerNormalization" in ops(plain) and "EmbedLayerNormalization" not in ops(tables)
    assert "QEmbedLayerNormalization" in ops(tables)
    # the word and position tables ((vocabulary + positions) x dim floats) shrink to a quarter, nothing else
    config = ckpt.model.config
    tables_bytes = (config.vocab_size + config.max_position_embeddings) * config.dim * 4
    saved = plain.stat().st_size - tables.stat().st_size
    assert 0.72 * tables_bytes < saved < 0.76 * tables_bytes
    assert dataclasses.replace(cfg, embeddings=True).to_dict()["embeddings"] == "int8"
    assert np.abs(probabilities(parity, tables) - probabilities(parity, plain)).max() < 0.05


def _logits(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]


def test_word_rows_quantized_per_row(stage_inputs: Any, tmp_path: Path) -> None:
    from onnx import numpy_helper

    from export.onnx.embeddings import quantize_word_rows

    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    model = onnx.load(str(src))
    assert quantize_word_rows(model) == ckpt.model.config.vocab_size
    rows_path = tmp_path / "rows.onnx"
    onnx.save(model, str(rows_path))
    assert not {"EmbedLayerNormalization", "QEmbedLayerNormalization"} & set(ops(rows_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (rows,) = [v for v in inits.values() if v.dtype == np.int8]
    (scales,) = [v for k, v in inits.items() if k.endswith("_row_scales")]
    # each row within half a step of its own scale of the checkpoint's table (computed by PyTorch)
    table = ckpt.model.distilbert.embeddings.word_embeddings.weight.detach().numpy()
    assert rows.shape == table.shape and scales.shape == (table.shape[0], 1)
    assert np.all(np.abs(rows * scales - table) <= scales / 2 + 1e-7)
    peak = np.abs(table).max(axis=1)
    assert np.allclose(scales[peak > 0, 0], peak[peak > 0] / 127, rtol=1e-6) and np.all(rows[peak == 0] == 0)
    # the same model otherwise: padded rows score as they do alone, and close to the float tables
    rng = np.random.default_rng(0)
    lengths = [7, 19, 33]
    ids = np.zeros((3, 33), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(5, ckpt.model.config.vocab_size, size=n)
        mask[r, :n] = 1
    batch = _logits(rows_path, ids, mask)
    for r, n in enumerate(lengths):
        alone = _logits(rows_path, ids[r : r + 1, :n], mask[r : r + 1, :n])
        assert np.abs(alone - batch[r]).max() < 1e-5
        assert np.abs(alone - _logits(src, ids[r : r + 1, :n], mask[r : r + 1, :n])).max() < 5e-3
    cfg = QuantizeConfig(embeddings=True, embedding_scales="row")
    assert cfg.to_dict()["embeddings"] == "int8, a scale per row"
    quantized = quantize(src, tmp_path / "int8-rows.onnx", cfg)
    assert "QEmbedLayerNormalization" not in ops(quantized) and "DynamicQuantizeLinear" in ops(quantized)
    assert np.abs(probabilities(parity, quantized) - probabilities(parity, src)).max() < 0.05
    with pytest.raises(ExportError, match="EmbedLayerNormalization"):
        quantize_word_rows(onnx.load(str(raw)))
    with pytest.raises(ValueError, match="embedding_scales"):
        QuantizeConfig(embedding_scales="column")


def test_early_ffn_preset_leaves_the_first_ffn_outputs_float(stage_inputs: Any, tmp_path: Path) -> None:
    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    out = onnx.load(str(quantize(src, tmp_path / "early.onnx", QuantizeConfig.early_ffn_fp32())))
    lin2 = {n.name: n.op_type for n in out.graph.node if "ffn/lin2" in n.name}
    layers = ckpt.model.config.n_layers
    early = [name for name in lin2 if any(f"layer.{k}/" in name for k in range(min(3, layers)))]
    assert early and all(lin2[name] == "MatMul" for name in early)
    assert all(op != "MatMul" for name, op in lin2.items() if name not in early)


def _input_peaks(model: Any, feeds: Any) -> dict[str, np.ndarray]:
    """Per input channel, the largest |value| into each FFN and attention output projection, from PyTorch."""
    import torch

    peaks: dict[str, np.ndarray] = {}
    hooks = []
    for k, layer in enumerate(model.distilbert.transformer.layer):
        for name, module in (("ffn/lin1", layer.ffn.lin1), ("ffn/lin2", layer.ffn.lin2),
                             ("attention/out_lin", layer.attention.out_lin)):  # fmt: skip
            key = f"layer.{k}/{name}/"

            def record(_m: Any, args: tuple, key: str = key) -> None:
                peak = args[0].detach().abs().reshape(-1, args[0].shape[-1]).max(dim=0).values.numpy()
                peaks[key] = np.maximum(peaks[key], peak) if key in peaks else peak

            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            for feed in feeds:
                model(
                    input_ids=torch.from_numpy(feed["input_ids"]),
                    attention_mask=torch.from_numpy(feed["attention_mask"]),
                )
    finally:
        for hook in hooks:
            hook.remove()
    return peaks


def test_outlier_channels_split_exactly_and_are_the_largest(stage_inputs: Any, tmp_path: Path) -> None:
    from export.onnx.outliers import split_outliers

    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    model = onnx.load(str(src))
    chosen = split_outliers(model, parity.feeds, 2)
    split = tmp_path / "split.onnx"
    onnx.save(model, str(split))
    # the same function in fp32: the two products add up to the original one
    assert np.abs(probabilities(parity, split) - probabilities(parity, src)).max() < 1e-5
    # the channels are the two largest by PyTorch's own activations on the same windows
    reference = _input_peaks(ckpt.model, parity.feeds)
    assert len(chosen) == 3 * ckpt.model.config.n_layers
    for node, channels in chosen.items():
        (key,) = [k for k in reference if k in node]
        assert sorted(channels) == sorted(np.argsort(-reference[key])[:2].tolist())
    # a fused FFN's outlier neurons are computed in fp32 from the FFN input: the input product's weight columns
    # and GELU bias for them are zero (GELU(0) = 0), so they reach the int8 output product as exact zeros
    graph = model.graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    by_output = {o: n for n in graph.node for o in n.output}
    lin2 = {p: c for p, c in chosen.items() if "ffn/lin2" in p}
    assert lin2 and all(f"{p}/neurons/outliers" in {n.name for n in graph.node} for p in lin2)
    for p, channels in lin2.items():
        (product,) = [n for n in graph.node if n.name == p]
        gelu = by_output[product.input[0]]
        assert gelu.op_type == "BiasGelu" and not inits[gelu.input[1]][channels].any()
        (lin1,) = [n for n in graph.node if n.name == p.replace("ffn/lin2", "ffn/lin1")]  # its int8 product
        assert not inits[lin1.input[1]][:, channels].any() and inits[lin1.input[1]].any()
        assert not inits[product.input[1]][channels].any()
    # no weight is left behind unused: the split adds the fp32 rows only
    assert {i.name for i in graph.initializer} <= {x for n in graph.node for x in n.input}
    before = sum(a.nbytes for a in (onnx.numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer))
    assert sum(a.nbytes for a in inits.values()) < 1.1 * before
    with pytest.raises(ExportError, match="calibration"):
        split_outliers(onnx.load(str(src)), [], 2)
    with pytest.raises(ValueError, match="dynamic"):
        QuantizeConfig(mode="static", outliers=4)
    with pytest.raises(ValueError, match="outliers"):
        QuantizeConfig(outliers=-1)


def test_outlier_products_ffn_leaves_the_attention_output_product_whole(stage_inputs: Any, tmp_path: Path) -> None:
    """``outlier_products="ffn"``: only the FFN products are split, through the quantizer too; the recipe says so."""
    ckpt, parity, raw = stage_inputs
    src = optimize(raw, tmp_path / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    recipe: list[dict[str, Any]] = []
    cfg = QuantizeConfig(outliers=2, outlier_products="ffn")
    out = quantize(src, tmp_path / "int8.onnx", cfg, calibration=parity.feeds, recipe=recipe)
    names = [n.name for n in onnx.load(str(out)).graph.node]
    split = {n.rsplit("/MatMul/", 1)[0].split("/")[-1] for n in names if n.endswith("/outlier_add")}
    assert split == {"lin1", "lin2"}
    assert not any("out_lin/MatMul/" in n for n in names)
    entry = recipe[0]
    assert entry["outlier_products"] == "ffn" and set(entry["outlier_channels_by_node"]) == {
        n for n in entry["outlier_channels_by_node"] if "/ffn/" in n
    }
    assert len(entry["outlier_channels_by_node"]) == 2 * ckpt.model.config.n_layers
    with pytest.raises(ValueError, match="outlier_products"):
        QuantizeConfig(outliers=2, outlier_products="attention")


def test_outlier_channels_cut_the_int8_error_of_an_outlier(
    stage_inputs: Any, sample_texts: list[str], tmp_path: Path
) -> None:
    import copy

    import torch

    ckpt, _, _ = stage_inputs
    model = copy.deepcopy(ckpt.model)
    # one channel of every first LayerNorm (the FFN's input) made 40x larger, as MiniLM's channel 99 is
    with torch.no_grad():
        for layer in model.distilbert.transformer.layer:
            layer.sa_layer_norm.weight[5] *= 40.0
            layer.sa_layer_norm.bias[5] *= 40.0
    spiked_ckpt = dataclasses.replace(ckpt, model=model)
    parity = parity_set(spiked_ckpt, sample_texts, MAX_LENGTH)
    spiked = export_onnx(spiked_ckpt, tmp_path / "spiked.onnx", ExportConfig(max_length=MAX_LENGTH), parity=parity)
    # only the FFN inputs are quantized, in both graphs: layer 0's product then sees the same float input in
    # both, and the difference in its output is the split alone
    only = QuantizeConfig(exclude=(r"(q_lin|k_lin|v_lin|out_lin|lin2|classifier)",))
    plain = quantize(spiked, tmp_path / "plain.onnx", only)
    recipe: list[dict[str, Any]] = []
    split = quantize(spiked, tmp_path / "split.onnx", dataclasses.replace(only, outliers=2),
                     calibration=parity.feeds, recipe=recipe)  # fmt: skip
    graph = onnx.load(str(split)).graph
    kept = [n for n in graph.node if n.name.endswith("/outliers")]
    assert kept and all(n.op_type == "MatMul" for n in kept)
    assert "DynamicQuantizeLinear" in ops(split) or "DynamicQuantizeMatMul" in ops(split)
    lin1 = {k: v for k, v in recipe[-1]["outlier_channels_by_node"].items() if "ffn/lin1" in k}
    assert lin1 and all(5 in channels for channels in lin1.values())
    assert recipe[-1]["outlier_channels"] == 2 and recipe[-1]["calibration_windows"] == len(parity.feeds)
    (first,) = [n for n in onnx.load(str(spiked)).graph.node if "layer.0/ffn/lin1" in n.name and n.op_type == "MatMul"]
    exact = _tensor(spiked, first.output[0], parity.feeds[0])
    error_plain = np.abs(_tensor(plain, first.output[0], parity.feeds[0]) - exact).mean()
    error_split = np.abs(_tensor(split, first.output[0], parity.feeds[0]) - exact).mean()
    assert error_split < error_plain / 4
    # and the model's answers are no further from fp32 than without the split
    p_exact = probabilities(parity, spiked)
    p_plain, p_split = probabilities(parity, plain), probabilities(parity, split)
    assert np.abs(p_split - p_exact).mean() <= np.abs(p_plain - p_exact).mean() + 1e-3


def _tensor(path: Path, name: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The value of the tensor ``name`` of the graph at ``path`` on ``feed``."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run([name], {k: v for k, v in feed.items() if k in names})[0]
