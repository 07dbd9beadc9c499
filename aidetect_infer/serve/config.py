"""The service's settings: batching, queue and request limits."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from aidetect_infer.errors import InvalidValueError

DEFAULT_MAX_BATCH_TEXTS = 32
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_MAX_QUEUE_TEXTS = 1024
DEFAULT_MAX_TEXTS_PER_REQUEST = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_RETRY_AFTER_S = 1
_ORIGIN = re.compile(r"https?://[^\s/?#]+")  # a scheme and a host (and port): what a browser sends as Origin


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """How the service batches and what it accepts.

    Attributes:
        max_batch_texts: The most texts scored together in one batch.
        max_wait_ms: How long the oldest queued text may wait for others to join its batch, in milliseconds
            (``0`` scores whatever is queued as soon as an inference worker is free).
        max_queue_texts: The most texts waiting to be scored; a request that would exceed it gets 503.
        max_texts_per_request: The most texts one request may carry (413 beyond it); at most
            ``max_queue_texts``.
        max_body_bytes: The largest request body accepted (413 beyond it).
        workers: Inference threads; each runs one batch at a time.
        batching: ``False`` scores every request on its own, never merged with others (for comparison).
        retry_after_s: The ``Retry-After`` seconds sent with a 503.
        api_key: When set, every request but the health probes and the web page must carry it (401 otherwise); see
            :class:`~aidetect_infer.serve.middleware.ApiKeyMiddleware`.
        cors_origins: Origins (``https://app.example.com``) whose pages may call the service from a browser;
            ``("*",)`` allows any. Empty (the default): no cross-origin access, no CORS headers.

    Raises:
        InvalidValueError: A value out of range.
    """

    max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    max_queue_texts: int = DEFAULT_MAX_QUEUE_TEXTS
    max_texts_per_request: int = DEFAULT_MAX_TEXTS_PER_REQUEST
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    workers: int = 1
    batching: bool = True
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "max_batch_texts",
            "max_queue_texts",
            "max_texts_per_request",
            "max_body_bytes",
            "workers",
            "retry_after_s",
        ):
            _positive_int(name, getattr(self, name))
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
            raise InvalidValueError(f"max_wait_ms must be a finite number >= 0, got {wait!r}")
        if self.max_texts_per_request > self.max_queue_texts:
            raise InvalidValueError(
                f"max_texts_per_request ({self.max_texts_per_request}) must not exceed max_queue_texts "
                f"({self.max_queue_texts}): such a request could never be queued"
            )
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise InvalidValueError("api_key must be a non-empty string or None")
        if not isinstance(self.cors_origins, tuple) or not all(
            isinstance(o, str) and (o == "*" or _ORIGIN.fullmatch(o)) for o in self.cors_origins
        ):
            raise InvalidValueError(
                f"cors_origins must be origins like 'https://app.example.com' (scheme and host, no path) or '*', "
                f"got {self.cors_origins!r}"
            )
        if not isinstance(self.batching, bool):
            raise InvalidValueError(f"batching must be True or False, got {self.batching!r}")

    def __repr__(self) -> str:  # never print the key
        shown = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if shown["api_key"] is not None:
            shown["api_key"] = "***"
        return "ServeConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def max_wait_s(self) -> float:
        """:attr:`max_wait_ms` in seconds."""
        return float(self.max_wait_ms) / 1000.0
