"""The service's Prometheus exposition: parsed back line by line and checked against what was recorded."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from prometheus_client.utils import floatToGoString  # noqa: E402

from aidetect_infer.serve.metrics import LATENCY_BUCKETS, ServiceMetrics  # noqa: E402

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of an exposition text, keyed by name and label set; checks every line's syntax."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \S+ .+$", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = LABEL.findall(labels or "")
        unescaped = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\") for k, v in pairs}
        samples[(name, frozenset(unescaped.items()))] = float(value)
    return samples


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=60))
def test_histogram_buckets_are_cumulative_counts(values):
    metrics = ServiceMetrics(lambda: 0)
    for v in values:
        metrics.latency.labels("/x").observe(v)
    got = parse(metrics.render())
    name = "aidetect_request_duration_seconds"
    for bound in LATENCY_BUCKETS:
        expected = sum(1 for v in values if v <= bound)
        assert got[key(f"{name}_bucket", path="/x", le=floatToGoString(bound))] == expected
    assert got[key(f"{name}_bucket", path="/x", le="+Inf")] == len(values)
    assert got[key(f"{name}_count", path="/x")] == len(values)
    assert metrics.registry.get_sample_value(f"{name}_count", {"path": "/x"}) == len(values)
    assert math.isclose(got[key(f"{name}_sum", path="/x")], sum(values), rel_tol=1e-9, abs_tol=1e-9)


def test_counter_labels_are_escaped_and_read_back():
    metrics = ServiceMetrics(lambda: 0)
    odd = 'a "quoted" \\ path\nwith a newline'
    metrics.requests.labels(odd, "200").inc()
    metrics.requests.labels(odd, "200").inc(2.5)
    metrics.requests.labels("/plain", "200").inc()
    got = parse(metrics.render())
    assert got[key("aidetect_requests_total", path=odd, status="200")] == 3.5
    assert got[key("aidetect_requests_total", path="/plain", status="200")] == 1
    with pytest.raises(ValueError):
        metrics.requests.labels("/plain", "200").inc(-1)
    with pytest.raises(ValueError):
        metrics.requests.labels("/plain")


def test_services_in_one_process_keep_separate_registries():
    one, two = ServiceMetrics(lambda: 1), ServiceMetrics(lambda: 2)
    one.batch_done(5, 0.01)
    assert parse(one.render())[key("aidetect_texts_scored_total")] == 5
    assert parse(two.render())[key("aidetect_texts_scored_total")] == 0
    assert parse(two.render())[key("aidetect_queue_depth_texts")] == 2


def test_rendered_text_parses_with_the_prometheus_parser():
    metrics = ServiceMetrics(lambda: 0)
    for status, seconds in [(200, 0.003), (200, 0.2), (503, 30.0)]:
        metrics.request_started()
        metrics.request_finished("/v1/detect", status, seconds)
    families = {family.name: family for family in text_string_to_metric_families(metrics.render())}
    requests = families["aidetect_requests"]
    assert requests.type == "counter" and requests.documentation == "HTTP requests answered, by path and status."
    counts = {s.labels["status"]: s.value for s in requests.samples if s.name == "aidetect_requests_total"}
    assert counts == {"200": 2.0, "503": 1.0}
    latency = families["aidetect_request_duration_seconds"]
    assert latency.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in latency.samples if s.labels["path"] == "/v1/detect"}
    assert samples[("aidetect_request_duration_seconds_bucket", "0.005")] == 1
    assert samples[("aidetect_request_duration_seconds_bucket", "0.25")] == 2
    assert samples[("aidetect_request_duration_seconds_bucket", "10.0")] == 2
    assert samples[("aidetect_request_duration_seconds_bucket", "+Inf")] == 3
    assert samples[("aidetect_request_duration_seconds_count", None)] == 3
    assert math.isclose(samples[("aidetect_request_duration_seconds_sum", None)], 30.203)


def test_service_metrics_exports_what_the_issue_names():
    depth = [7]
    metrics = ServiceMetrics(lambda: depth[0])
    metrics.request_started()
    metrics.request_finished("/v1/detect", 200, 0.004)
    metrics.request_started()
    metrics.request_finished("/v1/detect", 503, 0.001)
    metrics.request_started()  # still in flight
    metrics.batch_done(3, 0.002)
    metrics.batch_done(40, 0.02)
    text = metrics.render()
    got = parse(text)
    assert got[key("aidetect_requests_total", path="/v1/detect", status="200")] == 1
    assert got[key("aidetect_requests_total", path="/v1/detect", status="503")] == 1
    assert got[key("aidetect_request_duration_seconds_count", path="/v1/detect")] == 2
    assert got[key("aidetect_batch_size_texts_bucket", le="4.0")] == 1
    assert got[key("aidetect_batch_size_texts_bucket", le="64.0")] == 2
    assert got[key("aidetect_texts_scored_total")] == 43
    assert got[key("aidetect_queue_depth_texts")] == 7
    assert got[key("aidetect_requests_in_flight")] == 1
    for kind, name in [
        ("counter", "aidetect_requests_total"),
        ("histogram", "aidetect_request_duration_seconds"),
        ("histogram", "aidetect_batch_size_texts"),
        ("gauge", "aidetect_queue_depth_texts"),
        ("counter", "aidetect_texts_scored_total"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text
