"""The drift reference of a bundle: its validation texts' scores, lengths and unknown-token rates, binned
(:mod:`aidetect_infer.drift`), written as ``drift_reference`` into ``aidetect.json`` by
:func:`calibrate_bundle <export.calibrate.fit.calibrate_bundle>` from the validation texts it scores, and by
:mod:`export.calibrate.backfill` into a bundle calibrated before the record existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aidetect_infer.drift import count_unknown, features, reference_record


def drift_reference(
    detector: Any, texts: Sequence[str], scores: NDArray[np.float64], tokens: NDArray[np.int64], data: Sequence[str]
) -> dict[str, Any]:
    """The ``drift_reference`` record of validation ``texts`` scored ``scores`` with ``tokens`` by ``detector``."""
    values = features(scores.tolist(), tokens.tolist(), count_unknown(detector.encoder, texts).tolist())
    return reference_record(values, "validation groups of " + ", ".join(Path(d).name for d in data))
