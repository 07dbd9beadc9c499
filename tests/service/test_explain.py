"""POST /v1/explain over real HTTP: the answer of Detector.explain, the limits and errors of /v1/detect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aidetect_infer import Detector

from .client import metric_values, request

MAX_BODY = 65536


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--max-body-bytes", str(MAX_BODY))


@pytest.fixture(scope="module")
def reference(tiny_bundle) -> Detector:
    return Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)


def explain(port: int, payload: object) -> tuple[int, dict]:
    body = json.dumps(payload).encode("utf-8")
    reply = request(port, "POST", "/v1/explain", body, {"Content-Type": "application/json"})
    return reply.status, reply.json()


@pytest.mark.parametrize("which", ["long", "unicode", "empty", "blank"])
def test_answer_equals_detector_explain(server, reference, sample_texts, which):
    text = {
        "long": " ".join(sample_texts[:6]),
        "unicode": "Naïve café. Ünïcode 🙂 here!\n\nA second paragraph \ud800 with a lone surrogate. 日本語。終わり",
        "empty": "",
        "blank": "  \n ",
    }[which]
    status, answer = explain(server.port, {"text": text})
    assert status == 200, answer
    expected = reference.explain(text)
    assert answer["model"] == reference.metadata.name and answer["threshold"] == reference.threshold
    assert answer["label"] == expected.label and answer["windows"] == expected.windows
    assert answer["score"] == pytest.approx(expected.score, abs=1e-6)
    got = [(s["start"], s["end"], s["label"], s["tokens"]) for s in answer["segments"]]
    assert got == [(s.start, s.end, s.label, s.tokens) for s in expected.segments]
    scores = [s["score"] for s in answer["segments"]]
    np.testing.assert_allclose(scores, [s.score for s in expected.segments], atol=1e-6, rtol=0)
    policy = reference.policy
    assert answer["decision"]["threshold"] == policy.threshold
    assert answer["decision"]["human_threshold"] == policy.human_threshold
    assert answer["decision"]["min_tokens"] == policy.min_tokens


@pytest.mark.parametrize(
    "payload",
    [{}, {"text": 5}, {"text": None}, {"texts": ["a"]}, {"text": "a", "extra": 1}, ["a"]],
    ids=["none", "int", "null", "texts", "unknown-field", "array"],
)
def test_bad_bodies_get_422(server, payload):
    status, answer = explain(server.port, payload)
    assert status == 422 and answer["detail"]


def test_a_body_over_the_limit_gets_413(server):
    status, answer = explain(server.port, {"text": "word " * MAX_BODY})
    assert status == 413 and answer["limit_bytes"] == MAX_BODY


def test_counted_in_metrics_and_described_in_openapi(server):
    before = metric_values(server.port)
    explain(server.port, {"text": "One sentence. And another."})
    after = metric_values(server.port)
    assert after["aidetect_texts_explained_total"] - before.get("aidetect_texts_explained_total", 0) == 1
    assert after['aidetect_requests_total{path="/v1/explain",status="200"}'] >= 1
    schema = request(server.port, "GET", "/openapi.json").json()
    route = schema["paths"]["/v1/explain"]["post"]
    assert route["requestBody"]["content"]["application/json"]["schema"]["required"] == ["text"]
    assert {"200", "413", "422", "503"} <= set(route["responses"])
    response = schema["components"]["schemas"]["ExplainResponse"]
    assert {"label", "score", "segments", "decision"} <= set(response["properties"])
