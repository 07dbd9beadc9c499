"""The API key: refused without it, accepted with it, required to listen beyond loopback."""

from __future__ import annotations

import pytest

from aidetect_infer import cli
from aidetect_infer.cli.serve import is_loopback
from aidetect_infer.errors import ExitCode, InvalidValueError
from aidetect_infer.serve import ServeConfig

from .client import post_json, request

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(start_server):
    return start_server("--api-key", KEY)


def test_requests_without_the_key_get_401_and_the_probes_answer(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY + "x"}, {"Authorization": KEY}):
        refused = post_json(keyed.port, {"text": "some text"}, headers=headers)
        assert refused.status == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "API key" in refused.json()["detail"]
    assert request(keyed.port, "GET", "/metrics").status == 401
    assert request(keyed.port, "GET", "/openapi.json").status == 401
    assert request(keyed.port, "GET", "/healthz").status == 200
    assert request(keyed.port, "GET", "/readyz").status == 200


def test_the_key_in_either_header_is_accepted(keyed):
    bearer = post_json(keyed.port, {"text": "some text"}, headers={"Authorization": f"Bearer {KEY}"})
    header = post_json(keyed.port, {"text": "some text"}, headers={"X-API-Key": KEY})
    assert bearer.status == header.status == 200
    assert bearer.json()["predictions"] == header.json()["predictions"]
    metrics = request(keyed.port, "GET", "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert metrics.status == 200
    assert 'aidetect_requests_total{path="/v1/detect",status="401"}' in metrics.body.decode()


def test_a_refused_body_is_never_read(keyed):
    # a body far over the limit: an unauthorized client gets 401 before the 413 body check reads anything
    refused = request(keyed.port, "POST", "/v1/detect", b"x" * (4 << 20), {"Content-Type": "application/json"})
    assert refused.status == 401


def test_the_key_comes_from_the_environment(start_server):
    server = start_server(env={"AIDETECT_API_KEY": KEY})
    assert post_json(server.port, {"text": "some text"}).status == 401
    assert post_json(server.port, {"text": "some text"}, headers={"X-API-Key": KEY}).status == 200


def test_listening_beyond_loopback_needs_a_key(serve_deps, tiny_bundle, monkeypatch, capsys):
    monkeypatch.delenv("AIDETECT_API_KEY", raising=False)
    for host in ("0.0.0.0", "::"):
        code = cli.main(["serve", "--model", str(tiny_bundle), "--host", host, "--port", "0"])
        assert code == ExitCode.INPUT
        err = capsys.readouterr().err
        assert "--api-key" in err and "AIDETECT_API_KEY" in err
    assert cli.main(["serve", "--model", str(tiny_bundle), "--api-key", " ", "--port", "0"]) == ExitCode.INPUT
    assert "empty" in capsys.readouterr().err


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.168.1.20", "no-such-host.invalid"))


def test_the_config_never_shows_the_key():
    config = ServeConfig(api_key=KEY)
    assert KEY not in repr(config) and "api_key='***'" in repr(config)
    assert "api_key=None" in repr(ServeConfig())
    with pytest.raises(InvalidValueError, match="api_key"):
        ServeConfig(api_key="")
