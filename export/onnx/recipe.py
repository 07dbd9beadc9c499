"""What one build decides: :class:`BuildConfig` (the recipe of the graphs and what the bundles are checked
against), its int8 presets, and the one way options (a command line, a pipeline's ``[export]`` table) become it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ConfigError, OutputError, OutputExistsError
from export.onnx.export import ExportConfig
from export.onnx.gates import GateConfig
from export.onnx.layernorm import MODES as LAYERNORM_MODES
from export.onnx.optimize import OptimizeConfig
from export.onnx.quantize import QuantizeConfig
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8", "fp16")
INT8_LADDER = (
    QuantizeConfig.avx512_vnni(),
    # 7-bit weights: on CPUs without VNNI the full-range u8 x s8 products saturate, and the gate (run on the
    # build machine) then fails full-range int8 where 7-bit weights pass
    QuantizeConfig.avx2(),
    QuantizeConfig.outlier_channels(),
    QuantizeConfig.early_ffn_fp32(),
    QuantizeConfig.avx512_vnni_mixed(),
    QuantizeConfig.weight_only(),
)
"""The int8 settings tried by default, fastest first (see :mod:`export.onnx.quantize` for the measurements)."""
DEFAULT_PARITY_FILE = "outfox_essays.jsonl.gz"
"""Real texts for the parity check when no evaluation set is given (a file in the data directory)."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything one ``python -m export.to_onnx`` run decides.

    Attributes:
        checkpoint: The checkpoint directory.
        out: The parent directory of the variant bundles.
        variants: Which of ``fp32``, ``int8``, ``fp16`` to write (fp32 is always built as the reference).
        export: Stage 1 settings; ``export.max_length`` is the bundle's ``max_length``.
        optimize: Stage 2 settings.
        quantize: int8 settings to try in order; the first whose variant passes the gate is kept.
        gate: Accuracy gate limits; ``None`` writes the variants without a gate and without scoring them (for a
            harness that measures them itself: the pruning sweep, the benchmarks). The graphs are the same.
        eval_specs: ``[NAME=]PATH[@SUBSET]`` evaluation sets (see :mod:`export.evaluate.bundle`).
        eval_limit: At most this many texts per evaluation set.
        calibration: Static quantization's calibration data (training data; the OUTFOX test half is refused).
        threshold: Used only when the checkpoint has no ``training.json`` threshold.
        window_stride: Content tokens between windows; ``None`` takes 3/4 of a window.
        name: Bundle name prefix; ``None`` takes the checkpoint directory's name.
        overwrite: Replace a non-empty ``out``.
        threads: ONNX Runtime/PyTorch threads for scoring and throughput.
        bench_texts: How many texts of the first evaluation set the throughput sample holds (0: no measurement).
        layernorm: ``"decomposed"`` writes the fp32 and int8 graphs' LayerNorm nodes as plain operators,
            ``"standard"`` as ONNX ``LayerNormalization`` (both faster than the fused kernels on ONNX Runtime's CPU
            provider; standard the fastest where measured, see :mod:`export.onnx.layernorm`); ``"fused"`` keeps
            the fused kernels.
            The fp16 variant always keeps them.
        parity_texts: Real texts for the parity checks; empty takes the evaluation and calibration texts, or the
            first texts of :data:`DEFAULT_PARITY_FILE`.
    """

    checkpoint: Path
    out: Path
    variants: tuple[str, ...] = ("fp32", "int8")
    export: ExportConfig = field(default_factory=ExportConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    quantize: tuple[QuantizeConfig, ...] = INT8_LADDER
    gate: GateConfig | None = field(default_factory=GateConfig)
    eval_specs: tuple[str, ...] = ()
    eval_limit: int | None = None
    calibration: Path | None = None
    threshold: float | None = None
    window_stride: int | None = None
    name: str | None = None
    overwrite: bool = False
    threads: int = 2
    bench_texts: int = 64
    layernorm: str = "standard"
    parity_texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.variants or any(v not in VARIANTS for v in self.variants):
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        stride_max = self.export.max_length - 2
        if self.window_stride is not None and not 1 <= self.window_stride <= stride_max:
            raise ValueError(f"window_stride must be in [1, {stride_max}], got {self.window_stride!r}")
        if not self.quantize or not all(isinstance(q, QuantizeConfig) for q in self.quantize):
            raise ValueError("quantize must be a non-empty tuple of QuantizeConfig")
        if self.layernorm not in LAYERNORM_MODES:
            raise ValueError(f"layernorm must be one of {LAYERNORM_MODES}, got {self.layernorm!r}")
        if self.threads < 1 or self.bench_texts < 0:
            raise ValueError("threads must be >= 1 and bench_texts >= 0")

    @property
    def stride(self) -> int:
        """The window stride in force."""
        return self.window_stride or max(1, min(self.export.max_length - 2, self.export.max_length * 3 // 4))


def resolve_threshold(training: TrainingRecord | None, given: float | None) -> tuple[float, str]:
    """The decision threshold and the rule it came from.

    The checkpoint's ``training.json`` threshold (chosen on validation by the training run) when there is one,
    else ``given``, else 0.5.
    """
    if training is not None and training.threshold is not None:
        value = float(training.threshold)
        if given is not None and given != value:
            logger.warning("--threshold %s ignored: training.json holds the validation threshold %s", given, value)
        rule = training.threshold_rule or "chosen on validation by the training run"
        return value, f"{rule} (training.json)"
    if given is not None:
        return float(given), "given on the command line (--threshold)"
    return 0.5, "default 0.5 (no training.json threshold, no --threshold)"


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, a non-empty directory (without ``overwrite``) or not writable.

    Raises:
        OutputError: With the path and the reason.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write in {parent} (permission denied)")


INT8_PRESETS = {
    "auto": INT8_LADDER,
    "avx512_vnni": (QuantizeConfig.avx512_vnni(),),
    "avx512_vnni_mixed": (QuantizeConfig.avx512_vnni_mixed(),),
    "weight_only": (QuantizeConfig.weight_only(),),
    "avx2": (QuantizeConfig.avx2(),),
    "early_ffn_fp32": (QuantizeConfig.early_ffn_fp32(),),
    "outlier_channels": (QuantizeConfig.outlier_channels(),),
    "static_qdq": (QuantizeConfig.static_qdq(),),
}

OPTION_DEFAULTS: dict[str, Any] = {
    "variant": ("fp32", "int8"),
    "opset": None,
    "exporter": "torchscript",
    "optimize": "O2",
    "int8": "auto",
    "quantize_embeddings": False,
    "embedding_scales": "tensor",
    "outlier_products": "ffn_attention",
    "layernorm": "standard",
    "calibration": None,
    "eval": (),
    "eval_limit": None,
    "max_length": None,
    "window_stride": None,
    "threshold": None,
    "gate": True,
    "gate_auc_drop": 0.005,
    "gate_agreement": 0.99,
    "gate_prob_diff": None,
    "gate_batch_diff": 1e-5,
    "name": None,
    "overwrite": False,
    "threads": 2,
    "bench_texts": 64,
    "parity_texts": (),
}
"""The build options by name (``python -m export.to_onnx``'s flags, a pipeline's ``[export]`` keys) and defaults."""


def build_config(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], options: Mapping[str, Any] | None = None
) -> BuildConfig:
    """The :class:`BuildConfig` of named options (:data:`OPTION_DEFAULTS` for those not given).

    ``max_length`` defaults to the checkpoint's training value (else 256), ``opset`` to 17 (18 for dynamo);
    ``int8`` names a preset of :data:`INT8_PRESETS`; ``quantize_embeddings``, ``embedding_scales`` and
    ``outlier_products`` apply to each of its settings.

    Raises:
        ConfigError: An unknown option, or a value out of range.
    """
    unknown = set(options or {}) - set(OPTION_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown export option(s): {', '.join(sorted(unknown))}")
    o = {**OPTION_DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}}
    if o["int8"] not in INT8_PRESETS:
        raise ConfigError(f"int8 must be one of {', '.join(INT8_PRESETS)}, got {o['int8']!r}")
    try:
        training = TrainingRecord.read(checkpoint) if Path(checkpoint).is_dir() else None
    except ValueError:
        training = None  # the build itself reports an unreadable record
    exporter = o["exporter"]
    tables = {"embeddings": o["quantize_embeddings"], "embedding_scales": o["embedding_scales"]}
    gate = GateConfig(o["gate_auc_drop"], o["gate_agreement"], o["gate_prob_diff"], o["gate_batch_diff"])
    try:
        return BuildConfig(
            checkpoint=Path(checkpoint),
            out=Path(out),
            variants=tuple(dict.fromkeys([o["variant"]] if isinstance(o["variant"], str) else o["variant"])),
            export=ExportConfig(
                opset=o["opset"] or (18 if exporter == "dynamo" else 17),
                exporter=exporter,
                max_length=o["max_length"] or (training.max_length if training else 256),
            ),
            optimize=OptimizeConfig(level=o["optimize"]),
            quantize=tuple(
                dataclasses.replace(q, **tables, outlier_products=o["outlier_products"])
                for q in INT8_PRESETS[o["int8"]]
            ),
            gate=gate if o["gate"] else None,
            eval_specs=tuple(o["eval"]),
            eval_limit=o["eval_limit"],
            calibration=Path(o["calibration"]) if o["calibration"] is not None else None,
            threshold=o["threshold"],
            window_stride=o["window_stride"],
            name=o["name"],
            overwrite=bool(o["overwrite"]),
            threads=int(o["threads"]),
            bench_texts=int(o["bench_texts"]),
            layernorm=o["layernorm"],
            parity_texts=tuple(o["parity_texts"]),
        )
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
