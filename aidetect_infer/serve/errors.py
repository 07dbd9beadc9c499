"""The exceptions of the HTTP service (all derive from :class:`~aidetect_infer.errors.AidetectError`)."""

from __future__ import annotations

from aidetect_infer.errors import AidetectError, MissingExtraError

__all__ = ["MissingExtraError", "QueueFullError", "SERVE_EXTRA_HINT", "ServiceClosedError", "ServiceError"]

SERVE_EXTRA_HINT = "install the service's dependencies with `pip install 'aidetect-infer[serve]'`"


class ServiceError(AidetectError):
    """Base class of the service's errors."""


class QueueFullError(ServiceError, RuntimeError):
    """The batcher's queue holds as many texts as it may; the caller should retry later.

    Attributes:
        limit: The queue's capacity in texts.
        retry_after_s: Seconds the caller is advised to wait.
    """

    def __init__(self, message: str, *, limit: int, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s


class ServiceClosedError(ServiceError, RuntimeError):
    """The batcher is shutting down (or has not started) and takes no new work."""
