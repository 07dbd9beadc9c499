"""Building the variant bundles of one checkpoint (the work behind ``python -m export.to_onnx``).

Writes ``--out/fp32/``, ``--out/int8/``, ``--out/fp16/`` (those asked for; see docs/bundle-format.md, "Several
variants"). The stages: export with a PyTorch parity check (:mod:`export.onnx_export`), graph optimization
with a second parity check (:mod:`export.optimize`), int8 quantization or the fp16 conversion
(:mod:`export.quantize`), then every variant is scored by the runtime's ``Detector`` on the ``--eval`` sets and
each reduced-precision variant must pass the accuracy gate against fp32 (:mod:`export.gates`).

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
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from export.bundle import replace_dir, write_bundle
from export.card import render_card
from export.data import load_records, refuse_held_out
from export.gates import GateConfig, apply_gate, compare_scores
from export.onnx_eval import EvalSet, bundle_throughput, load_eval_set, score_bundle, set_metrics, torch_throughput
from export.onnx_export import Checkpoint, ExportConfig, ExportError, export_onnx, load_checkpoint, parity_set
from export.optimize import OptimizeConfig, optimize
from export.quantize import QuantizeConfig, convert_fp16, quantize

logger = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8", "fp16")
DEFAULT_PARITY_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "outfox_essays.jsonl.gz"


class OutputError(ExportError):
    """An output directory that cannot be written (not empty, not a directory, not writable)."""


class BuildProgress(Protocol):
    """What :func:`build_bundles` reports as it goes (a command shows it; the library prints nothing)."""

    def stage(self, text: str) -> None:
        """A stage starts."""

    def planned(self, texts: int) -> None:
        """This many texts will be scored in all."""

    def scored(self, texts: int) -> None:
        """This many more texts were scored."""


class _Silent:
    def stage(self, text: str) -> None:
        logger.info("%s", text)

    def planned(self, texts: int) -> None:
        pass

    def scored(self, texts: int) -> None:
        pass


@dataclass(frozen=True)
class BuildConfig:
    """Everything one ``python -m export.to_onnx`` run decides.

    Attributes:
        checkpoint: The checkpoint directory.
        out: The parent directory of the variant bundles.
        variants: Which of ``fp32``, ``int8``, ``fp16`` to write (fp32 is always built as the reference).
        export: Stage 1 settings; ``export.max_length`` is the bundle's ``max_length``.
        optimize: Stage 2 settings.
        quantize: int8 settings.
        gate: Accuracy gate limits.
        eval_specs: ``[NAME=]PATH[@SUBSET]`` evaluation sets (see :mod:`export.onnx_eval`).
        eval_limit: At most this many texts per evaluation set.
        calibration: Static quantization's calibration data (training data; the OUTFOX test half is refused).
        threshold: Used only when the checkpoint has no ``training.json`` threshold.
        window_stride: Content tokens between windows; ``None`` takes 3/4 of a window.
        name: Bundle name prefix; ``None`` takes the checkpoint directory's name.
        overwrite: Replace a non-empty ``out``.
        threads: ONNX Runtime/PyTorch threads for scoring and throughput.
        bench_texts: How many texts the throughput sample holds (0 skips the measurement).
    """

    checkpoint: Path
    out: Path
    variants: tuple[str, ...] = ("fp32", "int8")
    export: ExportConfig = field(default_factory=ExportConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig.avx512_vnni)
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

    def __post_init__(self) -> None:
        if not self.variants or any(v not in VARIANTS for v in self.variants):
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        stride_max = self.export.max_length - 2
        if self.window_stride is not None and not 1 <= self.window_stride <= stride_max:
            raise ValueError(f"window_stride must be in [1, {stride_max}], got {self.window_stride!r}")
        if self.threads < 1 or self.bench_texts < 0:
            raise ValueError("threads must be >= 1 and bench_texts >= 0")

    @property
    def stride(self) -> int:
        """The window stride in force."""
        return self.window_stride or max(1, min(self.export.max_length - 2, self.export.max_length * 3 // 4))


@dataclass
class VariantReport:
    """What was measured for one variant (the summary table's row)."""

    variant: str
    path: Path
    megabytes: float
    parity: float
    metrics: dict[str, dict[str, Any]]
    gates: dict[str, Any]
    texts_per_s: float | None = None


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
    if not pool and DEFAULT_PARITY_FILE.is_file():
        pool = [r.text for r in load_records(DEFAULT_PARITY_FILE)[:200]]
    if not pool:
        raise ExportError("parity needs real texts: pass --eval FILE or --calibration FILE")
    return sorted(pool, key=lambda t: (-len(t), t))


def calibration_feeds(cfg: BuildConfig, ckpt: Checkpoint) -> tuple[list[str], list[dict[str, NDArray[np.int64]]]]:
    """Calibration texts (training data only) and their one-window feeds, for static quantization."""
    if cfg.calibration is None:
        return [], []
    records = load_records(cfg.calibration)
    refuse_held_out(records, cfg.calibration)
    rng = random.Random(0)
    texts = [r.text for r in rng.sample(records, min(len(records), cfg.quantize.calibration_size))]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ckpt.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=cfg.export.max_length)
    rows = [enc.ids for enc in tokenizer.encode_batch(texts)]
    # Histogram calibration (entropy, percentile) stacks activations, so its windows must share one length.
    width = cfg.export.max_length if cfg.quantize.calibration_method != "minmax" else None
    feeds = []
    for row in rows:
        ids = np.full((1, width or len(row)), ckpt.pad_id, dtype=np.int64)
        ids[0, : len(row)] = row
        feed = {"input_ids": ids, "attention_mask": (np.arange(ids.shape[1]) < len(row)).astype(np.int64)[None]}
        if "token_type_ids" in ckpt.input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        feeds.append(feed)
    return texts, feeds


def _labels(ckpt: Checkpoint) -> list[str]:
    names = [str(ckpt.config.id2label.get(i, "")).lower() for i in (0, 1)]
    return names if all(names) and not any(n.startswith("label_") for n in names) else ["human", "ai"]


def _metadata(cfg: BuildConfig, ckpt: Checkpoint, variant: str, threshold: float, recipe: list[dict]) -> dict:
    training = ckpt.training or {}
    return {
        "format_version": 1,
        "name": f"{cfg.name or ckpt.path.name}-{variant}",
        "labels": _labels(ckpt),
        "max_length": cfg.export.max_length,
        "window_stride": cfg.stride,
        "threshold": threshold,
        "variant": {
            "precision": variant,
            "optimization": cfg.optimize.level,
            "quantization": cfg.quantize.to_dict() if variant == "int8" else None,
            "pruning": training.get("pruning"),
        },
        "architecture": ckpt.architecture(),
        "training": ckpt.training or {"checkpoint": str(ckpt.path), "note": "no training.json in the checkpoint"},
        "recipe": recipe,
    }


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
    progress = progress or _Silent()
    out = Path(cfg.out).expanduser().resolve()
    check_output(out, cfg.overwrite)
    progress.stage("loading the checkpoint and the data")
    ckpt = load_checkpoint(cfg.checkpoint)
    threshold, rule = resolve_threshold(ckpt.training, cfg.threshold)
    eval_sets = [load_eval_set(s, training=ckpt.training, limit=cfg.eval_limit) for s in cfg.eval_specs]
    if any(v != "fp32" for v in cfg.variants) and not eval_sets:
        raise ExportError(f"{', '.join(v for v in cfg.variants if v != 'fp32')} need --eval data for the gate")
    calib_texts, calib_feeds = calibration_feeds(cfg, ckpt)
    if cfg.quantize.mode == "static" and "int8" in cfg.variants and not calib_feeds:
        raise ExportError("static int8 quantization needs --calibration FILE (training data)")
    progress.planned(len(set(cfg.variants) | {"fp32"}) * sum(len(s.texts) for s in eval_sets))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        run = _Run(cfg, ckpt, work, eval_sets, threshold, rule, progress)
        graphs = run.graphs(_texts_by_length(eval_sets, calib_texts), calib_feeds)
        reference: dict[str, NDArray[np.float32]] = {}
        reports = []
        for variant in ["fp32", *(v for v in cfg.variants if v != "fp32")]:
            meta, scores = run.evaluate(variant, *graphs[variant], reference)
            reference = reference or scores
            if variant in cfg.variants:
                reports.append(run.write(variant, graphs[variant][0], meta))
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


@dataclass
class _Run:
    """One build's state: the checkpoint, the staging directory and the evaluation data."""

    cfg: BuildConfig
    ckpt: Checkpoint
    work: Path
    eval_sets: list[EvalSet]
    threshold: float
    rule: str
    progress: BuildProgress

    def graphs(
        self, parity_texts: list[str], calib_feeds: list[dict[str, NDArray[np.int64]]]
    ) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
        """Export, optimize, then derive the requested variants; each graph with its recipe."""
        cfg, ckpt, stage = self.cfg, self.ckpt, self.progress.stage
        parity = parity_set(ckpt, parity_texts, cfg.export.max_length)
        base: list[dict[str, Any]] = []
        stage(f"exporting ({cfg.export.exporter}, opset {cfg.export.opset}) and checking parity")
        raw = export_onnx(ckpt, self.work / "raw.onnx", cfg.export, parity=parity, recipe=base)
        stage(f"optimizing the graph ({cfg.optimize.level})")
        arch = ckpt.architecture()
        fp32 = optimize(raw, self.work / "fp32.onnx", cfg.optimize, architecture=arch, parity=parity, recipe=base)
        base.append({"stage": "threshold", "value": self.threshold, "rule": self.rule})
        graphs = {"fp32": (fp32, base)}
        if "int8" in cfg.variants:
            stage(f"quantizing to int8 ({cfg.quantize.mode})")
            recipe = list(base)
            calib = calib_feeds if cfg.quantize.mode == "static" else None
            path = quantize(
                fp32, self.work / "int8.onnx", cfg.quantize, calibration=calib, parity=parity, recipe=recipe
            )
            graphs["int8"] = (path, recipe)
        if "fp16" in cfg.variants:
            stage("converting to fp16")
            recipe = list(base)
            graphs["fp16"] = (convert_fp16(fp32, self.work / "fp16.onnx", parity=parity, recipe=recipe), recipe)
        return graphs

    def evaluate(
        self, variant: str, path: Path, recipe: list[dict[str, Any]], reference: dict[str, NDArray[np.float32]]
    ) -> tuple[dict[str, Any], dict[str, NDArray[np.float32]]]:
        """Score a variant through the runtime, measure its metrics and (not fp32) apply the gate."""
        meta = _metadata(self.cfg, self.ckpt, variant, self.threshold, recipe)
        probe = write_bundle(
            self.work / "probe" / variant, onnx_path=path, tokenizer_path=self.ckpt.tokenizer_path, metadata=meta,
            card="", verify=False,
        )  # fmt: skip
        self.progress.stage(f"scoring {variant} on {', '.join(s.name for s in self.eval_sets)}")
        scores = {
            s.name: score_bundle(probe, s.texts, threads=self.cfg.threads, progress=self.progress.scored)
            for s in self.eval_sets
        }
        meta["metrics"] = {s.name: set_metrics(s, scores[s.name], self.threshold) for s in self.eval_sets}
        if variant == "fp32":
            meta["gates"] = {"reference": "pytorch", "parity_max_abs_logit_diff": _parity(recipe)}
        else:
            per_set = {
                s.name: compare_scores(s.labels, reference[s.name], scores[s.name], self.threshold)
                for s in self.eval_sets
            }
            meta["gates"] = apply_gate(variant, per_set, self.cfg.gate)
        return meta, scores

    def write(self, variant: str, path: Path, meta: dict[str, Any]) -> VariantReport:
        """Write the variant's final bundle (verified by the runtime) and measure its throughput."""
        self.progress.stage(f"writing the {variant} bundle")
        bundle = write_bundle(
            self.work / "bundles" / variant, onnx_path=path, tokenizer_path=self.ckpt.tokenizer_path,
            metadata=meta, card=render_card(meta, threshold_rule=self.rule),
        )  # fmt: skip
        bench = _bench_sample(self.eval_sets, self.cfg.bench_texts)
        speed = bundle_throughput(bundle, bench, threads=self.cfg.threads) if bench else None
        return VariantReport(
            variant=variant, path=bundle, megabytes=path.stat().st_size / 1e6, parity=_parity(meta["recipe"]),
            metrics=meta["metrics"], gates=meta["gates"], texts_per_s=speed,
        )  # fmt: skip

    def torch_speed(self) -> VariantReport:
        """The PyTorch model's throughput on the same sample, as the baseline row."""
        self.progress.stage("measuring PyTorch throughput")
        bench = _bench_sample(self.eval_sets, self.cfg.bench_texts)
        speed = None
        if bench:
            speed = torch_throughput(
                self.ckpt.model, self.ckpt.tokenizer_path, bench, max_length=self.cfg.export.max_length,
                threads=self.cfg.threads, input_names=self.ckpt.input_names,
            )  # fmt: skip
        return VariantReport("pytorch", self.ckpt.path, float("nan"), float("nan"), {}, {}, speed)


def _parity(recipe: list[dict[str, Any]]) -> float:
    return next(float(r["parity_max_abs_logit_diff"]) for r in reversed(recipe) if "parity_max_abs_logit_diff" in r)


def _bench_sample(eval_sets: Sequence[EvalSet], n: int) -> list[str]:
    pool = [t for s in eval_sets for t in s.texts]
    return random.Random(0).sample(pool, min(n, len(pool))) if n and pool else []
