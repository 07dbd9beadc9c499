"""The FastAPI application: ``POST /v1/detect`` and ``/v1/explain``, the web page (:mod:`.page`), health,
readiness, metrics and the OpenAPI schema.

This module imports FastAPI and pydantic; ``import aidetect_infer`` never loads it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aidetect_infer import __version__
from aidetect_infer.detector import Detector, Explanation, Prediction
from aidetect_infer.drift import DriftMonitor, DriftReference, prediction_features
from aidetect_infer.serve.batcher import DynamicBatcher
from aidetect_infer.serve.config import ServeConfig
from aidetect_infer.serve.errors import QueueFullError, ServiceClosedError
from aidetect_infer.serve.metrics import CONTENT_TYPE, ServiceMetrics
from aidetect_infer.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware
from aidetect_infer.serve.page import PAGE_PATHS, add_page_routes

logger = logging.getLogger(__name__)

DETECT_PATH = "/v1/detect"
EXPLAIN_PATH = "/v1/explain"
DRIFT_PATH = "/v1/drift"
PROBE_PATHS = ("/healthz", "/readyz")  # answered without the API key, like the web page's files
PATHS = (DETECT_PATH, EXPLAIN_PATH, DRIFT_PATH, *PROBE_PATHS, "/metrics", "/openapi.json", "/docs", *PAGE_PATHS)
WARMUP_TEXTS = ["A short text scored once at start-up, so the first request does not pay for warming up."]


class DetectRequest(BaseModel):
    """The body of ``POST /v1/detect``: exactly one of ``texts`` and ``text``."""

    # The rule of _exactly_one, in the schema: a null field counts as absent, as the validator treats it.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "oneOf": [
                {"required": ["texts"], "properties": {"texts": {"type": "array", "items": {"type": "string"}}}},
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
            ]
        },
    )

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


class _ModelOut(BaseModel):
    """The fields every scoring answer starts with."""

    model: str = Field(description="The model bundle's name.")
    variant: str = Field(description="The bundle's precision: fp32, int8 or fp16.")
    threshold: float = Field(description="The decision threshold.")


class DetectResponse(_ModelOut):
    """The answer of ``POST /v1/detect``."""

    predictions: list[PredictionOut] = Field(description="One per text, in request order.")


class ExplainRequest(BaseModel):
    """The body of ``POST /v1/explain``: one text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(description="The text to score, as a whole and segment by segment.")


class SegmentOut(BaseModel):
    """One segment of the text and its verdict."""

    start: int = Field(description="Offset of its first character, in Unicode code points (Python string indices).")
    end: int = Field(description="Offset just past its last character; each segment ends where the next starts.")
    label: str = Field(description='The verdict on the segment alone ("uncertain" below the minimum length).')
    score: float = Field(description="P(AI) of the segment scored alone.")
    tokens: int = Field(description="Content tokens of the segment.")


class DecisionOut(BaseModel):
    """How a score becomes a label in this bundle."""

    threshold: float = Field(description='Scores at or above it are "ai".')
    human_threshold: float = Field(description='Scores below it are "human"; in between, "uncertain".')
    false_positive_rate: float | None = Field(
        description="Share of the validation human texts that scored at or above threshold (null if not recorded)."
    )
    min_tokens: int = Field(description='Texts (and segments) with fewer content tokens are "uncertain".')


class ExplainResponse(_ModelOut):
    """The answer of ``POST /v1/explain``."""

    label: str = Field(description="The document's label, as /v1/detect gives it.")
    score: float = Field(description="The document's P(AI), as /v1/detect gives it.")
    windows: int = Field(description="Windows the document was scored in.")
    tokens: int = Field(description="Content tokens of the document.")
    decision: DecisionOut = Field(description="The thresholds behind the labels.")
    segments: list[SegmentOut] = Field(
        description="Sentence-aligned segments that tile the text in order (none for an empty text)."
    )


class FeatureDriftOut(BaseModel):
    """One feature's drift."""

    psi: float = Field(description="Population stability index of the texts seen against the bundle's reference.")
    status: str = Field(description='"ok" below thresholds.watch, "watch" up to thresholds.drifting, else "drifting".')


class DriftOut(BaseModel):
    """The answer of ``GET /v1/drift``."""

    status: str = Field(
        description='"ok", "watch" or "drifting" (the worst feature\'s); "not enough texts" below min_texts; '
        '"no reference" when the bundle records no drift_reference.'
    )
    texts: int = Field(description="Texts scored since the service started (the warm-up text not counted).")
    min_texts: int = Field(description="Texts needed before a status is given.")
    thresholds: dict[str, float] = Field(description="The PSI thresholds of watch and drifting.")
    features: dict[str, FeatureDriftOut] = Field(description="score, tokens and unk_rate (empty without reference).")


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
        self.drift = DriftMonitor(DriftReference.from_metadata(detector.metadata.optional))
        self.metrics.add_drift(self.drift)
        self.batcher: DynamicBatcher[Prediction] = DynamicBatcher(
            self._predict, config, on_batch=self.metrics.batch_done
        )
        # One document per run (its segments are scored together inside explain), queued apart from /v1/detect.
        self.explainer: DynamicBatcher[Explanation] = DynamicBatcher(
            self._explain,
            dataclasses.replace(config, batching=False),
            on_batch=lambda texts, _: self.metrics.explained.inc(texts),
        )
        meta = detector.metadata
        self.model_info: dict[str, Any] = {"model": meta.name, "variant": meta.precision, "threshold": meta.threshold}
        policy = detector.policy
        fpr = policy.false_positive_rate
        self.decision: dict[str, Any] = {
            "threshold": policy.threshold,
            "human_threshold": policy.human_threshold,
            "false_positive_rate": fpr if math.isfinite(fpr) else None,
            "min_tokens": policy.min_tokens,
        }
        self.ready = False
        self.not_ready_reason = "warming up"
        self._warmup: asyncio.Task[None] | None = None

    def _predict(self, texts: list[str]) -> list[Prediction]:
        predictions = self.detector.predict(texts)
        self.drift.observe(prediction_features(predictions))
        return predictions

    def _explain(self, texts: list[str]) -> list[Explanation]:
        explanations = [self.detector.explain(text) for text in texts]
        self.drift.observe(prediction_features(explanations))
        return explanations

    async def start(self) -> None:
        """Start the batcher and, in the background, the warm-up prediction that makes the service ready."""
        await self.batcher.start()
        await self.explainer.start()
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
        await asyncio.gather(self.batcher.close(), self.explainer.close())

    async def detect(self, body: bytes) -> Response:
        """Answer a ``POST /v1/detect`` body."""
        request = _parse(body, DetectRequest)
        if isinstance(request, Response):
            return request
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
        return _json(answer)

    async def explain(self, body: bytes) -> Response:
        """Answer a ``POST /v1/explain`` body."""
        request = _parse(body, ExplainRequest)
        if isinstance(request, Response):
            return request
        try:
            (explanation,) = await self.explainer.submit([request.text])
        except (QueueFullError, ServiceClosedError) as exc:
            return _error(503, str(exc), headers={"Retry-After": str(self.config.retry_after_s)})
        e = explanation
        answer = {
            **self.model_info,
            **{"label": e.label, "score": e.score, "windows": e.windows, "tokens": e.tokens},
            "decision": self.decision,
            "segments": [
                {"start": s.start, "end": s.end, "label": s.label, "score": s.score, "tokens": s.tokens}
                for s in e.segments
            ],
        }
        return _json(answer)


_Body = TypeVar("_Body", bound=BaseModel)


def _parse(body: bytes, model: type[_Body]) -> _Body | Response:
    """``body`` validated as ``model``, or the 422 answer saying why it is not."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        return _error(422, f"the body is not valid JSON: {exc}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        return _error(422, exc.errors(include_url=False, include_input=False, include_context=False))


def _json(answer: object) -> Response:
    return Response(json.dumps(answer, ensure_ascii=False), media_type="application/json")


_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "Body too large, or too many texts in one request."},
    422: {"model": ErrorOut, "description": "Not valid JSON, or not the expected fields and types."},
    503: {"model": ErrorOut, "description": "The queue is full or the service is shutting down (see Retry-After)."},
}


def _request_body(model: type[BaseModel], max_texts: int | None = None) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads and validates its raw body itself (``max_texts``: the
    most items of its ``texts``, the service's ``max_texts_per_request``)."""
    schema = model.model_json_schema()
    if max_texts is not None:  # DetectRequest's texts, as a property and in its oneOf branch
        schema["properties"]["texts"]["anyOf"][0]["maxItems"] = max_texts
        schema["oneOf"][0]["properties"]["texts"]["maxItems"] = max_texts
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


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

    @app.post(
        DETECT_PATH,
        response_model=DetectResponse,
        responses=_ERRORS,
        summary="Score texts: P(AI) and a label for each",
        openapi_extra=_request_body(DetectRequest, config.max_texts_per_request),
    )
    async def detect(request: Request) -> Response:
        return await service.detect(await request.body())

    @app.post(
        EXPLAIN_PATH,
        response_model=ExplainResponse,
        responses=_ERRORS,
        summary="Score one text and each of its sentence-aligned segments",
        openapi_extra=_request_body(ExplainRequest),
    )
    async def explain(request: Request) -> Response:
        return await service.explain(await request.body())

    @app.get(DRIFT_PATH, response_model=DriftOut, summary="Do the texts seen still look like the validation texts?")
    async def drift() -> Response:
        return _json(service.drift.report().to_dict())

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

    add_page_routes(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.api_key is not None:  # outside the body limit: an unauthorized body is never read
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, open_paths=(*PROBE_PATHS, *PAGE_PATHS))
    if config.cors_origins:  # outside the key check: a browser's preflight carries no key, a 401 needs the headers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, paths=PATHS)
    return app
