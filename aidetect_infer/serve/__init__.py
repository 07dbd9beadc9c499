"""The HTTP service: ``python -m aidetect_infer serve --model DIR`` (install the ``[serve]`` extra).

``POST /v1/detect`` scores texts in dynamic batches; ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus) and
``/openapi.json`` describe the service. See ``docs/service.md``.

Importing this package loads neither FastAPI nor uvicorn: :func:`create_app` imports them on first use.
:class:`ServeConfig` and :class:`DynamicBatcher` need only the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aidetect_infer.serve.batcher import DynamicBatcher
from aidetect_infer.serve.config import ServeConfig
from aidetect_infer.serve.errors import MissingExtraError, QueueFullError, ServiceClosedError, ServiceError

if TYPE_CHECKING:
    from aidetect_infer.serve.app import create_app

__all__ = [
    "DynamicBatcher",
    "MissingExtraError",
    "QueueFullError",
    "ServeConfig",
    "ServiceClosedError",
    "ServiceError",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from aidetect_infer.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
