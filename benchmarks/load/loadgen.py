"""A bounded HTTP load: N concurrent keep-alive clients, each sending one text per request, for T seconds.

    python benchmarks/load/loadgen.py --port 8000 --texts texts.json --clients 64 --duration 30 --warmup 2

Run as its own process (so the load does not share the server's interpreter). Every client holds one
HTTP/1.1 connection and sends ``POST /v1/detect {"text": ...}`` back to back, cycling through the texts. Only
requests that finish inside the measured window (after the warm-up, before the end) are counted; requests
still open at the end are abandoned. The run is bounded by ``--warmup`` + ``--duration``, ``--max-requests``
and, per request, ``--timeout``. Prints one JSON object: counts by status, texts/s,
latency percentiles in milliseconds. Standard library only, and lighter than a general HTTP client, so the
load generator takes little of the CPU it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Tally:
    """What the clients measured inside the window."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    sent: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server will close the connection."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, close = 0, False
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    await reader.readexactly(length)
    return status, close


async def _client(
    index: int, args: argparse.Namespace, bodies: list[bytes], tally: Tally, measure_from: float, stop_at: float
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    k = index
    try:
        while time.monotonic() < stop_at and tally.sent < args.max_requests:
            body = bodies[k % len(bodies)]
            k += args.clients
            head = (
                f"POST /v1/detect HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode("ascii")
            tally.sent += 1
            started = time.monotonic()
            try:
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection(args.host, args.port)
                writer.write(head + body)
                status, close = await asyncio.wait_for(_read_response(reader), args.timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                if measure_from <= time.monotonic() < stop_at:
                    tally.failures[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # no tight loop against a server that is gone
                continue
            finished = time.monotonic()
            if measure_from <= finished < stop_at:
                tally.statuses[status] += 1
                if status == 200:
                    tally.latencies.append(finished - started)
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def run_load(args: argparse.Namespace, texts: list[str]) -> dict[str, object]:
    """Run the load and summarise it."""
    bodies = [json.dumps({"text": t}).encode("utf-8") for t in texts]
    tally = Tally()
    start = time.monotonic()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration
    clients = [
        asyncio.ensure_future(_client(i, args, bodies, tally, measure_from, stop_at)) for i in range(args.clients)
    ]
    await asyncio.wait(clients, timeout=max(0.0, stop_at - time.monotonic()))
    window = max(1e-9, min(time.monotonic(), stop_at) - measure_from)
    for client in clients:
        client.cancel()  # what is still open at the end is not counted
    await asyncio.gather(*clients, return_exceptions=True)
    lat_ms = [x * 1000.0 for x in tally.latencies]
    return {
        "clients": args.clients,
        "duration_s": round(window, 3),
        "warmup_s": args.warmup,
        "ok": tally.statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "failures": dict(tally.failures),
        "texts_per_s": round(tally.statuses.get(200, 0) / window, 2),
        "loadgen_cpu_s": round(time.process_time(), 3),
        "latency_ms": {
            "p50": round(percentile(lat_ms, 0.50), 2),
            "p90": round(percentile(lat_ms, 0.90), 2),
            "p99": round(percentile(lat_ms, 0.99), 2),
            "max": round(max(lat_ms, default=math.nan), 2),
            "mean": round(sum(lat_ms) / len(lat_ms), 2) if lat_ms else math.nan,
        },
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--texts", type=Path, required=True, help="JSON file: a list of strings")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("loadgen: only loopback hosts are allowed", file=sys.stderr)
        return 2
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0:
        print("loadgen: --clients must be >= 1, --duration > 0, --warmup >= 0", file=sys.stderr)
        return 2
    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        print(f"loadgen: {args.texts} must hold a non-empty JSON list of strings", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(run_load(args, texts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
