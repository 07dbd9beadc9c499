"""The service's container image (``docker/``): built by ``docker/build.sh``, run as a user would run it.

Slow (a build takes minutes) and in need of a docker daemon: ``.ci/docker.sh`` installs and starts one, builds
the image and runs this module against it (``$AIDETECT_DOCKER_IMAGE``). Without that variable the module builds
an image of its own under a name of its own, and removes it at the end. Every container started here has a
read-only root filesystem and publishes its port on the loopback address only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aidetect_infer import Detector

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IMAGE_ENV = "AIDETECT_DOCKER_IMAGE"
LABEL = "org.opencontainers.image.title=aidetect-infer"
SIZE_GOAL_BYTES = 350_000_000
KEY = "test-key-" + uuid.uuid4().hex
# A lone request waits 3 s in the queue for others to join its batch, long enough to be caught in flight.
HOLD = ["--max-wait-ms", "3000", "--max-batch-texts", "64"]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image under test: ``$AIDETECT_DOCKER_IMAGE``, or one built here and removed afterwards."""
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed (.ci/docker.sh installs docker.io and runs these tests)")
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    if info.returncode != 0:
        pytest.skip(f"no docker daemon answers ({info.stderr.strip()[:200]}); .ci/docker.sh starts one")
    given = os.environ.get(IMAGE_ENV)
    if given:
        yield given
        return
    name = f"aidetect-infer-test-{uuid.uuid4().hex[:8]}"
    built = subprocess.run(
        [str(REPO / "docker" / "build.sh"), "--name", name], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stderr[-4000:]
    tag = built.stdout.strip().splitlines()[-1]
    try:
        yield tag
    finally:
        docker("rmi", tag, f"{name}:latest", check=False)
        docker("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)


@dataclass
class Container:
    id: str
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def state(self) -> dict[str, Any]:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.id).stdout)


def start(image: str, *args: str, key: str | None = KEY) -> Container:
    """A detached container of ``image`` with a read-only root filesystem, port 8000 on a free loopback port."""
    env = ["--env", f"AIDETECT_API_KEY={key}"] if key else []
    run = docker("run", "--detach", "--read-only", "--publish", "127.0.0.1::8000", *env, image, *args)
    cid = run.stdout.strip()
    address = docker("port", cid, "8000/tcp").stdout.split()[0]
    return Container(cid, int(address.rpartition(":")[2]))


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers a test starts, removed after it whatever happened."""
    started: list[Container] = []
    yield started
    for container in started:
        docker("rm", "--force", container.id, check=False)


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[Container]:
    """One container as the image runs by default (plus the API key), healthy."""
    container = start(image)
    try:
        wait_healthy(container)
        yield container
    finally:
        docker("rm", "--force", container.id, check=False)


def wait_healthy(container: Container, timeout: float = 180) -> None:
    """Until docker's HEALTHCHECK (``GET /readyz``) says healthy."""
    deadline = time.monotonic() + timeout
    while (state := container.state())["Health"]["Status"] != "healthy":
        logs = docker("logs", container.id, check=False).stderr[-2000:]
        assert state["Running"], f"the container stopped: {state}\n{logs}"
        assert time.monotonic() < deadline, f"not healthy after {timeout} s: {state['Health']}\n{logs}"
        time.sleep(1)


def wait_ready(container: Container, timeout: float = 180) -> None:
    """Until ``GET /readyz`` answers 200 (sooner than docker's health checks, 10 s apart)."""
    deadline = time.monotonic() + timeout
    while call(container, "GET", "/readyz")[0] != 200:
        assert container.state()["Running"], docker("logs", container.id, check=False).stderr[-2000:]
        assert time.monotonic() < deadline, f"/readyz not 200 after {timeout} s"
        time.sleep(0.2)


def call(
    container: Container, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """``(status, parsed JSON or text)`` of one request; 0 when the connection fails."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(container.url(path), data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def with_key(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def detect(container: Container, texts: list[str]) -> list[dict[str, Any]]:
    status, reply = call(container, "POST", "/v1/detect", {"texts": texts}, with_key())
    assert status == 200, reply
    return reply["predictions"]


def in_background(function: Any, *args: Any) -> Future[Any]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(function, *args)
    pool.shutdown(wait=False)
    return future


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.from_pretrained(provider="cpu", threads=1)  # the default model, as the image holds it


def test_scores_over_http_are_the_detectors(served: Container, detector: Detector, sample_texts: list[str]) -> None:
    texts = [*sample_texts[:24], " ".join(sample_texts[:12]), "Short.", "   "]  # a long one, a short, a blank
    predictions = detect(served, texts)
    expected = detector.predict(texts)
    np.testing.assert_allclose([p["score"] for p in predictions], [e.score for e in expected], rtol=0, atol=1e-5)
    assert [p["label"] for p in predictions] == [e.label for e in expected]
    assert max(p["windows"] for p in predictions) > 1  # the long text was split into windows in the container


def test_the_api_key_is_required_except_on_the_health_probes(served: Container) -> None:
    assert call(served, "POST", "/v1/detect", {"text": "no key"})[0] == 401
    assert call(served, "POST", "/v1/detect", {"text": "wrong key"}, with_key("not-the-key"))[0] == 401
    assert call(served, "GET", "/metrics")[0] == 401
    assert call(served, "POST", "/v1/detect", {"text": "a key"}, {"X-API-Key": KEY})[0] == 200
    assert call(served, "GET", "/healthz")[0] == 200
    status, ready = call(served, "GET", "/readyz")
    assert status == 200 and ready["ready"] is True, ready


def test_the_server_runs_as_a_user_other_than_root_on_a_read_only_root(served: Container) -> None:
    rows = docker("top", served.id, "-o", "uid,pid,args").stdout.splitlines()[1:]  # docker top needs the pid
    server = [row.split(None, 2) for row in rows if "aidetect_infer serve" in row]
    assert server, rows
    assert all(uid != "0" for uid, _, _ in server), server
    assert docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", served.id).stdout.strip() == "true"
    denied = docker("exec", served.id, "sh", "-c", "touch /opt/aidetect/x || touch /tmp/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied


def test_the_image_holds_the_runtime_only_and_is_small(image: str) -> None:
    probe = (
        "import importlib.util as u, shutil, sys; "
        "present = [m for m in ('torch', 'transformers', 'export', 'pip') if u.find_spec(m)]; "
        "present += [c for c in ('gcc', 'cc', 'g++', 'c++', 'clang') if shutil.which(c)]; "
        "import aidetect_infer, fastapi, uvicorn, prometheus_client; "
        "print(' '.join(present) or 'clean')"
    )
    checked = docker("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "python3", image, "-c", probe)
    assert checked.stdout.strip() == "clean", checked.stdout
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"\n{image}: {size / 1e6:.0f} MB")
    assert size < SIZE_GOAL_BYTES, f"{image} is {size / 1e6:.0f} MB, over the {SIZE_GOAL_BYTES / 1e6:.0f} MB goal"


def test_without_a_key_the_image_refuses_to_start(image: str) -> None:
    run = docker("run", "--rm", "--read-only", "--network", "none", image, check=False)
    assert run.returncode == 4, run
    assert "--api-key" in run.stderr and "AIDETECT_API_KEY" in run.stderr, run.stderr


def test_sigterm_lets_the_request_in_flight_finish(image: str, containers: list[Container], detector: Detector) -> None:
    container = start(image, *HOLD)
    containers.append(container)
    wait_ready(container)
    text = "A request that is still waiting in the queue when the container is told to stop."
    in_flight = in_background(detect, container, [text])
    deadline = time.monotonic() + 30
    while "aidetect_queue_depth_texts 1.0" not in str(call(container, "GET", "/metrics", headers=with_key())[1]):
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.05)
    assert not in_flight.done()
    docker("kill", "--signal", "TERM", container.id)
    predictions = in_flight.result(timeout=60)
    assert predictions[0]["score"] == pytest.approx(detector.predict(text).score, abs=1e-5)
    exit_code = int(docker("wait", container.id, timeout=60).stdout)
    # uvicorn exits by itself once drained: 0 as PID 1 (which ignores the re-raised SIGTERM), never 137 (killed)
    assert exit_code in (0, 143), docker("logs", container.id, check=False).stderr[-2000:]
