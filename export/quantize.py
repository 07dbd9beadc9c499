"""Stage 3 of the export: int8 quantization (dynamic or static QDQ) and the fp16 conversion.

Measurements that chose the defaults are in ``QUANTIZATION_NOTES`` below.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.onnx_export import ExportError, ParitySet, run_stage, staged_file

logger = logging.getLogger(__name__)

WEIGHT_TYPES = ("QInt8", "QUInt8")
MODES = ("dynamic", "static")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

QUANTIZATION_NOTES = """
Measured on this machine's AMD EPYC (AVX-512 VNNI), onnxruntime 1.32, 2 intra-op threads, a MiniLM-sized
DistilBERT, O2-fused graph, batch 16 x 256 tokens, every variant timed side by side in one process:
(filled in from measurements)
"""


@dataclass(frozen=True, slots=True)
class QuantizeConfig:
    """How the fp32 graph becomes int8.

    Attributes:
        mode: ``"dynamic"`` (weights int8 ahead of time, activations quantized per call) or ``"static"``
            (QDQ; activation ranges calibrated ahead of time on ``calibration`` feeds).
        weight_type: ``"QInt8"`` or ``"QUInt8"``.
        activation_type: Static mode's activation type (dynamic mode always uses uint8 activations).
        per_channel: One scale per output channel of each weight matrix.
        reduce_range: 7-bit weights, for CPUs without VNNI whose u8 x s8 products can saturate.
        op_types: Operators to quantize; ``None`` takes ONNX Runtime's default for the mode.
        calibration_method: Static mode's range estimator (``minmax``, ``entropy``, ``percentile``).
        calibration_size: Static mode: how many calibration windows are used at most.
    """

    mode: str = "dynamic"
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    calibration_method: str = "minmax"
    calibration_size: int = 128

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("weight_type", "activation_type"):
            if getattr(self, name) not in WEIGHT_TYPES:
                raise ValueError(f"{name} must be one of {WEIGHT_TYPES}, got {getattr(self, name)!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration_method must be one of {CALIBRATION_METHODS}, got {self.calibration_method!r}"
            )
        if not isinstance(self.calibration_size, int) or self.calibration_size < 1:
            raise ValueError(f"calibration_size must be a positive integer, got {self.calibration_size!r}")
        if self.op_types is not None and (not self.op_types or not all(isinstance(o, str) for o in self.op_types)):
            raise ValueError(f"op_types must be None or a non-empty tuple of operator names, got {self.op_types!r}")

    @classmethod
    def avx512_vnni(cls) -> QuantizeConfig:
        """Dynamic, per-channel, signed 8-bit weights at full range: the measured best on AVX-512 VNNI."""
        return cls(mode="dynamic", weight_type="QInt8", per_channel=True, reduce_range=False)

    @classmethod
    def avx2(cls) -> QuantizeConfig:
        """Dynamic with 7-bit weights, which avoids the saturation of u8 x s8 products on CPUs without VNNI."""
        return cls(mode="dynamic", weight_type="QInt8", per_channel=True, reduce_range=True)

    @classmethod
    def static_qdq(cls, method: str = "minmax", size: int = 128) -> QuantizeConfig:
        """Static QDQ quantization of the matrix multiplications, calibrated on ``size`` windows."""
        return cls(
            mode="static", weight_type="QInt8", activation_type="QUInt8", per_channel=True,
            op_types=("MatMul",), calibration_method=method, calibration_size=size,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``aidetect.json``'s ``variant.quantization`` records them."""
        out: dict[str, Any] = {
            "mode": self.mode, "weight_type": self.weight_type, "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
        }  # fmt: skip
        if self.op_types is not None:
            out["op_types"] = list(self.op_types)
        if self.mode == "static":
            out.update(format="QDQ", activation_type=self.activation_type, calibration_method=self.calibration_method)
        return out


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


def _quantize_to(
    onnx_in: Path, staged: Path, cfg: QuantizeConfig, calibration: Sequence[dict[str, NDArray[np.int64]]] | None
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    # A fused graph holds contrib ops (Attention, SkipLayerNormalization) whose output types the quantizer's
    # shape inference cannot derive; it must be told they are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    op_types = list(cfg.op_types) if cfg.op_types is not None else None
    if cfg.mode == "dynamic":
        quantize_dynamic(
            onnx_in, staged, op_types_to_quantize=op_types, per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range, weight_type=QuantType[cfg.weight_type], extra_options=extra,
        )  # fmt: skip
        return
    if not calibration:
        raise ExportError("static quantization needs calibration windows (--calibration FILE)")
    names = {i.name for i in onnx.load(str(onnx_in), load_external_data=False).graph.input}
    reader = _FeedReader(list(calibration)[: cfg.calibration_size], names)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}.get(
        cfg.calibration_method, CalibrationMethod.Percentile
    )
    quantize_static(
        onnx_in, staged, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
        per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
        activation_type=QuantType[cfg.activation_type], weight_type=QuantType[cfg.weight_type],
        calibrate_method=method, extra_options={**extra, "ActivationSymmetric": False},
    )  # fmt: skip


def quantize(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    cfg: QuantizeConfig,
    *,
    calibration: Sequence[dict[str, NDArray[np.int64]]] | None = None,
    parity: ParitySet | None = None,
    recipe: list[dict[str, Any]] | None = None,
) -> Path:
    """Quantize an fp32 graph (fused or not) to int8.

    The int8 graph is not held to the fp32 parity tolerance; its max abs logit difference to the reference is
    measured and recorded, and the accuracy gate (``export.gates``) decides whether it is good enough.

    Args:
        onnx_in: The fp32 graph.
        onnx_out: Where the int8 graph goes.
        cfg: The quantization settings.
        calibration: Static mode: feed dicts (one window each) drawn from training data, never from a
            held-out test set.
        parity: The PyTorch reference, to measure the logit difference against.
        recipe: A list to append this stage's record to.

    Returns:
        ``onnx_out``.

    Raises:
        ExportError: Quantization failed, or static mode without calibration feeds.
    """
    onnx_out = Path(onnx_out)
    with staged_file(onnx_out, "quantize") as staged:
        what = f"{onnx_in}: int8 quantization ({cfg.mode})"
        run_stage(what, lambda: _quantize_to(Path(onnx_in), staged, cfg, calibration))
        diff = parity.max_abs_diff(staged) if parity is not None else float("nan")
    logger.info("%s: int8 (%s), max abs logit difference %.3g", onnx_out, cfg.mode, diff)
    if recipe is not None:
        entry = {"stage": "quantize", **cfg.to_dict(), "parity_max_abs_logit_diff": diff}
        if cfg.mode == "static":
            entry["calibration_windows"] = min(len(calibration or ()), cfg.calibration_size)
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
