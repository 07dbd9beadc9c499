"""What long library calls report as they go: a :class:`Progress` is passed in, and only commands draw it."""

from __future__ import annotations

import logging
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Progress(Protocol):
    """Told of a long call's phases and of the units (texts, steps) done in each; draws nothing itself."""

    def stage(self, text: str) -> None:
        """A phase starts; what follows counts towards it."""

    def planned(self, total: int) -> None:
        """This many units will be done in the current phase."""

    def advance(self, n: int = 1, **status: Any) -> None:
        """``n`` more units were done; ``status`` (a loss, a learning rate) is for display."""


class LogProgress:
    """The default when a caller passes none: phases go to the log at INFO, units are not reported."""

    def stage(self, text: str) -> None:
        logger.info("%s", text)

    def planned(self, total: int) -> None:
        pass

    def advance(self, n: int = 1, **status: Any) -> None:
        pass
