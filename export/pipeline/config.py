"""A pipeline configuration (``configs/*.toml``), read once into a frozen :class:`PipelineConfig`.

The TOML file names every stage and its options:

- ``[[train]]`` (one or more): options of :class:`export.train.config.TrainConfig`. A stage without ``base``
  continues from the previous stage's checkpoint; without ``out`` it writes ``<work_dir>/train-<n>``.
- ``[normalize]`` (optional): ``fold_confusables = true`` folds look-alike letters in each trained checkpoint's
  tokenizer (:mod:`export.train.normalize`), so a stage that continues from another trains on the folded
  tokenizer.
- ``[prune]`` (optional): options of ``python -m export.prune`` (:func:`export.prune.job.job_from_options`),
  and ``out``.
- ``[[tune]]`` (optional, any number): training stages after pruning, options as ``[[train]]``; the first
  continues from the pruned checkpoint (or the last training stage's without ``[prune]``), each later one from
  the one before; without ``out`` one writes ``<work_dir>/tune-<n>``.
- ``[export]``: options of ``python -m export.to_onnx`` (:func:`export.onnx.recipe.build_config`).
- ``[calibrate]`` (optional): options of :class:`export.calibrate.fit.CalibrateConfig`, applied to the shipped
  variant.
- top level: ``name`` (the bundle name), ``work_dir`` (intermediate results, git-ignored), ``out`` (where the
  chosen bundle goes, e.g. ``models/default``), ``variant`` (which exported variant to ship), ``data_dir``
  (where the data files named in the stages are found; default the repository's ``data/``) and
  ``snap_weights`` (export again from the int8 bundle's weights in fp32, :mod:`export.recover`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ConfigError

TOP_LEVEL = (
    "name", "work_dir", "out", "variant", "data_dir", "snap_weights",
    "train", "normalize", "prune", "tune", "export", "calibrate",
)  # fmt: skip


@dataclass(frozen=True)
class PipelineConfig:
    """The stages of one pipeline run, as the TOML file gives them (see the module docstring).

    Attributes:
        path: The configuration file.
        train: The options of each ``[[train]]`` stage, in order.
        export: The ``[export]`` options.
        prune: The ``[prune]`` options (``None``: no pruning).
        tune: The options of each ``[[tune]]`` stage, in order (trained after pruning).
        calibrate: The ``[calibrate]`` options (``None``: no calibration).
        fold_confusables: Fold look-alike letters into each trained tokenizer.
        name: The bundle name prefix.
        work_dir: Where intermediate results go.
        out: Where the shipped bundle goes.
        variant: The exported variant that ships.
        data_dir: Where data files named by file name are found (``None``: the repository's ``data/``).
        snap_weights: After the export, export again from the int8 bundle's weights in fp32
            (:mod:`export.recover`): the fp32 variant and the int8 gate's reference are then the weights the int8
            graph holds (up to those a different choice of outlier channels rounds again), and the gate measures
            what the activation quantization changes.
    """

    path: Path
    train: tuple[Mapping[str, Any], ...]
    export: Mapping[str, Any] = field(default_factory=dict)
    prune: Mapping[str, Any] | None = None
    tune: tuple[Mapping[str, Any], ...] = ()
    calibrate: Mapping[str, Any] | None = None
    fold_confusables: bool = False
    name: str | None = None
    work_dir: Path = Path("runs/pipeline")
    out: Path = Path("models/default")
    variant: str = "int8"
    data_dir: str | None = None
    snap_weights: bool = False

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError(f"{self.path}: the configuration has no [[train]] stage")
        if "base" not in self.train[0]:
            raise ConfigError(f"{self.path}: the first [[train]] stage needs a base")
        if self.snap_weights and self.variant != "int8":
            raise ConfigError(f"{self.path}: snap_weights recovers the int8 weights; this ships {self.variant!r}")


def _int8_options(path: Path, export: Mapping[str, Any], options: dict[str, Any], where: str) -> dict[str, Any]:
    """An int8-aware stage rounds as the ``[export]`` stage will: its calibration file, outlier products and
    embedding tables default to the export's, and may not differ from them."""
    from export.onnx.quantize import QuantizeConfig
    from export.onnx.recipe import OPTION_DEFAULTS

    if not options.get("int8_aware"):
        return options
    export = {**OPTION_DEFAULTS, **export}
    if export.get("int8") != "outlier_channels":
        raise ConfigError(f"{path}: {where} is int8-aware, which rounds as [export] int8 = 'outlier_channels'")
    implied = {
        "int8_calibration": export["calibration"],
        "int8_outlier_products": export["outlier_products"],
        "int8_embeddings": bool(export["quantize_embeddings"]),
        "int8_outlier_channels": QuantizeConfig.outlier_channels().outliers,
    }
    for key, value in implied.items():
        if options.setdefault(key, value) != value:
            raise ConfigError(f"{path}: {where}: {key} = {options[key]!r}, but the export's is {value!r}")
    return options


def read_pipeline_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Read and check a pipeline configuration file.

    Raises:
        ConfigError: The file cannot be read or parsed, has an unknown table, or no usable ``[[train]]`` stage.
    """
    import tomllib

    path = Path(path)
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as TOML ({exc})") from exc
    unknown = set(config) - set(TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    export = dict(config.get("export", {}))

    def stages(kind: str) -> tuple[dict[str, Any], ...]:
        return tuple(
            _int8_options(path, export, dict(stage), f"[[{kind}]] {n}")
            for n, stage in enumerate(config.get(kind, []), 1)
        )

    return PipelineConfig(
        path=path,
        train=stages("train"),
        export=export,
        prune=dict(config["prune"]) if "prune" in config else None,
        tune=stages("tune"),
        calibrate=dict(config["calibrate"]) if "calibrate" in config else None,
        fold_confusables=bool(config.get("normalize", {}).get("fold_confusables", False)),
        name=config.get("name"),
        work_dir=Path(config.get("work_dir", "runs/pipeline")),
        out=Path(config.get("out", "models/default")),
        variant=str(config.get("variant", "int8")),
        data_dir=config.get("data_dir"),
        snap_weights=bool(config.get("snap_weights", False)),
    )
