"""Stage 3 of the export: int8 quantization (dynamic, weight-only, static QDQ) and the fp16 conversion.

Measured on this machine (AMD EPYC with AVX-512 VNNI, onnxruntime 1.32, 2 intra-op threads, spinning off) on
the fine-tuned MiniLM-sized DistilBERT ``runs/minilm2``, O2-fused graph. Speed: process CPU time of batch
16 x 256 against the fp32 graph, all variants interleaved in one process (the machine was shared, so CPU time is
steadier than wall time; wall-time ratios agreed within 10%). Accuracy: 300 ``detectgpt_family`` validation-
group texts and 300 un-attacked OUTFOX test essays (first window), decisions at the checkpoint's validation
threshold 0.961; "margin rmse" is the RMS change of the logit margin over 96 validation texts.

=============================================  =====  ===========  =================  ==================
int8 variant (all per-channel)                 speed  margin rmse  AUC drop det / ox  agreement det / ox
=============================================  =====  ===========  =================  ==================
dynamic QInt8, MatMul + Attention (preset)     1.91x  0.72         0.0016 / 0.0006    0.957 / 0.987
dynamic QInt8, ORT default ops (+ embeddings)  1.89x  -            0.0011 / 0.0024    0.940 / 0.980
dynamic QInt8, reduce_range                    1.89x  -            0.0037 / 0.0019    0.960 / 0.973
dynamic QUInt8 weights                         1.25x  -            -0.0008 / -0.0002  0.970 / 0.990
dynamic QInt8, unfused graph                   1.95x  -            0.0028 / 0.0007    0.957 / 0.980
dynamic, FFN output projections left fp32      1.43x  0.19         -0.0006 / 0.0005   0.977 / 0.997
mixed: those as 8-bit weight-only (preset)     1.67x  0.20         -                  -
weight-only 8-bit, block 32 (preset)           1.15x  0.044        -                  -
static QDQ MatMul, minmax, 128 windows         1.17x  -            0.0007 / 0.0006    0.983 / 0.997
=============================================  =====  ===========  =================  ==================

Measured again on the AVX2 build machine (AMD EPYC, 2 cores, no VNNI; onnxruntime 1.32) on the shipped default's
checkpoint (``runs/mix2``, O2 graph, LayerNorm decomposed): 600 ``detectgpt_family`` validation texts (first
window) against fp32, decisions at the training run's threshold 0.559 and at the shipped AI threshold 0.953 (on
uncalibrated scores); speed one window per call, 2 threads, medians of 5 interleaved rounds, nothing else running.

===================================================  ======  =========  ============  ===========  ===========
int8 variant (dynamic, per-channel QInt8, int8 tables)  128 tok  256 tok/s  mean / max dP  agree 0.559  agree 0.953
===================================================  ======  =========  ============  ===========  ===========
fp32                                                 32.2 ms  16.0       -             -            -
shipped (``avx512_vnni`` with tables)                22.8 ms  21.0       0.024 / 0.22  0.977        0.983
``reduce_range`` (``avx2``)                          -        -          0.024 / 0.19  0.977        0.985
SmoothQuant (alpha 0.5) on the FFN output inputs     -        -          0.055 / 0.36  0.940        0.970
first three FFN outputs fp32 (``early_ffn_fp32``)    26.4 ms  19.0       0.017 / 0.15  0.985        0.988
those as 8-bit weight-only                           28.6 ms  17.1       0.017 / 0.14  0.985        0.990
all FFN outputs as 8-bit weight-only                 33.5 ms  15.4       0.017 / 0.15  0.987        0.988
word table with a scale per row                      24.6 ms  19.7       0.023 / 0.23  0.977        0.988
``early_ffn_fp32`` + a scale per row                 25.7 ms  18.6       0.015 / 0.16  0.987        0.992
``early_ffn_fp32`` + float tables                    26.1 ms  19.0       0.015 / 0.14  0.988        0.992
===================================================  ======  =========  ============  ===========  ===========

Where the error comes from (one group of nodes int8, the rest fp32, same texts; mean |dP|): word and position
tables 0.0055, fused attention (QKV) 0.0074, attention output 0.0081, FFN input 0.0088, FFN output 0.0157 (0.0160
from the first three layers alone), classifier head 0.0003. On this CPU the more faithful settings cost 10-20% of
the throughput, so the ladder keeps them as fallbacks for the gate rather than as the default; SmoothQuant (the
per-channel outliers of the GELU outputs, up to 24.6 against a median channel peak of 1.9, moved into the weights)
made the error worse here and is not offered.

Choices: signed 8-bit weights (QInt8) without ``reduce_range``: VNNI multiplies u8 activations by s8 weights
natively, so QUInt8 weights run 1.5x slower, and ``reduce_range`` (7-bit weights, needed only on CPUs without VNNI)
loses accuracy for no speed. The embedding tables are not quantized by default (it saves memory only and costs
agreement); ``embeddings=True`` (``--quantize-embeddings``) does it where size matters. Almost all of the dynamic
error comes from the FFN output projections (``ffn/lin2``) of the first layers, whose inputs (GELU outputs) have
outliers that per-tensor activation scales resolve poorly (margin rmse 0.59 quantizing those alone, 0.19 quantizing
all the rest). Hence the presets, fastest first: ``avx512_vnni``, ``outlier_channels`` (the few outlier input
channels of the FFN and attention output products in fp32 beside the int8 product, :mod:`export.onnx.outliers`: on
the AVX2 machine 99.2% agreement at 0.559 for 7% more time per call, the most faithful setting measured that costs
under 10%), ``early_ffn_fp32``, ``avx512_vnni_mixed`` (those projections as 8-bit weight-only blocks,
``MatMulNBits``), ``weight_only`` (all matrix products outside the fused attention). Static QDQ is slower than
dynamic and less accurate than weight-only; it stays available (``static_qdq``) for graphs where calibration helps.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.errors import ConfigError
from export.files import run_stage, staged_file
from export.onnx.outliers import OUTLIER_PRODUCTS
from export.onnx.parity import ParitySet

logger = logging.getLogger(__name__)

WEIGHT_TYPES = ("QInt8", "QUInt8")
MODES = ("dynamic", "static", "weight_only")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
EMBEDDING_OPS = ("EmbedLayerNormalization", "Gather")
"""Operators holding embedding tables: the fused one, or the plain lookup of an unfused graph."""
OUTLIER_PRODUCT_SETS = tuple(OUTLIER_PRODUCTS)
"""The names of :data:`export.onnx.outliers.OUTLIER_PRODUCTS`."""
FFN_OUTPUT = r"layer\.\d+/(ffn/lin2|output/dense)/"
"""Node names of the FFN output projections (DistilBERT ``ffn.lin2``, BERT ``output.dense``)."""
EARLY_FFN_OUTPUT = r"layer\.[0-2]/(ffn/lin2|output/dense)/"
"""The FFN output projections of the first three layers, where almost all of the dynamic int8 error arises."""
EMBEDDING_SCALES = ("tensor", "row")


@dataclass(frozen=True, slots=True)
class QuantizeConfig:
    """How the fp32 graph becomes int8.

    Attributes:
        mode: ``"dynamic"`` (int8 weights; activations quantized per call, one scale per tensor),
            ``"weight_only"`` (8-bit weight blocks, ``MatMulNBits``; activations quantized per block of
            ``block_size`` at ``accuracy_level`` 4) or ``"static"`` (QDQ; activation ranges calibrated on
            training windows).
        weight_type: ``"QInt8"`` or ``"QUInt8"`` (dynamic and static).
        activation_type: Static mode's activation type (dynamic mode always uses uint8 activations).
        per_channel: One scale per output channel of each weight matrix (dynamic and static).
        reduce_range: 7-bit weights, for CPUs without VNNI whose u8 x s8 products can saturate.
        op_types: Operators to quantize (dynamic and static); ``None`` takes ONNX Runtime's default.
        exclude: Regular expressions of node names that the dynamic or static pass leaves alone.
        exclude_weight_only: Give the excluded matrix products 8-bit weight-only quantization instead of
            leaving them fp32.
        block_size: Weight-only block size (a power of two, at least 16).
        calibration_method: Static mode's range estimator (``minmax``, ``entropy``, ``percentile``).
        calibration_size: Static mode: how many calibration windows are used at most.
        embeddings: Also quantize the embedding tables (``EmbedLayerNormalization`` or ``Gather``; 8-bit, dynamic
            pass, in every mode). The word embeddings are half of a MiniLM-sized model: this makes the bundle
            about 2.5x smaller (59 -> 23 MB), at no speed cost and some decision agreement (table above).
        embedding_scales: With ``embeddings``: ``"tensor"`` (ONNX Runtime's ``QEmbedLayerNormalization``, one
            scale for the word table) or ``"row"`` (one scale per vocabulary row, :mod:`export.onnx.embeddings`;
            needs the fused embedding node).
        outliers: Dynamic mode: this many input channels of every FFN and attention output product (the largest
            on calibration windows) kept in fp32 beside the int8 product (:mod:`export.onnx.outliers`); 0: none.
        outlier_products: Which products ``outliers`` splits: ``"ffn_attention"`` (both FFN products and the
            attention output projection) or ``"ffn"`` (see :data:`export.onnx.outliers.OUTLIER_PRODUCTS`).
    """

    mode: str = "dynamic"
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = ("MatMul", "Attention")
    exclude: tuple[str, ...] = ()
    exclude_weight_only: bool = False
    block_size: int = 32
    calibration_method: str = "minmax"
    calibration_size: int = 128
    embeddings: bool = False
    embedding_scales: str = "tensor"
    outliers: int = 0
    outlier_products: str = "ffn_attention"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("weight_type", "activation_type"):
            if getattr(self, name) not in WEIGHT_TYPES:
                raise ValueError(f"{name} must be one of {WEIGHT_TYPES}, got {getattr(self, name)!r}")
        if self.embedding_scales not in EMBEDDING_SCALES:
            raise ValueError(f"embedding_scales must be one of {EMBEDDING_SCALES}, got {self.embedding_scales!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration_method must be one of {CALIBRATION_METHODS}, got {self.calibration_method!r}"
            )
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1:
            raise ValueError(f"calibration_size must be a positive integer, got {self.calibration_size!r}")
        if self.op_types is not None and (not self.op_types or not all(isinstance(o, str) for o in self.op_types)):
            raise ValueError(f"op_types must be None or a non-empty tuple of operator names, got {self.op_types!r}")
        if not isinstance(self.exclude, tuple) or not all(isinstance(e, str) and e for e in self.exclude):
            raise ValueError(f"exclude must be a tuple of non-empty regular expressions, got {self.exclude!r}")
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"exclude pattern {pattern!r} is not a regular expression: {exc}") from exc
        if not isinstance(self.outliers, int) or isinstance(self.outliers, bool) or self.outliers < 0:
            raise ValueError(f"outliers must be a non-negative integer, got {self.outliers!r}")
        if self.outlier_products not in OUTLIER_PRODUCT_SETS:
            raise ValueError(f"outlier_products must be one of {OUTLIER_PRODUCT_SETS}, got {self.outlier_products!r}")
        if self.outliers and self.mode != "dynamic":
            raise ValueError(f"outliers apply to dynamic int8 only, not {self.mode!r}")
        if not isinstance(self.block_size, int) or self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size!r}")

    @classmethod
    def avx512_vnni(cls) -> QuantizeConfig:
        """Dynamic, per-channel, signed 8-bit weights at full range on every matrix product: the fastest."""
        return cls()

    @classmethod
    def avx512_vnni_mixed(cls) -> QuantizeConfig:
        """Dynamic int8, with the FFN output projections (the error's main source) as 8-bit weight-only."""
        return cls(exclude=(FFN_OUTPUT,), exclude_weight_only=True)

    @classmethod
    def outlier_channels(cls, k: int = 8) -> QuantizeConfig:
        """Dynamic int8 with the ``k`` largest input channels of the FFN and attention output products in fp32."""
        return cls(outliers=k)

    @classmethod
    def early_ffn_fp32(cls) -> QuantizeConfig:
        """Dynamic int8 with the first three FFN output projections left fp32 (see the AVX2 table above)."""
        return cls(exclude=(EARLY_FFN_OUTPUT,))

    @classmethod
    def weight_only(cls, block_size: int = 32) -> QuantizeConfig:
        """8-bit weight-only blocks on every matrix product outside the fused attention: the most accurate."""
        return cls(mode="weight_only", op_types=("MatMul",), block_size=block_size)

    @classmethod
    def avx2(cls) -> QuantizeConfig:
        """Dynamic with 7-bit weights, which avoids the saturation of u8 x s8 products on CPUs without VNNI."""
        return cls(reduce_range=True)

    @classmethod
    def static_qdq(cls, method: str = "minmax", size: int = 128) -> QuantizeConfig:
        """Static QDQ quantization of the matrix multiplications, calibrated on ``size`` windows."""
        return cls(mode="static", op_types=("MatMul",), calibration_method=method, calibration_size=size)

    @property
    def needs_calibration(self) -> bool:
        """Static mode and the outlier channels are chosen on calibration windows (training data)."""
        return self.mode == "static" or self.outliers > 0

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``aidetect.json``'s ``variant.quantization`` records them."""
        if self.mode == "weight_only":
            out: dict[str, Any] = {"mode": self.mode, "bits": 8, "block_size": self.block_size, "accuracy_level": 4}
            return {**out, **self._tables()}
        out = {
            "mode": self.mode, "weight_type": self.weight_type, "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
        }  # fmt: skip
        if self.op_types is not None:
            out["op_types"] = list(self.op_types)
        if self.exclude:
            out["exclude"] = list(self.exclude)
            out["excluded_as"] = f"weight_only (8-bit, block {self.block_size})" if self.exclude_weight_only else "fp32"
        if self.outliers:
            out["outlier_channels"] = self.outliers
            if self.outlier_products != "ffn_attention":
                out["outlier_products"] = self.outlier_products
        if self.mode == "static":
            out.update(format="QDQ", activation_type=self.activation_type, calibration_method=self.calibration_method)
        return {**out, **self._tables()}

    def _tables(self) -> dict[str, str]:
        if not self.embeddings:
            return {}
        return {"embeddings": "int8"} if self.embedding_scales == "tensor" else {"embeddings": "int8, a scale per row"}


class _FeedReader:
    """``CalibrationDataReader`` protocol over a list of feed dicts (one window each)."""

    def __init__(self, feeds: Sequence[dict[str, NDArray[np.int64]]], names: set[str]) -> None:
        self._feeds = feeds
        self._names = names
        self._it: Iterator[dict[str, NDArray[np.int64]]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, NDArray[np.int64]] | None:
        feed = next(self._it, None)
        return None if feed is None else {k: v for k, v in feed.items() if k in self._names}

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _weight_only(model: Any, cfg: QuantizeConfig, staged: Path, include: list[str] | None) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    algo = DefaultWeightOnlyQuantConfig(block_size=cfg.block_size, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(
        model, bits=8, block_size=cfg.block_size, is_symmetric=True, accuracy_level=4, nodes_to_include=include,
        algo_config=algo,
    )  # fmt: skip
    quantizer.process()
    quantizer.model.save_model_to_file(str(staged), False)


def _quantize_to(
    onnx_in: Path, staged: Path, cfg: QuantizeConfig, calibration: Sequence[dict[str, NDArray[np.int64]]] | None,
    layernorm: str,
) -> dict[str, list[int]]:  # fmt: skip
    """Write the int8 graph of ``onnx_in`` to ``staged``; return the outlier channels kept fp32, by node."""
    if not cfg.outliers:
        _quantize_graph(onnx_in, staged, cfg, calibration, layernorm)
        return {}
    import onnx

    from export.onnx.outliers import split_outliers

    model = onnx.load(str(onnx_in))
    pattern = OUTLIER_PRODUCTS[cfg.outlier_products]
    chosen = split_outliers(model, list(calibration or ())[: cfg.calibration_size], cfg.outliers, pattern=pattern)
    split = staged.with_name(staged.name + ".outliers.onnx")
    try:
        onnx.save(model, str(split))
        _quantize_graph(split, staged, cfg, calibration, layernorm)
    finally:
        split.unlink(missing_ok=True)
    return chosen


def _quantize_graph(
    onnx_in: Path, staged: Path, cfg: QuantizeConfig, calibration: Sequence[dict[str, NDArray[np.int64]]] | None,
    layernorm: str,
) -> None:  # fmt: skip
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(onnx_in), load_external_data=False).graph
    # A fused graph holds contrib ops (Attention, SkipLayerNormalization) whose output types the quantizer's
    # shape inference cannot derive; it must be told they are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    op_types = list(cfg.op_types) if cfg.op_types is not None else None
    tables = cfg.embeddings and cfg.embedding_scales == "tensor"
    if tables and cfg.mode == "dynamic" and op_types is not None:
        op_types += [op for op in EMBEDDING_OPS if op not in op_types]
    elif tables and cfg.mode != "dynamic":
        # The embedding tables in a dynamic pass of their own; the chosen mode then works on its output.
        options = {"op_types_to_quantize": list(EMBEDDING_OPS), "weight_type": QuantType.QInt8}
        quantize_dynamic(onnx_in, staged, extra_options=extra, **options)
        onnx_in = staged
    if cfg.mode == "weight_only":
        _weight_only(onnx.load(str(onnx_in)), cfg, staged, None)
    else:
        _activations(onnx_in, staged, cfg, calibration, graph, op_types, extra)
    if cfg.embeddings and cfg.embedding_scales == "row":
        from export.onnx.embeddings import quantize_word_rows

        model = onnx.load(str(staged))
        quantize_word_rows(model, layernorm=layernorm)
        onnx.save(model, str(staged))


def _activations(
    onnx_in: Path, staged: Path, cfg: QuantizeConfig, calibration: Sequence[dict[str, NDArray[np.int64]]] | None,
    graph: Any, op_types: list[str] | None, extra: dict[str, Any],
) -> None:  # fmt: skip
    """The dynamic or static pass (then the excluded matrix products as weight-only, if asked)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from export.onnx.outliers import OUTLIER_NODE

    patterns = (*cfg.exclude, OUTLIER_NODE) if cfg.outliers else cfg.exclude
    excluded = [n.name for n in graph.node if any(re.search(p, n.name) for p in patterns)]
    common = {
        "op_types_to_quantize": op_types,
        "nodes_to_exclude": excluded, "per_channel": cfg.per_channel, "reduce_range": cfg.reduce_range,
        "weight_type": QuantType[cfg.weight_type],
    }  # fmt: skip
    if cfg.mode == "dynamic":
        quantize_dynamic(onnx_in, staged, extra_options=extra, **common)
    else:
        if not calibration:
            raise ConfigError("static quantization needs calibration windows (--calibration FILE)")
        reader = _FeedReader(list(calibration)[: cfg.calibration_size], {i.name for i in graph.input})
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
        quantize_static(
            onnx_in, staged, reader, quant_format=QuantFormat.QDQ, activation_type=QuantType[cfg.activation_type],
            calibrate_method=methods.get(cfg.calibration_method, CalibrationMethod.Percentile),
            extra_options={**extra, "ActivationSymmetric": False}, **common,
        )  # fmt: skip
    matmuls = [n.name for n in graph.node if n.name in excluded and n.op_type == "MatMul"]
    if cfg.exclude_weight_only and matmuls:
        _weight_only(onnx.load(str(staged)), cfg, staged, matmuls)


def quantize(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    cfg: QuantizeConfig,
    *,
    calibration: Sequence[dict[str, NDArray[np.int64]]] | None = None,
    parity: ParitySet | None = None,
    recipe: list[dict[str, Any]] | None = None,
    layernorm: str = "standard",
) -> Path:
    """Quantize an fp32 graph (fused or not) to int8.

    The int8 graph is not held to the fp32 parity tolerance; its max abs logit difference to the reference is
    measured and recorded, and the accuracy gate (``export.onnx.gates``) decides whether it is good enough.

    Args:
        onnx_in: The fp32 graph.
        onnx_out: Where the int8 graph goes.
        cfg: The quantization settings.
        calibration: Static mode and ``cfg.outliers``: feed dicts (one window each) drawn from training data,
            never from a held-out test set.
        parity: The PyTorch reference, to measure the logit difference against.
        recipe: A list to append this stage's record to.
        layernorm: How the graph's LayerNorms are written (:data:`export.onnx.layernorm.MODES`); the LayerNorm
            of an embedding node the per-row table rewrite unfuses is written the same way (fused: standard).

    Returns:
        ``onnx_out``.

    Raises:
        ExportError: Quantization failed, or static mode without calibration feeds.
    """
    onnx_out = Path(onnx_out)
    with staged_file(onnx_out, "quantize") as staged:
        what = f"{onnx_in}: int8 quantization ({cfg.mode})"
        chosen = run_stage(what, lambda: _quantize_to(Path(onnx_in), staged, cfg, calibration, layernorm))
        diff = parity.max_abs_diff(staged) if parity is not None else float("nan")
    logger.info("%s: int8 (%s), max abs logit difference %.3g", onnx_out, cfg.mode, diff)
    if recipe is not None:
        entry = {"stage": "quantize", **cfg.to_dict(), "parity_max_abs_logit_diff": diff}
        if cfg.needs_calibration:
            entry["calibration_windows"] = min(len(calibration or ()), cfg.calibration_size)
        if chosen:
            entry["outlier_channels_by_node"] = chosen
        recipe.append(entry)
    return onnx_out


def convert_fp16(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    *,
    op_block_list: Sequence[str] | None = None,
    parity: ParitySet | None = None,
    recipe: list[dict[str, Any]] | None = None,
) -> Path:
    """Convert an fp32 graph to fp16 weights and arithmetic, for the CUDA provider.

    Inputs stay int64 and ``logits`` stays float32 (``keep_io_types``), so the bundle contract holds; the
    graph still runs on the CPU provider (slowly), which is how the gates measure it on a machine without GPU.

    Args:
        onnx_in: The fp32 graph (fused or not).
        onnx_out: Where the fp16 graph goes.
        op_block_list: Operators to leave in fp32 (``None``: ONNX Runtime's default list).
        parity: The PyTorch reference, to measure the logit difference against.
        recipe: A list to append this stage's record to.

    Returns:
        ``onnx_out``.

    Raises:
        ExportError: The conversion failed.
    """

    def write(staged: Path) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        blocked = list(op_block_list) if op_block_list is not None else None
        model = convert_float_to_float16(onnx.load(str(onnx_in)), keep_io_types=True, op_block_list=blocked)
        onnx.save(model, str(staged))

    onnx_out = Path(onnx_out)
    with staged_file(onnx_out, "fp16") as staged:
        run_stage(f"{onnx_in}: fp16 conversion", lambda: write(staged))
        diff = parity.max_abs_diff(staged) if parity is not None else float("nan")
    logger.info("%s: fp16, max abs logit difference %.3g", onnx_out, diff)
    if recipe is not None:
        recipe.append({"stage": "fp16", "keep_io_types": True, "parity_max_abs_logit_diff": diff})
    return onnx_out
