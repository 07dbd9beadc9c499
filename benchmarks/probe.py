"""One engine in a fresh process: cold start (imports, load, first prediction) and peak resident memory.

    python -m benchmarks.probe ENGINE --models DIR [--texts FILE.json] [--batch-size 16] [--max-length 256]

Prints one JSON line and exits at once (``os._exit``), so that the parent's wall-clock time of the process ends
at the first prediction (or at the end of ``--texts``) and not after the interpreter's teardown. Timestamps are
``time.perf_counter()`` values, which on Linux share one monotonic clock across processes, so the parent can
subtract its own spawn time.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402  (after the start timestamp on purpose)
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

FIRST_TEXT = "The committee met on Tuesday to review the budget proposal for the coming year."


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size of this process in MiB (``VmRSS``)."""
    value = _status_mb("VmRSS")
    return float("nan") if value is None else value


def peak_rss_mb() -> float:
    """Peak resident set size of this process image in MiB.

    ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve``, so a
    process spawned by a large parent (a pytest run with PyTorch loaded) would report the parent's peak.
    """
    value = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if value is None else value


def import_engine_libraries(engine: str) -> None:
    """Import what ``engine`` needs, so the import cost is measured on its own."""
    if engine.startswith("aidetect-"):
        import aidetect_infer  # noqa: F401

        if engine.endswith("-openvino"):
            import openvino  # noqa: F401
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        if engine.startswith("optimum-"):
            import optimum.onnxruntime  # noqa: F401


def main(argv: Sequence[str] | None = None) -> dict[str, float | int | str]:
    """Run the measurement and return what is printed."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("engine")
    p.add_argument("--models", required=True, type=Path, help="the built models' cache directory")
    p.add_argument("--texts", type=Path, help="a JSON list of texts to score after the first prediction")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    texts = json.loads(args.texts.read_text(encoding="utf-8")) if args.texts else []

    import_engine_libraries(args.engine)
    imported = time.perf_counter()
    from benchmarks.engines import load_engine
    from benchmarks.models import Models

    engine = load_engine(Models.at(args.models), args.engine, threads=args.threads)
    scorer = engine.scorer(args.batch_size, args.max_length)
    loaded = time.perf_counter()
    rss_loaded = rss_mb()
    first = scorer([FIRST_TEXT])
    predicted = time.perf_counter()
    if not 0.0 <= float(first[0]) <= 1.0:
        raise SystemExit(f"{args.engine}: P(AI) {first[0]} is not a probability")
    if texts:
        scores = scorer(texts)
        if len(scores) != len(texts):
            raise SystemExit(f"{args.engine}: {len(scores)} scores for {len(texts)} texts")
    return {
        "engine": args.engine,
        "started": STARTED,
        "imported": imported,
        "loaded": loaded,
        "first_prediction": predicted,
        "finished": time.perf_counter(),
        "import_s": imported - STARTED,
        "load_s": loaded - imported,
        "first_call_s": predicted - loaded,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
        "texts": len(texts),
    }


if __name__ == "__main__":
    result = main()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
