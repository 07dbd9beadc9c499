"""Invariants over arbitrary input: batching, order, and scores that are always probabilities."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aidetect_infer import Detector

# Pieces the default text strategy rarely produces: emoji, control characters, lone surrogates, zero-width
# and combining characters, CJK, right-to-left text, long runs of one character, whitespace of every kind.
ODD_PIECES = [
    "😀",
    "👩‍👩‍👧",
    "\x00",
    "\x07\x1b[31m",
    "\ud800",
    "\udfff",
    "\ud83d",
    "\u200b\u200d\ufeff",
    "e\u0301\u0301",
    "日本語のテキスト",
    "مرحبا",
    "a" * 500,
    " \t\n\r\x0b\x0c\u00a0\u3000",
    "",
]
ENCODABLE_PIECES = [p for p in ODD_PIECES if not any(0xD800 <= ord(c) <= 0xDFFF for c in p)]
texts = st.lists(st.one_of(st.text(max_size=60), st.sampled_from(ODD_PIECES)), max_size=6).map("".join)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _assert_probabilities(scores: np.ndarray, n: int) -> None:
    assert scores.dtype == np.float32 and scores.shape == (n,)
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@SETTINGS
@given(batch=st.lists(texts, min_size=1, max_size=7))
def test_batch_equals_single_calls(detector, batch):
    together = detector.predict_proba(batch)
    alone = np.array([detector.predict_proba(text)[0] for text in batch], dtype=np.float32)
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)


@SETTINGS
@given(batch=st.lists(texts, min_size=2, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_permutation_does_not_change_scores(detector, batch, seed):
    order = list(range(len(batch)))
    random.Random(seed).shuffle(order)
    scores = detector.predict_proba(batch)
    shuffled = detector.predict_proba([batch[i] for i in order])
    np.testing.assert_allclose(shuffled, scores[order], atol=1e-6, rtol=0)


@SETTINGS
@given(text=texts)
def test_any_unicode_scores_a_probability(detector, text):
    _assert_probabilities(detector.predict_proba([text]), 1)
    prediction = detector.predict(text)
    assert prediction.label in detector.metadata.labels and prediction.windows >= 1


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_words=st.integers(10_000, 12_000), seed=st.integers(0, 1000), odd=st.sampled_from(ENCODABLE_PIECES))
def test_texts_of_ten_thousand_words(detector, hf_tokenizer, sample_texts, n_words, seed, odd):
    rng = random.Random(seed)
    vocabulary = " ".join(sample_texts).split() + [odd]
    text = " ".join(rng.choice(vocabulary) for _ in range(n_words))
    prediction = detector.predict(text)
    assert np.isfinite(prediction.score) and 0.0 <= prediction.score <= 1.0
    n_tokens = len(hf_tokenizer.encode(text, add_special_tokens=False).ids)
    content, stride = detector.metadata.max_length - 2, detector.metadata.window_stride
    assert prediction.windows == -(-(n_tokens - content) // stride) + 1 > 100


def test_empty_and_whitespace_texts_score_the_framed_empty_sequence(detector, torch_reference):
    """Empty, whitespace-only and normalized-away texts get the score of [CLS] [SEP]: a defined answer."""
    empties = ["", " ", "\n\t  \r\n", "\x00\x07", "\u200b"]
    scores = detector.predict_proba(empties)
    _assert_probabilities(scores, len(empties))
    np.testing.assert_allclose(scores, torch_reference([""])[0], atol=1e-5, rtol=0)
    assert all(p.windows == 1 for p in detector.predict(empties))


def test_lone_surrogates_are_replaced_not_fatal(detector):
    with_surrogate = detector.predict_proba(["abc \ud800 def"])
    replaced = detector.predict_proba(["abc \ufffd def"])
    np.testing.assert_allclose(with_surrogate, replaced, atol=1e-6)
    paired = detector.predict_proba(["smile \ud83d\ude00"])  # a surrogate pair written out: one emoji
    np.testing.assert_allclose(paired, detector.predict_proba(["smile 😀"]), atol=1e-6)


def test_empty_batch_gives_empty_results(detector):
    assert detector.predict([]) == []
    proba = detector.predict_proba([])
    assert proba.shape == (0,) and proba.dtype == np.float32


@pytest.mark.slow
def test_a_ten_megabyte_text_is_scored_in_bounded_memory(tiny_bundle, sample_texts):
    import psutil

    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, batch_size=64)
    text = ("\n".join(sample_texts) * 60)[:10_000_000]
    process = psutil.Process()
    before = process.memory_info().rss
    prediction = detector.predict(text)
    grown_mb = (process.memory_info().rss - before) / 2**20
    assert 0.0 <= prediction.score <= 1.0 and prediction.windows > 10_000
    # 10 MB of text is ~3.5M tokens: ids (28 MB) plus one window batch at a time, not an Encoding of it all.
    assert grown_mb < 250, f"memory grew by {grown_mb:.0f} MiB"
