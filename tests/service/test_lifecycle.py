"""A full queue, graceful shutdown and start-up errors of the real server process."""

from __future__ import annotations

import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from aidetect_infer import Detector, cli
from aidetect_infer.cli import EXIT_BUNDLE, EXIT_INPUT

from .client import Reply, metric_values, post_json, request

HOLD = ["--max-wait-ms", "3000", "--max-batch-texts", "64"]  # a lone request waits 3 s in the queue


def wait_for_queue(port: int, depth: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while metric_values(port)["aidetect_queue_depth_texts"] != depth:
        assert time.monotonic() < deadline, f"the queue never held {depth} texts"
        time.sleep(0.02)


def in_background(call, *args) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call, *args)
    pool.shutdown(wait=False)
    return future


def test_a_full_queue_answers_503_with_retry_after(start_server):
    server = start_server(*HOLD, "--max-queue", "4", "--max-texts-per-request", "4")
    held = in_background(post_json, server.port, {"texts": ["a", "b", "c", "d"]})
    wait_for_queue(server.port, 4)
    refused = post_json(server.port, {"text": "one more"})
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert "queue is full" in refused.json()["detail"]
    assert held.result(timeout=60).status == 200  # the queued request is still answered
    counts = metric_values(server.port)
    assert counts['aidetect_requests_total{path="/v1/detect",status="503"}'] == 1


def test_sigterm_lets_in_flight_requests_finish(start_server, tiny_bundle):
    server = start_server(*HOLD, "--verbose")
    text = "A request that is still queued when the server is told to stop."
    in_flight: Future[Reply] = in_background(post_json, server.port, {"text": text})
    wait_for_queue(server.port, 1)
    stopping = threading.Thread(target=server.terminate)
    stopping.start()
    reply = in_flight.result(timeout=60)
    stopping.join(timeout=60)
    assert reply.status == 200
    expected = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1).predict(text).score
    np.testing.assert_allclose(reply.json()["predictions"][0]["score"], expected, atol=1e-6)
    # uvicorn (0.29 and later) re-raises the signal once it has shut down, so the exit shows it
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "batcher stopped" in server.output()  # the shutdown ran to its end
    with pytest.raises(ConnectionError):
        request(server.port, "GET", "/healthz", timeout=5)


def test_start_up_errors_exit_with_the_cli_codes(serve_deps, tiny_bundle, tmp_path, capsys):
    assert cli.main(["serve", "--model", str(tmp_path / "nothing"), "--port", "0"]) == EXIT_BUNDLE
    assert "nothing" in capsys.readouterr().err
    assert cli.main(["serve", "--model", str(tiny_bundle), "--max-wait-ms", "-1"]) == EXIT_INPUT
    assert "max_wait_ms" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--model", str(tiny_bundle), "--port", str(port)]) == EXIT_INPUT
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
