"""The FastAPI application: ``POST /v1/detect``, health, readiness, metrics and the OpenAPI schema.

This module imports FastAPI and pydantic; ``import aidetect_infer`` never loads it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aidetect_infer import __version__
from aidetect_infer.detector import Detector, Prediction
from aidetect_infer.serve.batcher import DynamicBatcher
from aidetect_infer.serve.config import ServeConfig
from aidetect_infer.serve.errors import QueueFullError, ServiceClosedError
from aidetect_infer.serve.metrics import CONTENT_TYPE, ServiceMetrics
from aidetect_infer.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware

logger = logging.getLogger(__name__)

DETECT_PATH = "/v1/detect"
PATHS = (DETECT_PATH, "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
PROBE_PATHS = ("/healthz", "/readyz")  # answered without the API key
WARMUP_TEXTS = ["A short text scored once at start-up, so the first request does not pay for warming up."]


class DetectRequest(BaseModel):
    """The body of ``POST /v1/detect``: exactly one of ``texts`` and ``text``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] | None = Field(default=None, description="Texts to score; the answer keeps their order.")
    text: str | None = Field(default=None, description="One text to score (instead of texts).")

    @model_validator(mode="after")
    def _exactly_one(self) -> DetectRequest:
        if (self.texts is None) == (self.text is None):
            raise ValueError('give exactly one of "texts" (a list of strings) and "text" (a string)')
        return self


class PredictionOut(BaseModel):
    """The verdict on one text."""

    label: str = Field(
        description='"ai" when score >= threshold; "uncertain" in the bundle\'s uncertain band or for a text too '
        'short to judge; else "human" (the bundle\'s labels).'
    )
    score: float = Field(description="Calibrated P(AI) in [0, 1].")
    windows: int = Field(description="Windows scored (more than 1 for texts longer than one window).")
    tokens: int = Field(description="Content tokens of the text.")


class DetectResponse(BaseModel):
    """The answer of ``POST /v1/detect``."""

    model: str = Field(description="The model bundle's name.")
    variant: str = Field(description="The bundle's precision: fp32, int8 or fp16.")
    threshold: float = Field(description="The decision threshold.")
    predictions: list[PredictionOut] = Field(description="One per text, in request order.")


class ErrorOut(BaseModel):
    """An error answer."""

    detail: Any = Field(description="What is wrong: a message, or a list of validation errors.")


def _error(status: int, detail: object, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


class Service:
    """The state behind the routes: detector, batcher, metrics and readiness.

    Args:
        detector: The loaded detector (thread-safe; called from the batcher's workers).
        config: Batching and limits.
    """

    def __init__(self, detector: Detector, config: ServeConfig) -> None:
        self.detector = detector
        self.config = config
        self.metrics = ServiceMetrics(lambda: self.batcher.queue_depth)
        self.batcher: DynamicBatcher[Prediction] = DynamicBatcher(
            detector.predict, config, on_batch=self.metrics.batch_done
        )
        meta = detector.metadata
        self.model_info: dict[str, Any] = {"model": meta.name, "variant": meta.precision, "threshold": meta.threshold}
        self.ready = False
        self.not_ready_reason = "warming up"
        self._warmup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the batcher and, in the background, the warm-up prediction that makes the service ready."""
        await self.batcher.start()
        self._warmup = asyncio.get_running_loop().create_task(self._warm_up())

    async def _warm_up(self) -> None:
        try:
            await asyncio.to_thread(self.detector.predict, WARMUP_TEXTS)
        except Exception as exc:
            logger.exception("the warm-up prediction failed")
            self.not_ready_reason = f"the warm-up prediction failed: {exc}"
            return
        self.ready = True
        logger.info("ready: %s (%s)", self.model_info["model"], self.model_info["variant"])

    async def stop(self) -> None:
        """Turn unready, score what is queued, stop the workers."""
        self.ready = False
        self.not_ready_reason = "shutting down"
        if self._warmup is not None:
            await asyncio.gather(self._warmup, return_exceptions=True)
        await self.batcher.close()

    async def detect(self, body: bytes) -> Response:
        """Answer a ``POST /v1/detect`` body."""
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            return _error(422, f"the body is not valid JSON: {exc}")
        try:
            request = DetectRequest.model_validate(payload)
        except ValidationError as exc:
            return _error(422, exc.errors(include_url=False, include_input=False, include_context=False))
        texts = request.texts if request.texts is not None else [request.text or ""]
        limit = self.config.max_texts_per_request
        if len(texts) > limit:
            return _error(413, f"{len(texts)} texts in one request; the limit is {limit}", limit_texts=limit)
        try:
            predictions = await self.batcher.submit(texts)
        except (QueueFullError, ServiceClosedError) as exc:
            return _error(503, str(exc), headers={"Retry-After": str(self.config.retry_after_s)})
        answer = {
            **self.model_info,
            "predictions": [
                {"label": p.label, "score": p.score, "windows": p.windows, "tokens": p.tokens} for p in predictions
            ],
        }
        return Response(json.dumps(answer, ensure_ascii=False), media_type="application/json")


_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "Body too large, or too many texts in one request."},
    422: {"model": ErrorOut, "description": "Not valid JSON, or not the expected fields and types."},
    503: {"model": ErrorOut, "description": "The queue is full or the service is shutting down (see Retry-After)."},
}


def create_app(detector: Detector, config: ServeConfig | None = None) -> FastAPI:
    """Build the service's ASGI application around a loaded detector.

    Args:
        detector: The detector that scores every request.
        config: Batching and limits (defaults: :class:`ServeConfig`).

    Returns:
        The FastAPI app, wrapped in the metrics, API-key (when configured) and body-limit middleware.
        ``app.state.service`` is the :class:`Service`.
    """
    config = config or ServeConfig()
    service = Service(detector, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="aidetect-infer",
        version=__version__,
        description="Tells AI-generated text from human writing. Requests are scored in dynamic batches.",
        lifespan=lifespan,
    )
    app.state.service = service
    request_schema = DetectRequest.model_json_schema()

    @app.post(
        DETECT_PATH,
        response_model=DetectResponse,
        responses=_ERRORS,
        summary="Score texts: P(AI) and a label for each",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}},
    )
    async def detect(request: Request) -> Response:
        return await service.detect(await request.body())

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up", responses={503: {"model": ErrorOut}})
    async def readyz() -> Response:
        if service.ready:
            return JSONResponse({"ready": True, **service.model_info})
        return JSONResponse({"ready": False, "detail": service.not_ready_reason}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.api_key is not None:  # outside the body limit: an unauthorized body is never read
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, open_paths=PROBE_PATHS)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, paths=PATHS)
    return app
