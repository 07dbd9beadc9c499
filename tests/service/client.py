"""A service process on 127.0.0.1 (on a free port the OS picks) and a small HTTP client on http.client."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
LISTENING = re.compile(r"serving \S+ on http://127\.0\.0\.1:(\d+)")
METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$")


@dataclass
class Reply:
    """A response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    chunked: bool = False,
    timeout: float = 60.0,
) -> Reply:
    """One request on a fresh connection; ``chunked`` sends ``body`` with chunked transfer encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if chunked:
            conn.putrequest(method, path)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            data = body or b""
            try:
                for start in range(0, len(data), 65536):
                    piece = data[start : start + 65536]
                    conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and closed; its answer is still readable
        else:
            conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def post_json(port: int, payload: object, *, timeout: float = 60.0, headers: Mapping[str, str] | None = None) -> Reply:
    """``POST /v1/detect`` with ``payload`` encoded as JSON (and any extra ``headers``)."""
    body = json.dumps(payload).encode("utf-8")
    sent = {"Content-Type": "application/json", **(headers or {})}
    return request(port, "POST", "/v1/detect", body, sent, timeout=timeout)


def metric_values(port: int) -> dict[str, float]:
    """``/metrics`` as ``{"name{labels}": value}``."""
    reply = request(port, "GET", "/metrics")
    assert reply.status == 200
    values: dict[str, float] = {}
    for line in reply.body.decode().splitlines():
        match = METRIC_LINE.match(line)
        if match and not line.startswith("#"):
            values[match.group(1)] = float(match.group(2))
    return values


class Server:
    """``python -m aidetect_infer serve`` in a subprocess; stdout and stderr go to a log file."""

    def __init__(self, bundle: Path, args: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.log = log
        command = [sys.executable, "-m", "aidetect_infer", "serve", "--model", str(bundle), "--port", "0"]
        command += ["--provider", "cpu", "--threads", "1", *args]
        environ = {k: v for k, v in os.environ.items() if k not in ("AIDETECT_MODEL", "AIDETECT_API_KEY")}
        env = {**environ, "OMP_NUM_THREADS": "1", **(env or {})}
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.port = self._wait_for_port()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = LISTENING.search(self.output())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start in {START_TIMEOUT_S} s:\n{self.output()}")

    def wait_ready(self) -> None:
        """Poll ``/readyz`` until it answers 200 (``/healthz`` must answer 200 all along)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if request(self.port, "GET", "/readyz", timeout=5).status == 200:
                    return
            except ConnectionError:
                pass  # the socket is bound before uvicorn accepts on it
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"the server did not become ready:\n{self.output()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
