"""The train/validation split: groups hashed into validation with a fraction and a salt, one rule everywhere."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

from export.data.records import Record, in_validation, load_records, refuse_held_out
from export.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SALT = "aidetect"


@dataclass(frozen=True, slots=True)
class Split:
    """Which groups are validation: the fraction and salt a training run used (see :class:`TrainingRecord`).

    Attributes:
        val_fraction: The share of groups held out for validation, in (0, 1).
        salt: Salt of the group hash.
    """

    val_fraction: float = DEFAULT_VAL_FRACTION
    salt: str = DEFAULT_SALT

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")

    def is_validation(self, group: str) -> bool:
        """Whether records of ``group`` are validation records."""
        return in_validation(group, self.val_fraction, self.salt)

    def validation(self, records: Iterable[Record]) -> list[Record]:
        """The validation records among ``records``, the OUTFOX test half left out."""
        return [r for r in records if not r.held_out and self.is_validation(r.group)]

    def training(self, records: Iterable[Record]) -> list[Record]:
        """The training records among ``records``, the OUTFOX test half left out."""
        return [r for r in records if not r.held_out and not self.is_validation(r.group)]


def calibration_texts(path: str | os.PathLike[str], split: Split, size: int) -> list[str]:
    """At most ``size`` training texts of ``path``, drawn with seed 0: the validation groups of ``split`` left out,
    a file with OUTFOX test records refused. The texts static quantization and the outlier channels are chosen
    on (:func:`export.onnx.build.calibration_feeds`; int8-aware training draws the same,
    :func:`export.train.int8_aware.calibration_windows`).

    Raises:
        export.data.DataError: The file cannot be read, holds test records, or has no training records.
    """
    records = load_records(path)
    refuse_held_out(records, path)
    kept = [r for r in records if not split.is_validation(r.group)]
    logger.info("%s: %d calibration candidates (%d validation records left out)", path, len(kept),
                len(records) - len(kept))  # fmt: skip
    if not kept:
        raise DataError(f"{path}: every record is in the validation split; calibrate on training data")
    return [r.text for r in random.Random(0).sample(kept, min(len(kept), size))]
