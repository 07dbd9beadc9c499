"""A real two-node Ray cluster on loopback: a head and a worker node, started as separate processes.

Each node gets 3 logical CPUs (2 actors of 1 thread and the read tasks fit; with one CPU per node and an actor
per CPU, Ray Data's read task starves behind the actor pool). Every node advertises 127.0.0.1 only, and the
cluster requires a token (Ray's token authentication, a fresh random token in the environment of the nodes and
of the clients). The fixture stops the cluster (``ray stop``) when the module's tests are done.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]


def _ray_cli() -> list[str]:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if found is None:
        pytest.skip("the ray command line is not installed (pip install -e '.[ray]')")
    return [found]


def _wait_for_nodes(address: str, env: dict[str, str], count: int) -> None:
    probe = (
        "import ray, sys\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "print(sum(1 for n in ray.nodes() if n['Alive']))\n"
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the cluster at {address} did not show {count} nodes")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pytest.importorskip("ray.data")
    ray = _ray_cli()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", RAY_AUTH_MODE="token")
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    temp = tmp_path_factory.mktemp("ray")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "3", "--object-store-memory", str(300 << 20)]
    head = [*ray, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp)]
    try:
        subprocess.run([*head, *common, "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=180)
        subprocess.run(
            [*ray, "start", "--address", address, *common], env=env, check=True, capture_output=True, timeout=180
        )
        _wait_for_nodes(address, env, 2)
        yield Cluster(address=address, env=env)
    finally:
        subprocess.run([*ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
