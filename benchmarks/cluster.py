"""Scoring a corpus locally and on Ray: ``python -m benchmarks.cluster --texts 10000 --out docs/results-ray``.

Every run scores the same JSONL file with the shipped default model through the command line, timed from
start to end of the process (reading, model loading, scoring, writing; a Ray job also connects to the cluster
and starts its actors): the local ``score`` with all cores, then ``score --engine ray`` on a one-node cluster
started here (``ray start --head`` on loopback, logical CPUs = cores + 1) with 1 actor of all the cores' threads
and with one actor per core of one thread. Every Ray output must equal the local one byte for byte. Writes
``OUT.json`` (the figures) and ``OUT.md`` (the table).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("detectgpt_family.jsonl.gz", "l2r_rewrites.jsonl.gz", "outfox_essays.jsonl.gz")
MAX_CHARS = 500  # posts and short answers: about 110 tokens at most
SEED = 0


def corpus(path: Path, count: int) -> int:
    """``count`` texts drawn with a fixed seed from the data sets' rows (ids ``s<k>``); their characters."""
    rows: list[str] = []
    for name in SOURCES:
        with gzip.open(REPO / "data" / name, "rt", encoding="utf-8") as f:
            rows += [json.loads(line)["text"] for line in f]
    texts = random.Random(SEED).sample(rows, count)
    with path.open("w", encoding="utf-8") as f:
        for k, text in enumerate(texts):
            f.write(json.dumps({"id": f"s{k}", "text": text[:MAX_CHARS]}) + "\n")
    return sum(min(len(t), MAX_CHARS) for t in texts)


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(texts: int, work: Path) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    data = work / "texts.jsonl"
    chars = corpus(data, texts)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    score = [sys.executable, "-m", "aidetect_infer", "score", str(data), "--provider", "cpu"]
    results: list[dict[str, Any]] = []
    local = work / "local.jsonl"
    seconds = _timed([*score, "--out", str(local), "--threads", str(cores)], env)
    results.append({"engine": "local score", "actors": 0, "threads_per_actor": cores, "seconds": seconds})
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    address = f"127.0.0.1:{_free_port()}"
    head = [ray, "start", "--head", "--port", address.split(":")[1], "--node-ip-address", "127.0.0.1"]
    head += ["--num-cpus", str(cores + 1), "--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run(head, env=env, check=True, capture_output=True)
    try:
        for actors, threads in ((1, cores), (cores, 1)):
            out = work / f"ray-{actors}.jsonl"
            command = [*score, "--out", str(out), "--engine", "ray", "--address", address]
            seconds = _timed([*command, "--actors", str(actors), "--threads", str(threads)], env)
            if out.read_bytes() != local.read_bytes():
                raise RuntimeError(f"{out} differs from the local output")
            results.append({"engine": "ray", "actors": actors, "threads_per_actor": threads, "seconds": seconds})
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
    base = results[0]["seconds"]
    for r in results:
        r["texts_per_s"] = round(texts / r["seconds"], 2)
        r["overhead_ms_per_text"] = round(1000 * (r["seconds"] - base) / texts, 3)
        r["seconds"] = round(r["seconds"], 2)
    return {
        "texts": texts,
        "mean_chars": round(chars / texts, 1),
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "cluster": f"one Ray node on this machine (head, 127.0.0.1), {cores + 1} logical CPUs",
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['texts']} texts (mean {report['mean_chars']} characters), {report['machine']}; "
        f"cluster: {report['cluster']}. Whole command, start to end; outputs identical byte for byte.",
        "",
        "| engine | actors x threads | seconds | texts/s | overhead per text vs local |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        layout = "-" if r["engine"] == "local score" else f"{r['actors']} x {r['threads_per_actor']}"
        overhead = "-" if r["engine"] == "local score" else f"{r['overhead_ms_per_text']} ms"
        lines.append(f"| {r['engine']} | {layout} | {r['seconds']} | {r['texts_per_s']} | {overhead} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aidetect-cluster-") as work:
        report = run(args.texts, Path(work))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(report))
    print(table(report))


if __name__ == "__main__":
    main()
