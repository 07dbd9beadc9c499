"""Word embeddings as int8 with one scale per row (per vocabulary token), for the int8 variant.

ONNX Runtime's dynamic quantizer turns the fused ``EmbedLayerNormalization`` into ``QEmbedLayerNormalization``,
which holds the word table with one scale for all of it: a token's row is then resolved in steps set by the
largest weight of the whole table. Measured on the shipped MiniLM-sized checkpoint (600 ``detectgpt_family``
validation texts, the rest of the graph fp32): that alone moves P(AI) by a mean 0.0055 and flips 1.3% of the
decisions at the training run's threshold. A scale per row keeps each token's own range (error at most half a
step of that row, about 0.4% of its largest weight) at the same size (30,522 scales, 120 KB more).

The rewrite replaces the fused node by plain operators computing the same thing: the int8 rows and their scales
gathered by token id and multiplied out, the position (and segment) embeddings added in float, the LayerNorm
written as the rest of the graph's (:mod:`export.onnx.layernorm`), and the ``mask_index`` the fused attention
reads (the number of unmasked tokens of each row) as a ``ReduceSum`` of the mask. Each output row depends on its
own tokens only, so the result stays batch-invariant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from export.errors import StageError
from export.onnx.layernorm import rewrite_model
from export.onnx.nodes import attribute

FUSED_OP = "EmbedLayerNormalization"


def _row_quantize(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 rows of ``table`` and their float32 scales (shape ``(rows, 1)``)."""
    peak = np.abs(table).max(axis=1, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    rows = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    return rows, scale


def quantize_word_rows(model: Any, *, layernorm: str = "standard") -> int:
    """Rewrite ``model``'s ``EmbedLayerNormalization`` node with a per-row int8 word table (in place).

    ``layernorm``: ``"decomposed"`` writes the embedding LayerNorm as plain operators; ``"standard"`` and
    ``"fused"`` as an ONNX ``LayerNormalization``.

    Returns:
        How many vocabulary rows were quantized.

    Raises:
        StageError: The graph has no fused embedding node, or one this rewrite does not handle (a word table that
            is not an initializer, a used ``mask_index`` without a mask input, no position ids).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    fused = [n for n in graph.node if n.op_type == FUSED_OP]
    if len(fused) != 1:
        raise StageError(f"per-row word embeddings need one fused {FUSED_OP} node, found {len(fused)}")
    node = fused[0]
    inputs = list(node.input) + [""] * (9 - len(node.input))
    ids, segments, word, position, segment_table, gamma, beta, mask, position_ids = inputs[:9]
    outputs = list(node.output) + [""] * (3 - len(node.output))
    inits = {t.name: t for t in graph.initializer}
    if word not in inits:
        raise StageError(f"{node.name}: the word table {word!r} is not an initializer")
    epsilon = attribute(node, "epsilon", 1e-12)
    used = {name for n in graph.node if n is not node for name in n.input} | {o.name for o in graph.output}

    for other in (n for n in graph.node if n is not node and word in n.input):
        # the exporter's own lookup survives fusion when only its shape is read (the position ids' length)
        readers = [n for n in graph.node if set(other.output) & set(n.input)]
        if other.op_type != "Gather" or any(r.op_type != "Shape" for r in readers):
            raise StageError(f"{other.name} ({other.op_type}) reads the word table {word!r} besides {node.name}")
        other.input[list(other.input).index(word)] = f"{word}_int8_rows"
        for info in [v for v in graph.value_info if v.name in other.output]:
            graph.value_info.remove(info)
    prefix = node.name or "embeddings"
    table = numpy_helper.to_array(inits[word]).astype(np.float32)
    rows, scale = _row_quantize(table)
    graph.initializer.remove(inits[word])
    graph.initializer.extend([
        numpy_helper.from_array(rows, f"{word}_int8_rows"),
        numpy_helper.from_array(scale, f"{word}_row_scales"),
    ])  # fmt: skip

    def name(part: str) -> str:
        return f"{prefix}/{part}"

    new = [
        helper.make_node("Gather", [f"{word}_int8_rows", ids], [name("word_int8")], name=name("GatherRows")),
        helper.make_node("Gather", [f"{word}_row_scales", ids], [name("word_scale")], name=name("GatherScales")),
        helper.make_node("Cast", [name("word_int8")], [name("word_q")], name=name("Cast"), to=TensorProto.FLOAT),
        helper.make_node("Mul", [name("word_q"), name("word_scale")], [name("word")], name=name("Dequantize")),
    ]
    if not position_ids:
        raise StageError(f"{node.name}: an embedding node without position ids is not rewritten")
    new.append(helper.make_node("Gather", [position, position_ids], [name("position")], name=name("Positions")))
    summed = [name("word"), name("position")]
    if segment_table:
        if not segments:
            raise StageError(f"{node.name}: a segment table without segment ids")
        new.append(helper.make_node("Gather", [segment_table, segments], [name("segment")], name=name("Segments")))
        summed.append(name("segment"))
    total = summed[0]
    for k, term in enumerate(summed[1:]):
        out = outputs[2] if outputs[2] and k == len(summed) - 2 else name(f"sum{k}")
        new.append(helper.make_node("Add", [total, term], [out], name=name(f"Add{k}")))
        total = out
    new.append(
        helper.make_node(
            "LayerNormalization", [total, gamma, beta], [outputs[0]], name=name("LayerNorm"), axis=-1, epsilon=epsilon
        )
    )
    if outputs[1] and outputs[1] in used:
        if not mask:
            raise StageError(f"{node.name}: mask_index is used but the node has no mask input")
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), name("axis")))
        new.append(
            helper.make_node("ReduceSum", [mask, name("axis")], [outputs[1]], name=name("MaskIndex"), keepdims=0)
        )
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, created in enumerate(new):
        graph.node.insert(index + offset, created)
    if layernorm == "decomposed":
        rewrite_model(model, "decomposed")
    return int(rows.shape[0])
