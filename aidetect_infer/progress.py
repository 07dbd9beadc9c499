"""A tiny progress bar for the command line (library calls never show progress)."""

from __future__ import annotations

import time
from typing import IO


class ProgressBar:
    """A one-line progress bar redrawn in place with ``\\r``.

    Args:
        total: Number of items expected.
        stream: Where to draw (usually ``sys.stderr``).
        enabled: Draw nothing when false.
        width: Bar width in characters.
    """

    def __init__(self, total: int, stream: IO[str], *, enabled: bool = True, width: int = 30) -> None:
        self.total = max(total, 0)
        self.done = 0
        self._stream = stream
        self._enabled = enabled and self.total > 0
        self._width = width
        self._start = time.perf_counter()

    def update(self, n: int) -> None:
        """Advance by ``n`` items and redraw."""
        self.done = min(self.total, self.done + n)
        if self._enabled:
            self._stream.write("\r" + self.render())
            self._stream.flush()

    def render(self) -> str:
        """The bar as text, e.g. ``[#######.......]  120/500 texts  35.2/s``."""
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * self._width)
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = self.done / elapsed
        return f"[{'#' * filled}{'.' * (self._width - filled)}] {self.done}/{self.total} texts {rate:.1f}/s"

    def close(self) -> None:
        """End the bar's line."""
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()
