"""LayerNorm rewrites: plain operators and ONNX LayerNormalization compute what the fused kernels compute, on single
nodes and whole models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.onnx.export import ExportConfig, export_onnx, load_checkpoint, parity_set
from export.onnx.layernorm import decompose_model, rewrite_layernorm, rewrite_model
from export.onnx.optimize import OptimizeConfig, optimize
from export.onnx.quantize import QuantizeConfig, quantize

H = 48


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(-1, keepdims=True)
    return ((x64 - mean) / np.sqrt(var + eps) * gamma + beta).astype(np.float32)


def _params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": (rng.standard_normal((2, 5, H)) * 3 + 1).astype(np.float32),
        "skip": rng.standard_normal((2, 5, H)).astype(np.float32),
        "gamma": rng.standard_normal(H).astype(np.float32),
        "beta": rng.standard_normal(H).astype(np.float32),
        "bias": rng.standard_normal(H).astype(np.float32),
    }


def _graph(nodes: list[Any], p: dict[str, np.ndarray], outputs: list[str], opset: int) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, H]) for n in ("x", "skip")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    inits = [numpy_helper.from_array(p[n], n) for n in ("gamma", "beta", "bias")]
    graph = helper.make_graph(nodes, "g", inputs, outs, inits)
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=imports)


@pytest.mark.parametrize("opset", [17, 18])
def test_skip_layernorm_with_bias_and_sum_output(opset: int) -> None:
    p = _params(opset)
    node = helper.make_node(
        "SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y", "", "", "sum"],
        domain="com.microsoft", epsilon=1e-6,
    )  # fmt: skip
    model = _graph([node], p, ["y", "sum"], opset)
    fused = _run(model, {"x": p["x"], "skip": p["skip"]})
    assert decompose_model(model) == 1
    assert {n.op_type for n in model.graph.node} == {"Add", "ReduceMean", "Sub", "Mul", "Sqrt", "Div"}
    plain = _run(model, {"x": p["x"], "skip": p["skip"]})
    summed = p["x"] + p["skip"] + p["bias"]
    np.testing.assert_allclose(plain[1], summed, atol=1e-6)
    np.testing.assert_allclose(plain[0], _reference(summed, p["gamma"], p["beta"], 1e-6), atol=2e-5)
    np.testing.assert_allclose(plain[0], fused[0], atol=2e-5)


@pytest.mark.parametrize("with_bias", [True, False])
def test_skip_layernorm_as_standard_layernormalization(with_bias: bool) -> None:
    p = _params(7)
    inputs = ["x", "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
    node = helper.make_node(
        "SkipLayerNormalization", inputs, ["y", "", "", "sum"], domain="com.microsoft", epsilon=1e-6
    )  # fmt: skip
    model = _graph([node], p, ["y", "sum"], 17)
    fused = _run(model, {"x": p["x"], "skip": p["skip"]})
    assert rewrite_model(model, "standard") == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Add", "Add", "LayerNormalization"] if with_bias else ["Add", "LayerNormalization"]
    assert all(n.domain == "" for n in model.graph.node)
    standard = _run(model, {"x": p["x"], "skip": p["skip"]})
    summed = p["x"] + p["skip"] + (p["bias"] if with_bias else 0)
    np.testing.assert_allclose(standard[1], summed, atol=1e-6)
    np.testing.assert_allclose(standard[0], _reference(summed, p["gamma"], p["beta"], 1e-6), atol=2e-5)
    np.testing.assert_allclose(standard[0], fused[0], atol=2e-5)


def test_standard_mode_keeps_layernormalization_and_needs_opset_17() -> None:
    p = _params(8)
    plain = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)
    model = _graph([plain], p, ["y"], 17)
    assert rewrite_model(model, "standard") == 0
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization"]
    skip = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft")
    with pytest.raises(ExportError, match="opset 17"):
        rewrite_model(_graph([skip], p, ["y"], 16), "standard")
    with pytest.raises(ValueError, match="layernorm mode"):
        rewrite_model(model, "plain")


@pytest.mark.parametrize("with_beta", [True, False])
def test_layernormalization_node(with_beta: bool) -> None:
    p = _params(3)
    inputs = ["x", "gamma", "beta"] if with_beta else ["x", "gamma"]
    model = _graph([helper.make_node("LayerNormalization", inputs, ["y"], axis=-1, epsilon=1e-5)], p, ["y"], 17)
    fused = _run(model, {"x": p["x"], "skip": p["skip"]})[0]
    decompose_model(model)
    plain = _run(model, {"x": p["x"], "skip": p["skip"]})[0]
    beta = p["beta"] if with_beta else np.zeros(H, np.float32)
    np.testing.assert_allclose(plain, _reference(p["x"], p["gamma"], beta, 1e-5), atol=2e-5)
    np.testing.assert_allclose(plain, fused, atol=2e-5)


def test_nodes_it_cannot_rewrite_are_refused() -> None:
    p = _params(4)
    stats = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y", "mean"], axis=-1)
    with pytest.raises(ExportError, match="mean or inverse deviation"):
        decompose_model(_graph([stats], p, ["y", "mean"], 17))
    first_axis = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=1)
    with pytest.raises(ExportError, match="axis 1"):
        decompose_model(_graph([first_axis], p, ["y"], 17))


@pytest.fixture(scope="module")
def fused_graphs(tiny_checkpoint: Path, sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    ckpt = load_checkpoint(tiny_checkpoint)
    parity = parity_set(ckpt, sample_texts, 128)
    work = tmp_path_factory.mktemp("layernorm")
    raw = export_onnx(ckpt, work / "raw.onnx", ExportConfig(max_length=128), parity=parity)
    fp32 = optimize(raw, work / "o2.onnx", OptimizeConfig("O2"), architecture=ckpt.architecture(), parity=parity)
    return parity, fp32, work


def test_whole_model_matches_pytorch_and_the_fused_graph(fused_graphs: Any, tmp_path: Path) -> None:
    parity, fp32, _ = fused_graphs
    recipe: list[dict[str, Any]] = []
    out = rewrite_layernorm(fp32, tmp_path / "plain.onnx", parity=parity, atol=1e-4, recipe=recipe)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    before = [n.op_type for n in onnx.load(str(fp32)).graph.node]
    assert before.count("SkipLayerNormalization") == 4 and "SkipLayerNormalization" not in ops
    assert recipe[0]["stage"] == "layernorm" and recipe[0]["nodes"] == 4
    assert recipe[0]["parity_max_abs_logit_diff"] < 1e-4
    assert ops.count("Attention") == before.count("Attention") == 2  # nothing else touched


def test_int8_graph_keeps_its_quantized_products(fused_graphs: Any, tmp_path: Path) -> None:
    parity, fp32, _ = fused_graphs
    int8 = quantize(fp32, tmp_path / "int8.onnx", QuantizeConfig.avx512_vnni())
    plain = rewrite_layernorm(int8, tmp_path / "int8-plain.onnx", parity=parity)
    quantized = {"MatMulInteger", "QAttention", "DynamicQuantizeLinear"}

    def count(path: Path) -> list[str]:
        return sorted(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in quantized)

    assert count(plain) == count(int8) and count(int8)
    assert abs(parity.max_abs_diff(plain) - parity.max_abs_diff(int8)) < 0.05


def test_standard_whole_model_matches_pytorch_and_stays_unfused_in_onnxruntime(
    fused_graphs: Any, tmp_path: Path
) -> None:
    """Standard LayerNorms: same logits, and ONNX Runtime's own fusions do not turn them back into the slow
    ``SkipLayerNormalization`` when the session opens (the optimized graph it writes is inspected)."""
    import onnxruntime as ort

    parity, fp32, _ = fused_graphs
    recipe: list[dict[str, Any]] = []
    out = rewrite_layernorm(fp32, tmp_path / "std.onnx", mode="standard", parity=parity, atol=1e-4, recipe=recipe)
    assert recipe[0] == {**recipe[0], "stage": "layernorm", "mode": "standard", "nodes": 4}
    assert recipe[0]["parity_max_abs_logit_diff"] < 1e-4
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("LayerNormalization") == 4 and "SkipLayerNormalization" not in ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    session_ops = [n.op_type for n in onnx.load(str(tmp_path / "session.onnx")).graph.node]
    assert session_ops.count("LayerNormalization") == 4 and "SkipLayerNormalization" not in session_ops
    with pytest.raises(ValueError, match="decomposed or standard"):
        rewrite_layernorm(fp32, tmp_path / "x.onnx", mode="fused")
