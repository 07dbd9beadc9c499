"""Load benchmark of the HTTP service: dynamic batching on against off, 64 clients sending single texts.

    python -m benchmarks.load.run                       # 5 s per mode, for development
    python -m benchmarks.load.run --full                # 30 s per mode, the figures to report
    python -m benchmarks.load.run --model models/default --report /tmp/report.md

For each mode, starts ``python -m aidetect_infer serve`` on 127.0.0.1 (a free port), waits for ``/readyz``,
runs ``loadgen.py`` in a second process, reads the batch-size histogram from ``/metrics`` and stops the
server. Then writes a Markdown report (and the raw figures as JSON beside it; the figures on record are in
``benchmarks/load/REPORT.md``). The model is ``--model``, else
``models/default`` when present, else a stand-in of the same size (see :mod:`benchmarks.load.bundle`). Texts
are a fixed sample of ``detectgpt_family`` (about 150 words each); nothing is trained on them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from export.data import REPO_DATA_DIR

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA = REPO_DATA_DIR / "detectgpt_family.jsonl.gz"
DEFAULT_MODEL = REPO / "models" / "default"
STAND_IN = Path(tempfile.gettempdir()) / "aidetect-load-bench" / "stand-in-int8"
MODES = {
    "on": ["--max-batch-texts", "32", "--max-wait-ms", "5"],
    "off": ["--no-batching"],
}
LISTENING = re.compile(r"serving \S+ on http://127\.0\.0\.1:(\d+)")
TEXTS = 512
START_TIMEOUT_S = 300.0


def sample_texts(count: int = TEXTS) -> list[str]:
    """Every ``n``-th text of ``detectgpt_family`` so that ``count`` texts spread over the whole file."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["text"] for line in f]
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_server(
    bundle: Path, flags: list[str], args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the service and wait until it is ready; return the process and its port."""
    command = [sys.executable, "-m", "aidetect_infer", "serve", "--model", str(bundle), "--port", "0"]
    command += ["--provider", args.provider, "--threads", str(args.threads), *flags]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    port = None
    while time.monotonic() < deadline and process.poll() is None:
        if port is None:
            match = LISTENING.search(log.read_text(errors="replace"))
            port = int(match.group(1)) if match else None
        if port is not None:
            try:
                if _get(port, "/readyz")[0] == 200:
                    return process, port
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not become ready:\n{log.read_text(errors='replace')}")


def batch_sizes(port: int) -> tuple[float, float]:
    """Batches run and texts scored so far, from ``/metrics``."""
    text = _get(port, "/metrics")[1].decode()
    count = re.search(r"^aidetect_batch_size_texts_count (\S+)$", text, re.M)
    total = re.search(r"^aidetect_batch_size_texts_sum (\S+)$", text, re.M)
    return (float(count.group(1)) if count else 0.0), (float(total.group(1)) if total else 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used, all its threads together."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_mode(name: str, bundle: Path, texts_file: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One mode: server up, load, figures, server down."""
    process, port = start_server(bundle, MODES[name], args, work / f"server-{name}.log")
    try:
        batches_before, texts_before = batch_sizes(port)
        cpu_before = cpu_seconds(process.pid)
        load = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--texts", str(texts_file)]
        load += ["--clients", str(args.clients), "--duration", str(args.duration), "--warmup", str(args.warmup)]
        done = subprocess.run(load, capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed: {done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout)
        server_cpu = cpu_seconds(process.pid) - cpu_before
        batches_after, texts_after = batch_sizes(port)
        batches, scored = batches_after - batches_before, texts_after - texts_before
        result["mean_batch_texts"] = round(scored / batches, 2) if batches else None
        # Load-independent: what one text costs the server in CPU time (HTTP, JSON, tokenizing, inference),
        # over the whole run including warm-up, so with every text scored in it.
        result["server_cpu_ms_per_text"] = round(1000 * server_cpu / scored, 3) if scored else None
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    result["mode"] = name
    result["server_flags"] = MODES[name]
    return result


def _bundle_facts(bundle: Path) -> dict[str, Any]:
    meta = json.loads((bundle / "aidetect.json").read_text())
    return {
        "path": str(bundle),
        "name": meta["name"],
        "precision": meta["variant"]["precision"],
        "max_length": meta["max_length"],
        "parameters": meta["architecture"].get("parameters"),
    }


def write_report(path: Path, results: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    """The Markdown report and, beside it, the same figures as JSON."""
    by_mode = {r["mode"]: r for r in results}
    lines = [
        "# Load benchmark: the HTTP service, dynamic batching on and off",
        "",
        "Written by `python -m benchmarks.load.run`. "
        f"{facts['clients']} concurrent keep-alive clients on loopback, each sending one text per request "
        f'(`POST /v1/detect {{"text": ...}}`) back to back, for {facts["duration_s"]} s per mode after a '
        f"{facts['warmup_s']} s warm-up; the load generator is a separate process.",
        "",
        f"- Model: `{facts['model']['name']}` ({facts['model']['precision']}, max_length "
        f"{facts['model']['max_length']}, {facts['model']['parameters']:,} parameters)",
        f"- Texts: {facts['texts']} texts from detectgpt_family, mean {facts['mean_words']:.0f} words",
        f"- Machine: {facts['machine']}; provider {facts['provider']}, ONNX Runtime threads {facts['threads']}, "
        "one inference worker",
        f"- Load average (1 min) before / after: {facts['load_before']:.1f} / {facts['load_after']:.1f}",
        "",
        "| batching | texts/s | p50 ms | p90 ms | p99 ms | max ms | texts per batch | server CPU ms / text | non-200 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lat = r["latency_ms"]
        errors = sum(v for k, v in r["statuses"].items() if k != "200") + sum(r["failures"].values())
        lines.append(
            f"| {r['mode']} (`{' '.join(r['server_flags'])}`) | {r['texts_per_s']:.1f} | {lat['p50']:.0f} | "
            f"{lat['p90']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f} | {r['mean_batch_texts']} | "
            f"{r['server_cpu_ms_per_text']} | {errors} |"
        )
    if "on" in by_mode and "off" in by_mode and by_mode["off"]["texts_per_s"] > 0:
        on, off = by_mode["on"], by_mode["off"]
        ratio = on["texts_per_s"] / off["texts_per_s"]
        p99_ok = on["latency_ms"]["p99"] <= off["latency_ms"]["p99"]
        met = ratio >= 3.0 and p99_ok
        lines += [
            "",
            f"Batching on / off: **{ratio:.2f}x** the texts/s, p99 {on['latency_ms']['p99']:.0f} ms against "
            f"{off['latency_ms']['p99']:.0f} ms. Target (>= 3x at no worse p99): **{'met' if met else 'not met'}**.",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps({"facts": facts, "results": results}, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle (default: models/default, else a same-size stand-in)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per mode (default 5)")
    parser.add_argument("--full", action="store_true", help="30 s per mode (overrides --duration)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads")
    parser.add_argument("--provider", default="cpu", choices=("cpu", "cuda", "tensorrt"), help="the server's provider")
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["on", "off"])
    parser.add_argument(
        "--report", type=Path, default=STAND_IN.parent / "report.md", help="Markdown report (and .json beside it)"
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.full:
        args.duration = 30.0
    bundle = args.model or (DEFAULT_MODEL if (DEFAULT_MODEL / "aidetect.json").is_file() else None)
    if bundle is None:
        from benchmarks.load.bundle import build_stand_in

        print(f"no --model and no models/default: using the same-size stand-in at {STAND_IN}", file=sys.stderr)
        bundle = build_stand_in(STAND_IN)
    texts = sample_texts()
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="aidetect-load-") as tmp:
        work = Path(tmp)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        for mode in args.modes:
            print(f"batching {mode}: {args.duration:g} s of load ...", file=sys.stderr)
            results.append(run_mode(mode, bundle, texts_file, args, work))
            r = results[-1]
            print(f"  {r['texts_per_s']} texts/s, latency ms {r['latency_ms']}", file=sys.stderr)
    facts = {
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "threads": args.threads,
        "provider": args.provider,
        "model": _bundle_facts(bundle),
        "texts": len(texts),
        "mean_words": sum(len(t.split()) for t in texts) / len(texts),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    write_report(args.report, results, facts)
    print(args.report.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
