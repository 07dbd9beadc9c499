"""``python -m export.recover BUNDLE --out DIR``: a PyTorch checkpoint recovered from an int8 bundle's own weights.

A bundle ships its int8 graph only; the fp32 checkpoint it was exported from stays with the machine that trained
it. This recovers a ``DistilBertForSequenceClassification`` checkpoint that computes the function of the bundle's
weights in fp32, so a bundle can be trained on further (``export.train --base DIR``), pruned, re-exported, or
used as the fp32 reference of its own int8 graph, without the hours of training that made it.

The int8 weights are dequantized (``(q - zero_point) * scale``, per channel as stored) and the graph rewritten
into plain products, then undone stage by stage: the outlier split of :mod:`export.onnx.outliers` is folded
back (the fp32 rows of the outlier input channels into their weight matrices, the FFN's fp32 outlier neurons
into their columns of the FFN input product and rows of its output product), the fused ``Attention`` weight
split into its query, key and value projections, and the fused embedding node's tables and LayerNorm read off.
The result is checked against the dequantized graph itself (ONNX Runtime, fp32) on probe windows: a mapping
error cannot pass silently.

What is not recovered: the rounding of int8 weights. The recovered model is the bundle's int8 weights in fp32,
not the checkpoint before quantization (each weight within half its column's scale of it); its logits differ
from the int8 graph by the activation quantization only, which ``recovered.json`` measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.errors import ExitCode, StageError
from export.onnx.nodes import attribute, drop_unused_initializers

logger = logging.getLogger(__name__)

RECORD_FILE = "recovered.json"
PARITY_ATOL = 1e-3
"""Largest max abs logit difference allowed between the recovered model and the dequantized graph."""


def _array(inits: dict[str, Any], name: str) -> NDArray[Any]:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def _put(graph: Any, inits: dict[str, Any], name: str, value: NDArray[Any]) -> str:
    """Add ``value`` to ``graph`` as the fp32 initializer ``name`` (kept in ``inits`` too); returns ``name``."""
    from onnx import numpy_helper

    if name not in inits:
        inits[name] = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        graph.initializer.append(inits[name])
    return name


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def dequantized_graph(model: Any) -> Any:
    """``model`` (an int8 bundle graph) rewritten in place as fp32 products of its dequantized weights.

    ``QEmbedLayerNormalization`` and ``QAttention`` become their fp32 contrib operators, each dynamic int8
    product (``DynamicQuantizeLinear`` -> ``MatMulInteger`` -> ``Cast`` -> ``Mul``) one ``MatMul``; dead nodes
    and initializers are dropped.
    """
    from onnx import helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def values(q: str, scale: str, zero_point: str, axis: int = -1) -> NDArray[np.float32]:
        """``(q - zero_point) * scale``, a 1-D scale along ``axis`` (the products' per-column scales: the last)."""
        w = _array(inits, q).astype(np.float32)
        if zero_point:
            w = w - _array(inits, zero_point).astype(np.float32)
        s = _array(inits, scale).astype(np.float32)
        if s.ndim == 1 and w.ndim > 1:
            s = s.reshape([-1 if d == axis % w.ndim else 1 for d in range(w.ndim)])
        return np.asarray(w * s, dtype=np.float32)

    def dequantize(q: str, scale: str, zero_point: str) -> str:
        return _put(graph, inits, q + "/dequantized", values(q, scale, zero_point))

    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and all(i in inits for i in n.input if i):
            # a shared weight the quantizer dequantizes in the graph (e.g. a LayerNorm bias the embedding node
            # quantized): an fp32 initializer under the node's output name
            q, scale, zero_point = [*n.input, ""][:3]
            _put(graph, inits, n.output[0], values(q, scale, zero_point, axis=attribute(n, "axis", 1)))
            dropped.add(id(n))
        elif n.op_type == "QEmbedLayerNormalization":
            i = [*n.input, *[""] * 18][:18]
            tables = [dequantize(i[k], i[k + 6], i[k + 11]) if i[k] else "" for k in range(2, 7)]
            replaced[id(n)] = helper.make_node(
                "EmbedLayerNormalization", [i[0], i[1], *tables, i[7]], list(n.output), name=n.name,
                domain="com.microsoft", **_attrs(n),
            )  # fmt: skip
        elif n.op_type == "QAttention":
            i = [*n.input, *[""] * 9][:9]
            x = producer[i[0]].input[0]
            weight = dequantize(i[1], i[4], i[7])
            replaced[id(n)] = helper.make_node(
                "Attention", [x, weight, i[2], i[5]], list(n.output), name=n.name, domain="com.microsoft", **_attrs(n)
            )
        elif n.op_type == "MatMulInteger":
            x = producer[n.input[0]].input[0]
            (cast,) = consumers[n.output[0]]
            (scale_mul,) = consumers[cast.output[0]]
            scales = producer[next(s for s in scale_mul.input if s != cast.output[0])]
            weight_scale = next(s for s in scales.input if s in inits)
            zero_point = n.input[3] if len(n.input) > 3 else ""
            replaced[id(n)] = helper.make_node(
                "MatMul", [x, dequantize(n.input[1], weight_scale, zero_point)], [scale_mul.output[0]],
                name=re.sub(r"_quant$", "", n.name),
            )  # fmt: skip
            dropped.update((id(cast), id(scale_mul)))
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    _keep_used(graph, nodes)
    return model


def _keep_used(graph: Any, nodes: list[Any]) -> None:
    """Set ``graph``'s nodes to those of ``nodes`` that reach an output, and drop unused initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        used = outputs | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unused_initializers(graph)


def fold_outliers(model: Any) -> Any:
    """Fold the outlier split of a dequantized graph back into single products, in place (same function).

    ``MatMul(X * mask, W') + MatMul(Gather(X, S), W[S])`` becomes ``MatMul(X, W)``; a fused FFN's fp32 outlier
    neurons are put back into the zeroed columns of the input product and bias and the rows of the output
    product.
    """
    from onnx import helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}

    def put(name: str, value: NDArray[Any]) -> str:
        return _put(graph, inits, name, value)

    nodes = list(graph.node)

    def producers() -> dict[str, Any]:
        return {o: n for n in nodes for o in n.output}

    adds = [n for n in nodes if n.name.endswith("/outlier_add")]
    p = producers()
    for add in adds:  # input channels first: the neuron fold below reads the folded FFN input weight
        main, small = p[add.input[0]], p[add.input[1]]
        gather = p[small.input[0]]
        if gather.op_type != "Gather":
            continue
        rows = _array(inits, gather.input[1]).astype(np.int64)
        weight = _array(inits, main.input[1]).copy()
        weight[rows] += _array(inits, small.input[1])
        folded = helper.make_node(
            "MatMul", [gather.input[0], put(main.input[1] + "/folded", weight)], [add.output[0]], name=main.name
        )
        nodes[nodes.index(main)] = folded
        for dead in (add, small, gather, p[main.input[0]]):
            nodes.remove(dead)
    p = producers()
    for add in [n for n in nodes if n.name.endswith("/outlier_add")]:
        main, small = p[add.input[0]], p[add.input[1]]
        gelu = p[small.input[0]]
        neuron_in = p[gelu.input[0]]
        activation = p[main.input[0]]
        lin1 = p[activation.input[0]]
        if gelu.op_type != "BiasGelu" or activation.op_type != "BiasGelu" or lin1.input[0] != neuron_in.input[0]:
            raise StageError(f"{add.name}: not an outlier split this module knows how to fold")
        w1, b1, w2 = (_array(inits, n).copy() for n in (lin1.input[1], activation.input[1], main.input[1]))
        neurons = np.flatnonzero(~w1.any(axis=0) & (b1 == 0))
        k = _array(inits, neuron_in.input[1]).shape[1]
        if len(neurons) != k:
            raise StageError(f"{add.name}: {k} outlier neurons but {len(neurons)} zeroed columns to put them in")
        w1[:, neurons] = _array(inits, neuron_in.input[1])
        b1[neurons] = _array(inits, gelu.input[1])
        w2[neurons] += _array(inits, small.input[1])
        nodes[nodes.index(lin1)] = helper.make_node(
            "MatMul", [lin1.input[0], put(lin1.input[1] + "/neurons", w1)], list(lin1.output), name=lin1.name
        )
        nodes[nodes.index(activation)] = helper.make_node(
            "BiasGelu", [activation.input[0], put(activation.input[1] + "/neurons", b1)], list(activation.output),
            name=activation.name, domain="com.microsoft",
        )  # fmt: skip
        nodes[nodes.index(main)] = helper.make_node(
            "MatMul", [main.input[0], put(main.input[1] + "/neurons", w2)], [add.output[0]], name=main.name
        )
        for dead in (add, small, gelu, neuron_in):
            nodes.remove(dead)
    _keep_used(graph, nodes)
    return model


def dequantized_detector(path: str | Path, *, threads: int | None = None) -> Any:
    """A :class:`aidetect_infer.Detector` over the bundle at ``path`` with its graph dequantized
    (:func:`dequantized_graph`), fp32 on ONNX Runtime's CPU provider: the reference the int8 graph and the
    OpenVINO backend are measured against (same weights, no activation quantization)."""
    import onnx
    import onnxruntime as ort

    from aidetect_infer import Detector
    from aidetect_infer.bundle import load_bundle
    from aidetect_infer.session import session_options
    from aidetect_infer.tokenization import load_tokenizer

    bundle = load_bundle(Path(path))
    graph = dequantized_graph(onnx.load(str(bundle.model_path)))
    options = session_options(threads)
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Detector(session=session, tokenizer=load_tokenizer(bundle.tokenizer_path), metadata=bundle.metadata)


_NORM_OUTPUT = re.compile(r"layer\.(\d+)/(sa_layer_norm|output_layer_norm)/")


def _layer_norms(graph: Any, inits: dict[str, Any]) -> dict[tuple[int, str], dict[str, NDArray[Any]]]:
    """Per (layer, ``sa_layer_norm``/``output_layer_norm``): its ``weight``, ``bias`` and the bias of the product
    before it (``product_bias``), read off the fused node or either rewrite of :mod:`export.onnx.layernorm`
    (the plain operators, or ``Add`` nodes and an ONNX ``LayerNormalization``)."""
    norms: dict[tuple[int, str], dict[str, NDArray[Any]]] = {}
    groups: dict[str, dict[str, Any]] = {}
    for n in graph.node:
        if "/ln/" in n.name:
            prefix, step = n.name.rsplit("/ln/", 1)
            groups.setdefault(prefix, {})[step] = n
        elif n.op_type == "SkipLayerNormalization" and (m := _NORM_OUTPUT.search(n.output[0])):
            norms[(int(m.group(1)), m.group(2))] = {
                "weight": _array(inits, n.input[2]), "bias": _array(inits, n.input[3]),
                "product_bias": _array(inits, n.input[4]),
            }  # fmt: skip
    for steps in groups.values():
        standard = steps.get("layernorm")
        if standard is not None:  # Add (residual), Add (bias), LayerNormalization
            m = _NORM_OUTPUT.search(standard.output[0])
            if m is None or set(steps) != {"0", "1", "layernorm"} or len(standard.input) < 3:
                continue
            constant = [next(i for i in steps["1"].input if i in inits), standard.input[1], standard.input[2]]
        else:  # the 11 plain operators: the bias Add is step 1, the gamma Mul step 9, the beta Add step 10
            m = _NORM_OUTPUT.search(steps[max(steps, key=int)].output[0])
            if m is None or len(steps) != 11:  # the embedding LayerNorm is fused; a group without bias is not ours
                continue
            constant = [next(i for i in steps[str(k)].input if i in inits) for k in (1, 9, 10)]
        norms[(int(m.group(1)), m.group(2))] = dict(
            zip(("product_bias", "weight", "bias"), (_array(inits, c) for c in constant), strict=True)
        )
    return norms


def state_dict_of(model: Any) -> tuple[dict[str, NDArray[Any]], dict[str, int]]:
    """The ``DistilBertForSequenceClassification`` weights of a dequantized, folded graph, and its sizes."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    (embed,) = [n for n in graph.node if n.op_type == "EmbedLayerNormalization"]
    attention = [n for n in graph.node if n.op_type == "Attention"]
    heads = attribute(attention[0], "num_heads", 0) if attention else 0
    state: dict[str, NDArray[Any]] = {
        "distilbert.embeddings.word_embeddings.weight": _array(inits, embed.input[2]),
        "distilbert.embeddings.position_embeddings.weight": _array(inits, embed.input[3]),
        "distilbert.embeddings.LayerNorm.weight": _array(inits, embed.input[5]),
        "distilbert.embeddings.LayerNorm.bias": _array(inits, embed.input[6]),
    }
    layers = len(attention)
    if layers == 0 or any(
        f"/model/distilbert/transformer/layer.{i}/ffn/lin1/MatMul" not in by_name for i in range(layers)
    ):
        raise StageError("the graph is not a fused DistilBERT export of this factory (Attention and ffn/lin1 nodes)")

    def weight_of(node_name: str) -> NDArray[Any]:
        return _array(inits, by_name[node_name].input[1])

    norms = _layer_norms(graph, inits)
    if any((i, norm) not in norms for i in range(layers) for norm in ("sa_layer_norm", "output_layer_norm")):
        raise StageError("the graph's LayerNorms are not those of a DistilBERT export of this factory")
    ffn = 0
    for i, node in enumerate(attention):
        qkv, qkv_bias = _array(inits, node.input[1]), _array(inits, node.input[2])
        dim = qkv.shape[0]
        for j, name in enumerate(("q_lin", "k_lin", "v_lin")):
            state[f"distilbert.transformer.layer.{i}.attention.{name}.weight"] = qkv[:, j * dim : (j + 1) * dim].T
            state[f"distilbert.transformer.layer.{i}.attention.{name}.bias"] = qkv_bias[j * dim : (j + 1) * dim]
        layer = f"/model/distilbert/transformer/layer.{i}"
        state[f"distilbert.transformer.layer.{i}.attention.out_lin.weight"] = weight_of(
            f"{layer}/attention/out_lin/MatMul"
        ).T
        state[f"distilbert.transformer.layer.{i}.attention.out_lin.bias"] = norms[(i, "sa_layer_norm")]["product_bias"]
        lin1 = by_name[f"{layer}/ffn/lin1/MatMul"]
        (gelu,) = [n for n in graph.node if n.op_type == "BiasGelu" and n.input[0] == lin1.output[0]]
        state[f"distilbert.transformer.layer.{i}.ffn.lin1.weight"] = _array(inits, lin1.input[1]).T
        state[f"distilbert.transformer.layer.{i}.ffn.lin1.bias"] = _array(inits, gelu.input[1])
        state[f"distilbert.transformer.layer.{i}.ffn.lin2.weight"] = weight_of(f"{layer}/ffn/lin2/MatMul").T
        state[f"distilbert.transformer.layer.{i}.ffn.lin2.bias"] = norms[(i, "output_layer_norm")]["product_bias"]
        for norm in ("sa_layer_norm", "output_layer_norm"):
            for key in ("weight", "bias"):
                state[f"distilbert.transformer.layer.{i}.{norm}.{key}"] = norms[(i, norm)][key]
        ffn = state[f"distilbert.transformer.layer.{i}.ffn.lin1.weight"].shape[0]
    for head in ("pre_classifier", "classifier"):
        if f"/model/{head}/Gemm_MatMul" in by_name:  # int8: the quantizer split the Gemm into MatMul + Add
            state[f"{head}.weight"] = weight_of(f"/model/{head}/Gemm_MatMul").T
            add = by_name[f"/model/{head}/Gemm_Add"]
            state[f"{head}.bias"] = _array(inits, next(i for i in add.input if i in inits))
        else:  # fp32: torch's Gemm(x, W, b, transB=1) holds W as Linear does
            gemm = by_name[f"/model/{head}/Gemm"]
            weight = _array(inits, gemm.input[1])
            state[f"{head}.weight"] = weight if attribute(gemm, "transB", 0) else weight.T
            state[f"{head}.bias"] = _array(inits, gemm.input[2])
    word = state["distilbert.embeddings.word_embeddings.weight"]
    sizes = {
        "vocab_size": word.shape[0], "dim": word.shape[1], "n_layers": layers, "n_heads": int(heads),
        "hidden_dim": ffn,
        "max_position_embeddings": state["distilbert.embeddings.position_embeddings.weight"].shape[0],
    }  # fmt: skip
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, sizes


def _probe_windows(vocab_size: int, lengths: Sequence[int], seed: int = 0) -> list[NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(5, vocab_size, size=(1, n), dtype=np.int64) for n in lengths]


def recover(bundle_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the recovered checkpoint of ``bundle_dir`` (an int8 bundle) into ``out``; returns its record.

    Raises:
        StageError: The graph is not a DistilBERT bundle of this factory, or the recovered model does not
            compute the dequantized graph's logits (max abs difference over :data:`PARITY_ATOL`).
    """
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from aidetect_infer.bundle import load_bundle, to_plain
    from export.train.convert import save_checkpoint
    from export.train.record import TrainingRecord

    bundle = load_bundle(bundle_dir)
    int8 = onnx.load(str(bundle.model_path))
    plain = onnx.ModelProto()
    plain.CopyFrom(int8)  # rewritten in place below; the int8 graph is scored as it is
    plain = fold_outliers(dequantized_graph(plain))
    state, sizes = state_dict_of(plain)
    config = DistilBertConfig(
        **sizes, num_labels=2, id2label={0: "human", 1: "ai"}, label2id={"human": 0, "ai": 1}, activation="gelu",
        attn_implementation="eager",
    )  # fmt: skip
    model = DistilBertForSequenceClassification(config).eval()
    missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise StageError(f"recovered weights do not fit DistilBERT: missing {missing}, unexpected {unexpected}")

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {
        name: ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for name, graph in (("dequantized", plain), ("int8", int8))
    }
    lengths = sorted({8, 37, 64, min(bundle.metadata.max_length, 256)})
    diffs: dict[str, float] = {"dequantized": 0.0, "int8": 0.0}
    with torch.no_grad():
        for ids in _probe_windows(sizes["vocab_size"], lengths):
            mask = np.ones_like(ids)
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
            for name, session in sessions.items():
                ref = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
                diffs[name] = max(diffs[name], float(np.abs(logits - ref).max()))
    if not diffs["dequantized"] <= PARITY_ATOL:
        raise StageError(
            f"{bundle.path}: the recovered model's logits differ from the dequantized graph's by "
            f"{diffs['dequantized']:.3g} (> {PARITY_ATOL}): the weights were mapped wrongly"
        )
    out = Path(out)
    save_checkpoint(model, bundle.tokenizer_path, out)
    record = {
        "source": {"bundle": str(bundle.path), "name": bundle.metadata.name,
                   "model.onnx": bundle.metadata.files["model.onnx"]["sha256"]},
        "threshold": bundle.metadata.threshold,
        "max_length": bundle.metadata.max_length,
        "parity_lengths": lengths,
        "max_abs_logit_diff_vs_dequantized_graph": diffs["dequantized"],
        "max_abs_logit_diff_vs_int8_graph": diffs["int8"],
        "note": "the bundle's int8 weights in fp32; see export.recover",
    }  # fmt: skip
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    training = bundle.metadata.optional.get("training")
    if isinstance(training, Mapping):  # the run that made the bundle: split, data and threshold, for a re-export
        TrainingRecord.from_dict(to_plain(training)).write(out)
    logger.info(
        "%s: recovered %s (logits within %.2g of the dequantized graph)", out, bundle.path, diffs["dequantized"]
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.recover", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="an int8 bundle directory (e.g. models/default)")
    parser.add_argument("--out", required=True, help="the checkpoint directory to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from aidetect_infer.errors import AidetectError

    try:
        record = recover(args.bundle, args.out)
    except AidetectError as exc:  # no bundle there, or a corrupt one
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.BUNDLE)
    except (StageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.FAILED)
    print(json.dumps(record, indent=2))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
