"""GET /v1/drift and the live histograms in /metrics, on a server whose bundle records a drift reference."""

from __future__ import annotations

import pytest

from aidetect_infer.drift import DRIFTING, FEATURES, MIN_TEXTS, NO_REFERENCE, NOT_ENOUGH

from .client import Server, metric_values, post_json, request


@pytest.fixture(scope="module")
def start(serve_deps, drift_bundle, tmp_path_factory):
    servers: list[Server] = []

    def begin() -> Server:
        server = Server(drift_bundle, [], tmp_path_factory.mktemp("drift") / "server.log")
        servers.append(server)
        server.wait_ready()
        return server

    yield begin
    for server in servers:
        server.stop()


def send(port: int, texts: list[str]) -> None:
    for begin in range(0, len(texts), 64):
        assert post_json(port, {"texts": texts[begin : begin + 64]}).status == 200


def drift(port: int) -> dict:
    reply = request(port, "GET", "/v1/drift")
    assert reply.status == 200
    return reply.json()


def test_in_distribution_texts_raise_no_alarm(start, drift_texts):
    server = start()
    assert drift(server.port)["status"] == NOT_ENOUGH and drift(server.port)["texts"] == 0  # warm-up not counted
    texts = drift_texts[1]
    send(server.port, texts)
    answer = drift(server.port)
    assert answer["texts"] == len(texts) and answer["status"] != DRIFTING, answer
    assert set(answer["features"]) == set(FEATURES)
    assert all(f["psi"] < 0.1 for f in answer["features"].values()), answer
    values = metric_values(server.port)
    assert values['aidetect_drift_tokens_bucket{le="+Inf"}'] == len(texts)
    assert values["aidetect_drift_score_count"] == len(texts)
    assert values['aidetect_drift_psi{feature="unk_rate"}'] == pytest.approx(answer["features"]["unk_rate"]["psi"])


def test_short_texts_raise_the_alarm(start, drift_texts):
    server = start()
    send(server.port, [" ".join(t.split()[:3]) for t in drift_texts[1][:MIN_TEXTS]])
    answer = drift(server.port)
    assert answer["status"] == DRIFTING and answer["features"]["tokens"]["status"] == DRIFTING, answer
    explained = request(
        server.port, "POST", "/v1/explain", b'{"text": "Two words."}', {"Content-Type": "application/json"}
    )
    assert explained.status == 200 and drift(server.port)["texts"] == MIN_TEXTS + 1


def test_a_bundle_without_reference_says_so(start_server):
    server = start_server()
    assert drift(server.port)["status"] == NO_REFERENCE
    schema = request(server.port, "GET", "/openapi.json").json()
    assert "DriftOut" in schema["components"]["schemas"] and "/v1/drift" in schema["paths"]
