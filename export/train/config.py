"""The configuration of a training run (:class:`TrainConfig`), from keyword arguments or a TOML/JSON file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ConfigError
from export.onnx.outliers import OUTLIER_PRODUCTS


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded in ``training.json``."""

    data: tuple[str, ...]
    out: str
    base: str = "minilm"
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 5e-5
    max_length: int = 256
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 42
    val_fraction: float = 0.1
    split_salt: str = "aidetect"
    eval_every: int = 0
    eval_max_samples: int | None = None
    max_train_samples: int | None = None
    class_weighting: str = "none"
    precision: str = "fp32"
    threads: int | None = None
    text_column: str | None = None
    label_column: str | None = None
    domains: tuple[str, ...] | None = None
    generators: tuple[str, ...] | None = None
    attacks: tuple[str, ...] | None = None
    balance: str = "none"
    shares: dict[str, float] | None = None
    samples_per_epoch: int | None = None
    augment: float = 0.0
    data_dir: str | None = None
    # int8-aware training (export.train.int8_aware): the export's int8 rounding in the forward pass
    int8_aware: bool = False
    int8_calibration: str | None = None
    int8_outlier_products: str = "ffn_attention"
    int8_outlier_channels: int = 8
    int8_embeddings: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("at least one --data file is needed")
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "max_length": 8 <= self.max_length <= 512,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "val_fraction": 0 < self.val_fraction < 1,
            "class_weighting": self.class_weighting in ("none", "balanced"),
            "precision": self.precision in ("fp32", "bf16"),
            "balance": self.balance in ("none", "domain"),
            "samples_per_epoch": self.samples_per_epoch is None or self.samples_per_epoch >= 1,
            "augment": 0.0 <= self.augment <= 1.0,
            "int8_outlier_products": self.int8_outlier_products in ("none", *OUTLIER_PRODUCTS),
            "int8_outlier_channels": self.int8_outlier_channels >= 1,
            "int8_calibration": not (self.int8_aware and self.int8_outlier_products != "none")
            or self.int8_calibration is not None,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid training options: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options of a TOML (``.toml``) or JSON file.

    Raises:
        ConfigError: The file cannot be read or parsed.
    """
    import tomllib

    try:
        text = Path(path).read_text(encoding="utf-8")
        return tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot be read as {'TOML' if str(path).endswith('.toml') else 'JSON'} ({exc})"
        ) from exc


def config_from_values(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from option names and values (dashes or underscores; lists become tuples).

    Raises:
        ConfigError: An unknown option, no ``data`` or ``out``, or a value out of range.
    """
    values = {k.replace("-", "_"): v for k, v in values.items()}
    for key in ("data", "domains", "generators", "attacks"):
        if values.get(key) is not None:
            values[key] = tuple(values[key]) if not isinstance(values[key], str) else (values[key],)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown option(s) in config: {', '.join(sorted(unknown))}")
    if "out" not in values or "data" not in values:
        raise ConfigError("--data and --out are required (on the command line or in --config)")
    return TrainConfig(**values)
