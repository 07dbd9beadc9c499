"""Small pieces shared by the graph rewrites (:mod:`export.onnx.layernorm`, :mod:`export.onnx.embeddings`,
:mod:`export.onnx.outliers`, :mod:`export.recover`)."""

from __future__ import annotations

from typing import Any


def attribute(node: Any, name: str, default: Any) -> Any:
    """The value of ``node``'s attribute ``name`` (as ``onnx.helper`` decodes it), or ``default`` without one."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def drop_unused_initializers(graph: Any) -> None:
    """Remove the initializers of ``graph`` (an ``onnx.GraphProto``) that no node reads."""
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
