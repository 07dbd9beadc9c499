"""What the factory's commands share: the progress bar they draw and how they report an error.

Only commands (``__main__`` modules) import this; library functions take a :class:`export.progress.Progress`.
"""

from __future__ import annotations

import sys
from typing import Any

from export.errors import exit_code


class BarProgress:
    """A :class:`export.progress.Progress` drawn as a tqdm bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(self, unit: str = "text") -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=0, unit=unit, dynamic_ncols=True, file=sys.stderr, disable=None, mininterval=1.0)

    def stage(self, text: str) -> None:
        self._bar.set_description_str(text)
        self._bar.refresh()

    def planned(self, total: int) -> None:
        self._bar.reset(total=total)

    def advance(self, n: int = 1, **status: Any) -> None:
        if status:
            self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in status.items()})
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def fail(exc: BaseException, *, note: str = "") -> int:
    """Print ``exc`` as a command's error message (and ``note`` below it); return its exit code."""
    print(f"error: {exc}" + (f"\n{note}" if note else ""), file=sys.stderr)
    return int(exit_code(exc))
