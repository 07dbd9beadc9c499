"""Throughput of ``aidetect-edge`` against the Python ``Detector``: the same texts, bundle and threads.

Each side loads the bundle once and is timed on scoring alone (no warm-up, batch size 16, texts in the command
line's chunks of 64); with ``--repeat N``
the two sides alternate N times and the fastest run of each counts (the machine may be shared).
Without ``--bundle``, a MiniLM-size bundle (all-MiniLM-L6-v2 converted to DistilBERT, random classifier head,
fp32, max_length 256) is built in a temporary directory first.

Usage: ``python edge/tools/compare_throughput.py [--bundle DIR] [--texts 512] [--threads 2]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "build" / "edge" / "aidetect-edge"
BATCH = 16
# Both command lines score texts in chunks of max(64, 4 * batch size); the Python side does the same, since with a
# dynamically quantized (int8) model a text's score depends on which windows share its batch.
CLI_CHUNK = max(64, 4 * BATCH)
TIMING = re.compile(r"scored (\d+) texts in ([0-9.]+) s \(\d+ threads, ([0-9.]+) s CPU\)")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # aidetect_infer and export, when run from a checkout

from export.data import REPO_DATA_DIR  # noqa: E402

DATA = REPO_DATA_DIR / "detectgpt_family.jsonl.gz"


def read_texts(n: int) -> list[str]:
    """``n`` texts spread over the data set."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["text"] for line in f]
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def minilm_bundle(out: Path, texts: list[str]) -> Path:
    """A MiniLM-size fp32 bundle with a random classifier head (no trained model needed)."""
    from export.bundle.write import write_bundle
    from export.onnx.export import ExportConfig, export_onnx
    from export.train.convert import load_base, save_checkpoint

    model, tokenizer = load_base("minilm", seed=0)
    checkpoint = out.parent / "checkpoint"
    save_checkpoint(model, tokenizer, checkpoint)
    onnx_path = export_onnx(checkpoint, out.parent / "minilm.onnx", ExportConfig(max_length=256), texts=texts[:32])
    config = model.config
    metadata = {
        "name": "minilm-random-head",
        "labels": ["human", "ai"],
        "max_length": 256,
        "window_stride": 192,
        "threshold": 0.5,
        "variant": {"precision": "fp32", "optimization": None, "quantization": None, "pruning": None},
        "architecture": {"model_type": "distilbert", "layers": config.n_layers, "hidden_size": config.dim},
    }
    return write_bundle(out, onnx_path=onnx_path, tokenizer_path=checkpoint / "tokenizer.json", metadata=metadata)


def time_python(bundle: Path, texts: list[str], threads: int) -> tuple[float, float, np.ndarray]:
    """Wall and process CPU seconds of scoring, and the scores."""
    from aidetect_infer import Detector

    detector = Detector.from_pretrained(bundle, provider="cpu", threads=threads, batch_size=BATCH)
    start, cpu_start = time.perf_counter(), time.process_time()
    parts = [detector.predict_proba(texts[i : i + CLI_CHUNK]) for i in range(0, len(texts), CLI_CHUNK)]
    return time.perf_counter() - start, time.process_time() - cpu_start, np.concatenate(parts)


def time_edge(binary: Path, bundle: Path, texts: list[str], threads: int) -> tuple[float, float, np.ndarray]:
    """Wall and process CPU seconds of scoring (as the binary reports them), and the scores."""
    records = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    done = subprocess.run(
        [
            str(binary),
            "--model",
            str(bundle),
            "--threads",
            str(threads),
            "--batch-size",
            str(BATCH),
            "--jsonl",
            "--json",
            "--digits",
            "12",
            "--timing",
        ],
        input=records.encode("utf-8"),
        capture_output=True,
        check=True,
    )
    match = TIMING.search(done.stderr.decode())
    if match is None:
        raise SystemExit(f"no timing line in: {done.stderr.decode()}")
    scores = np.array([json.loads(line)["score"] for line in done.stdout.decode().splitlines()])
    return float(match.group(2)), float(match.group(3)), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle to score with; built there (MiniLM-size) if absent")
    parser.add_argument("--binary", type=Path, default=BINARY)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two sides N times, keep the fastest")
    args = parser.parse_args(argv)
    texts = read_texts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or Path(tmp) / "bundle"
        if not (bundle / "aidetect.json").is_file():
            minilm_bundle(bundle, texts)
        py_runs, edge_runs = [], []
        for _ in range(args.repeat):
            py_runs.append(time_python(bundle, texts, args.threads))
            edge_runs.append(time_edge(args.binary, bundle, texts, args.threads))
        py_s, py_cpu = min(r[0] for r in py_runs), min(r[1] for r in py_runs)
        edge_s, edge_cpu = min(r[0] for r in edge_runs), min(r[1] for r in edge_runs)
        py_scores, edge_scores = py_runs[0][2], edge_runs[0][2]
    worst = float(np.abs(py_scores.astype(np.float64) - edge_scores).max())
    n = len(texts)
    print(f"{n} texts, {args.threads} threads, bundle {bundle}, best of {args.repeat}")
    print(f"python Detector: {py_s:.2f} s wall ({n / py_s:.1f} texts/s), {py_cpu:.2f} s CPU")
    print(f"aidetect-edge:   {edge_s:.2f} s wall ({n / edge_s:.1f} texts/s), {edge_cpu:.2f} s CPU")
    print(
        f"edge / python throughput: {py_s / edge_s:.2f}x wall, {py_cpu / edge_cpu:.2f}x CPU; "
        f"max |score difference| {worst:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
