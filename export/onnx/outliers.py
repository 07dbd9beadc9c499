"""Outlier input channels of the matrix products kept in fp32 beside the dynamic int8 product.

Dynamic int8 quantizes a product's input with one scale over the whole window (every token, every channel), so a
single channel with large values coarsens the steps of all the others. The inputs of this model's products have a
few such channels, the same ones in every text: measured on 64 training windows of the shipped default's fp32
graph, the FFN input (a LayerNorm output) peaks at 28.5 in channel 99 against a median channel peak of 1.9 and
11.2 for the next channel; the FFN output's input (the GELU output) of layer 0 at 24.4 against 1.6 and 6.1.

The rewrite (the idea of LLM.int8(), Dettmers et al. 2022: the few outlier feature dimensions in floating point,
the rest in int8) splits each chosen ``MatMul(X, W)`` into

    MatMul(X * mask, W)                      int8 afterwards: the outlier channels zeroed, so the scale fits the rest
    + MatMul(Gather(X, S, axis=-1), W[S])    fp32: the k outlier channels S, a [tokens, k] x [k, N] product

where S are the ``k`` channels with the largest peak |X| over calibration windows (training data). The fp32 graph
computes the same function (the two terms add up to the product; measured within 1e-6 in P(AI)). The small
products are named ``<node>/outliers`` and left fp32 by the quantizer (:data:`OUTLIER_NODE`).

Measured on the AVX2 build machine, shipped default's checkpoint (``runs/mix3``), 600 ``detectgpt_family``
validation texts (first window) against its fp32 graph, int8 tables, decisions at the training run's threshold
0.559 / at 0.953 (agreement), 128-token call time relative to the plain dynamic int8 graph in the same run:

=========================================  =============  ===========  ===========  ==========
int8 (dynamic, per-channel, int8 tables)   mean / max dP  agree 0.559  agree 0.953  128 tokens
=========================================  =============  ===========  ===========  ==========
plain (``avx512_vnni``)                    0.026 / 0.34   0.968        0.978        1.00x
FFN output inputs, k = 4                   0.018 / 0.38   0.977        0.983        1.08x
both FFN inputs, k = 4                     0.016 / 0.32   0.985        0.982        1.13x
both FFN inputs, k = 8                     0.015 / 0.32   0.985        0.982        1.06x
both FFN inputs, k = 16                    0.015 / 0.25   0.988        0.982        1.14x
FFN and attention output inputs, k = 8     0.016 / 0.23   0.992        0.988        1.07x
=========================================  =============  ===========  ===========  ==========

(Times were taken while a training run shared the two cores: ratios within one run, not absolute figures.) The
fused attention's QKV product (``Attention`` / ``QAttention``) quantizes its input inside the operator and
cannot be split this way; it stays plain dynamic int8.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.errors import StageError

logger = logging.getLogger(__name__)

OUTLIER_TARGETS = r"layer\.\d+/(ffn/lin[12]|attention/out_lin|intermediate/dense|output/dense|attention/output/dense)/"
"""Node names of the products whose inputs are split: FFN input and output and the attention output projection
(DistilBERT ``ffn.lin1``, ``ffn.lin2``, ``attention.out_lin``; BERT ``intermediate.dense``, ``output.dense``,
``attention.output.dense``)."""
OUTLIER_NODE = r"/outliers$"
"""Node names of the fp32 products the rewrite adds (the quantizer leaves them alone)."""


def target_nodes(model: Any, pattern: str = OUTLIER_TARGETS) -> list[Any]:
    """The ``MatMul`` nodes named by ``pattern`` whose second input is a 2-D initializer (a weight matrix)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and re.search(pattern, n.name) and n.input[1] in inits
        and len(inits[n.input[1]].dims) == 2
    ]  # fmt: skip


def channel_peaks(
    model: Any, nodes: Sequence[Any], feeds: Sequence[dict[str, NDArray[np.int64]]], threads: int = 2
) -> dict[str, NDArray[np.float32]]:
    """Per input channel of each node, the largest |value| over the windows ``feeds`` (keyed by input tensor)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = list(dict.fromkeys(n.input[0] for n in nodes))
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in names if x not in known
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    peaks: dict[str, NDArray[np.float32]] = {}
    for feed in feeds:
        values = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(names, values, strict=True):
            peak = np.abs(np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])).max(axis=0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def split_outliers(
    model: Any, feeds: Sequence[dict[str, NDArray[np.int64]]], k: int, *, pattern: str = OUTLIER_TARGETS,
    threads: int = 2,
) -> dict[str, list[int]]:  # fmt: skip
    """Rewrite ``model`` in place: the ``k`` largest input channels of every target product in fp32 beside it.

    Returns:
        The channels kept in fp32, by node name.

    Raises:
        StageError: No calibration windows, ``k`` not positive, or no target product in the graph.
    """
    from onnx import helper, numpy_helper

    if k < 1:
        raise StageError(f"outlier channels: k must be a positive integer, got {k}")
    if not feeds:
        raise StageError("outlier channels need calibration windows (training data: --calibration FILE)")
    nodes = target_nodes(model, pattern)
    if not nodes:
        raise StageError(f"outlier channels: no MatMul with a weight matrix matches {pattern!r}")
    peaks = channel_peaks(model, nodes, feeds, threads)
    inits = {i.name: i for i in model.graph.initializer}
    chosen: dict[str, list[int]] = {}
    rewritten: list[Any] = []
    for node in model.graph.node:
        if node not in nodes:
            rewritten.append(node)
            continue
        x, w = node.input
        weight = numpy_helper.to_array(inits[w])
        channels = np.sort(np.argsort(-peaks[x], kind="stable")[: min(k, weight.shape[0] - 1)]).astype(np.int64)
        mask = np.ones(weight.shape[0], dtype=np.float32)
        mask[channels] = 0.0
        p, out = node.name, node.output[0]
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(mask, f"{p}/outlier_mask"),
                numpy_helper.from_array(channels, f"{p}/outlier_channels"),
                numpy_helper.from_array(np.ascontiguousarray(weight[channels]), f"{p}/outlier_weight"),
            ]
        )
        rewritten += [
            helper.make_node("Mul", [x, f"{p}/outlier_mask"], [f"{p}/inliers_output"], name=f"{p}/inliers"),
            helper.make_node("MatMul", [f"{p}/inliers_output", w], [f"{p}/int8_output"], name=p),
            helper.make_node(
                "Gather", [x, f"{p}/outlier_channels"], [f"{p}/outlier_input"], name=f"{p}/outlier_gather", axis=-1
            ),
            helper.make_node(
                "MatMul", [f"{p}/outlier_input", f"{p}/outlier_weight"], [f"{p}/outlier_output"], name=f"{p}/outliers"
            ),  # fmt: skip
            helper.make_node("Add", [f"{p}/int8_output", f"{p}/outlier_output"], [out], name=f"{p}/outlier_add"),
        ]
        chosen[p] = [int(c) for c in channels]
        top = peaks[x][channels].max()
        rest = float(np.max(np.where(mask > 0, peaks[x], 0.0)))
        logger.debug("%s: channels %s in fp32 (peak %.2f; the rest up to %.2f)", p, chosen[p], top, rest)
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    logger.info("outlier channels: %d in fp32 beside each of %d products", k, len(chosen))
    return chosen
