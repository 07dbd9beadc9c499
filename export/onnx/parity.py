"""The parity reference every exported graph is checked against: inputs and PyTorch's logits for them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aidetect_infer.session import create_session
from export.errors import ParityError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParitySet:
    """Inputs and the reference logits every exported graph must reproduce.

    Attributes:
        feeds: ONNX Runtime input dicts (one padded batch of mixed lengths, then single texts).
        logits: The reference logits per feed, float32 ``[batch, 2]``.
    """

    feeds: tuple[dict[str, NDArray[np.int64]], ...]
    logits: tuple[NDArray[np.float32], ...]

    @property
    def lengths(self) -> list[int]:
        """The token lengths of the texts in the mixed batch."""
        return [int(n) for n in self.feeds[0]["attention_mask"].sum(axis=1)]

    def max_abs_diff(self, onnx_path: str | os.PathLike[str], *, threads: int = 2) -> float:
        """Run ``onnx_path`` on CPU over the feeds; return the max abs logit difference to the reference."""
        session = create_session(onnx_path, provider="cpu", threads=threads)
        wanted = {i.name for i in session.get_inputs()}
        worst = 0.0
        for feed, ref in zip(self.feeds, self.logits, strict=True):
            out = session.run(["logits"], {k: v for k, v in feed.items() if k in wanted})[0]
            if out.shape != ref.shape:
                raise ParityError(f"{onnx_path}: logits shape {out.shape}, expected {ref.shape}")
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max()))
        return worst

    def check(self, onnx_path: str | os.PathLike[str], atol: float, what: str) -> float:
        """Like :meth:`max_abs_diff`, but raise :class:`ParityError` above ``atol``; returns the difference."""
        diff = self.max_abs_diff(onnx_path)
        if not diff < atol:
            raise ParityError(
                f"{what}: max abs logit difference {diff:.3g} against PyTorch exceeds {atol:g} "
                f"(texts of {self.lengths} tokens); nothing was written"
            )
        logger.info("%s: parity max abs logit difference %.3g (limit %g)", what, diff, atol)
        return diff
