"""The OpenAPI schema says what the service enforces: schema-valid bodies are accepted, others refused, and
schemathesis (``st run --checks all``) finds nothing against a running server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from .client import post_json, request

MAX_TEXTS = 4
KEY = "schema-test-key"
CONFIG = Path(__file__).with_name("schemathesis.toml")
BODIES = [
    {"text": "one"},
    {"texts": ["a", "b"]},
    {"texts": []},
    {"texts": None, "text": "x"},
    {"texts": ["a"], "text": None},
    {"text": "", "texts": []},  # both: what schemathesis found the schema allowed and the server refused
    {"texts": None, "text": None},
    {},
    {"texts": ["x"] * (MAX_TEXTS + 1)},
    {"text": 1},
    {"texts": [1]},
    {"text": "a", "other": 1},
]


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--api-key", KEY, "--max-texts-per-request", str(MAX_TEXTS))


def detect_schema(port: int) -> dict:
    schema = request(port, "GET", "/openapi.json", headers={"X-API-Key": KEY}).json()
    return schema["paths"]["/v1/detect"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_the_schema_says_exactly_one_of_texts_and_text(server):
    schema = detect_schema(server.port)
    assert [branch["required"] for branch in schema["oneOf"]] == [["texts"], ["text"]]
    assert schema["oneOf"][0]["properties"]["texts"]["maxItems"] == MAX_TEXTS
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("body", BODIES, ids=[json.dumps(b)[:40] for b in BODIES])
def test_a_body_is_accepted_exactly_when_the_schema_allows_it(server, body):
    valid = jsonschema.Draft202012Validator(detect_schema(server.port)).is_valid(body)
    status = post_json(server.port, body, headers={"X-API-Key": KEY}).status
    assert (status == 200) == valid, (status, valid)
    assert status in (200, 413, 422)


@pytest.mark.slow
def test_schemathesis_finds_nothing(server, tmp_path):
    pytest.importorskip("schemathesis", reason="needs schemathesis (the dev extra)")
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"]
    command += [f"http://127.0.0.1:{server.port}/openapi.json", "--checks", "all", "--max-examples", "60"]
    command += ["--seed", "1", "--generation-database", "none", "-H", f"X-API-Key: {KEY}", "--workers", "1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
