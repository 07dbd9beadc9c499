"""Outlier input channels of the matrix products kept in fp32 beside the dynamic int8 product.

Dynamic int8 quantizes a product's input with one scale over the whole window (every token, every channel), so a
single channel with large values coarsens the steps of all the others. The inputs of this model's products have a
few such channels, the same ones in every text: measured on 64 training windows of the shipped default's fp32
graph, the FFN input (a LayerNorm output) peaks at 28.5 in channel 99 against a median channel peak of 1.9 and
11.2 for the next channel; the FFN output's input (the GELU output) of layer 0 at 24.4 against 1.6 and 6.1.

The rewrite (the idea of LLM.int8(), Dettmers et al. 2022: the few outlier feature dimensions in floating point,
the rest in int8) splits each chosen ``MatMul(X, W)`` into

    MatMul(X * mask, W')                     int8 afterwards: the outlier channels zeroed, so the scale fits the rest
    + MatMul(Gather(X, S, axis=-1), W[S])    fp32: the k outlier channels S, a [tokens, k] x [k, N] product

where S are the ``k`` channels with the largest peak |X| over calibration windows (training data) and ``W'`` is
``W`` with the rows S zeroed (so the per-column weight scales fit the other rows). In a fused FFN (``MatMul`` ->
``BiasGelu`` -> output product) the output product's outlier channels are neurons, computed in fp32 from the FFN
input instead: ``BiasGelu(MatMul(X1, W1[:, S]), b1[S]) @ W2[S]``, while the input product's weight columns and
bias for S are zeroed (GELU(0) = 0, so those neurons reach the int8 output product as exact zeros: no mask, no
gather over the widest activation). The fp32 graph computes the same function (measured within 1e-6 in P(AI)).
The small products are named ``.../outliers`` and left fp32 by the quantizer (:data:`OUTLIER_NODE`).

Measured on the AVX2 build machine, unpruned default's checkpoint (``runs/mix3``), 600 ``detectgpt_family``
validation texts (first window) against its fp32 graph, int8 tables, decisions at the training run's threshold
0.559 / at 0.953 (agreement), 128-token call time relative to the plain dynamic int8 graph in the same run
(masked split only):

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

(Times were taken while a training run shared the two cores: ratios within one run, not absolute figures.)

Where the rest of the error is, on the shipped (pruned) model: the gate's full validation texts (1,669
``detectgpt_family``, 1,497 ``l2r_rewrites``), one window per call, against its fp32 graph; agreement of the
decisions at the gate's threshold (the checkpoint's equal-error point, 0.622 before calibration) and of the
three labels at the shipped operating points (uncertain from 0.719, AI from 0.963); speed on 96 detectgpt
validation texts and one 128-token call, 2 threads, medians of 5 interleaved rounds, against the masked split
measured in the same run (three runs; the module's form against the masked split in three more: 1.05x, 0.95x,
0.99x texts/s, the machine's noise):

==================================================  ==============  =============  =========  ========  ========
k = 8, int8 tables unless said                      mean / max dP   agree det/l2r  labels     texts/s   128 tok
==================================================  ==============  =============  =========  ========  ========
masked split (the previous form)                    0.0132 / 0.187  98.20 / 99.06  97.90      1.00x     1.00x
+ outlier rows of the int8 weights zeroed           0.0122 / 0.181  98.38 / 99.13  97.96      -         -
+ FFN outlier neurons end to end (this module)      0.0121 / 0.174  98.50 / 99.00  97.84      1.00x     1.00x
masked split, k = 16                                0.0134 / 0.188  98.44 / 99.20  97.78      -         -
masked split, 7-bit weights (``reduce_range``)      0.0127 / 0.142  97.96 / 99.13  98.44      -         -
masked split, float tables (59 MB)                  0.0144 / 0.164  98.26 / 98.93  97.90      -         -
masked split, the QKV product in fp32               0.0081 / 0.132  98.92 / 99.40  98.80      0.87x     1.15x
  ... in the first three layers only                0.0096 / 0.147  98.68 / 99.13  98.56      -         -
  ... in the last three layers only                 0.0111 / 0.164  98.44 / 99.33  98.02      -         -
QKV as a split MatMul + ``MultiHeadAttention``      0.0100 / 0.188  98.74 / 99.06  98.92      0.85x     1.06x
a scale per token (``MatMulIntegerToFloat``), QKV   0.0081 / 0.097  98.86 / 99.47  99.10      0.87x     1.49x
  split too, 7-bit weights
this module, the QKV product in fp32                0.0075 / 0.139  98.80 / 99.20  99.04      0.89x     1.18x
==================================================  ==============  =============  =========  ========  ========

So the fused attention's QKV product, which quantizes its input inside the operator (``QAttention``) and cannot
be split in place, holds most of what is left; taking it out of the operator (a ``MatMul`` feeding
``MultiHeadAttention``, same scores bit for bit unsplit) costs 7% before any split. A scale per token needs 7-bit
weights on this CPU (with 8-bit ones the u8 x s8 pairs saturate AVX2's 16-bit sums: 0.0123 mean dP) and six
operators per product input where dynamic int8 has one. None of these reaches 99% agreement at the gate's
threshold on the detectgpt validation texts; the module's form is the one that costs nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.errors import StageError
from export.onnx.nodes import drop_unused_initializers

logger = logging.getLogger(__name__)

OUTLIER_TARGETS = r"layer\.\d+/(ffn/lin[12]|attention/out_lin|intermediate/dense|output/dense|attention/output/dense)/"
"""Node names of the products whose inputs are split: FFN input and output and the attention output projection
(DistilBERT ``ffn.lin1``, ``ffn.lin2``, ``attention.out_lin``; BERT ``intermediate.dense``, ``output.dense``,
``attention.output.dense``)."""
OUTLIER_PRODUCTS = {
    "ffn_attention": OUTLIER_TARGETS,
    "ffn": r"layer\.\d+/(ffn/lin[12]|intermediate/dense|output/dense)/",
}
"""Which products' inputs are split, by name: the FFN's two and the attention output projection, or the FFN's only.
On the shipped (pruned) model the attention output product's input peaks at 2.7-3.5 (against 28.5 for the FFN
input): splitting it changed nothing measurable (600 validation texts per set, one window per call, against the
fp32 graph: decision agreement 99.17% / 99.33% with and without it on detectgpt / L2R, mean |dP| 0.0079 / 0.0078
and 0.0046 / 0.0043) and cost 4-6% of a call on an AMX Xeon (rebuilt bundle, 128 tokens, 2 threads, interleaved
with the other: 4.99-5.12 ms without it against 5.22-5.34 ms with it)."""
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


def _ffn_source(node: Any, producer: dict[str, Any], consumers: dict[str, int], inits: dict[str, Any]) -> Any:
    """The ``BiasGelu`` feeding FFN output product ``node`` from a ``MatMul`` with a weight matrix, or ``None``.

    Only a fused FFN (``MatMul`` -> ``BiasGelu`` -> ``node``, the activation used by ``node`` alone) has its
    outlier neurons computed in fp32 end to end; any other graph keeps the masked split.
    """
    gelu = producer.get(node.input[0])
    if gelu is None or gelu.op_type != "BiasGelu" or consumers.get(node.input[0], 0) != 1 or len(gelu.input) < 2:
        return None
    lin1 = producer.get(gelu.input[0])
    if lin1 is None or lin1.op_type != "MatMul" or consumers.get(gelu.input[0], 0) != 1:
        return None
    if lin1.input[1] not in inits or gelu.input[1] not in inits or len(inits[lin1.input[1]].dims) != 2:
        return None
    return gelu


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
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            consumers[name] = consumers.get(name, 0) + 1

    def add(array: NDArray[Any], name: str) -> str:
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def top(x: str, rows: int) -> NDArray[np.int64]:
        return np.sort(np.argsort(-peaks[x], kind="stable")[: min(k, rows - 1)]).astype(np.int64)

    # The FFN output products of a fused FFN: their outlier inputs are neurons, which the FFN input product then
    # leaves out (zero weight columns and bias: GELU(0) = 0, exactly) and the fp32 path computes from its input.
    weights = {n.input[1]: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
    neurons: dict[str, tuple[str, NDArray[np.int64]]] = {}  # by output product: the FFN input, the neurons
    for node in nodes:
        gelu = _ffn_source(node, producer, consumers, inits)
        if gelu is None:
            continue
        lin1 = producer[gelu.input[0]]
        channels = top(node.input[0], weights[node.input[1]].shape[0])
        neurons[node.name] = (lin1.input[0], channels)
        w = lin1.input[1]
        w1 = (weights[w] if w in weights else numpy_helper.to_array(inits[w])).copy()
        bias = numpy_helper.to_array(inits[gelu.input[1]]).copy()
        add(w1[:, channels], f"{node.name}/neuron_weight")
        add(bias[channels], f"{node.name}/neuron_bias")
        w1[:, channels] = 0.0
        bias[channels] = 0.0
        weights[w] = w1
        gelu.input[1] = add(bias, f"{node.name}/inlier_bias")
    chosen: dict[str, list[int]] = {}
    rewritten: list[Any] = []
    for node in graph.node:
        if node not in nodes:
            if node.op_type == "MatMul" and node.input[1] in weights:  # an FFN input product left whole
                node.input[1] = add(weights[node.input[1]], f"{node.name}/int8_weight")
            rewritten.append(node)
            continue
        x, w = node.input
        p, out = node.name, node.output[0]
        weight = weights[w]
        channels = neurons[p][1] if p in neurons else top(x, weight.shape[0])
        inliers = weight.copy()
        inliers[channels] = 0.0  # the int8 weight scales then fit the other rows
        add(inliers, f"{p}/int8_weight")
        add(weight[channels], f"{p}/outlier_weight")
        if p in neurons:
            rewritten += [
                helper.make_node("MatMul", [x, f"{p}/int8_weight"], [f"{p}/int8_output"], name=p),
                helper.make_node("MatMul", [neurons[p][0], f"{p}/neuron_weight"], [f"{p}/neuron_input"],
                                 name=f"{p}/neurons/outliers"),
                helper.make_node("BiasGelu", [f"{p}/neuron_input", f"{p}/neuron_bias"], [f"{p}/outlier_input"],
                                 name=f"{p}/neurons/gelu", domain="com.microsoft"),
            ]  # fmt: skip
        else:
            mask = np.ones(weight.shape[0], dtype=np.float32)
            mask[channels] = 0.0
            add(mask, f"{p}/outlier_mask")
            add(channels, f"{p}/outlier_channels")
            rewritten += [
                helper.make_node("Mul", [x, f"{p}/outlier_mask"], [f"{p}/inliers_output"], name=f"{p}/inliers"),
                helper.make_node("MatMul", [f"{p}/inliers_output", f"{p}/int8_weight"], [f"{p}/int8_output"], name=p),
                helper.make_node(
                    "Gather", [x, f"{p}/outlier_channels"], [f"{p}/outlier_input"], name=f"{p}/outlier_gather", axis=-1
                ),
            ]  # fmt: skip
        rewritten += [
            helper.make_node(
                "MatMul", [f"{p}/outlier_input", f"{p}/outlier_weight"], [f"{p}/outlier_output"], name=f"{p}/outliers"
            ),  # fmt: skip
            helper.make_node("Add", [f"{p}/int8_output", f"{p}/outlier_output"], [out], name=f"{p}/outlier_add"),
        ]
        chosen[p] = [int(c) for c in channels]
        rest = float(np.max(np.delete(peaks[x], channels)))
        logger.debug(
            "%s: channels %s in fp32 (peak %.2f; the rest up to %.2f)", p, chosen[p], peaks[x][channels].max(), rest
        )
    del graph.node[:]
    graph.node.extend(rewritten)
    drop_unused_initializers(graph)
    logger.info("outlier channels: %d in fp32 beside each of %d products (%d FFN output products by neuron)",
                k, len(chosen), len(neurons))  # fmt: skip
    return chosen
