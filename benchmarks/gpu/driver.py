"""Run the GPU benchmark: prepare bundles and texts, check parity against the CPU, time, write the report.

    python benchmarks/gpu/driver.py OUTDIR [--device cuda|cpu] [--model DIR] [--texts FILE] [--checkpoint DIR]

Writes into OUTDIR: ``parity.json``, ``benchmark.json`` (pytest-benchmark's), ``summary.json`` and
``report.md``. ``--device cpu`` is a dry run of the same code paths on a machine without a GPU. Exits 1 when
parity fails or a benchmark case fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gpubench

HERE = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the JSON files and report.md")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", type=Path, default=gpubench.DEFAULT_MODEL, help="bundle or parent of variants")
    parser.add_argument("--texts", type=Path, default=gpubench.DEFAULT_TEXTS, help="JSONL(.gz) with a text field")
    parser.add_argument("--checkpoint", help="HF checkpoint for the PyTorch baseline (default: random weights)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(gpubench.BATCHES))
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case (default 30 on CUDA, 5 on CPU)")
    parser.add_argument("--parity-texts", type=int, default=gpubench.PARITY_TEXTS)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per engine (default: all cores)")
    return parser


def environment(device: str) -> dict[str, Any]:
    """The versions and the card the figures belong to."""
    import onnxruntime as ort

    env: dict[str, Any] = {
        "device": device,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime providers": ort.get_available_providers(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        if device == "cuda" and torch.cuda.is_available():
            env["device_name"] = torch.cuda.get_device_name(0)
            env["torch cuda"] = torch.version.cuda
    except ImportError:
        env["torch"] = "not installed"
    env.setdefault("device_name", platform.processor() or platform.machine())
    return env


def run_benchmarks(config_path: Path, out: Path) -> int:
    """Run ``bench_gpu.py`` under pytest-benchmark in a fresh process; return pytest's exit status."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(HERE / "bench_gpu.py"),
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(HERE),
        "--confcutdir",  # the CPU suite's conftest in benchmarks/ is not for this run
        str(HERE),
        "--benchmark-only",
        "-rs",
        f"--benchmark-json={out / 'benchmark.json'}",
        "--benchmark-save-data",
        "--benchmark-columns=median,mean,min,max,rounds",
    ]
    env = {**os.environ, gpubench.CONFIG_ENV: str(config_path)}
    return subprocess.run(command, cwd=HERE, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    out: Path = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        gpubench.prepare_cuda()
    fp32, fp16 = gpubench.find_variants(args.model.resolve(), work)
    texts = gpubench.load_texts(args.texts, max(args.parity_texts, *args.batches))
    config = gpubench.Config(
        device=args.device,
        fp32=str(fp32),
        fp16=str(fp16),
        texts=texts,
        latency_text=gpubench.text_of_tokens(fp32 / "tokenizer.json", texts, gpubench.LATENCY_TOKENS),
        batches=sorted(args.batches),
        rounds=args.rounds or (30 if args.device == "cuda" else 5),
        checkpoint=args.checkpoint,
        threads=args.threads,
    )
    config_path = config.save(work / "config.json")
    env = environment(args.device)
    print(f"[{time.perf_counter() - started:.0f}s] parity on {args.parity_texts} texts", flush=True)
    parity = gpubench.parity(config, args.parity_texts)
    (out / "parity.json").write_text(json.dumps(parity, indent=2), encoding="utf-8")
    print(json.dumps(parity["variants"], indent=2), flush=True)
    print(f"[{time.perf_counter() - started:.0f}s] benchmarks", flush=True)
    status = run_benchmarks(config_path, out)
    results = out / "benchmark.json"
    summary = gpubench.summarize(json.loads(results.read_text()) if results.is_file() else {})
    env["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(
        json.dumps({"environment": env, "parity": parity, **summary}, indent=2), encoding="utf-8"
    )
    report = gpubench.render_report(env, parity, summary)
    (out / "report.md").write_text(report, encoding="utf-8")
    print(report, flush=True)
    return 0 if parity["passed"] and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
