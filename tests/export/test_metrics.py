"""Metrics against direct computations."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from export.evaluate.metrics import binary_metrics, equal_error_threshold, roc_auc, tpr_at_fpr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=2, max_size=60))
def test_roc_auc_equals_pairwise_probability(pairs: list[tuple[int, int]]) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=float) / 20
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        assert np.isnan(roc_auc(y, s))
        return
    expected = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert np.isclose(roc_auc(y, s), expected)


def test_threshold_metrics() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.6, 0.7, 0.8])
    m = binary_metrics(y, s, 0.5)
    assert (m["accuracy"], m["precision"], m["recall"]) == (0.75, 0.75, 0.75)
    assert tpr_at_fpr(y, s, 0.0) == 0.0  # the top score is a human text
    assert tpr_at_fpr(y, s, 0.25) == 1.0
    t = equal_error_threshold(y, s)
    pred = s >= t
    assert np.mean(pred[y == 0]) == np.mean(~pred[y == 1])
