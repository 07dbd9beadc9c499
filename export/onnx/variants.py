"""Building, scoring, gating and writing the variants of one checkpoint (used by :mod:`export.onnx.build`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.bundle.card import render_card
from export.bundle.write import write_bundle
from export.errors import GateFailedError
from export.evaluate.bundle import batch_dependence, bundle_throughput, score_bundle, set_metrics, torch_throughput
from export.evaluate.sets import EvalSet
from export.onnx.export import Checkpoint, export_onnx, parity_set
from export.onnx.gates import apply_gate, compare_scores
from export.onnx.layernorm import rewrite_layernorm
from export.onnx.optimize import optimize
from export.onnx.parity import ParitySet
from export.onnx.quantize import convert_fp16, quantize
from export.onnx.recipe import BuildConfig
from export.progress import Progress

logger = logging.getLogger(__name__)


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


def labels_of(ckpt: Checkpoint) -> list[str]:
    names = [str(ckpt.config.id2label.get(i, "")).lower() for i in (0, 1)]
    return names if all(names) and not any(n.startswith("label_") for n in names) else ["human", "ai"]


def bundle_metadata(
    cfg: BuildConfig, ckpt: Checkpoint, variant: str, threshold: float, recipe: list[dict], quant: dict | None
) -> dict:
    training = ckpt.training
    return {
        "format_version": 1,
        "name": f"{cfg.name or ckpt.path.name}-{variant}",
        "labels": labels_of(ckpt),
        "max_length": cfg.export.max_length,
        "window_stride": cfg.stride,
        "threshold": threshold,
        "variant": {
            "precision": variant,
            "optimization": cfg.optimize.level,
            "quantization": quant,
            "pruning": training.pruning if training is not None else None,
        },
        "architecture": ckpt.architecture(),
        "training": training.to_dict()
        if training is not None
        else {"checkpoint": str(ckpt.path), "note": "no training.json in the checkpoint"},
        "recipe": recipe,
    }


@dataclass
class VariantBuilder:
    """One build's state: the checkpoint, the staging directory and the evaluation data."""

    cfg: BuildConfig
    ckpt: Checkpoint
    work: Path
    eval_sets: list[EvalSet]
    threshold: float
    rule: str
    progress: Progress
    parity: ParitySet | None = None

    def graphs(self, parity_texts: list[str]) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
        """Export and optimize (fp32), convert to fp16 if asked; each graph with its recipe."""
        cfg, ckpt, stage = self.cfg, self.ckpt, self.progress.stage
        self.parity = parity_set(ckpt, parity_texts, cfg.export.max_length)
        base: list[dict[str, Any]] = []
        stage(f"exporting ({cfg.export.exporter}, opset {cfg.export.opset}) and checking parity")
        raw = export_onnx(ckpt, self.work / "raw.onnx", cfg.export, parity=self.parity, recipe=base)
        stage(f"optimizing the graph ({cfg.optimize.level})")
        arch = ckpt.architecture()
        fp32 = optimize(raw, self.work / "fp32.onnx", cfg.optimize, architecture=arch, parity=self.parity, recipe=base)
        base.append({"stage": "threshold", "value": self.threshold, "rule": self.rule})
        graphs = {"fp32": (fp32, base)}
        if "fp16" in cfg.variants:
            stage("converting to fp16")
            recipe = list(base)
            graphs["fp16"] = (convert_fp16(fp32, self.work / "fp16.onnx", parity=self.parity, recipe=recipe), recipe)
        if cfg.layernorm != "fused":
            stage(f"writing LayerNorm {cfg.layernorm} (CPU variants)")
            recipe = list(base)
            cpu = rewrite_layernorm(
                fp32, self.work / "fp32-cpu.onnx", mode=cfg.layernorm, parity=self.parity,
                atol=cfg.optimize.tolerance, recipe=recipe,
            )  # fmt: skip
            graphs["fp32"] = (cpu, recipe)
        return graphs

    def int8(
        self, fp32: tuple[Path, list[dict[str, Any]]], calib_feeds: list[dict[str, NDArray[np.int64]]],
        reference: dict[str, NDArray[np.float32]],
    ) -> tuple[Path, dict[str, Any]]:  # fmt: skip
        """Quantize with each setting of ``cfg.quantize`` in turn; keep the first that passes the gate."""
        failures: list[str] = []
        for i, qcfg in enumerate(self.cfg.quantize):
            self.progress.stage(f"quantizing to int8 ({qcfg.mode}, setting {i + 1} of {len(self.cfg.quantize)})")
            recipe = list(fp32[1])
            if qcfg.needs_calibration and not calib_feeds:
                logger.info("int8 setting %d of %d (%s) skipped: it needs calibration data", i + 1,
                            len(self.cfg.quantize), qcfg.to_dict())  # fmt: skip
                continue
            calib = calib_feeds if qcfg.needs_calibration else None
            path = quantize(fp32[0], self.work / f"int8-{i}.onnx", qcfg, calibration=calib, parity=self.parity,
                            recipe=recipe, layernorm=self.cfg.layernorm)  # fmt: skip
            if failures:
                recipe[-1]["after_failed"] = list(failures)
            try:
                meta, _ = self.evaluate("int8", path, recipe, reference, quant=qcfg.to_dict())
            except GateFailedError as exc:
                logger.warning("%s", exc)
                failures.append(f"{qcfg.to_dict()}: {exc}")
                continue
            return path, meta
        raise GateFailedError("; ".join(failures) if len(failures) == 1 else f"no int8 setting passed: {failures}")

    def evaluate(
        self, variant: str, path: Path, recipe: list[dict[str, Any]], reference: dict[str, NDArray[np.float32]],
        quant: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, NDArray[np.float32]]]:  # fmt: skip
        """Score a variant through the runtime, measure its metrics and (not fp32) apply the gate.

        Without a gate and without evaluation sets there is nothing to measure: the metadata is returned as is.
        """
        meta = bundle_metadata(self.cfg, self.ckpt, variant, self.threshold, recipe, quant)
        if self.cfg.gate is None and not self.eval_sets:
            return meta, {}
        probe = write_bundle(
            self.work / "probe" / path.stem, onnx_path=path, tokenizer_path=self.ckpt.tokenizer_path, metadata=meta,
            card="", verify=False,
        )  # fmt: skip
        self.progress.stage(f"scoring {variant} on {', '.join(s.name for s in self.eval_sets)}")
        scores = {
            s.name: score_bundle(probe, s.texts, threads=self.cfg.threads, progress=self.progress.advance)
            for s in self.eval_sets
        }
        meta["metrics"] = {s.name: set_metrics(s, scores[s.name], self.threshold) for s in self.eval_sets}
        if variant == "fp32":
            meta["gates"] = {"reference": "pytorch", "parity_max_abs_logit_diff": _parity(recipe)}
        elif self.cfg.gate is None:
            meta["gates"] = {"gate": "none: written without an accuracy gate"}
        else:
            per_set = {
                s.name: compare_scores(s.labels, reference[s.name], scores[s.name], self.threshold)
                for s in self.eval_sets
            }
            sample = _invariance_sample(self.eval_sets)
            diff = batch_dependence(probe, sample, threads=self.cfg.threads)
            meta["gates"] = apply_gate(variant, per_set, self.cfg.gate, batch_diff=(len(sample), diff))
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
            metrics=meta.get("metrics", {}), gates=meta.get("gates", {}), texts_per_s=speed,
        )  # fmt: skip

    def torch_speed(self) -> VariantReport:
        """The PyTorch model's throughput on the same sample, as the baseline row."""
        self.progress.stage("measuring PyTorch throughput")
        bench = _bench_sample(self.eval_sets, self.cfg.bench_texts)
        speed = None
        if bench:
            speed = torch_throughput(self.ckpt, bench, max_length=self.cfg.export.max_length, threads=self.cfg.threads)
        return VariantReport("pytorch", self.ckpt.path, float("nan"), float("nan"), {}, {}, speed)


def _parity(recipe: list[dict[str, Any]]) -> float:
    return next(float(r["parity_max_abs_logit_diff"]) for r in reversed(recipe) if "parity_max_abs_logit_diff" in r)


def _invariance_sample(eval_sets: Sequence[EvalSet], n: int = 32) -> list[str]:
    """A fixed sample of all evaluation sets, of mixed lengths, for the batch-invariance check."""
    pool = [text for s in eval_sets for text in s.texts]
    return random.Random(1).sample(pool, min(n, len(pool)))


def _bench_sample(eval_sets: Sequence[EvalSet], n: int) -> list[str]:
    """A fixed sample of the first evaluation set, for the throughput figures."""
    pool = list(eval_sets[0].texts) if eval_sets else []
    return random.Random(0).sample(pool, min(n, len(pool))) if n and pool else []
