"""``training.json``: the record a training (or pruning) run leaves beside its checkpoint, read and written here only.

Every later stage reads it through :class:`TrainingRecord`: the export (``max_length``, the threshold and its
rule, the record itself into ``aidetect.json``), the evaluation sets (the validation :class:`Split`), the
pruning job (the split and the mix shares), calibration and the sweep.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.data.split import DEFAULT_SALT, DEFAULT_VAL_FRACTION, Split
from export.errors import CheckpointError

TRAINING_FILE = "training.json"
DEFAULT_MAX_LENGTH = 256


@dataclass(frozen=True)
class TrainingRecord:
    """What a run recorded about itself.

    Attributes:
        config: The resolved run configuration (a training run's :class:`TrainConfig` as a mapping; a pruned
            checkpoint's ``max_length`` and split settings).
        seed: The seed the run set.
        data: The data files, each ``{"file", "sha256"}``.
        counts: Texts used (``train``, ``validation``, and what else the run counted).
        best: The validation metrics of the kept checkpoint.
        threshold: The decision threshold chosen on validation (``None``: none chosen).
        threshold_rule: How ``threshold`` was chosen.
        versions: Library versions of the run.
        history: Every validation row (training runs).
        mix: Draws per data set and label (domain-balanced training runs).
        steps: Optimizer steps taken (training runs).
        wall_time_s: Duration of the run.
        threads: PyTorch threads.
        pruning: The compact pruning summary (pruned checkpoints; the bundle's ``variant.pruning``).
        source: The source checkpoint and its own record (pruned checkpoints).
        tokenizer_normalizer: The fold written into the checkpoint's tokenizer after training
            (:mod:`export.train.normalize`).
        extra: Keys of the file that no field holds, kept as read.
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    data: tuple[Mapping[str, str], ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    best: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    threshold_rule: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    history: tuple[Mapping[str, Any], ...] | None = None
    mix: Mapping[str, Any] | None = None
    steps: int | None = None
    wall_time_s: float | None = None
    threads: int | None = None
    pruning: Mapping[str, Any] | None = None
    source: Mapping[str, Any] | None = None
    tokenizer_normalizer: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_length(self) -> int:
        """The tokens per text the model was trained at (256 when the record does not say)."""
        value = self.config.get("max_length")
        return value if isinstance(value, int) else DEFAULT_MAX_LENGTH

    @property
    def split(self) -> Split:
        """The train/validation split the run used."""
        fraction = self.config.get("val_fraction", DEFAULT_VAL_FRACTION)
        return Split(float(fraction), str(self.config.get("split_salt", DEFAULT_SALT)))

    @property
    def shares(self) -> dict[str, float] | None:
        """The data sets' shares of a domain-balanced run, else ``None``."""
        shares = self.config.get("shares")
        return dict(shares) if isinstance(shares, Mapping) else None

    @property
    def validation_roc_auc(self) -> float | None:
        """The kept checkpoint's validation ROC AUC."""
        value = self.best.get("roc_auc")
        return float(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``training.json`` (fields that are ``None`` left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = _plain(value)
        return {**_plain(self.extra), **out}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TrainingRecord:
        """Read a decoded ``training.json`` (unknown keys go to ``extra``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in value.items() if k in names}
        for key in ("data", "history"):
            if isinstance(known.get(key), list):
                known[key] = tuple(known[key])
        return cls(**known, extra={k: v for k, v in value.items() if k not in names})

    @classmethod
    def read(cls, checkpoint: str | os.PathLike[str]) -> TrainingRecord | None:
        """The record of a checkpoint directory, or ``None`` when it has none.

        Raises:
            CheckpointError: The file is not a JSON object.
        """
        path = Path(checkpoint) / TRAINING_FILE
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        return cls.from_dict(value)

    def write(self, checkpoint: str | os.PathLike[str]) -> Path:
        """Write ``training.json`` into a checkpoint directory; returns its path."""
        path = Path(checkpoint) / TRAINING_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        return path


def _plain(value: Any) -> Any:
    """Tuples and mappings as the lists and dicts JSON holds."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
