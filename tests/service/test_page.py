"""The web page's files over HTTP: open without the key, locked down by their headers; cross-origin access only
when configured. (The page in a real browser: test_web_page.py.)"""

from __future__ import annotations

import pytest

from aidetect_infer import cli
from aidetect_infer.errors import ExitCode, InvalidValueError
from aidetect_infer.serve import ServeConfig

from .client import post_json, request

KEY = "page-key"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def keyed(start_server):
    return start_server("--api-key", KEY, "--cors-origin", ORIGIN, "--cors-origin", "http://localhost:3000")


@pytest.mark.parametrize(
    ("path", "media_type"), [("/", "text/html"), ("/page.js", "text/javascript"), ("/page.css", "text/css")]
)
def test_the_page_is_open_and_locked_down(keyed, path, media_type):
    reply = request(keyed.port, "GET", path)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith(media_type)
    assert reply.headers["x-content-type-options"] == "nosniff"
    policy = reply.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "'unsafe-inline'" not in policy


def test_the_page_loads_nothing_from_elsewhere_and_writes_no_html(keyed):
    html = request(keyed.port, "GET", "/").body.decode()
    assert "<script>" not in html and "http://" not in html and "https://" not in html
    assert '<script src="page.js" defer></script>' in html
    script = request(keyed.port, "GET", "/page.js").body.decode()
    assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
    assert "textContent" in script and "X-API-Key" in script and "sessionStorage" in script


def test_the_api_still_needs_the_key(keyed):
    assert post_json(keyed.port, {"text": "x"}).status == 401
    body = b'{"text": "x"}'
    assert request(keyed.port, "POST", "/v1/explain", body, {"Content-Type": "application/json"}).status == 401
    answer = request(keyed.port, "POST", "/v1/explain", body, {"Content-Type": "application/json", "X-API-Key": KEY})
    assert answer.status == 200


def test_cors_only_for_the_configured_origins(keyed, start_server):
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    allowed = request(keyed.port, "OPTIONS", "/v1/explain", headers=preflight)
    assert allowed.status == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    refused = request(keyed.port, "OPTIONS", "/v1/explain", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    unauthorized = post_json(keyed.port, {"text": "x"}, headers={"Origin": ORIGIN})
    assert unauthorized.status == 401 and unauthorized.headers["access-control-allow-origin"] == ORIGIN
    plain = start_server()
    reply = post_json(plain.port, {"text": "x"}, headers={"Origin": ORIGIN})
    assert reply.status == 200 and "access-control-allow-origin" not in reply.headers
    assert "access-control-allow-origin" not in request(plain.port, "OPTIONS", "/v1/detect", headers=preflight).headers


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path", "", "ftp://x"])
def test_bad_origins_are_refused(serve_deps, tiny_bundle, origin):
    with pytest.raises(InvalidValueError):
        ServeConfig(cors_origins=(origin,))
    code = cli.main(["serve", "--model", str(tiny_bundle), "--port", "0", "--cors-origin", origin])
    assert code == ExitCode.INPUT
