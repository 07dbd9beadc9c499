"""CPU rewrites of the fused LayerNorm nodes: plain ONNX operators, or ONNX's own ``LayerNormalization``.

ONNX Runtime 1.32's CPU kernel for ``SkipLayerNormalization`` (what the graph optimizer fuses) is slow on small
tensors. Measured on an AMD EPYC (Zen 4, AVX-512), one node over a 1 x 128 x 384 tensor: 249 us at 1 thread,
127 us at 2; the same arithmetic as ten elementwise and reduction operators
(Add, ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add) takes 68 us at 1 thread, same output to
3e-6. On the shipped default model (12 such nodes): 180 ms instead of 211 ms per 16 x 256 batch, 8.6 ms
instead of 10.7 ms per 128-token call at 1 thread.

The rewrite keeps every tensor name the rest of the graph uses, so it applies to fp32 and int8 graphs alike
(after quantization, whose matrix products it does not touch). The fp16 variant for CUDA keeps the fused
kernel: there it is one launch instead of ten, and the squared deviations would lose range in fp16.

The ``standard`` mode writes each fused node as ONNX's own ``LayerNormalization`` (opset 17), after its residual
and bias additions as plain ``Add`` nodes. On an Intel Xeon with AMX (Sapphire Rapids class), one node over a 1 x
128 x 384 tensor at 1 thread: 36 us against 57 us decomposed and 249 us for ``SkipLayerNormalization``; the shipped
int8 graph at 128 tokens, 2 threads: 4.38 ms against 4.85 ms decomposed (median of 300 calls). At session start
ONNX Runtime fuses ``Add(a, b) -> LayerNormalization`` with ``a`` and ``b`` of one shape (and the forms with the
bias added first) back into the slow ``SkipLayerNormalization`` (measured on the shipped graph: 5.45 ms). The
rewrite adds the residual first and the 1-D bias last, a form it leaves alone; a skip node without a bias is
written the same way and may be fused again (the same result, from the slower kernel).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import StageError
from export.files import run_stage, staged_file
from export.onnx.nodes import attribute
from export.onnx.parity import ParitySet

logger = logging.getLogger(__name__)

MODES = ("decomposed", "standard", "fused")
"""How a build writes the CPU graphs' LayerNorms: plain operators, ONNX ``LayerNormalization``, or as fused."""
FUSED_OPS = ("SkipLayerNormalization", "LayerNormalization")


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _operands(node: Any) -> tuple[str, str, str, str, str, str, float]:
    """``node``'s input, residual, gamma, beta, bias and summed-output names ("" where absent) and epsilon."""
    skip = node.op_type == "SkipLayerNormalization"
    inputs = list(node.input) + [""] * 5
    if skip:
        x, residual, gamma, beta, bias = inputs[:5]
        extra = [o for i, o in enumerate(node.output) if o and i in (1, 2)]
        summed = node.output[3] if len(node.output) > 3 and node.output[3] else ""
    else:
        x, gamma, beta = inputs[:3]
        residual = bias = summed = ""
        extra = [o for o in node.output[1:] if o]
        axis = attribute(node, "axis", -1)
        if axis != -1:
            raise StageError(f"{node.name}: LayerNormalization over axis {axis} is not rewritten")
    if extra:
        raise StageError(f"{node.name}: its mean or inverse deviation output is used; it cannot be rewritten")
    return x, residual, gamma, beta, bias, summed, float(attribute(node, "epsilon", 1e-12 if skip else 1e-5))


def _additions(x: str, residual: str, bias: str, summed: str, p: str) -> tuple[list[Any], str]:
    """The ``Add`` nodes of a skip node's residual and bias (its summed output keeps its name), and their sum."""
    from onnx import helper

    nodes = []
    cur = x
    if residual:
        cur_out = summed if summed and not bias else p + "/sum"
        nodes.append(helper.make_node("Add", [x, residual], [cur_out]))
        cur = cur_out
    if bias:
        cur_out = summed or p + "/biased"
        nodes.append(helper.make_node("Add", [cur, bias], [cur_out]))
        cur = cur_out
    return nodes, cur


def _standard_node(node: Any, opset: int) -> list[Any]:
    """``node`` as its residual and bias ``Add`` nodes and one ONNX ``LayerNormalization``, same output names."""
    from onnx import helper

    if opset < 17:
        raise StageError(f"{node.name}: LayerNormalization needs opset 17 or later; the graph has {opset}")
    x, residual, gamma, beta, bias, summed, eps = _operands(node)
    p = f"{node.name or node.output[0]}/ln"
    nodes, cur = _additions(x, residual, bias, summed, p)
    operands = [cur, gamma, beta] if beta else [cur, gamma]
    nodes.append(helper.make_node("LayerNormalization", operands, [node.output[0]], axis=-1, epsilon=eps))
    for i, n in enumerate(nodes[:-1]):
        n.name = f"{p}/{i}"
    nodes[-1].name = f"{p}/layernorm"
    return nodes


def _decompose_node(node: Any, opset: int, initializers: list[Any]) -> list[Any]:
    """The plain operators computing ``node``'s used outputs, under the same output names."""
    from onnx import helper, numpy_helper

    x, residual, gamma, beta, bias, summed, epsilon = _operands(node)
    p = f"{node.name or node.output[0]}/ln"
    eps = np.array(epsilon, dtype=np.float32)
    initializers.append(numpy_helper.from_array(eps, p + "/eps"))

    def reduce_mean(src: str, dst: str) -> Any:
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, p + "/axes"], [dst], keepdims=1)
        return helper.make_node("ReduceMean", [src], [dst], axes=[-1], keepdims=1)

    if opset >= 18:
        initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), p + "/axes"))
    nodes, cur = _additions(x, residual, bias, summed, p)
    nodes += [
        reduce_mean(cur, p + "/mean"),
        helper.make_node("Sub", [cur, p + "/mean"], [p + "/centred"]),
        helper.make_node("Mul", [p + "/centred", p + "/centred"], [p + "/squared"]),
        reduce_mean(p + "/squared", p + "/var"),
        helper.make_node("Add", [p + "/var", p + "/eps"], [p + "/var_eps"]),
        helper.make_node("Sqrt", [p + "/var_eps"], [p + "/std"]),
        helper.make_node("Div", [p + "/centred", p + "/std"], [p + "/normed"]),
    ]
    if beta:
        nodes.append(helper.make_node("Mul", [p + "/normed", gamma], [p + "/scaled"]))
        nodes.append(helper.make_node("Add", [p + "/scaled", beta], [node.output[0]]))
    else:
        nodes.append(helper.make_node("Mul", [p + "/normed", gamma], [node.output[0]]))
    for i, n in enumerate(nodes):
        n.name = f"{p}/{i}"
    return nodes


def rewrite_model(model: Any, mode: str = "decomposed") -> int:
    """Rewrite ``model``'s (an ``onnx.ModelProto``) LayerNorm nodes in place for ``mode``; returns how many.

    ``"decomposed"``: every fused or ONNX LayerNorm node as plain operators. ``"standard"``: every
    ``SkipLayerNormalization`` as ``Add`` nodes and an ONNX ``LayerNormalization`` (those already standard stay).
    ``"fused"``: nothing changes.

    Raises:
        StageError: A node cannot be rewritten (an axis other than the last, a used statistics output, an opset
            before 17 for ``"standard"``).
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"layernorm mode must be one of {MODES}, got {mode!r}")
    opset = _opset(model)
    graph = model.graph
    initializers: list[Any] = []
    out: list[Any] = []
    count = 0
    targets = {"decomposed": FUSED_OPS, "standard": ("SkipLayerNormalization",), "fused": ()}[mode]
    for node in graph.node:
        if node.op_type in targets and node.domain in ("", "ai.onnx", "com.microsoft"):
            out += _decompose_node(node, opset, initializers) if mode == "decomposed" else _standard_node(node, opset)
            count += 1
        else:
            out.append(node)
    del graph.node[:]
    graph.node.extend(out)
    graph.initializer.extend(initializers)
    return count


def decompose_model(model: Any) -> int:
    """Rewrite every fused LayerNorm node of ``model`` as plain operators in place; returns how many."""
    return rewrite_model(model, "decomposed")


def rewrite_layernorm(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    *,
    mode: str = "decomposed",
    parity: ParitySet | None = None,
    atol: float | None = None,
    recipe: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``onnx_in`` with its LayerNorm nodes rewritten for ``mode`` (see :func:`rewrite_model`).

    Args:
        onnx_in: An fp32 or int8 graph.
        onnx_out: Where the rewritten graph goes.
        mode: ``"decomposed"`` (plain operators) or ``"standard"`` (ONNX ``LayerNormalization``).
        parity: The PyTorch reference, to measure the logit difference against.
        atol: Largest max abs logit difference allowed against ``parity`` (``None``: measure and record only,
            as for int8 graphs, whose difference the accuracy gate judges).
        recipe: A list to append this stage's record to.

    Returns:
        ``onnx_out``.

    Raises:
        ParityError: ``atol`` was given and the rewritten graph's logits differ by it or more.
        ExportError: A node cannot be rewritten (an axis other than the last, a used statistics output, an
            opset before 17 for ``"standard"``).
        ValueError: ``mode`` is not ``"decomposed"`` or ``"standard"``.
    """
    if mode not in ("decomposed", "standard"):
        raise ValueError(f"the LayerNorm rewrite is decomposed or standard, got {mode!r}")
    import onnx

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    with staged_file(onnx_out, "layernorm") as staged:

        def write() -> int:
            model = onnx.load(str(onnx_in))
            count = rewrite_model(model, mode)
            onnx.save(model, str(staged))
            return count

        count = run_stage(f"{onnx_in}: LayerNorm rewrite", write)
        if parity is None:
            diff = float("nan")
        elif atol is None:
            diff = parity.max_abs_diff(staged)
        else:
            diff = parity.check(staged, atol, f"{onnx_in} with LayerNorm {mode}")
    logger.info("%s: %d LayerNorm nodes %s, max abs logit difference %.3g", onnx_out, count, mode, diff)
    if recipe is not None:
        recipe.append({"stage": "layernorm", "mode": mode, "nodes": count, "parity_max_abs_logit_diff": diff})
    return onnx_out
