"""The pruning sweep: several targets of one checkpoint, each pruned, recovered, exported to int8 and measured.

    python -m export.prune --checkpoint runs/minilm --out runs/prune-sweep --sweep "light;medium;small" \\
        --distill --data detectgpt_family.jsonl.gz outfox_essays.jsonl.gz

Under ``--out``: ``unpruned/int8/`` (the baseline bundle), ``<target>/checkpoint/`` (see
:mod:`export.prune.job`) and ``<target>/int8/`` per target, ``sweep.json`` and ``sweep.md``. Each int8 bundle
is built by the one build function, :func:`export.onnx.build.build_bundles`, from the recipe the sweep is given
(``SweepConfig.recipe``; the command reads a pipeline configuration's ``[export]`` table, by default the
shipped model's), without the accuracy gate: the table is the measurement.

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
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from export.data.records import Record
from export.evaluate import metrics
from export.evaluate.bundle import score_bundle
from export.evaluate.sets import held_out_sets
from export.files import replace_dir
from export.progress import LogProgress, Progress
from export.prune.config import PruneJob, SweepConfig
from export.prune.job import check_output, load_classifier, prune_checkpoint, read_training
from export.prune.structure import architecture, flops_per_token, parameter_count

logger = logging.getLogger(__name__)

BASELINE = "unpruned"


def int8_bundle(
    checkpoint: Path, out: Path, *, texts: Sequence[str], name: str, recipe: Mapping[str, Any] | None = None
) -> Path:
    """The int8 bundle of a checkpoint, built by :func:`export.onnx.build.build_bundles` from ``recipe``.

    Args:
        checkpoint: The checkpoint directory.
        out: The bundle directory (replaced).
        texts: Real texts for the parity checks.
        name: The bundle name prefix.
        recipe: Build options (:data:`export.onnx.recipe.OPTION_DEFAULTS` names, a pipeline's ``[export]``
            table); the variants, the gate and the evaluation sets are the sweep's: int8 only, no gate (the table
            is the measurement).

    Raises:
        export.errors.ParityError: The fp32 or fused graph does not match PyTorch.
        export.errors.ExportError: A stage failed.
    """
    from export.onnx.build import build_bundles
    from export.onnx.recipe import build_config

    skip = ("variant", "eval", "eval_limit", "gate", "name", "overwrite", "bench_texts", "parity_texts")
    options = {k: v for k, v in (recipe or {}).items() if k not in skip and not k.startswith("gate_")}
    options.update(variant=("int8",), gate=False, name=name, overwrite=True, bench_texts=0, parity_texts=tuple(texts))
    parent = out.parent / f".{out.name}.sweep"
    try:
        build_bundles(build_config(checkpoint, parent, options))
        replace_dir(parent / "int8", out)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    return out


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
        "validation_roc_auc": training.validation_roc_auc,
    }


def _score(row: dict[str, Any], sets: dict[str, list[Record]], threads: int, progress: Progress) -> None:
    threshold = json.loads((Path(row["bundle"]) / "aidetect.json").read_text(encoding="utf-8"))["threshold"]
    row["held_out"] = {}
    for set_name, records in sets.items():
        progress.stage(f"{row['name']} {set_name}")
        progress.planned(len(records))
        scores = score_bundle(row["bundle"], [r.text for r in records], threads=threads, progress=progress.advance)
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


def run_sweep(job: PruneJob, cfg: SweepConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Measure the unpruned checkpoint and every target of ``cfg`` (see the module docstring).

    Args:
        job: The pruning settings shared by all targets; ``job.out`` is the sweep directory, ``job.prune`` is
            ignored.
        cfg: The targets and the measurement settings.
        progress: Told of the recovery steps and the scored texts.

    Returns:
        The sweep record (also in ``sweep.json``), with the Markdown table under ``markdown``.

    Raises:
        FileExistsError: ``job.out`` is not empty and ``job.overwrite`` is false.
        export.prune.PruneError, export.stages.ExportError, export.data.DataError, ValueError: As for
            :func:`export.prune_run.prune_checkpoint` and :func:`int8_bundle`.
    """
    progress = progress or LogProgress()
    started = time.time()
    out, src = Path(job.out), Path(job.checkpoint)
    check_output(out, job.overwrite)
    source = load_classifier(src)
    for target in cfg.targets:  # refuse an impossible target before hours of work
        target.check(source)
    del source
    out.mkdir(parents=True, exist_ok=True)
    source_record = read_training(src)
    max_length = int(job.max_length or source_record.max_length)
    split = source_record.split
    sets = held_out_sets(job.data, val_fraction=split.val_fraction, salt=split.salt, max_samples=cfg.held_out_samples)
    pool = [r.text for recs in sets.values() for r in recs]
    parity_texts = sorted(pool, key=lambda t: (-len(t), t))[:8]
    result: dict[str, Any] = {"checkpoint": str(src), "max_length": max_length, "rows": [], "sets": list(sets)}
    result["held_out_sizes"] = {k: len(v) for k, v in sets.items()}
    for target in (None, *cfg.targets):
        name, checkpoint = (BASELINE, src) if target is None else (target.label, out / target.label / "checkpoint")
        if target is not None:
            pruned = dataclasses.replace(job, prune=target, out=str(checkpoint), overwrite=True)
            prune_checkpoint(pruned, progress=progress)
        recipe = {**cfg.recipe, "max_length": max_length}
        bundle = int8_bundle(checkpoint, out / name / "int8", texts=parity_texts, name=name, recipe=recipe)
        row = _row(name, checkpoint, bundle, max_length)
        _score(row, sets, cfg.bench_threads, progress)
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
