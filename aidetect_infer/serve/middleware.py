"""Plain ASGI middleware of the service: request metrics, the API key and the request-body size limit.

Written against the ASGI interface alone (no framework import), so it wraps any ASGI app.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from aidetect_infer.serve.metrics import ServiceMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OTHER_PATH = "other"


async def send_json(send: Send, status: int, payload: object, headers: Iterable[tuple[str, str]] = ()) -> None:
    """Send a complete JSON response through a raw ASGI ``send``."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class MetricsMiddleware:
    """Counts every HTTP request by path and status and observes its latency.

    Args:
        app: The wrapped ASGI app.
        metrics: Where the figures go.
        paths: The paths reported by name; any other path is reported as ``other`` (bounded label values).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, paths: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.paths else OTHER_PATH
        status = 500  # what the client sees if the app fails before it starts a response

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        self.metrics.request_started()
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.request_finished(path, status, time.perf_counter() - started)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Answers 413 to a request whose body exceeds ``max_bytes``, without reading more of it than that.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a chunked body
    is counted as it arrives. An accepted body is read whole and handed on to the app.

    Args:
        app: The wrapped ASGI app.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, size: str) -> None:
        detail = f"the request body ({size}) exceeds the limit of {self.max_bytes} bytes"
        await send_json(send, 413, {"detail": detail, "limit_bytes": self.max_bytes}, [("connection", "close")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"{declared} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, f"more than {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


class ApiKeyMiddleware:
    """Answers 401 to a request that does not carry the API key, before any of its body is read.

    The key goes in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; keys are compared in constant time.
    The health probes (``open_paths``) answer without one, so an orchestrator can probe the service.

    Args:
        app: The wrapped ASGI app.
        api_key: The key every other request must carry.
        open_paths: Paths served without a key.
    """

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")
        self.open_paths = frozenset(open_paths)

    def _authorized(self, scope: Scope) -> bool:
        given = _header(scope, b"x-api-key")
        if given is None:
            authorization = _header(scope, b"authorization") or b""
            scheme, _, token = authorization.partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else None
        return given is not None and hmac.compare_digest(given, self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        detail = "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        await send_json(send, 401, {"detail": detail}, [("www-authenticate", "Bearer")])
