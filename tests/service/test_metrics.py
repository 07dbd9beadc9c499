"""The Prometheus exposition written by hand: parsed back line by line and checked against what was recorded."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aidetect_infer.serve.metrics import Counter, Histogram, ServiceMetrics, render

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
    buckets = (0.5, 1.0, 5.0)
    hist = Histogram("h", "a histogram", buckets, ("path",))
    for v in values:
        hist.observe(v, ("/x",))
    got = parse(render([hist]))
    for bound in buckets:
        expected = sum(1 for v in values if v <= bound)
        assert got[key("h_bucket", path="/x", le=f"{bound:g}")] == expected
    assert got[key("h_bucket", path="/x", le="+Inf")] == len(values)
    assert got[key("h_count", path="/x")] == len(values) == hist.count(("/x",))
    assert math.isclose(got[key("h_sum", path="/x")], sum(values), rel_tol=1e-9, abs_tol=1e-9)


def test_counter_labels_are_escaped_and_read_back():
    counter = Counter("c_total", "a counter", ("path",))
    odd = 'a "quoted" \\ path\nwith a newline'
    counter.inc(labels=(odd,))
    counter.inc(2.5, labels=(odd,))
    counter.inc(labels=("/plain",))
    got = parse(render([counter]))
    assert got[key("c_total", path=odd)] == 3.5
    assert got[key("c_total", path="/plain")] == 1
    with pytest.raises(ValueError):
        counter.inc(-1, labels=("/plain",))
    with pytest.raises(ValueError):
        counter.inc(labels=())


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
    assert got[key("aidetect_batch_size_texts_bucket", le="4")] == 1
    assert got[key("aidetect_batch_size_texts_bucket", le="64")] == 2
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
