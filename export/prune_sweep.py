"""The pruning sweep: several targets of one checkpoint, each pruned, recovered, exported to int8 and measured.

    python -m export.prune --checkpoint runs/minilm --out runs/prune-sweep --sweep "light;medium;small" \\
        --distill --data detectgpt_family.jsonl.gz outfox_essays.jsonl.gz

Under ``--out``: ``unpruned/int8/`` (the baseline bundle), ``<target>/checkpoint/`` (see
:mod:`export.prune_run`) and ``<target>/int8/`` per target, ``sweep.json`` and ``sweep.md``. Each int8 bundle
is made as ``python -m export.to_onnx`` makes it (export with PyTorch parity, O2 fusion with parity, dynamic
per-channel int8), without the accuracy gate: the table is the measurement.

Columns: parameters (all, and the transformer layers alone), forward FLOPs per token of the layers (the
projections and FFN, and the attention term at ``max_length`` tokens, see :func:`export.prune.flops_per_token`),
the size of the int8 ``model.onnx``, the validation ROC AUC after recovery, the ROC AUC of the int8 bundle on
the held-out sets of :func:`export.evaluate.held_out_sets` (validation groups of ordinary files; the OUTFOX
test half, clean and attacked), scored through ``Detector`` with windows, and throughput against the unpruned
int8 bundle: every bundle loaded in one process, first windows of the same texts, batch 16, 2 threads, timed in
interleaved rounds (median), so that load on the machine affects all alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export import metrics
from export.bundle import write_bundle
from export.data import Record
from export.evaluate import held_out_sets
from export.onnx_eval import score_bundle
from export.onnx_export import ExportConfig, export_onnx, load_checkpoint, parity_set
from export.optimize import OptimizeConfig, optimize
from export.prune import PruneConfig, architecture, flops_per_token, parameter_count
from export.prune_run import PruneJob, check_output, load_classifier, prune_checkpoint, read_training
from export.quantize import QuantizeConfig, quantize

log = logging.getLogger(__name__)

BASELINE = "unpruned"


@dataclass(frozen=True)
class SweepConfig:
    """The targets of a sweep and how they are measured.

    Attributes:
        targets: The pruning targets (the unpruned model is always measured as the baseline).
        held_out_samples: At most this many texts per held-out set (``None``: all).
        bench_texts: Texts in the throughput sample.
        bench_threads: ONNX Runtime intra-op threads, for scoring and throughput.
        bench_batch: Windows per ONNX Runtime call in the throughput measurement.
        bench_rounds: Interleaved timing rounds.
    """

    targets: tuple[PruneConfig, ...]
    held_out_samples: int | None = None
    bench_texts: int = 64
    bench_threads: int = 2
    bench_batch: int = 16
    bench_rounds: int = 5

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a sweep needs at least one target")
        if len({t.label for t in self.targets}) != len(self.targets):
            raise ValueError("the sweep names a target twice")
        if self.held_out_samples is not None and self.held_out_samples < 2:
            raise ValueError(f"held-out samples must be at least 2, got {self.held_out_samples}")
        if self.bench_texts < 1 or self.bench_threads < 1 or self.bench_batch < 1 or self.bench_rounds < 1:
            raise ValueError("bench texts, threads, batch and rounds must be positive")


def parse_targets(text: str) -> tuple[PruneConfig, ...]:
    """``"light;medium;8,512,3"`` to pruning targets.

    Raises:
        ValueError: An empty list or an unparsable target.
    """
    targets = tuple(PruneConfig.parse(part) for part in text.split(";") if part.strip())
    if not targets:
        raise ValueError(f"--sweep {text!r} names no target")
    return targets


def int8_bundle(checkpoint: Path, out: Path, *, max_length: int, texts: Sequence[str], name: str) -> Path:
    """Export, fuse (O2) and quantize (dynamic int8) a checkpoint, with parity checks, into a bundle at ``out``.

    Raises:
        export.stages.ParityError: The fp32 or fused graph does not match PyTorch.
        export.stages.ExportError: A stage failed.
    """
    ckpt = load_checkpoint(checkpoint)
    training = ckpt.training or {}
    out.parent.mkdir(parents=True, exist_ok=True)
    quant = QuantizeConfig.avx512_vnni()
    recipe: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".sweep-") as tmp:
        work = Path(tmp)
        parity = parity_set(ckpt, texts, max_length)
        raw = export_onnx(ckpt, work / "raw.onnx", ExportConfig(max_length=max_length), parity=parity, recipe=recipe)
        arch = ckpt.architecture()
        fused = optimize(raw, work / "fp32.onnx", OptimizeConfig("O2"), architecture=arch, parity=parity, recipe=recipe)
        int8 = quantize(fused, work / "int8.onnx", quant, parity=parity, recipe=recipe)
        metadata = {
            "name": f"{name}-int8",
            "labels": ["human", "ai"],
            "max_length": max_length,
            "window_stride": max(1, min(max_length - 2, max_length * 3 // 4)),
            "threshold": float(training.get("threshold", 0.5)),
            "variant": {
                "precision": "int8",
                "optimization": "O2",
                "quantization": quant.to_dict(),
                "pruning": training.get("pruning"),
            },  # fmt: skip
            "architecture": arch,
            "training": training or {"checkpoint": str(checkpoint)},
            "recipe": recipe,
        }
        return write_bundle(out, onnx_path=int8, tokenizer_path=ckpt.tokenizer_path, metadata=metadata, overwrite=True)


def side_by_side_throughput(
    bundles: dict[str, Path], texts: Sequence[str], *, threads: int = 2, batch_size: int = 16, rounds: int = 5
) -> dict[str, float]:
    """Texts per second of each bundle on the first windows of ``texts``, timed in interleaved rounds (median).

    Every bundle is loaded in this process first and warmed up once, then each round times every bundle on
    the same texts in turn.
    """
    from aidetect_infer import Detector

    detectors = {
        name: Detector.from_pretrained(path, provider="cpu", threads=threads, batch_size=batch_size, truncation=True)
        for name, path in bundles.items()
    }
    for detector in detectors.values():
        detector.predict_proba(list(texts[:batch_size]))
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(rounds):
        for name, detector in detectors.items():
            start = time.perf_counter()
            detector.predict_proba(list(texts))
            times[name].append(time.perf_counter() - start)
    return {name: len(texts) / statistics.median(t) for name, t in times.items()}


def _row(name: str, checkpoint: Path, bundle: Path, max_length: int) -> dict[str, Any]:
    model = load_classifier(checkpoint)
    arch = architecture(model)
    flops = flops_per_token(model, max_length)
    training = read_training(checkpoint)
    return {
        "name": name,
        "checkpoint": str(checkpoint),
        "bundle": str(bundle),
        "heads": sorted(set(arch["heads"])),
        "ffn": arch["ffn"],
        "layers": arch["layers"],
        "parameters": arch["parameters"],
        "layer_parameters": parameter_count(model.distilbert.transformer),
        "flops_per_token": flops,
        "int8_bytes": (bundle / "model.onnx").stat().st_size,
        "validation_roc_auc": (training.get("best") or {}).get("roc_auc"),
    }


def _score(row: dict[str, Any], sets: dict[str, list[Record]], threads: int, show_progress: bool) -> None:
    from tqdm import tqdm

    threshold = json.loads((Path(row["bundle"]) / "aidetect.json").read_text(encoding="utf-8"))["threshold"]
    row["held_out"] = {}
    for set_name, records in sets.items():
        with tqdm(
            total=len(records), desc=f"{row['name']} {set_name}", disable=not show_progress, file=sys.stderr
        ) as b:
            scores = score_bundle(row["bundle"], [r.text for r in records], threads=threads, progress=b.update)
        row["held_out"][set_name] = metrics.binary_metrics([r.label for r in records], scores, threshold)


def markdown_table(rows: Sequence[dict[str, Any]], max_length: int) -> str:
    """The sweep table (one row per model, the baseline first)."""
    sets = list(dict.fromkeys(s for r in rows for s in r.get("held_out", {})))
    header = [
        "model", "heads", "FFN", "layers", "params (M)", "layer params (M)", "MFLOPs/token (linear)",
        f"MFLOPs/token attention @{max_length}", "int8 MB", "val ROC AUC", *(f"ROC AUC {s}" for s in sets),
        "texts/s", "speed vs unpruned",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        f = r["flops_per_token"]
        auc = r["validation_roc_auc"]
        cells = [
            r["name"], "/".join(map(str, r["heads"])), r["ffn"], r["layers"], f"{r['parameters'] / 1e6:.2f}",
            f"{r['layer_parameters'] / 1e6:.2f}", f"{(f['projections'] + f['ffn']) / 1e6:.2f}",
            f"{f['attention'] / 1e6:.2f}", f"{r['int8_bytes'] / 1e6:.1f}", "" if auc is None else f"{auc:.4f}",
            *(f"{r['held_out'][s]['roc_auc']:.4f}" if s in r.get("held_out", {}) else "" for s in sets),
            f"{r['texts_per_s']:.1f}" if "texts_per_s" in r else "",
            f"{r['speedup']:.2f}x" if "speedup" in r else "",
        ]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def _write(out: Path, result: dict[str, Any]) -> None:
    result["markdown"] = markdown_table(result["rows"], result["max_length"])
    (out / "sweep.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    (out / "sweep.md").write_text(result["markdown"] + "\n", encoding="utf-8")


def run_sweep(job: PruneJob, cfg: SweepConfig, *, show_progress: bool = False) -> dict[str, Any]:
    """Measure the unpruned checkpoint and every target of ``cfg`` (see the module docstring).

    Args:
        job: The pruning settings shared by all targets; ``job.out`` is the sweep directory, ``job.prune`` is
            ignored.
        cfg: The targets and the measurement settings.
        show_progress: Draw progress bars on stderr (commands only).

    Returns:
        The sweep record (also in ``sweep.json``), with the Markdown table under ``markdown``.

    Raises:
        FileExistsError: ``job.out`` is not empty and ``job.overwrite`` is false.
        export.prune.PruneError, export.stages.ExportError, export.data.DataError, ValueError: As for
            :func:`export.prune_run.prune_checkpoint` and :func:`int8_bundle`.
    """
    started = time.time()
    out, src = Path(job.out), Path(job.checkpoint)
    check_output(out, job.overwrite)
    source = load_classifier(src)
    for target in cfg.targets:  # refuse an impossible target before hours of work
        target.check(source)
    del source
    out.mkdir(parents=True, exist_ok=True)
    src_cfg = read_training(src).get("config") or {}
    max_length = int(job.max_length or src_cfg.get("max_length") or 256)
    sets = held_out_sets(
        job.data, val_fraction=float(src_cfg.get("val_fraction", 0.1)),
        salt=str(src_cfg.get("split_salt", "aidetect")), max_samples=cfg.held_out_samples,
    )  # fmt: skip
    pool = [r.text for recs in sets.values() for r in recs]
    parity_texts = sorted(pool, key=lambda t: (-len(t), t))[:8]
    result: dict[str, Any] = {"checkpoint": str(src), "max_length": max_length, "rows": [], "sets": list(sets)}
    result["held_out_sizes"] = {k: len(v) for k, v in sets.items()}
    for target in (None, *cfg.targets):
        name, checkpoint = (BASELINE, src) if target is None else (target.label, out / target.label / "checkpoint")
        if target is not None:
            pruned = dataclasses.replace(job, prune=target, out=str(checkpoint), overwrite=True)
            prune_checkpoint(pruned, show_progress=show_progress)
        bundle = int8_bundle(checkpoint, out / name / "int8", max_length=max_length, texts=parity_texts, name=name)
        row = _row(name, checkpoint, bundle, max_length)
        _score(row, sets, cfg.bench_threads, show_progress)
        result["rows"].append(row)
        _write(out, result)
    bench = random.Random(0).sample(pool, min(cfg.bench_texts, len(pool)))
    speeds = side_by_side_throughput(
        {r["name"]: Path(r["bundle"]) for r in result["rows"]}, bench, threads=cfg.bench_threads,
        batch_size=cfg.bench_batch, rounds=cfg.bench_rounds,
    )  # fmt: skip
    for row in result["rows"]:
        row["texts_per_s"] = speeds[row["name"]]
        row["speedup"] = speeds[row["name"]] / speeds[BASELINE]
    result["throughput"] = {
        "texts": len(bench), "threads": cfg.bench_threads, "batch_size": cfg.bench_batch, "rounds": cfg.bench_rounds,
        "windows": "first window of each text", "statistic": "median over interleaved rounds",
    }  # fmt: skip
    result["wall_time_s"] = round(time.time() - started, 1)
    _write(out, result)
    return result
