"""``python -m export.pipeline``: reproduce a shipped bundle from the data and the base weights in one command.

    python -m export.pipeline --config configs/default.toml

The TOML file names every stage and its options:

- ``[[train]]`` (one or more): options of :class:`export.train.TrainConfig`. A stage without ``base`` continues
  from the previous stage's checkpoint; without ``out`` it writes ``<work_dir>/train-<n>``.
- ``[normalize]`` (optional): ``fold_confusables = true`` folds look-alike letters in each trained checkpoint's
  tokenizer (``export.normalize``), so a stage that continues from another trains on the folded tokenizer.
- ``[prune]`` (optional): options of ``python -m export.prune`` (structural pruning and recovery).
- ``[export]``: options of ``python -m export.to_onnx`` (variants, evaluation sets, gates).
- ``[calibrate]`` (optional): options of ``export.calibrate.CalibrateConfig`` (temperature, operating points,
  uncertain band, per-domain report), applied to the shipped variant.
- top level: ``name`` (the bundle name), ``work_dir`` (intermediate results, git-ignored), ``out`` (where the
  chosen bundle goes, e.g. ``models/default``), ``variant`` (which exported variant to ship) and ``data_dir``
  (where the data files named in the stages are found; default the repository's ``data/``).

Stages whose output already exists are reused with ``--resume`` (a stage's output counts as existing only
once it is complete: training writes ``training.json`` last, pruning ``pruning.json``, export the bundles).
The shipped bundle's ``aidetect.json`` records the configuration file, its sha256 and this command.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

from export.bundle import replace_dir
from export.data import sha256_file, use_data_dir

log = logging.getLogger(__name__)


def to_argv(options: Mapping[str, Any]) -> list[str]:
    """Turn ``{"batch_size": 16, "distill": True, "variant": ["fp32", "int8"]}`` into command-line arguments."""
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


def _run(label: str, main, argv: list[str]) -> None:
    log.info("%s: %s", label, " ".join(argv))
    code = main(argv)
    if code:
        raise SystemExit(f"error: stage {label} failed with exit status {code}")


def run_pipeline(config_path: Path, *, resume: bool = False, until: str | None = None) -> Path | None:
    """Run every stage of ``config_path``; return the shipped bundle directory (``None`` when stopped early)."""
    config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    work = Path(config.get("work_dir", "runs/pipeline"))
    work.mkdir(parents=True, exist_ok=True)
    if "data_dir" in config:
        use_data_dir(config["data_dir"])

    from export.train import TrainConfig, train

    checkpoint: Path | None = None
    for n, stage in enumerate(config.get("train", []), start=1):
        options = dict(stage)
        if "base" not in options:
            if checkpoint is None:
                raise SystemExit("error: the first [[train]] stage needs a base")
            options["base"] = str(checkpoint)
        options.setdefault("out", str(work / f"train-{n}"))
        options["data"] = tuple(options["data"])
        out = Path(options["out"])
        if resume and (out / "training.json").is_file():
            log.info("train-%d: reusing %s", n, out)
        else:
            train(TrainConfig(**options))
        checkpoint = out
        # Folded after every stage, so a later stage trains on the tokenizer that ships.
        if config.get("normalize", {}).get("fold_confusables"):
            from export.normalize import fold_checkpoint

            if fold_checkpoint(checkpoint):
                log.info("normalize: %s folds look-alike letters now", checkpoint)
    if checkpoint is None:
        raise SystemExit("error: the configuration has no [[train]] stage")
    if until == "train":
        return None

    if "prune" in config:
        from export.prune_run import main as prune_main

        pruned = Path(config["prune"].get("out", work / "pruned"))
        if not (resume and (pruned / "pruning.json").is_file()):
            options = {k: v for k, v in config["prune"].items() if k != "out"}
            _run(
                "prune",
                prune_main,
                ["--checkpoint", str(checkpoint), "--out", str(pruned), "--overwrite"] + to_argv(options),
            )
        checkpoint = pruned
    if until == "prune":
        return None

    from export.to_onnx import main as export_main

    bundles = work / "bundles"
    variant = config.get("variant", "int8")
    if not (resume and (bundles / variant / "aidetect.json").is_file()):
        options = dict(config.get("export", {}))
        options.setdefault("name", config.get("name"))
        _run(
            "export",
            export_main,
            ["--checkpoint", str(checkpoint), "--out", str(bundles), "--overwrite"] + to_argv(options),
        )
    if until == "export":
        return None
    if "calibrate" in config:
        from export.calibrate import CalibrateConfig, calibrate_bundle

        options = dict(config["calibrate"])
        options["data"] = tuple(options["data"])
        decision = (json.loads((bundles / variant / "aidetect.json").read_text(encoding="utf-8"))).get("decision")
        if not (resume and decision):
            calibrate_bundle(CalibrateConfig(bundle=str(bundles / variant), **options))
    return ship(bundles / variant, Path(config.get("out", "models/default")), config_path)


def ship(bundle: Path, out: Path, config_path: Path) -> Path:
    """Copy a verified bundle to ``out`` (atomically) and record how to reproduce it in its ``aidetect.json``."""
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
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    load_bundle(staging)  # still a valid bundle: checksums cover the model and the tokenizer, not the metadata
    replace_dir(staging, out)
    log.info("shipped %s -> %s", bundle, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="pipeline TOML file (see configs/)")
    p.add_argument("--resume", action="store_true", help="reuse stages whose complete output exists")
    p.add_argument("--until", choices=["train", "prune", "export"], help="stop after this stage")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_pipeline(args.config, resume=args.resume, until=args.until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
