"""The service over real HTTP on loopback: answers equal ``Detector.predict``, every bad input its 4xx."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aidetect_infer import Detector

from .client import REPO, metric_values, post_json, request

MAX_TEXTS = 8
MAX_BODY = 65536


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(
        "--max-texts-per-request", str(MAX_TEXTS), "--max-body-bytes", str(MAX_BODY),
        "--max-batch-texts", "8", "--max-wait-ms", "50",
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_bundle) -> Detector:
    """The library itself, the answer the service must give."""
    return Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)


def assert_same(answer: dict, texts: list[str], reference: Detector) -> None:
    expected = reference.predict(texts)
    got = answer["predictions"]
    assert len(got) == len(expected)
    np.testing.assert_allclose([p["score"] for p in got], [p.score for p in expected], atol=1e-6, rtol=0)
    assert [p["label"] for p in got] == [p.label for p in expected]
    assert [p["windows"] for p in got] == [p.windows for p in expected]


def test_health_and_readiness_name_the_model(server, reference):
    assert request(server.port, "GET", "/healthz").json() == {"status": "ok"}
    ready = request(server.port, "GET", "/readyz")
    assert ready.status == 200
    meta = reference.metadata
    assert ready.json() == {"ready": True, "model": meta.name, "variant": meta.precision, "threshold": meta.threshold}


def test_scores_equal_detector_predict(server, reference, sample_texts):
    long_text = " ".join(sample_texts[:6])  # several windows at max_length 128
    batches = [sample_texts[0:8], sample_texts[8:16], ["", "   ", long_text, "naïve café, ünïcode 🙂 \ud800 end"]]
    for texts in batches:
        reply = post_json(server.port, {"texts": texts})
        assert reply.status == 200, reply.body
        answer = reply.json()
        assert answer["model"] == reference.metadata.name
        assert answer["variant"] == reference.metadata.precision
        assert answer["threshold"] == reference.threshold
        assert_same(answer, texts, reference)
    assert max(p["windows"] for p in answer["predictions"]) > 1


def test_single_text_form_and_empty_list(server, reference, sample_texts):
    one = post_json(server.port, {"text": sample_texts[3]})
    assert one.status == 200
    assert_same(one.json(), [sample_texts[3]], reference)
    empty = post_json(server.port, {"texts": []})
    assert empty.status == 200 and empty.json()["predictions"] == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"texts": ["unterminated',
        b"\xff\xfe\x00not utf-8",
        b"",
        b"[" * 30_000 + b"]" * 30_000,  # nesting deeper than the parser's recursion limit
        json.dumps({"text": 5}).encode(),
        json.dumps({"texts": "one string"}).encode(),
        json.dumps({"texts": ["fine", 3]}).encode(),
        json.dumps({"texts": [None]}).encode(),
        json.dumps({"texts": ["a"], "text": "b"}).encode(),
        json.dumps({}).encode(),
        json.dumps({"texts": ["a"], "threshold": 0.1}).encode(),
        json.dumps(["a", "b"]).encode(),
        b"1" * 5000,  # an integer longer than Python converts
    ],
    ids=[
        "bad-json", "bad-utf8", "empty-body", "deep-nesting", "text-int", "texts-str", "texts-int-item",
        "texts-null-item", "both", "neither", "unknown-field", "top-level-array", "huge-int",
    ],
)  # fmt: skip
def test_bad_bodies_get_422(server, body):
    reply = request(server.port, "POST", "/v1/detect", body, {"Content-Type": "application/json"})
    assert reply.status == 422, reply.body
    assert reply.json()["detail"]


def test_too_many_texts_get_413_naming_the_limit(server):
    reply = post_json(server.port, {"texts": ["x"] * (MAX_TEXTS + 1)})
    assert reply.status == 413
    assert reply.json()["limit_texts"] == MAX_TEXTS
    assert str(MAX_TEXTS) in reply.json()["detail"]
    assert post_json(server.port, {"texts": ["x"] * MAX_TEXTS}).status == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_413(server, chunked):
    body = json.dumps({"text": "word " * MAX_BODY}).encode()
    reply = request(server.port, "POST", "/v1/detect", body, {"Content-Type": "application/json"}, chunked=chunked)
    assert reply.status == 413
    assert reply.json()["limit_bytes"] == MAX_BODY
    just_under = json.dumps({"text": "w" * (MAX_BODY - 20)}).encode()
    assert len(just_under) <= MAX_BODY
    assert request(server.port, "POST", "/v1/detect", just_under, chunked=chunked).status == 200


def test_concurrent_clients_get_their_own_answers(server, reference, sample_texts):
    clients = 24
    jobs = [sample_texts[40 + 3 * k : 40 + 3 * k + 1 + k % 3] for k in range(clients)]  # 1 to 3 texts each
    before = metric_values(server.port)
    start = threading.Barrier(clients)

    def call(texts: list[str]) -> dict:
        start.wait()
        reply = post_json(server.port, {"texts": texts})
        assert reply.status == 200, reply.body
        return reply.json()

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(call, jobs))
    for texts, answer in zip(jobs, answers, strict=True):
        assert_same(answer, texts, reference)
    after = metric_values(server.port)
    batches = after["aidetect_batch_size_texts_count"] - before["aidetect_batch_size_texts_count"]
    texts_scored = after["aidetect_texts_scored_total"] - before["aidetect_texts_scored_total"]
    assert texts_scored == sum(len(t) for t in jobs)
    assert batches < clients  # some batch held texts of several requests


def test_metrics_count_requests_by_status(server):
    before = metric_values(server.port)
    post_json(server.port, {"texts": ["one", "two"]})
    post_json(server.port, {"text": 1})
    post_json(server.port, {"texts": ["x"] * (MAX_TEXTS + 1)})
    request(server.port, "GET", "/no/such/path")
    reply = request(server.port, "GET", "/metrics")
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = metric_values(server.port)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('aidetect_requests_total{path="/v1/detect",status="200"}') == 1
    assert delta('aidetect_requests_total{path="/v1/detect",status="422"}') == 1
    assert delta('aidetect_requests_total{path="/v1/detect",status="413"}') == 1
    assert delta('aidetect_requests_total{path="other",status="404"}') == 1
    assert delta('aidetect_request_duration_seconds_count{path="/v1/detect"}') == 3
    assert delta("aidetect_texts_scored_total") == 2
    assert after["aidetect_queue_depth_texts"] == 0
    assert not any(key.endswith(',status="500"}') for key in after)


def test_openapi_schema_describes_the_api(server):
    schema = request(server.port, "GET", "/openapi.json").json()
    detect = schema["paths"]["/v1/detect"]["post"]
    body = detect["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"texts", "text"}
    assert {"200", "413", "422", "503"} <= set(detect["responses"])
    response = schema["components"]["schemas"]["DetectResponse"]
    assert {"model", "variant", "threshold", "predictions"} <= set(response["properties"])
    assert {"/healthz", "/readyz", "/metrics"} <= set(schema["paths"])


def test_importing_the_package_loads_no_web_framework(serve_deps):
    probe = (
        "import sys, aidetect_infer, aidetect_infer.cli, aidetect_infer.serve\n"
        "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'pydantic') if m in sys.modules) or 'clean')"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_the_load_generator_measures_a_short_run(server, sample_texts, tmp_path):
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(sample_texts[:20]))
    command = [sys.executable, str(REPO / "benchmarks" / "load" / "loadgen.py"), "--port", str(server.port)]
    command += ["--texts", str(texts), "--clients", "4", "--duration", "1", "--warmup", "0.2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] > 0 and set(result["statuses"]) == {"200"} and not result["failures"]
    assert result["texts_per_s"] == pytest.approx(result["ok"] / result["duration_s"], rel=0.01)
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
