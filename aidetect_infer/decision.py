"""How a score becomes a verdict: calibration, operating points and the "uncertain" band.

A bundle's ``aidetect.json`` may carry a ``decision`` object, written by the factory from the validation
groups of every data set (``export.calibrate``)::

    "decision": {
      "temperature": 1.7,                   # P(AI) = softmax(logits / temperature), fitted on validation
      "false_positive_rate": 0.01,          # the operating point the bundle ships with
      "operating_points": [                 # threshold for each validated false-positive rate on human texts
        {"false_positive_rate": 0.01, "threshold": 0.93, "true_positive_rate": 0.71}, ...],
      "uncertain_false_positive_rate": 0.1, # scores between this point's threshold and the AI threshold
      "min_tokens": 24,                     # texts with fewer content tokens are "uncertain"
      "rule": "..."
    }

Labels: ``"ai"`` at or above the AI threshold; ``"uncertain"`` between the human threshold (the threshold of
``uncertain_false_positive_rate``) and the AI threshold, and for texts shorter than ``min_tokens``; ``"human"``
below. A bundle without ``decision`` decides by its ``threshold`` alone: no calibration, no uncertain band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aidetect_infer.errors import REBUILD_HINT, BundleError, InvalidValueError

UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """A threshold and what it did on the validation texts.

    Attributes:
        false_positive_rate: Share of validation human texts scoring at or above ``threshold``.
        threshold: The P(AI) threshold.
        true_positive_rate: Share of validation AI texts at or above it (``nan`` when not recorded).
    """

    false_positive_rate: float
    threshold: float
    true_positive_rate: float = math.nan


@dataclass(frozen=True, slots=True)
class DecisionPolicy:
    """Calibration and thresholds, parsed once from a bundle (see the module docstring).

    Attributes:
        threshold: ``score >= threshold`` is ``"ai"``.
        human_threshold: ``score < human_threshold`` is ``"human"``; in between, ``"uncertain"``.
        temperature: Logits are divided by it before the softmax.
        min_tokens: Texts with fewer content tokens are ``"uncertain"``.
        false_positive_rate: The validated false-positive rate of ``threshold`` (``nan`` when unknown).
        operating_points: Every recorded operating point, by increasing false-positive rate.
    """

    threshold: float
    human_threshold: float
    temperature: float = 1.0
    min_tokens: int = 0
    false_positive_rate: float = math.nan
    operating_points: tuple[OperatingPoint, ...] = ()

    def label(self, score: float, tokens: int, labels: tuple[str, str]) -> str:
        """The verdict on one text of ``tokens`` content tokens scoring ``score``."""
        if tokens < self.min_tokens:
            return UNCERTAIN
        if score >= self.threshold:
            return labels[1]
        if score >= self.human_threshold:
            return UNCERTAIN
        return labels[0]

    @classmethod
    def from_metadata(
        cls, threshold: float, optional: Mapping[str, Any], *, max_false_positive_rate: float | None = None
    ) -> DecisionPolicy:
        """The policy of a bundle, at its own operating point or at the strictest one within a budget.

        Args:
            threshold: The bundle's ``threshold`` (used when it records no ``decision``).
            optional: The bundle's optional metadata (``BundleMetadata.optional``).
            max_false_positive_rate: Use the recorded operating point with the largest false-positive rate
                not above this (so at most this share of the validation human texts was flagged).

        Raises:
            BundleError: A ``decision`` object that is malformed.
            InvalidValueError: ``max_false_positive_rate`` outside (0, 1), or the bundle records no operating
                point that low.
        """
        if max_false_positive_rate is not None and not (
            isinstance(max_false_positive_rate, (int, float)) and 0.0 < max_false_positive_rate < 1.0
        ):
            raise InvalidValueError(f"max_false_positive_rate must be in (0, 1), got {max_false_positive_rate!r}")
        raw = optional.get("decision")
        if raw is None:
            if max_false_positive_rate is not None:
                raise InvalidValueError(
                    "this bundle records no operating points (no 'decision' in aidetect.json), so "
                    "max_false_positive_rate cannot be applied; use predict_proba with your own threshold"
                )
            return cls(threshold=threshold, human_threshold=threshold)
        try:
            points = tuple(
                sorted(
                    (
                        OperatingPoint(
                            float(p["false_positive_rate"]),
                            float(p["threshold"]),
                            float(p.get("true_positive_rate", math.nan)),
                        )
                        for p in raw["operating_points"]
                    ),
                    key=lambda p: p.false_positive_rate,
                )
            )
            temperature = float(raw.get("temperature", 1.0))
            min_tokens = int(raw.get("min_tokens", 0))
            shipped = float(raw.get("false_positive_rate", math.nan))
            uncertain = raw.get("uncertain_false_positive_rate")
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"aidetect.json: 'decision' is malformed ({exc!r}); {REBUILD_HINT}") from exc
        if not points or not (temperature > 0 and math.isfinite(temperature)) or min_tokens < 0:
            raise BundleError(
                "aidetect.json: 'decision' needs operating points, a positive temperature and min_tokens >= 0; "
                + REBUILD_HINT
            )
        if any(not 0.0 <= p.threshold <= 1.0 for p in points):
            raise BundleError(f"aidetect.json: decision thresholds must be in [0, 1]; {REBUILD_HINT}")
        if max_false_positive_rate is None:
            ai = OperatingPoint(shipped, threshold)
        else:
            within = [p for p in points if p.false_positive_rate <= max_false_positive_rate + 1e-12]
            if not within:
                raise InvalidValueError(
                    f"max_false_positive_rate {max_false_positive_rate} is below the lowest validated operating "
                    f"point ({points[0].false_positive_rate}); recorded: "
                    + ", ".join(str(p.false_positive_rate) for p in points)
                )
            ai = within[-1]
        human = ai.threshold
        if uncertain is not None:
            looser = [p for p in points if p.false_positive_rate <= float(uncertain) + 1e-12]
            if looser:
                human = min(ai.threshold, looser[-1].threshold)
        return cls(
            threshold=ai.threshold,
            human_threshold=human,
            temperature=temperature,
            min_tokens=min_tokens,
            false_positive_rate=ai.false_positive_rate,
            operating_points=points,
        )
