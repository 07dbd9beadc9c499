"""Roofline accounting: analytic FLOPs of an encoder classifier, padding waste, and the machine's measured peak.

FLOPs count the matrix multiplications (2 per multiply-add), which are nearly all of an encoder's work:
per layer and token, the Q/K/V and output projections ``4·d·a`` (``a`` = heads kept × head size, ``d`` when no
head is pruned), the attention scores and the weighted sum ``2·L·a`` (``L`` = the sequence length), the
feed-forward ``2·d·f``; per sequence, the classification head ``d² + 2·d``. Embedding look-ups, LayerNorm,
softmax and GELU are left out (a few percent). The peak is measured, not taken from a data sheet: a large fp32
matrix product through numpy (OpenBLAS) and a large u8 × s8 one through ONNX Runtime's ``MatMulInteger``
(the kernel a dynamically quantized model runs), both on the benchmark's thread count; ONNX Runtime's own fp32
``MatMul`` is measured too, and the higher fp32 figure is the peak.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PEAK_SIZE = 1024  # square operands: ~2.1 GFLOP per product, large enough to reach the kernels' steady state


def _layer_widths(arch: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Per layer: (attention width ``a``, FFN width ``f``)."""
    layers, d, heads = int(arch["layers"]), int(arch["hidden_size"]), int(arch["heads"])
    head_dim = d // heads
    pruned = {int(k): len(v) for k, v in (arch.get("pruned_heads") or {}).items()}
    ffn = int(arch["ffn_size"])
    return [((heads - pruned.get(i, 0)) * head_dim, ffn) for i in range(layers)]


def sequence_flops(arch: Mapping[str, Any], length: int) -> int:
    """FLOPs to classify one sequence of ``length`` tokens (special tokens included).

    Args:
        arch: ``aidetect.json``'s ``architecture`` (``layers``, ``hidden_size``, ``heads``, ``ffn_size``,
            optionally ``pruned_heads`` as ``{layer: [heads]}``).
        length: Tokens in the sequence.

    Raises:
        ValueError: A negative length.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    d = int(arch["hidden_size"])
    macs = sum(length * (4 * d * a + 2 * length * a + 2 * d * f) for a, f in _layer_widths(arch))
    macs += d * d + 2 * d  # pre-classifier and classifier, once per sequence
    return 2 * macs


def flops_per_token(arch: Mapping[str, Any], length: int = 256) -> float:
    """FLOPs per token of a sequence of ``length`` tokens (the attention share grows with the length)."""
    return sequence_flops(arch, length) / length


def batch_lengths(lengths: Sequence[int], batch_size: int, *, sort_chunk: int | None) -> list[list[int]]:
    """How an engine groups sequences into batches.

    Args:
        lengths: Token lengths in input order.
        batch_size: Sequences per model call.
        sort_chunk: ``None``: batches in input order (the transformers pipeline); else the input is cut into
            chunks of this many texts and each chunk is sorted longest first (``aidetect_infer.Detector``).
    """
    if sort_chunk is None:
        return [list(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)]
    out: list[list[int]] = []
    for begin in range(0, len(lengths), sort_chunk):
        chunk = sorted(lengths[begin : begin + sort_chunk], reverse=True)
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return out


def workload(
    arch: Mapping[str, Any], lengths: Sequence[int], batch_size: int, *, sort_chunk: int | None
) -> dict[str, int]:
    """Useful and padded work of one pass over texts of the given lengths.

    Returns:
        ``tokens`` (real tokens), ``padded_tokens`` (tokens computed, padding included), ``flops`` (useful
        FLOPs) and ``padded_flops`` (FLOPs computed when every batch is padded to its longest sequence).
    """
    batches = batch_lengths(lengths, batch_size, sort_chunk=sort_chunk)
    return {
        "tokens": int(sum(lengths)),
        "padded_tokens": int(sum(max(b) * len(b) for b in batches)),
        "flops": int(sum(sequence_flops(arch, n) for n in lengths)),
        "padded_flops": int(sum(sequence_flops(arch, max(b)) * len(b) for b in batches)),
    }


def fp32_matmul(size: int = PEAK_SIZE, threads: int = 2) -> tuple[Callable[[], Any], int]:
    """A fp32 ``size³`` matrix product through numpy on ``threads`` BLAS threads, and its FLOPs.

    Returns:
        ``(run, flops)``; ``run()`` computes one product.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)

    def run() -> Any:
        with threadpool_limits(limits=threads, user_api="blas"):
            return np.matmul(a, b, out=out)

    return run, 2 * size**3


def has_vnni() -> bool:
    """Whether this CPU multiplies u8 x s8 with VNNI (``avx512_vnni`` or ``avx_vnni`` in ``/proc/cpuinfo``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def ort_matmul(
    workdir: Path, precision: str, size: int = PEAK_SIZE, threads: int = 2
) -> tuple[Callable[[], Any], int, tuple[np.ndarray, np.ndarray]]:
    """A ``size³`` matrix product through ONNX Runtime on ``threads`` threads, and its operations.

    ``"int8"``: u8 activation × s8 weight with ``MatMulInteger`` (int32 out), the kernel of a dynamically
    quantized model's products (7-bit weights on a CPU without VNNI, see :func:`has_vnni`); ``"fp32"``:
    ``MatMul`` (ONNX Runtime's own fp32 kernels, which can beat numpy's BLAS). The weight is a graph
    initializer and the activation an input, as in a model.

    Returns:
        ``(run, ops, (activation, weight))``; ``run()`` computes one product (a list holding the result).

    Raises:
        ValueError: An unknown precision.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "int8":
        # Without VNNI the u8 x s8 kernel adds pairs of products in int16 (vpmaddubsw), which saturates for
        # full-range weights: 7-bit weights there, as the export's int8 ladder uses, keep the product exact.
        low = -128 if has_vnni() else -64
        weight = rng.integers(low, -low, size=(size, size), dtype=np.int8)
        activation = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
        op, types = "MatMulInteger", (TensorProto.UINT8, TensorProto.INT32)
    elif precision == "fp32":
        weight = rng.standard_normal((size, size), dtype=np.float32)
        activation = rng.standard_normal((size, size), dtype=np.float32)
        op, types = "MatMul", (TensorProto.FLOAT, TensorProto.FLOAT)
    else:
        raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])],
        f"{precision}_peak",
        [helper.make_tensor_value_info("a", types[0], [size, size])],
        [helper.make_tensor_value_info("y", types[1], [size, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = workdir / f"matmul_{precision}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {"a": activation}
    return (lambda: session.run(None, feed)), 2 * size**3, (activation, weight)
