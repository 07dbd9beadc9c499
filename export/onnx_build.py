"""Building the variant bundles of one checkpoint (the work behind ``python -m export.to_onnx``).

Writes ``--out/fp32/``, ``--out/int8/``, ``--out/fp16/`` (those asked for; see docs/bundle-format.md, "Several
variants"). The stages: export with a PyTorch parity check (:mod:`export.onnx_export`), graph optimization
with a second parity check (:mod:`export.optimize`), int8 quantization or the fp16 conversion
(:mod:`export.quantize`), then every variant is scored by the runtime's ``Detector`` on the ``--eval`` sets and
each reduced-precision variant must pass the accuracy gate against fp32 (:mod:`export.gates`).

int8: the settings in ``BuildConfig.quantize`` are tried in order (by default :data:`INT8_LADDER`, fastest
first: dynamic int8, dynamic with the FFN output projections as weight-only, weight-only); the first whose
bundle passes the gate is written, and the settings that failed before it are recorded in its recipe.

All or nothing: everything is built in a temporary directory beside ``--out`` and moved into place only when
every requested variant has passed; a failure at any stage exits non-zero with a message and leaves ``--out``
as it was.

Threshold: the checkpoint's ``training.json`` ``threshold`` (chosen on validation by the training run) when
present, else ``--threshold``, else 0.5; the rule is recorded in ``aidetect.json``'s recipe and the card.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.bundle import replace_dir
from export.data import DataError, in_validation, load_records, refuse_held_out
from export.gates import GateConfig
from export.layernorm import MODES as LAYERNORM_MODES
from export.onnx_eval import EvalSet, load_eval_set
from export.onnx_export import Checkpoint, ExportConfig, load_checkpoint, pad_rows
from export.onnx_variants import BuildProgress, SilentProgress, VariantBuilder, VariantReport
from export.optimize import OptimizeConfig
from export.quantize import QuantizeConfig
from export.stages import ExportError

logger = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8", "fp16")
INT8_LADDER = (
    QuantizeConfig.avx512_vnni(),
    # 7-bit weights: on CPUs without VNNI the full-range u8 x s8 products saturate, and the gate (run on the
    # build machine) then fails full-range int8 where 7-bit weights pass
    QuantizeConfig.avx2(),
    QuantizeConfig.avx512_vnni_mixed(),
    QuantizeConfig.weight_only(),
)
"""The int8 settings tried by default, fastest first (see :mod:`export.quantize` for the measurements)."""
DEFAULT_PARITY_FILE = "outfox_essays.jsonl.gz"
"""Real texts for the parity check when no evaluation set is given (a file in the data directory)."""


class OutputError(ExportError):
    """An output directory that cannot be written (not empty, not a directory, not writable)."""


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
        gate: Accuracy gate limits.
        eval_specs: ``[NAME=]PATH[@SUBSET]`` evaluation sets (see :mod:`export.onnx_eval`).
        eval_limit: At most this many texts per evaluation set.
        calibration: Static quantization's calibration data (training data; the OUTFOX test half is refused).
        threshold: Used only when the checkpoint has no ``training.json`` threshold.
        window_stride: Content tokens between windows; ``None`` takes 3/4 of a window.
        name: Bundle name prefix; ``None`` takes the checkpoint directory's name.
        overwrite: Replace a non-empty ``out``.
        threads: ONNX Runtime/PyTorch threads for scoring and throughput.
        bench_texts: How many texts of the first evaluation set the throughput sample holds (0: no measurement).
        layernorm: ``"decomposed"`` writes the fp32 and int8 graphs' LayerNorm nodes as plain operators (faster
            on ONNX Runtime's CPU provider, see :mod:`export.layernorm`); ``"fused"`` keeps the fused kernels.
            The fp16 variant always keeps them.
    """

    checkpoint: Path
    out: Path
    variants: tuple[str, ...] = ("fp32", "int8")
    export: ExportConfig = field(default_factory=ExportConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    quantize: tuple[QuantizeConfig, ...] = INT8_LADDER
    gate: GateConfig = field(default_factory=GateConfig)
    eval_specs: tuple[str, ...] = ()
    eval_limit: int | None = None
    calibration: Path | None = None
    threshold: float | None = None
    window_stride: int | None = None
    name: str | None = None
    overwrite: bool = False
    threads: int = 2
    bench_texts: int = 64
    layernorm: str = "decomposed"

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


def resolve_threshold(training: dict[str, Any] | None, given: float | None) -> tuple[float, str]:
    """The decision threshold and the rule it came from (see the module docstring)."""
    if training is not None and training.get("threshold") is not None:
        value = float(training["threshold"])
        if given is not None and given != value:
            logger.warning("--threshold %s ignored: training.json holds the validation threshold %s", given, value)
        rule = str(training.get("threshold_rule", "chosen on validation by the training run"))
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
        raise OutputError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write in {parent} (permission denied)")


def _texts_by_length(eval_sets: Sequence[EvalSet], extra: Sequence[str]) -> list[str]:
    pool = [t for s in eval_sets for t in s.texts] + list(extra)
    if not pool:
        try:
            pool = [r.text for r in load_records(DEFAULT_PARITY_FILE)[:200]]
        except DataError as exc:
            raise ExportError(f"parity needs real texts: pass --eval FILE or --calibration FILE ({exc})") from exc
    return sorted(pool, key=lambda t: (-len(t), t))


def calibration_feeds(cfg: BuildConfig, ckpt: Checkpoint) -> tuple[list[str], list[dict[str, NDArray[np.int64]]]]:
    """Calibration texts and their one-window feeds, for static quantization.

    Only training data: a file with OUTFOX test records is refused, and the validation groups of the
    checkpoint's split (which the gates evaluate on) are left out.
    """
    if cfg.calibration is None:
        return [], []
    records = load_records(cfg.calibration)
    refuse_held_out(records, cfg.calibration)
    split = (ckpt.training or {}).get("config", {})
    fraction, salt = float(split.get("val_fraction", 0.1)), str(split.get("split_salt", "aidetect"))
    kept = [r for r in records if not in_validation(r.group, fraction, salt)]
    logger.info("%s: %d calibration candidates (%d validation records left out)", cfg.calibration, len(kept),
                len(records) - len(kept))  # fmt: skip
    if not kept:
        raise ExportError(f"{cfg.calibration}: every record is in the validation split; calibrate on training data")
    records = kept
    rng = random.Random(0)
    static = next((q for q in cfg.quantize if q.mode == "static"), None)
    if static is None:
        return [r.text for r in rng.sample(records, min(len(records), 64))], []
    texts = [r.text for r in rng.sample(records, min(len(records), static.calibration_size))]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ckpt.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=cfg.export.max_length)
    rows = [enc.ids for enc in tokenizer.encode_batch(texts)]
    # Histogram calibration (entropy, percentile) stacks activations, so its windows must share one length.
    width = cfg.export.max_length if static.calibration_method != "minmax" else None
    return texts, [pad_rows([row], ckpt.pad_id, ckpt.input_names, width) for row in rows]


def build_bundles(cfg: BuildConfig, *, progress: BuildProgress | None = None) -> list[VariantReport]:
    """Run the whole export and write the variant bundles under ``cfg.out`` (all or nothing).

    Args:
        cfg: The run's settings.
        progress: Told of stages and scored texts (for a progress display).

    Returns:
        One report per written variant in ``cfg.variants`` order, then a ``pytorch`` throughput row when
        ``cfg.bench_texts`` is not 0.

    Raises:
        CheckpointError: A missing or unusable checkpoint.
        OutputError: ``cfg.out`` cannot be written.
        ParityError: A graph does not match PyTorch.
        GateFailedError: A variant fails the accuracy gate.
        ExportError: Any other stage failed.
        export.data.DataError, ValueError: Unusable evaluation or calibration data.
    """
    progress = progress or SilentProgress()
    out = Path(cfg.out).expanduser().resolve()
    check_output(out, cfg.overwrite)
    progress.stage("loading the checkpoint and the data")
    ckpt = load_checkpoint(cfg.checkpoint)
    threshold, rule = resolve_threshold(ckpt.training, cfg.threshold)
    eval_sets = [load_eval_set(s, training=ckpt.training, limit=cfg.eval_limit) for s in cfg.eval_specs]
    if any(v != "fp32" for v in cfg.variants) and not eval_sets:
        raise ExportError(f"{', '.join(v for v in cfg.variants if v != 'fp32')} need --eval data for the gate")
    calib_texts, calib_feeds = calibration_feeds(cfg, ckpt)
    if any(q.mode == "static" for q in cfg.quantize) and "int8" in cfg.variants and not calib_feeds:
        raise ExportError("static int8 quantization needs --calibration FILE (training data)")
    progress.planned(len(set(cfg.variants) | {"fp32"}) * sum(len(s.texts) for s in eval_sets))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        run = VariantBuilder(cfg, ckpt, work, eval_sets, threshold, rule, progress)
        graphs = run.graphs(_texts_by_length(eval_sets, calib_texts))
        meta, reference = run.evaluate("fp32", *graphs["fp32"], {})
        reports = [run.write("fp32", graphs["fp32"][0], meta)] if "fp32" in cfg.variants else []
        for variant in (v for v in cfg.variants if v != "fp32"):
            path, meta = run.int8(graphs["fp32"], calib_feeds, reference) if variant == "int8" else (
                graphs[variant][0], run.evaluate(variant, *graphs[variant], reference)[0])  # fmt: skip
            reports.append(run.write(variant, path, meta))
        if cfg.bench_texts:
            reports.append(run.torch_speed())
        progress.stage("moving the bundles into place")
        check_output(out, cfg.overwrite)
        replace_dir(work / "bundles", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for report in reports:
        if report.variant in VARIANTS:
            report.path = out / report.variant
    return reports
