"""Fixtures of the service tests: real server processes on the tiny bundle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .client import Server


@pytest.fixture(scope="session")
def serve_deps() -> None:
    """Skip when the ``[serve]`` extra is not installed."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")


@pytest.fixture(scope="session")
def start_server(
    serve_deps, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """``start_server(*args) -> Server`` on the tiny bundle, ready; every server is stopped at the end."""
    servers: list[Server] = []

    def start(*args: str, ready: bool = True, env: dict[str, str] | None = None) -> Server:
        server = Server(tiny_bundle, list(args), tmp_path_factory.mktemp("serve") / "server.log", env)
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()
