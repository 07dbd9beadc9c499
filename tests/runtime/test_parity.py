"""Detector probabilities against the PyTorch model: single texts, batches, mixed lengths, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aidetect_infer import Detector, Prediction
from aidetect_infer.session import GraphSpec, run_logits

TOL = 1e-5


def _one_window_texts(texts: list[str], hf_tokenizer, limit: int = 126) -> list[str]:
    """Texts cut to whole words so that each fits one window of ``limit`` content tokens."""
    out = []
    for text in texts:
        words = text.split()
        while len(hf_tokenizer.encode(" ".join(words), add_special_tokens=False).ids) > limit:
            words = words[: max(1, len(words) * 3 // 4)]
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="module")
def short_texts(sample_texts, hf_tokenizer) -> list[str]:
    return _one_window_texts(sample_texts[:40], hf_tokenizer)


def test_single_texts_match_pytorch(detector, torch_reference, short_texts):
    for text in short_texts[:8]:
        got = detector.predict(text)
        assert isinstance(got, Prediction)
        assert got.windows == 1
        assert abs(got.score - torch_reference([text])[0]) < TOL


def test_batches_match_pytorch(detector, torch_reference, short_texts):
    got = detector.predict_proba(short_texts)
    assert got.dtype == np.float32 and got.shape == (len(short_texts),)
    np.testing.assert_allclose(got, torch_reference(short_texts), atol=TOL, rtol=0)


def test_mixed_lengths_in_one_batch_match_pytorch(detector, torch_reference, sample_texts, hf_tokenizer):
    # 1 to ~126 tokens in one call: every batch pads rows of different lengths.
    words = " ".join(sample_texts[:5]).split()
    texts = _one_window_texts([" ".join(words[:n]) for n in (90, 1, 30, 7, 60, 2, 45, 15, 75, 3)], hf_tokenizer)
    lengths = [len(hf_tokenizer.encode(t).ids) for t in texts]
    assert max(lengths) > 100 and min(lengths) < 10
    np.testing.assert_allclose(detector.predict_proba(texts), torch_reference(texts), atol=TOL, rtol=0)


def test_bert_graph_with_token_type_ids_matches_pytorch(bert_detector, tiny_bert_model, torch_reference, short_texts):
    assert "token_type_ids" in bert_detector._graph.inputs
    texts = short_texts[:12]
    expected = torch_reference(texts, model=tiny_bert_model)
    np.testing.assert_allclose(bert_detector.predict_proba(texts), expected, atol=TOL, rtol=0)


def test_distilbert_graph_has_no_token_type_ids(detector):
    assert detector._graph.inputs == ("input_ids", "attention_mask")


def test_labels_follow_threshold(detector, short_texts):
    for prediction in detector.predict(short_texts):
        expected = "ai" if prediction.score >= prediction.threshold else "human"
        assert prediction.label == expected
        assert prediction.threshold == detector.metadata.threshold


def _reference_windows(n: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Window spans written out from the bundle-format text, independently of the runtime's code."""
    if n <= length:
        return [(0, n)]
    spans, start = [], 0
    while True:
        spans.append((start, start + length))
        if start + length >= n:
            return spans
        start = min(start + stride, n - length)


def _reference_long_score(text, hf_tokenizer, model, max_length: int, stride: int, run) -> tuple[float, int]:
    content = hf_tokenizer.encode(text, add_special_tokens=False).ids
    cls_id, sep_id = hf_tokenizer.token_to_id("[CLS]"), hf_tokenizer.token_to_id("[SEP]")
    spans = _reference_windows(len(content), max_length - 2, stride)
    probs = [run(model, [cls_id, *content[a:b], sep_id]) for a, b in spans]
    weights = [b - a for a, b in spans]
    return float(np.average(probs, weights=weights)), len(spans)


def test_long_texts_are_windowed_as_documented(detector, hf_tokenizer, tiny_model, sample_texts, torch_window):
    meta = detector.metadata
    texts = [" ".join(sample_texts[i : i + k]) for i, k in ((0, 3), (10, 1), (20, 6))]
    predictions = detector.predict(texts)
    for text, prediction in zip(texts, predictions, strict=True):
        score, windows = _reference_long_score(
            text, hf_tokenizer, tiny_model, meta.max_length, meta.window_stride, torch_window
        )
        assert prediction.windows == windows > 1
        assert abs(prediction.score - score) < TOL


def test_truncation_scores_only_the_first_window(tiny_bundle, hf_tokenizer, tiny_model, sample_texts, torch_window):
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, truncation=True)
    text = " ".join(sample_texts[:4])
    content = hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert len(content) > 126
    first = [hf_tokenizer.token_to_id("[CLS]"), *content[:126], hf_tokenizer.token_to_id("[SEP]")]
    prediction = detector.predict(text)
    assert prediction.windows == 1
    assert abs(prediction.score - torch_window(tiny_model, first)) < TOL


def test_smaller_max_length_override(tiny_bundle, hf_tokenizer, tiny_model, sample_texts, torch_window):
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, max_length=32)
    meta = detector.metadata
    assert meta.max_length == 32 and 1 <= meta.window_stride <= 30
    text = sample_texts[5]
    score, windows = _reference_long_score(text, hf_tokenizer, tiny_model, 32, meta.window_stride, torch_window)
    prediction = detector.predict(text)
    assert prediction.windows == windows
    assert abs(prediction.score - score) < TOL


def test_io_binding_path_gives_the_same_logits(detector, short_texts):
    """The IOBinding path (used on CUDA) run on the CPU gives the same logits as session.run."""
    encoder = detector._encoder
    ids, mask = encoder.pad_batch(encoder.encode(short_texts[:6]))
    plain = run_logits(detector._session, detector._graph, ids, mask)
    bound_spec = GraphSpec(inputs=detector._graph.inputs, logits_type=detector._graph.logits_type, io_binding=True)
    bound = run_logits(detector._session, bound_spec, ids, mask)
    np.testing.assert_allclose(bound, plain, atol=1e-6, rtol=0)


def test_bundle_paths_accept_str_and_path(tiny_bundle: Path, detector):
    text = "A short text."
    by_str = Detector.from_pretrained(str(tiny_bundle), provider="cpu", threads=1).predict_proba(text)
    np.testing.assert_allclose(by_str, detector.predict_proba(text), atol=1e-6)
