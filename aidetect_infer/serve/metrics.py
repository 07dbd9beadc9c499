"""The service's Prometheus metrics, kept with ``prometheus_client`` (part of the ``[serve]`` extra).

:class:`ServiceMetrics` is the set the service exports, in a registry of its own, rendered in the text exposition
format (version 0.0.4). Updates may come from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from aidetect_infer.drift import FEATURES, DriftMonitor

# Not prometheus_client.CONTENT_TYPE_LATEST: recent releases set it to version 1.0.0, while what generate_latest()
# writes by default (no UTF-8 names) is still valid 0.0.4, the version the service has always announced.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DRIFT_HELP = {
    "score": "P(AI) of the texts scored, in the bins of the bundle's drift reference.",
    "tokens": "Length in content tokens of the texts scored, in the bins of the bundle's drift reference.",
    "unk_rate": "Unknown-token rate of the texts scored, in the bins of the bundle's drift reference.",
}


class _DriftCollector:
    """The drift monitor's live histograms (``PREFIX_drift_FEATURE``) and, with a reference, the PSI of each."""

    def __init__(self, monitor: DriftMonitor, prefix: str) -> None:
        self.monitor = monitor
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        _, counts, sums = self.monitor.snapshot()
        for name in FEATURES:
            cumulative = np.cumsum(counts[name]).tolist()
            buckets = [(repr(float(e)), c) for e, c in zip(self.monitor.edges[name], cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            yield HistogramMetricFamily(
                f"{self.prefix}_drift_{name}", DRIFT_HELP[name], buckets=buckets, sum_value=sums[name]
            )
        report = self.monitor.report()
        if report.psi:
            psi = GaugeMetricFamily(
                f"{self.prefix}_drift_psi",
                "Population stability index against the bundle's reference.",
                labels=["feature"],
            )
            for name, value in report.psi.items():
                psi.add_metric([name], value)
            yield psi


class ServiceMetrics:
    """What the service exports at ``/metrics``.

    Each instance has its own :class:`~prometheus_client.CollectorRegistry` (``registry``), so several services,
    or tests, in one process neither collide with each other nor touch the global registry.

    Args:
        queue_depth: Reads the number of texts waiting in the batcher's queue (called at every scrape).
        prefix: Prefix of every metric name.
    """

    def __init__(self, queue_depth: Callable[[], float], *, prefix: str = "aidetect") -> None:
        self.registry = CollectorRegistry()
        self._prefix = prefix
        self._in_flight = 0
        self._lock = threading.Lock()
        self.requests = Counter(
            f"{prefix}_requests_total",
            "HTTP requests answered, by path and status.",
            ("path", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time to answer an HTTP request.",
            ("path",),
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            f"{prefix}_batch_size_texts",
            "Texts scored together in one batch.",
            registry=self.registry,
            buckets=BATCH_SIZE_BUCKETS,
        )
        self.batch_seconds = Histogram(
            f"{prefix}_batch_duration_seconds",
            "Inference time of one batch.",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.texts = Counter(f"{prefix}_texts_scored_total", "Texts scored.", registry=self.registry)
        self.explained = Counter(
            f"{prefix}_texts_explained_total", "Texts scored with their segments (/v1/explain).", registry=self.registry
        )
        queue = Gauge(f"{prefix}_queue_depth_texts", "Texts waiting to be taken into a batch.", registry=self.registry)
        queue.set_function(queue_depth)
        in_flight = Gauge(f"{prefix}_requests_in_flight", "HTTP requests being answered now.", registry=self.registry)
        in_flight.set_function(lambda: self._in_flight)

    def add_drift(self, monitor: DriftMonitor) -> None:
        """Export ``monitor``'s histograms (and PSI per feature, when the bundle has a reference)."""
        self.registry.register(_DriftCollector(monitor, self._prefix))

    def request_started(self) -> None:
        """Count a request as in flight (call :meth:`request_finished` once it is answered)."""
        with self._lock:
            self._in_flight += 1

    def request_finished(self, path: str, status: int, seconds: float) -> None:
        """Record an answered request.

        Args:
            path: The ``path`` label (one of the service's paths, or ``other``).
            status: The HTTP status sent.
            seconds: Time taken to answer.
        """
        with self._lock:
            self._in_flight -= 1
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def batch_done(self, texts: int, seconds: float) -> None:
        """Record a scored batch (the batcher's observer).

        Args:
            texts: Texts in the batch.
            seconds: Inference time of the batch.
        """
        self.batch_size.observe(texts)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)

    def render(self) -> str:
        """The exposition text of every metric.

        Returns:
            ``generate_latest`` of this instance's registry, decoded.
        """
        return generate_latest(self.registry).decode()
