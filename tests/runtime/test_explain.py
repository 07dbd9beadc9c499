"""Detector.explain: segments that tile any text exactly, each scored as the segment alone; the CLI's --explain."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aidetect_infer import Detector, Explanation, InvalidInputError, InvalidValueError, cli
from aidetect_infer.segments import segment_spans, sentence_spans

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Every code point, lone surrogates included (characters() leaves them out unless asked), with sentence ends,
# line breaks and spaces made common.
ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"]))
PUNCTUATION = st.sampled_from([". ", "! ", "? ", "\u2026 ", '." ', "\u3002", "\n", "\n\n", "\r\n", " ", "\t", "  "])
TEXTS = st.lists(st.one_of(st.text(ANY_CHAR, max_size=12), PUNCTUATION), max_size=60).map("".join)


def word_count(pieces: list[str]) -> list[int]:
    return [len(piece.split()) for piece in pieces]


def assert_tiles(text: str, spans: list[tuple[int, int]]) -> None:
    if not text:
        assert spans == []
        return
    assert spans, "a non-empty text has at least one segment"
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end == start
    assert all(end > start for start, end in spans)
    assert "".join(text[a:b] for a, b in spans) == text


@given(TEXTS, st.integers(1, 12), st.integers(0, 12))
@SETTINGS
def test_spans_tile_any_text(text, min_tokens, extra):
    assert_tiles(text, sentence_spans(text))
    assert_tiles(text, segment_spans(text, word_count, min_tokens=min_tokens, max_tokens=min_tokens + extra))


@given(TEXTS)
@SETTINGS
def test_explain_segments_tile_any_text(detector, text):
    explanation = detector.explain(text)
    assert_tiles(text, [(s.start, s.end) for s in explanation.segments])
    for segment in explanation.segments:
        assert text[segment.start : segment.end] == segment.text


def test_segments_follow_sentences_and_sizes(detector, sample_texts):
    text = " ".join(sample_texts[:8])
    explanation = detector.explain(text)
    sizes = [s.tokens for s in explanation.segments]
    assert len(sizes) > 3
    assert all(s <= 128 for s in sizes), sizes
    assert np.mean(sizes) >= 64, sizes
    sentences = sentence_spans(text)
    for segment in explanation.segments:  # a segment ends at a sentence's end, or inside an over-long sentence
        a, b = next((a, b) for a, b in sentences if a < segment.end <= b)
        assert segment.end == b or detector.predict(text[a:b]).tokens > 128


def test_segment_scores_are_those_of_each_segment_alone(detector, sample_texts):
    text = "\n\n".join(sample_texts[10:16]) + " Naïve café, ünïcode 🙂 \ud800 end."
    explanation = detector.explain(text)
    assert isinstance(explanation, Explanation)
    alone = detector.predict_proba([s.text for s in explanation.segments])
    np.testing.assert_allclose([s.score for s in explanation.segments], alone, atol=1e-5, rtol=0)
    labels = [detector.predict(s.text).label for s in explanation.segments]
    assert [s.label for s in explanation.segments] == labels
    document = detector.predict(text)
    assert explanation.label == document.label and explanation.windows == document.windows
    assert explanation.score == pytest.approx(document.score, abs=1e-6)
    assert explanation.tokens == document.tokens and explanation.threshold == detector.threshold


def test_segment_scores_on_the_shipped_int8_model(default_detector, sample_texts):
    # the batch-dependent bundle: segments scored together must still equal each segment alone
    text = " ".join(sample_texts[20:26])
    explanation = default_detector.explain(text)
    assert len(explanation.segments) > 1
    alone = [default_detector.predict_proba(s.text)[0] for s in explanation.segments]
    np.testing.assert_allclose([s.score for s in explanation.segments], alone, atol=1e-5, rtol=0)


def test_empty_and_whitespace_texts(detector):
    empty = detector.explain("")
    assert empty.segments == () and empty.score == pytest.approx(detector.predict("").score, abs=1e-6)
    blank = detector.explain(" \n\t ")
    assert len(blank.segments) == 1 and (blank.segments[0].start, blank.segments[0].end) == (0, 4)
    assert blank.segments[0].score == pytest.approx(detector.predict(" \n\t ").score, abs=1e-6)


def test_bad_arguments(detector):
    with pytest.raises(InvalidInputError):
        detector.explain(["a list"])  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        detector.explain("text", min_tokens=0)
    with pytest.raises(InvalidValueError):
        detector.explain("text", min_tokens=10, max_tokens=5)


@pytest.fixture(scope="module")
def model_args(tiny_bundle) -> list[str]:
    return ["--model", str(tiny_bundle), "--provider", "cpu", "--threads", "1"]


def test_cli_explain_json(model_args, capsys, detector, sample_texts):
    texts = [" ".join(sample_texts[30:34]), "A short one."]
    assert cli.main([*texts, *model_args, "--explain", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in records] == [0, 1]
    for record, text in zip(records, texts, strict=True):
        expected = detector.explain(text)
        assert record["label"] == expected.label
        assert record["score"] == pytest.approx(expected.score, abs=1e-6)
        got = [(s["start"], s["end"], s["label"]) for s in record["segments"]]
        assert got == [(s.start, s.end, s.label) for s in expected.segments]
        assert [s["score"] for s in record["segments"]] == pytest.approx([s.score for s in expected.segments], abs=1e-6)


def test_cli_explain_text(model_args, capsys, detector, sample_texts):
    text = " ".join(sample_texts[40:44])
    assert cli.main([text, *model_args, "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = detector.explain(text)
    assert lines[0] == f"{expected.label}\t{expected.score:.4f}"
    assert len(lines) == 1 + len(expected.segments)
    for line, segment in zip(lines[1:], expected.segments, strict=True):
        _, span, label, score, preview = line.split("\t")
        assert span == f"{segment.start}-{segment.end}" and label == segment.label
        assert float(score) == pytest.approx(segment.score, abs=1e-4)
        assert preview.rstrip("\u2026") in " ".join(segment.text.split())


@pytest.fixture(scope="module")
def default_detector() -> Detector:
    from aidetect_infer.detector import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model.onnx").is_file():
        pytest.skip(f"no default bundle at {DEFAULT_MODEL_DIR}")
    return Detector.from_pretrained(DEFAULT_MODEL_DIR, provider="cpu", threads=2)


def test_a_paragraph_ends_a_segment_that_holds_half_its_tokens():
    paragraphs = ["One two three four. Five six seven.", "Eight nine ten eleven. Twelve.", "Thirteen fourteen."]
    text = "\n\n".join(paragraphs)
    spans = segment_spans(text, word_count, min_tokens=8, max_tokens=20)
    assert [text[a:b].strip() for a, b in spans] == [paragraphs[0], paragraphs[1] + "\n\n" + paragraphs[2]]
