"""Shared settings and fixtures of the benchmark suite.

A plain ``pytest`` run skips every benchmark here at once (nothing is built or loaded); ``pytest
--benchmark-only`` runs them. ``--bench-quick`` shrinks the corpus and the round counts, for building and
debugging the suite; ``--bench-engines a,b`` runs only some contenders. The saved JSON
(``--benchmark-json``) carries the machine (CPU model, cores, load average, library versions) for
``python -m benchmarks.report``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aidetect_infer.openvino_backend import installed as openvino_backend_installed
from benchmarks.engines import ENGINES, THREADS, Engine, load_engine
from benchmarks.models import CACHE_DIR, ON_OPENVINO, PEERS, Models, peer_installed, versions

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORPUS_QUICK = 32


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aidetect benchmarks")
    group.addoption("--bench-quick", action="store_true", help="small corpus and few rounds (debugging the suite)")
    group.addoption("--bench-engines", default="", help="comma-separated contenders to run (default: all)")
    group.addoption("--bench-models", default="", help="use this built model directory as it is (no rebuild)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("benchmark_only", False):
        return
    skip = pytest.mark.skip(reason="a benchmark: run with pytest --benchmark-only")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()) and HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx")))


_LOAD_AT_START: list[float] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    # pytest-benchmark gathers its machine information when the run ends; the load before it is taken here.
    _LOAD_AT_START[:] = os.getloadavg()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["aidetect"] = {
        "cpu_model": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "threads": THREADS,
        "load_average_start": list(_LOAD_AT_START) or list(os.getloadavg()),
        "versions": versions(),
        "quick": bool(config.getoption("bench_quick", False)),
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    output_json.setdefault("machine_info", {}).setdefault("aidetect", {})["load_average_end"] = list(os.getloadavg())


@dataclass(frozen=True)
class Settings:
    """How big a run is.

    Attributes:
        quick: Debug mode: a small corpus, one round where the full run has several.
        engines: The contenders to run.
    """

    quick: bool
    engines: frozenset[str]

    def budget(self, seconds: float) -> float:
        """A per-benchmark time budget (a tenth of it in quick mode)."""
        return seconds / 10 if self.quick else seconds

    def rounds(self, estimate_s: float, budget_s: float, *, least: int, most: int) -> int:
        """Rounds that fit ``budget_s`` when one takes ``estimate_s``, within ``[least, most]``."""
        fit = int(self.budget(budget_s) / max(estimate_s, 1e-6))
        return max(least if not self.quick else 1, min(most, fit))


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    wanted = [e.strip() for e in str(pytestconfig.getoption("bench_engines") or "").split(",") if e.strip()]
    unknown = sorted(set(wanted) - set(ENGINES))
    if unknown:
        raise pytest.UsageError(f"--bench-engines: unknown {unknown}; choose from {list(ENGINES)}")
    return Settings(quick=bool(pytestconfig.getoption("bench_quick")), engines=frozenset(wanted or ENGINES))


@pytest.fixture(scope="session")
def corpus(settings: Settings) -> list[str]:
    """The fixed corpus of 512 held-out texts (its first 32 in quick mode)."""
    from benchmarks.corpus import CorpusUnavailableError, load_corpus

    try:
        texts = load_corpus(CACHE_DIR)
    except CorpusUnavailableError as exc:
        pytest.skip(str(exc))
    return texts[:CORPUS_QUICK] if settings.quick else texts


@pytest.fixture(scope="session")
def models(pytestconfig: pytest.Config) -> Models:
    """Every contender's model, built into the cache on first use (or the ``--bench-models`` directory)."""
    from benchmarks.corpus import CorpusUnavailableError, load_corpus
    from benchmarks.models import build_models, is_built

    pinned = str(pytestconfig.getoption("bench_models") or "")
    if pinned:
        if not is_built(Path(pinned)):
            raise pytest.UsageError(f"--bench-models {pinned}: not a complete model build")
        return Models.at(Path(pinned))
    try:
        parity_texts = load_corpus(CACHE_DIR)[:64]
    except CorpusUnavailableError as exc:
        pytest.skip(str(exc))
    return build_models(parity_texts)


@pytest.fixture(scope="session")
def require(models: Models, settings: Settings) -> Callable[[str], None]:
    """``require(name)``: skip the test when the contender is not selected or its model is absent."""

    def check(name: str) -> None:
        if name not in settings.engines:
            pytest.skip(f"{name} not selected (--bench-engines)")
        if name in ("aidetect-default", "aidetect-default-openvino") and models.default is None:
            pytest.skip(f"{name}: no default bundle yet (models/default or $AIDETECT_MODEL)")
        if name in ON_OPENVINO and not openvino_backend_installed():
            pytest.skip(f"{name}: needs openvino (pip install '.[openvino]')")
        if name in PEERS and not (peer_installed(name) and Path(str(models.files(name))).exists()):
            pytest.skip(f"{name}: needs {', '.join(PEERS[name])} (pip install '.[peers]') before the models are built")

    return check


@pytest.fixture(scope="session")
def engines(models: Models, require: Callable[[str], None]) -> Iterator[Callable[[str], Engine]]:
    """``engines(name)``: the loaded contender (loaded once), or a skip when it is not selected or absent."""
    loaded: dict[str, Engine] = {}

    def get(name: str) -> Engine:
        require(name)
        if name not in loaded:
            loaded[name] = load_engine(models, name, threads=THREADS)
        return loaded[name]

    yield get
    loaded.clear()


@pytest.fixture(scope="session")
def tokenizer_of(models: Models) -> Callable[[str], Any]:
    """``tokenizer_of(engine)``: the ``tokenizers.Tokenizer`` the engine uses (no truncation, no padding)."""
    from tokenizers import Tokenizer

    cache: dict[Path, Tokenizer] = {}

    def get(engine: str) -> Tokenizer:
        path = models.tokenizer_file(engine)
        if path not in cache:
            cache[path] = Tokenizer.from_file(str(path))
            cache[path].no_padding()
            cache[path].no_truncation()
        return cache[path]

    return get


@pytest.fixture(scope="session")
def token_lengths(tokenizer_of: Callable[[str], Any]) -> Callable[[str, list[str], int], list[int]]:
    """``token_lengths(engine, texts, max_length)``: tokens each text is fed as, special tokens included."""

    def lengths(engine: str, texts: list[str], max_length: int) -> list[int]:
        return [min(len(e.ids), max_length) for e in tokenizer_of(engine).encode_batch(texts)]

    return lengths


class CpuTimed:
    """Wraps a function and records the process CPU seconds (all threads) of each call.

    On a loaded machine wall-clock time stretches with the load; CPU time much less so, which makes
    ``cpu_s`` the figure to compare when the run could not have the machine to itself.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.seconds: list[float] = []

    def __call__(self, *args: Any) -> Any:
        import time

        started = time.process_time()
        try:
            return self.fn(*args)
        finally:
            self.seconds.append(time.process_time() - started)

    def median(self) -> float:
        """The median CPU seconds per call (0.0 before any call)."""
        import statistics

        return statistics.median(self.seconds) if self.seconds else 0.0


def run_probe(models: Models, engine: str, *extra: str) -> dict[str, Any]:
    """Run ``python -m benchmarks.probe`` for ``engine`` and return its JSON plus the spawn time."""
    import json
    import time

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "benchmarks.probe", engine, "--models", str(models.root), *extra]
    spawned = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["spawned"] = spawned
    return result


@pytest.fixture(scope="session")
def probe(models: Models) -> Callable[..., dict[str, Any]]:
    """:func:`run_probe` bound to the built models: ``probe(engine, *args)``."""
    return lambda engine, *extra: run_probe(models, engine, *extra)
