"""``python -m benchmarks.report RESULTS.json``: a saved benchmark run as Markdown tables and a PNG chart.

    pytest --benchmark-only --benchmark-json=RESULTS.json && python -m benchmarks.report RESULTS.json

Writes ``RESULTS.md`` and ``RESULTS.png`` beside the JSON (or under ``--out``) and prints the Markdown. Every
figure is derived from the JSON: texts/s = ``extra_info.texts`` / median round time, tokens/s likewise,
achieved GFLOP/s = ``extra_info.flops`` / median time, against the fastest round of the peak benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.models import BASELINE, ENGINES

TARGETS = (
    # (engine, versus, at least): texts/s ratios on the corpus at batch 16
    ("aidetect-int8", BASELINE, 2.0),
    ("aidetect-int8", "optimum-ort-int8", 1.15),
    ("aidetect-default", BASELINE, 3.0),
    ("aidetect-default", "transformers-pytorch-distilbert-base", 8.0),
    # the runtimes users would pick instead, on the same unpruned model (benchmarks.peers)
    ("aidetect-int8", "openvino-int8", 1.1),
    ("aidetect-int8", "ctranslate2-int8", 1.5),
    ("aidetect-default", "openvino-int8", 1.5),
    ("aidetect-default", "ctranslate2-int8", 1.5),
    # the same bundles on provider="openvino" (the library's other CPU backend)
    ("aidetect-int8-openvino", "openvino-int8", 1.1),
    ("aidetect-default-openvino", "openvino-int8", 1.5),
)
LATENCY_TARGET = ("aidetect-default", 128, 0.005)  # batch-1 median under 5 ms at 128 tokens
MAIN_BATCH = 16
MAIN_LATENCY_TOKENS = 128


@dataclass
class Summary:
    """The figures of one run, per engine.

    Attributes:
        throughput: ``{engine: {batch_size: texts/s}}``.
        tokens_per_s: ``{engine: {batch_size: tokens/s}}``.
        per_cpu_s: ``{engine: {batch_size: texts per CPU-second}}`` (all threads' CPU time; steadier than
            texts/s when the machine is shared).
        latency: ``{engine: {tokens: (median s, p95 s)}}``.
        coldstart: ``{engine: seconds from spawn to first prediction (median)}``.
        memory: ``{engine: peak RSS MiB}``.
        disk: ``{engine: bytes on disk}``.
        precision: ``{engine: "fp32" | "int8"}``.
        flops_per_token: ``{engine: useful FLOPs per token on the corpus}``.
        gflops: ``{engine: (useful GFLOP/s, computed GFLOP/s with padding)}`` at batch 16.
        peak: ``{"fp32" | "int8": best GFLOP/s (GOP/s)}``.
        machine: The run's machine description.
    """

    throughput: dict[str, dict[int, float]] = field(default_factory=dict)
    tokens_per_s: dict[str, dict[int, float]] = field(default_factory=dict)
    per_cpu_s: dict[str, dict[int, float]] = field(default_factory=dict)
    latency: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    coldstart: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    disk: dict[str, int] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)
    flops_per_token: dict[str, float] = field(default_factory=dict)
    gflops: dict[str, tuple[float, float]] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def ratio(self, engine: str, versus: str, batch_size: int = MAIN_BATCH, *, cpu: bool = False) -> float | None:
        """Texts/s (or texts per CPU-second) of ``engine`` over ``versus``; ``None`` when either is missing."""
        table = self.per_cpu_s if cpu else self.throughput
        a = table.get(engine, {}).get(batch_size)
        b = table.get(versus, {}).get(batch_size)
        return a / b if a and b else None

    def engines(self) -> list[str]:
        """The engines with any result, in the suite's order."""
        seen = set(self.throughput) | set(self.latency) | set(self.coldstart) | set(self.memory)
        return [e for e in ENGINES if e in seen] + sorted(seen - set(ENGINES))


def summarize(results: Mapping[str, Any]) -> Summary:
    """Derive the figures from a pytest-benchmark JSON document.

    Raises:
        ValueError: The document has no ``benchmarks`` list.
    """
    benches = results.get("benchmarks")
    if not isinstance(benches, list):
        raise ValueError("not a pytest-benchmark JSON file (no 'benchmarks' list)")
    out = Summary(machine=dict(results.get("machine_info", {})))
    out.machine["datetime"] = results.get("datetime", "")
    for bench in benches:
        info, stats = bench.get("extra_info", {}), bench.get("stats", {})
        kind, engine, median = info.get("kind"), info.get("engine"), float(stats.get("median", 0.0))
        if kind == "peak":
            best = info["flops"] / float(stats["min"]) / 1e9
            out.peak[info["precision"]] = max(best, out.peak.get(info["precision"], 0.0))
            continue
        if not engine or median <= 0:
            continue
        if "precision" in info:
            out.precision[engine] = info["precision"]
        if info.get("disk_bytes"):
            out.disk[engine] = int(info["disk_bytes"])
        if kind == "throughput":
            bs = int(info["batch_size"])
            out.throughput.setdefault(engine, {})[bs] = info["texts"] / median
            out.tokens_per_s.setdefault(engine, {})[bs] = info["tokens"] / median
            if info.get("cpu_s"):
                out.per_cpu_s.setdefault(engine, {})[bs] = info["texts"] / float(info["cpu_s"])
            if bs == MAIN_BATCH:
                out.flops_per_token[engine] = info["flops"] / max(info["tokens"], 1)
                out.gflops[engine] = (info["flops"] / median / 1e9, info["padded_flops"] / median / 1e9)
        elif kind == "latency":
            out.latency.setdefault(engine, {})[int(info["tokens"])] = (median, float(info.get("p95_s", median)))
        elif kind == "coldstart":
            out.coldstart[engine] = float(info.get("to_first_prediction_s", median))
        elif kind == "memory":
            out.memory[engine] = float(info["peak_rss_mb"])
    return out


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def _ms(pair: tuple[float, float] | None) -> str:
    return "–" if pair is None else f"{pair[0] * 1e3:.1f} / {pair[1] * 1e3:.1f}"


def machine_lines(s: Summary) -> list[str]:
    """The machine and versions the run was measured on, as Markdown bullet points."""
    info = s.machine.get("aidetect", {})
    cpu = info.get("cpu_model") or s.machine.get("cpu", {}).get("brand_raw", "unknown CPU")
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    lines = [
        f"- CPU: {cpu}, {info.get('cores', '?')} cores ({', '.join(info.get('cpu_flags', [])) or 'flags unknown'})",
        f"- threads per engine: {info.get('threads', '?')}; Python {s.machine.get('python_version', '?')}",
        f"- versions: {versions or 'unknown'}",
        f"- run: {s.machine.get('datetime', '?')}; load average at start {info.get('load_average_start', '?')}, "
        f"at end {info.get('load_average_end', '?')}",
    ]
    if info.get("quick"):
        lines.append("- **quick mode** (`--bench-quick`): small corpus, single rounds; not a measurement to quote")
    return lines


def main_table(s: Summary) -> list[str]:
    """One row per engine: throughput, ratio to the baseline, latency, cold start, memory, size."""
    head = (
        f"| engine | precision | texts/s (batch {MAIN_BATCH}) | vs {BASELINE} | texts/s batch 1 | texts/s batch 64 "
        f"| latency {MAIN_LATENCY_TOKENS} tok p50 / p95 (ms) | cold start (s) | peak RSS (MiB) | size on disk (MB) "
        f"| texts per CPU-s (batch {MAIN_BATCH}) |"
    )
    rows = [head, "| --- | --- |" + " ---: |" * 9]
    for e in s.engines():
        tp = s.throughput.get(e, {})
        ratio = s.ratio(e, BASELINE)
        disk = s.disk.get(e)
        rows.append(
            f"| {e} | {s.precision.get(e, '?')} | {_num(tp.get(MAIN_BATCH))} | {_num(ratio, '{:.2f}x')} "
            f"| {_num(tp.get(1))} | {_num(tp.get(64))} | {_ms(s.latency.get(e, {}).get(MAIN_LATENCY_TOKENS))} "
            f"| {_num(s.coldstart.get(e), '{:.2f}')} | {_num(s.memory.get(e), '{:.0f}')} "
            f"| {_num(disk / 1e6 if disk else None)} | {_num(s.per_cpu_s.get(e, {}).get(MAIN_BATCH), '{:.2f}')} |"
        )
    return rows


def latency_table(s: Summary) -> list[str]:
    """Batch-1 latency p50 / p95 in ms per engine and text length."""
    lengths = sorted({n for per in s.latency.values() for n in per})
    rows = ["| engine | " + " | ".join(f"{n} tokens" for n in lengths) + " |", "| --- |" + " ---: |" * len(lengths)]
    for e in s.engines():
        if e in s.latency:
            rows.append(f"| {e} | " + " | ".join(_ms(s.latency[e].get(n)) for n in lengths) + " |")
    return rows


def roofline_table(s: Summary) -> list[str]:
    """FLOPs per token, achieved GFLOP/s and the share of the measured peak, per engine (batch 16)."""
    peaks = ", ".join(f"{p} {v:.0f} G{'FLOP' if p == 'fp32' else 'OP'}/s" for p, v in sorted(s.peak.items()))
    rows = [
        f"Measured peak ({peaks or 'not measured'}): the best 1024³ product, fp32 through numpy or ONNX Runtime "
        "MatMul, int8 through ONNX Runtime MatMulInteger.",
        "",
        "| engine | precision | GFLOP per token | useful GFLOP/s | computed GFLOP/s (padding incl.) | % of peak |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for e in s.engines():
        if e not in s.gflops:
            continue
        useful, padded = s.gflops[e]
        peak = s.peak.get(s.precision.get(e, "fp32"))
        share = f"{100 * padded / peak:.0f}%" if peak else "–"
        rows.append(
            f"| {e} | {s.precision.get(e, '?')} | {s.flops_per_token[e] / 1e9:.4f} | {useful:.1f} | {padded:.1f} "
            f"| {share} |"
        )
    return rows


def target_lines(s: Summary) -> list[str]:
    """The issue's targets with the measured ratios."""
    rows = ["| target | measured | met | by CPU time |", "| --- | ---: | --- | ---: |"]
    for engine, versus, least in TARGETS:
        r = s.ratio(engine, versus)
        met = "–" if r is None else ("yes" if r >= least else "no")
        by_cpu = _num(s.ratio(engine, versus, cpu=True), "{:.2f}x")
        rows.append(
            f"| {engine} >= {least}x {versus} (texts/s, batch {MAIN_BATCH}) | {_num(r, '{:.2f}x')} | {met} | {by_cpu} |"
        )
    engine, tokens, limit = LATENCY_TARGET
    lat = s.latency.get(engine, {}).get(tokens)
    met = "–" if lat is None else ("yes" if lat[0] < limit else "no")
    value = None if lat is None else lat[0] * 1e3
    rows.append(f"| {engine} batch-1 latency at {tokens} tokens < {limit * 1e3:.0f} ms | {_num(value)} ms | {met} | |")
    return rows


def render(s: Summary, chart: str | None = None) -> str:
    """The whole Markdown report."""
    parts = ["## Benchmark results", "", *machine_lines(s), "", *main_table(s), ""]
    if chart:
        parts += [f"![throughput and latency]({chart})", ""]
    parts += ["### Batch-1 latency, p50 / p95 (ms)", "", *latency_table(s), ""]
    parts += ["### Roofline (batch 16, corpus)", "", *roofline_table(s), ""]
    parts += ["### Targets", "", *target_lines(s), ""]
    return "\n".join(parts)


def plot(s: Summary, path: Path) -> bool:
    """Write the PNG chart (throughput per engine and batch size; latency against length); ``False`` when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    engines = [e for e in s.engines() if e in s.throughput]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    batches = sorted({b for e in engines for b in s.throughput[e]})
    width = 0.8 / max(len(batches), 1)
    for k, b in enumerate(batches):
        values = [s.throughput[e].get(b, 0.0) for e in engines]
        left.barh([i + k * width for i in range(len(engines))], values, height=width, label=f"batch {b}")
    left.set_yticks([i + width * (len(batches) - 1) / 2 for i in range(len(engines))], engines)
    left.invert_yaxis()
    left.set_xlabel("texts/s (higher is better)")
    left.set_title("Throughput on the 512-text corpus")
    left.legend()
    for e in s.engines():
        if e in s.latency:
            lengths = sorted(s.latency[e])
            right.plot(lengths, [s.latency[e][n][0] * 1e3 for n in lengths], marker="o", label=e)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("tokens")
    right.set_ylabel("batch-1 latency, median (ms)")
    right.set_title("Latency against length")
    right.legend(fontsize=8)
    cpu = s.machine.get("aidetect", {}).get("cpu_model", "")
    fig.suptitle(f"{cpu}, {s.machine.get('aidetect', {}).get('threads', '?')} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a --benchmark-json file")
    p.add_argument("--out", type=Path, help="directory for the .md and .png (default: beside the JSON)")
    args = p.parse_args(argv)
    try:
        summary = summarize(json.loads(args.results.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        print(f"error: {args.results}: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out or args.results.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{args.results.stem}.png"
    drew = plot(summary, png)
    if not drew:
        print("matplotlib is not installed: no chart (pip install 'aidetect-infer[dev]')", file=sys.stderr)
    text = render(summary, chart=png.name if drew else None)
    (out_dir / f"{args.results.stem}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
