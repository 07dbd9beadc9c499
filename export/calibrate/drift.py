"""The drift reference of a bundle: its validation texts' scores, lengths and unknown-token rates, binned
(:mod:`aidetect_infer.drift`), written as ``drift_reference`` into ``aidetect.json`` by
:func:`calibrate_bundle <export.calibrate.fit.calibrate_bundle>` from the validation texts it scores, and by
:mod:`export.calibrate.backfill` into a bundle calibrated before the record existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aidetect_infer.drift import prediction_features, reference_record


def drift_reference(predictions: Sequence[Any], data: Sequence[str]) -> dict[str, Any]:
    """The ``drift_reference`` record of the bundle's :class:`~aidetect_infer.Prediction` objects for the
    validation groups of the data files ``data`` (scores, content tokens, unknown tokens, as the runtime counts
    them)."""
    return reference_record(
        prediction_features(predictions), "validation groups of " + ", ".join(Path(d).name for d in data)
    )
