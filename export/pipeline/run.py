"""The pipeline's stages, called in order with frozen configurations (see :mod:`export.pipeline.config`).

Stages whose output already exists are reused with ``resume`` (a stage's output counts as existing only once
it is complete: training writes ``training.json`` last, pruning ``pruning.json``, export the bundles). The
shipped bundle's ``aidetect.json`` records the configuration file, its sha256 and the command that reproduces it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from export.data.records import sha256_file, use_data_dir
from export.files import replace_dir
from export.pipeline.config import PipelineConfig
from export.progress import LogProgress, Progress

logger = logging.getLogger(__name__)

STAGES = ("train", "prune", "tune", "export")


def to_argv(options: Mapping[str, Any]) -> list[str]:
    """Turn ``{"batch_size": 16, "distill": True, "variant": ["fp32", "int8"]}`` into command-line arguments.

    The pipeline logs each stage as the command that would run it alone.
    """
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _train(
    config: PipelineConfig, stages: tuple[Mapping[str, Any], ...], kind: str, checkpoint: Path | None, resume: bool,
    progress: Progress, first: int = 1,
) -> Path | None:  # fmt: skip
    """Run training ``stages`` in order (``kind``: train or tune; the first is number ``first``), each from the one
    before (the first from ``checkpoint`` unless it names a ``base``); return the last checkpoint (``checkpoint``
    when there are none)."""
    from export.train.config import config_from_values
    from export.train.loop import train
    from export.train.record import TRAINING_FILE

    for n, stage in enumerate(stages, start=first):
        options = dict(stage)
        if "base" not in options:
            options["base"] = str(checkpoint)
        options.setdefault("out", str(config.work_dir / f"{kind}-{n}"))
        out = Path(options["out"])
        if resume and (out / TRAINING_FILE).is_file():
            logger.info("%s-%d: reusing %s", kind, n, out)
        else:
            logger.info("%s-%d: python -m export.train %s", kind, n, " ".join(to_argv(options)))
            train(config_from_values(options), progress=progress)
        checkpoint = out
        # Folded after every stage, so a later stage trains on the tokenizer that ships.
        if config.fold_confusables:
            from export.train.normalize import fold_checkpoint

            if fold_checkpoint(checkpoint):
                logger.info("normalize: %s folds look-alike letters now", checkpoint)
    return checkpoint


def _prune(config: PipelineConfig, checkpoint: Path, resume: bool, progress: Progress) -> Path:
    from export.prune.config import job_from_options
    from export.prune.job import prune_checkpoint

    options = {k: v for k, v in (config.prune or {}).items() if k != "out"}
    pruned = Path((config.prune or {}).get("out", config.work_dir / "pruned"))
    if resume and (pruned / "pruning.json").is_file():
        logger.info("prune: reusing %s", pruned)
        return pruned
    job = job_from_options(checkpoint, pruned, {**options, "overwrite": True})
    logger.info(
        "prune: python -m export.prune --checkpoint %s --out %s %s", checkpoint, pruned, " ".join(to_argv(options))
    )
    return prune_checkpoint(job, progress=progress)


def _export(config: PipelineConfig, checkpoint: Path, resume: bool, progress: Progress, bundles: Path) -> Path:
    from export.onnx.build import build_bundles
    from export.onnx.recipe import build_config

    if resume and (bundles / config.variant / "aidetect.json").is_file():
        logger.info("export: reusing %s", bundles)
        return bundles
    options = dict(config.export)
    options.setdefault("name", config.name)
    logger.info(
        "export: python -m export.to_onnx --checkpoint %s --out %s %s", checkpoint, bundles, " ".join(to_argv(options))
    )
    build_bundles(build_config(checkpoint, bundles, {**options, "overwrite": True}), progress=progress)
    return bundles


def snap(config: PipelineConfig, bundles: Path, resume: bool, progress: Progress) -> Path:
    """Export again from the int8 bundle in ``bundles``, its weights recovered in fp32 (:mod:`export.recover`).

    Returns the new bundles' parent directory. Every variant's recipe starts with a ``snap`` stage naming the
    graph the weights came from.
    """
    from export.recover import recover

    out = config.work_dir / "bundles-snapped"
    if resume and (out / config.variant / "aidetect.json").is_file():
        logger.info("snap: reusing %s", out)
        return out
    checkpoint = config.work_dir / "snapped"
    logger.info("snap: python -m export.recover %s --out %s", bundles / "int8", checkpoint)
    recover(bundles / "int8", checkpoint)
    return export_snapped(config, checkpoint, progress)


def export_snapped(config: PipelineConfig, checkpoint: Path, progress: Progress) -> Path:
    """Export ``checkpoint`` (written by :func:`export.recover.recover`, with its ``recovered.json``) into the work
    directory's ``bundles-snapped``; every variant's recipe starts with the ``snap`` stage of that record.

    Raises:
        ConfigError: ``checkpoint`` has no readable ``recovered.json``.
    """
    from export.errors import ConfigError

    try:
        record = json.loads((checkpoint / "recovered.json").read_text(encoding="utf-8"))
        source = record["source"]["model.onnx"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{checkpoint}: not a recovered checkpoint (python -m export.recover): {exc}") from exc
    out = config.work_dir / "bundles-snapped"
    _export(config, checkpoint, False, progress, out)
    stage = {"stage": "snap", "source_sha256": source}
    stage.update({k: v for k, v in record.items() if k.startswith("max_abs_logit_diff")})
    for meta_path in sorted(out.glob("*/aidetect.json")):
        record_stage(meta_path.parent, stage)
    return out


def record_stage(bundle: Path, stage: Mapping[str, Any]) -> None:
    """Put ``stage`` first in ``bundle``'s recipe and write its model card again (checksums cover neither)."""
    from export.bundle.card import render_card
    from export.calibrate.report import DECISIONS_HEADING

    meta_path = bundle / "aidetect.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["recipe"] = [dict(stage), *meta.get("recipe", [])]
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    rule = next((r.get("rule", "") for r in meta["recipe"] if r.get("stage") == "threshold"), "")
    card = bundle / "README.md"
    later = card.read_text(encoding="utf-8").partition(DECISIONS_HEADING)[2] if card.is_file() else ""
    text = render_card(meta, threshold_rule=rule).rstrip() + "\n"
    card.write_text(text + (f"\n{DECISIONS_HEADING}{later}" if later else ""), encoding="utf-8")


def run_pipeline(
    config: PipelineConfig, *, resume: bool = False, until: str | None = None, progress: Progress | None = None,
    snapped: Path | None = None, checkpoint: Path | None = None, after_tune: int = 0,
) -> Path | None:  # fmt: skip
    """Run every stage of ``config``; return the shipped bundle directory (``None`` when stopped early).

    Args:
        config: The stages and their options.
        resume: Reuse stages whose complete output exists.
        until: Stop after this stage (one of :data:`STAGES`).
        progress: Told of every stage's progress.
        snapped: A checkpoint recovered from a shipped int8 bundle (``python -m export.recover``): start at the
            snapped export (``snap_weights``), skipping training, pruning and the first export, to ship the same
            weights through another export recipe.
        checkpoint: Start after pruning from this checkpoint: its ``[[tune]]`` stages, then the export (e.g. a
            checkpoint recovered from a shipped bundle, tuned further).
        after_tune: With ``checkpoint``: it is the output of the first ``after_tune`` ``[[tune]]`` stages (e.g.
            recovered from the bundle they made), so only the stages after them run.

    Raises:
        export.errors.ExportError: A stage failed (the error of that stage); nothing is shipped.
    """
    from export.errors import ConfigError

    if snapped is not None and checkpoint is not None:
        raise ConfigError("start from a snapped checkpoint or from a checkpoint, not both")
    if after_tune and (checkpoint is None or not 0 < after_tune <= len(config.tune)):
        raise ConfigError(
            f"after_tune={after_tune} needs a checkpoint and at most the {len(config.tune)} [[tune]] stages of "
            f"{config.path}"
        )
    if snapped is not None and not config.snap_weights:
        raise ConfigError(f"{config.path}: a snapped checkpoint needs snap_weights = true")
    start = snapped if snapped is not None else checkpoint
    skipped = ("train", "prune") if snapped is None else ("train", "prune", "tune")
    if start is not None and until in skipped:
        raise ConfigError(f"a {'snapped ' if snapped is not None else ''}checkpoint starts after the {until} stage")
    if checkpoint is not None and not (Path(checkpoint) / "config.json").is_file():
        raise ConfigError(f"{checkpoint}: not a checkpoint (no config.json)")
    progress = progress or LogProgress()
    config.work_dir.mkdir(parents=True, exist_ok=True)
    if config.data_dir is not None:
        use_data_dir(config.data_dir)
    if snapped is not None:
        bundles = export_snapped(config, Path(snapped), progress)
    else:
        if checkpoint is None:
            trained = _train(config, config.train, "train", None, resume, progress)
            assert trained is not None  # PipelineConfig has at least one [[train]] stage
            if until == "train":
                return None
            if config.prune is not None:
                trained = _prune(config, trained, resume, progress)
            if until == "prune":
                return None
        else:
            trained = Path(checkpoint)
        trained = _train(config, config.tune[after_tune:], "tune", trained, resume, progress, after_tune + 1)
        assert trained is not None
        if until == "tune":
            return None
        bundles = _export(config, trained, resume, progress, config.work_dir / "bundles")
        if config.snap_weights:
            bundles = snap(config, bundles, resume, progress)
    if until == "export":
        return None
    if config.calibrate is not None:
        from export.calibrate.fit import CalibrateConfig, calibrate_bundle

        options = dict(config.calibrate)
        options["data"] = tuple(options["data"])
        decision = (json.loads((bundles / config.variant / "aidetect.json").read_text(encoding="utf-8"))).get(
            "decision"
        )
        if not (resume and decision):
            calibrate_bundle(CalibrateConfig(bundle=str(bundles / config.variant), **options))
    return ship(
        bundles / config.variant, config.out, config.path, snapped=snapped, checkpoint=checkpoint, after_tune=after_tune
    )


def ship(
    bundle: Path, out: Path, config_path: Path, *, snapped: Path | None = None, checkpoint: Path | None = None,
    after_tune: int = 0,
) -> Path:  # fmt: skip
    """Copy a verified bundle to ``out`` (atomically) and record how to reproduce it in its ``aidetect.json``.

    With ``snapped`` (the run started at the snapped export) or ``checkpoint`` (after pruning) the record says so:
    the full command reproduces the weights from the data, ``--from-snapped`` the export from the recovered
    checkpoint, ``--from-checkpoint`` the stages after pruning from that checkpoint.
    """
    from aidetect_infer.bundle import load_bundle

    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    meta_path = staging / "aidetect.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["reproduce"] = {
        "command": f"python -m export.pipeline --config {config_path.as_posix()}",
        "config": config_path.as_posix(),
        "config_sha256": sha256_file(config_path),
    }
    if snapped is not None:
        meta["reproduce"]["export_only"] = (
            f"python -m export.recover <the bundle of the snap stage> --out {snapped.as_posix()} && "
            f"python -m export.pipeline --config {config_path.as_posix()} --from-snapped {snapped.as_posix()}"
        )
    if checkpoint is not None:
        meta["reproduce"]["after_pruning"] = (
            f"python -m export.pipeline --config {config_path.as_posix()} --from-checkpoint {checkpoint.as_posix()}"
            + (f" --after-tune {after_tune}" if after_tune else "")
        )
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    load_bundle(staging)  # still a valid bundle: checksums cover the model and the tokenizer, not the metadata
    replace_dir(staging, out)
    logger.info("shipped %s -> %s", bundle, out)
    return out
