"""Metrics in the Prometheus text exposition format (version 0.0.4), written without a client library.

Counters, gauges and histograms with labels, and :class:`ServiceMetrics`, the set the service exports. Updates
take a lock, so they may come from any thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Labels = tuple[str, ...]


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{key}="{_escape(value)}"' for key, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return f"{name}{{{','.join(pairs)}}}" if pairs else name


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _check(self, labels: Labels) -> Labels:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
        return tuple(str(v) for v in labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count, one per label combination."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, labels: Labels = ()) -> None:
        """Add ``amount`` (>= 0) to the series of ``labels``."""
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot decrease (got {amount})")
        key = self._check(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, labels: Labels = ()) -> float:
        """The current count of ``labels`` (0 if never incremented)."""
        with self._lock:
            return self._values.get(self._check(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        return [f"{_series(self.name, self.labelnames, key)} {_number(v)}" for key, v in items]


class Gauge(_Metric):
    """A value read when the metrics are rendered (from ``read``)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self._read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {_number(float(self._read()))}"]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float], labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, value: float, labels: Labels = ()) -> None:
        """Count ``value`` in the series of ``labels``."""
        key = self._check(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, labels: Labels = ()) -> int:
        """How many values were observed for ``labels``."""
        with self._lock:
            return sum(self._counts.get(self._check(labels), ()))

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((key, list(counts), self._sums[key]) for key, counts in self._counts.items())
        lines: list[str] = []
        for key, counts, total in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{_series(self.name + '_bucket', self.labelnames, key, le)} {cumulative}")
            lines.append(f"{_series(self.name + '_sum', self.labelnames, key)} {_number(total)}")
            lines.append(f"{_series(self.name + '_count', self.labelnames, key)} {cumulative}")
        return lines


def render(metrics: Iterable[_Metric]) -> str:
    """The exposition text of ``metrics``."""
    lines: list[str] = []
    for metric in metrics:
        lines += metric.header()
        lines += metric.samples()
    return "\n".join(lines) + "\n"


class ServiceMetrics:
    """What the service exports at ``/metrics``.

    Args:
        queue_depth: Reads the number of texts waiting in the batcher's queue.
        prefix: Prefix of every metric name.
    """

    def __init__(self, queue_depth: Callable[[], float], *, prefix: str = "aidetect") -> None:
        self._in_flight = 0
        self.requests = Counter(
            f"{prefix}_requests_total", "HTTP requests answered, by path and status.", ("path", "status")
        )
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds", "Time to answer an HTTP request.", LATENCY_BUCKETS, ("path",)
        )
        self.batch_size = Histogram(
            f"{prefix}_batch_size_texts", "Texts scored together in one batch.", BATCH_SIZE_BUCKETS
        )
        self.batch_seconds = Histogram(
            f"{prefix}_batch_duration_seconds", "Inference time of one batch.", LATENCY_BUCKETS
        )
        self.texts = Counter(f"{prefix}_texts_scored_total", "Texts scored.")
        self._all: list[_Metric] = [
            self.requests,
            self.latency,
            self.batch_size,
            self.batch_seconds,
            self.texts,
            Gauge(f"{prefix}_queue_depth_texts", "Texts waiting to be taken into a batch.", queue_depth),
            Gauge(f"{prefix}_requests_in_flight", "HTTP requests being answered now.", lambda: self._in_flight),
        ]

    def request_started(self) -> None:
        """Count a request as in flight (call :meth:`request_finished` once it is answered)."""
        self._in_flight += 1

    def request_finished(self, path: str, status: int, seconds: float) -> None:
        """Record an answered request."""
        self._in_flight -= 1
        self.requests.inc(labels=(path, str(status)))
        self.latency.observe(seconds, (path,))

    def batch_done(self, texts: int, seconds: float) -> None:
        """Record a scored batch (the batcher's observer)."""
        self.batch_size.observe(texts)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)

    def render(self) -> str:
        """The exposition text."""
        return render(self._all)
