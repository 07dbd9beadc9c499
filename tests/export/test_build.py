"""The one build function: the pruning sweep, the benchmarks and the shipped build make the same graphs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.errors import ExitCode  # noqa: E402
from export.onnx.build import build_bundles, derive_fp16  # noqa: E402
from export.onnx.recipe import build_config  # noqa: E402
from export.pipeline.config import read_pipeline_config  # noqa: E402
from export.prune.sweep import int8_bundle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def op_histogram(bundle: Path) -> Counter[str]:
    """How many nodes of each operator type the bundle's graph has."""
    import onnx

    return Counter(node.op_type for node in onnx.load(str(bundle / "model.onnx")).graph.node)


def test_the_sweep_builds_the_shipped_graph(
    tiny_checkpoint: Path, separable_eval: tuple[Path, float], sample_texts: list[str], tmp_path: Path
) -> None:
    eval_path, threshold = separable_eval
    # the shipped model's recipe, at the tiny model's window
    recipe = {**read_pipeline_config(REPO / "configs" / "default.toml").export, "max_length": 64, "threads": 1}
    recipe.pop("eval")  # the shipped model's evaluation sets; the tiny model is gated on its own (as in conftest)
    texts = sorted(sample_texts, key=len, reverse=True)[:8]
    swept = int8_bundle(tiny_checkpoint, tmp_path / "sweep" / "int8", texts=texts, name="tiny", recipe=recipe)
    # the gate runs as in the shipped build, with the tiny model's limits: its scores crowd its threshold, so
    # int8 flips many of its decisions (plain or with outlier channels alike) while the ranking holds
    shipped_cfg = build_config(
        tiny_checkpoint, tmp_path / "shipped",
        {**recipe, "eval": (f"{eval_path}",), "threshold": threshold, "bench_texts": 0, "parity_texts": texts,
         "gate_auc_drop": 0.05, "gate_agreement": 0.5},
    )  # fmt: skip
    build_bundles(shipped_cfg)
    shipped = op_histogram(tmp_path / "shipped" / "int8")
    assert op_histogram(swept) == shipped
    # the shipped recipe's rewrites are in both: LayerNorm as ONNX LayerNormalization (2 layers x 2), int8
    # embedding tables
    assert shipped["LayerNormalization"] == 4 and "SkipLayerNormalization" not in shipped
    assert shipped["DynamicQuantizeMatMul"] + shipped["MatMulInteger"] + shipped["QAttention"] > 0
    assert shipped["DequantizeLinear"] > 0
    # and the shipped int8 setting: the outlier input channels in fp32 beside the int8 products, in the products
    # the configuration names (per layer: the FFN input product's, the FFN output's and its neurons', and with
    # "ffn_attention" the attention output product's)
    import onnx

    graph = onnx.load(str(tmp_path / "shipped" / "int8" / "model.onnx")).graph
    split = [n.name for n in graph.node if n.op_type == "MatMul" and n.name.endswith("/outliers")]
    per_layer = {"ffn": 3, "ffn_attention": 4}[recipe.get("outlier_products", "ffn_attention")]
    assert len(split) == per_layer * 2, split
    assert any("out_lin" in n for n in split) == (per_layer == 4)


def test_without_a_gate_nothing_needs_evaluation_data(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path
) -> None:
    options = {"variant": ("fp32", "int8"), "max_length": 64, "gate": False, "bench_texts": 0, "threads": 1,
               "parity_texts": tuple(sample_texts[:8])}  # fmt: skip
    reports = build_bundles(build_config(tiny_checkpoint, tmp_path / "bundles", options))
    assert [r.variant for r in reports] == ["fp32", "int8"]
    fp16 = derive_fp16(tmp_path / "bundles" / "fp32", tmp_path / "fp16")
    from aidetect_infer.bundle import read_metadata

    assert read_metadata(fp16).precision == "fp16"
    assert op_histogram(fp16)["Cast"] > 0


def test_the_factory_exit_codes_are_the_runtime_s() -> None:
    from aidetect_infer.errors import ExitCode as RuntimeExitCode

    shared = {c.name for c in ExitCode} & {c.name for c in RuntimeExitCode}
    assert shared >= {"OK", "FAILED", "BUNDLE", "INPUT", "INTERRUPTED"}
    assert all(ExitCode[name] == RuntimeExitCode[name] for name in shared)
    assert all(c >= 10 for c in ExitCode if c.name not in shared and c != ExitCode.INTERRUPTED)


def test_the_package_exports_resolve_and_import_torch_only_on_use() -> None:
    import subprocess
    import sys

    import export

    assert all(getattr(export, name) is not None for name in export.__all__)
    light = "import export, export.data, export.train.config, export.prune.config, export.pipeline.config, sys; "
    probe = light + "print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
