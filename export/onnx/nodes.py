"""Small readers shared by the graph rewrites (:mod:`export.onnx.layernorm`, :mod:`export.onnx.embeddings`)."""

from __future__ import annotations

from typing import Any


def attribute(node: Any, name: str, default: Any) -> Any:
    """The value of ``node``'s attribute ``name`` (as ``onnx.helper`` decodes it), or ``default`` without one."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)
