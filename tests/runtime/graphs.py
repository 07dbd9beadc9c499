"""Hand-built ONNX graphs for refusal tests: right or wrong inputs and outputs, no torch involved."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def pooled_graph(
    path: Path,
    *,
    classes: int = 2,
    ids_type: int = TensorProto.INT64,
    output: str = "logits",
    inputs: tuple[str, ...] = ("input_ids", "attention_mask"),
) -> Path:
    """A graph whose ``output`` is the mean of ``input_ids`` repeated ``classes`` times: ``[batch, classes]``."""
    value_infos = [
        helper.make_tensor_value_info(name, ids_type if name == "input_ids" else TensorProto.INT64, ["b", "s"])
        for name in inputs
    ]
    source = inputs[0]
    nodes = [
        helper.make_node("Cast", [source], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Concat", ["mean"] * classes, [output], axis=1),
    ]
    out_info = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["b", classes])
    graph = helper.make_graph(nodes, "pooled", value_infos, [out_info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
