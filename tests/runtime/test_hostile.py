"""Hostile text: every unicode category, invisible and control characters, huge texts, huge batches.

Every input gets a finite probability and a label consistent with it (a defined answer), or a typed error;
none crashes. Long texts cost time linear in their length and memory bounded by one batch of windows.
"""

from __future__ import annotations

import random
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aidetect_infer import Detector
from aidetect_infer.bundle import load_bundle
from aidetect_infer.tokenization import TextEncoder, load_tokenizer, split_pieces

CATEGORIES = [
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
    "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn",
]  # fmt: skip
HOSTILE = {
    "nul bytes": "before\x00\x00after\x00",
    "right-to-left marks": "\u200fمرحبا\u200e hello \u202eolleh\u202c \u2067isolate\u2069",
    "zero-width joiners": "👩\u200d👩\u200d👧\u200d👦 a\u200db\u200cc\u2060d\ufeff",
    "combining marks stacked": "Z" + "\u0301\u0316\u0337\u0489" * 200 + "algo",
    "flag tag sequence": "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f",
    "variation selectors": "\u2764\ufe0f \u2764\ufe0e \u845b\U000e0100",
    "noncharacters and private use": "\ufffe\uffff\U0010ffff\ue000\U000f0000",
    "lone and reversed surrogates": "\udc00\ud800 x\ud83d \ude00\ud83d",
    "replacement characters": "\ufffd" * 50,
    "ansi escapes and bells": "\x1b[31mred\x1b[0m\x07\x08\x7f",
    "bare carriage returns": "one\rtwo\rthree\r",
    "unicode separators": "a\u2028b\u2029c\x85d\x1ce\x1ff\x0bg\x0ch",
    "ten thousand newlines": "\n" * 10_000 + "end",
    "ideographic space": "\u3000".join("日本語のテキスト"),
    "fullwidth and math letters": "Ｈｅｌｌｏ 𝐇𝐞𝐥𝐥𝐨 ℍ𝕖𝕝𝕝𝕠",
    "one very long word": "x" * 5_000,
    "whitespace of every kind": " \t\n\r\x0b\x0c\xa0\u1680\u2000\u2001\u2002\u2003\u2009\u200a\u202f\u205f\u3000",
    "empty": "",
}
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MEGABYTE = 1_000_000
TRIED: Counter[str] = Counter()  # hostile inputs tried, by kind, reported when the module ends


@pytest.fixture(scope="module", autouse=True)
def report_inputs_tried(record_testsuite_property) -> Iterator[None]:
    yield
    record_testsuite_property("hostile_inputs_tried", dict(TRIED))
    print(f"\nhostile inputs tried: {sum(TRIED.values())} {dict(TRIED)}")


def _assert_defined(detector: Detector, texts: list[str]) -> None:
    """Finite probabilities, and predictions consistent with them, for every text."""
    TRIED["detector texts"] += len(texts)
    scores = detector.predict_proba(texts)
    assert scores.shape == (len(texts),) and np.all(np.isfinite(scores))
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    for prediction, score in zip(detector.predict(texts), scores, strict=True):
        assert prediction.windows >= 1 and prediction.score == pytest.approx(float(score), abs=1e-6)
        assert prediction.label == detector.metadata.labels[int(prediction.score >= prediction.threshold)]


@pytest.mark.parametrize("category", CATEGORIES)
@SETTINGS
@given(data=st.data())
def test_every_unicode_category(detector, category, data):
    """Texts drawn from one general category, alone and mixed into words, score a probability."""
    chars = st.characters(categories=[category])
    alone = st.text(chars, min_size=1, max_size=40)
    mixed = st.lists(st.one_of(alone, st.sampled_from(["word", " ", "text."])), min_size=1, max_size=8).map("".join)
    texts = data.draw(st.lists(st.one_of(alone, mixed), min_size=1, max_size=6))
    _assert_defined(detector, texts)


def test_named_hostile_strings(detector):
    texts = list(HOSTILE.values())
    _assert_defined(detector, texts)
    _assert_defined(detector, [t * 3 for t in texts])


def test_invisible_only_texts_score_as_empty(detector):
    """Texts the normalizer empties entirely give the empty text's score: a defined answer, not a guess."""
    invisible = ["\x00" * 100, "\u200b\u200c\u200d\ufeff", "\x1b\x07", "\ufffd\ufffd", "\ud800"]
    np.testing.assert_allclose(detector.predict_proba(invisible), detector.predict_proba([""])[0], atol=1e-6)


def _kilobytes(kind: str, size: int) -> str:
    rng = random.Random(size)
    raw = bytes(rng.getrandbits(8) for _ in range(size))
    if kind == "random bytes (replace)":
        return raw.decode("utf-8", errors="replace")
    if kind == "random bytes (surrogateescape)":
        return raw.decode("utf-8", errors="surrogateescape")  # lone surrogates for every invalid byte
    return kind * (size // len(kind.encode("utf-8", "surrogatepass")))


HUGE_KINDS = ["a", " ", "\x00", ".", "日", "😀", "\u200d", "\ud800", "random bytes (replace)"]
HUGE_KINDS += ["random bytes (surrogateescape)"]


@pytest.mark.parametrize("kind", HUGE_KINDS, ids=[k.encode("unicode_escape").decode()[:20] for k in HUGE_KINDS])
def test_64_kilobyte_texts_get_the_tokenizers_window_count(detector, hf_tokenizer, kind):
    text = _kilobytes(kind, 64_000)
    prediction = detector.predict(text)
    TRIED["64 kB texts"] += 1
    assert np.isfinite(prediction.score) and 0.0 <= prediction.score <= 1.0
    cleaned = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")  # lone surrogates -> U+FFFD
    n_tokens = len(hf_tokenizer.encode(cleaned, add_special_tokens=False).ids)
    content, stride = detector.metadata.max_length - 2, detector.metadata.window_stride
    expected = 1 if n_tokens <= content else -(-(n_tokens - content) // stride) + 1
    assert prediction.windows == expected


@pytest.mark.slow
@pytest.mark.parametrize("kind", HUGE_KINDS, ids=[k.encode("unicode_escape").decode()[:20] for k in HUGE_KINDS])
def test_one_megabyte_texts(tiny_bundle, kind):
    import psutil

    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, batch_size=64)
    detector.predict(_kilobytes(kind, MEGABYTE // 5))  # warm up: one encoding piece, one batch of windows
    text = _kilobytes(kind, MEGABYTE)
    process = psutil.Process()
    before = process.memory_info().rss
    prediction = detector.predict(text)
    TRIED["1 MB texts"] += 1
    grown = (process.memory_info().rss - before) / 2**20
    assert np.isfinite(prediction.score) and 0.0 <= prediction.score <= 1.0 and prediction.windows >= 1
    # Up to 1M tokens: their ids (8 MB) on top of what the warm-up used, not a whole-text Encoding: a 1 MB
    # run of CJK or punctuation encoded in one piece grew memory by 160-190 MiB here.
    assert grown < 80, f"memory grew by {grown:.0f} MiB for {kind!r}"


@pytest.mark.slow
def test_one_hundred_thousand_texts_in_one_call(tiny_bundle, sample_texts):
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, batch_size=64)
    rng = random.Random(7)
    words = " ".join(sample_texts).split() + list(HOSTILE.values())[:12]
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(100_000)]
    scores = detector.predict_proba(texts)
    TRIED["texts in one 100,000-text call"] += len(texts)
    assert scores.shape == (100_000,) and np.all(np.isfinite(scores))
    picks = rng.sample(range(100_000), 200)
    np.testing.assert_allclose(scores[picks], detector.predict_proba([texts[i] for i in picks]), atol=1e-6)


class CountingSession:
    """Wraps an ONNX Runtime session and records the shape of every batch it runs."""

    def __init__(self, session) -> None:
        self._session = session
        self.shapes: list[tuple[int, ...]] = []

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def run(self, output_names, feed, *args):
        self.shapes.append(feed["input_ids"].shape)
        return self._session.run(output_names, feed, *args)


def test_long_texts_run_in_bounded_batches_linear_in_length(tiny_bundle, hf_tokenizer, sample_texts):
    """Windows (the work) grow linearly with the text; every ONNX call holds at most one batch of windows."""
    bundle = load_bundle(tiny_bundle)
    session = CountingSession(ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"]))
    tokenizer = load_tokenizer(bundle.tokenizer_path)
    detector = Detector(session=session, tokenizer=tokenizer, metadata=bundle.metadata, batch_size=8)
    base = " ".join(sample_texts)[:50_000]
    windows, times = [], []
    for copies in (1, 4):
        session.shapes.clear()
        start = time.perf_counter()
        prediction = detector.predict(" ".join([base] * copies))
        times.append(time.perf_counter() - start)
        windows.append(prediction.windows)
        assert sum(shape[0] for shape in session.shapes) == prediction.windows
        assert all(rows <= 8 and length <= bundle.metadata.max_length for rows, length in session.shapes)
    assert 3.9 <= windows[1] / windows[0] <= 4.1
    # Linear: 4x the text takes about 4x the time (quadratic would be 16x); generous for a shared machine.
    assert times[1] / times[0] < 9, f"times {times}"


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab.,日\u0301\x00\ufffd \t\n\u3000\u2028\xa0\x0b\x0c\x1c\x1f\x85")),
        max_size=300,
    ),
    size=st.integers(1, 40),
)
def test_text_cut_into_pieces_encodes_like_the_whole(hf_tokenizer, text, size):
    """Cutting a huge text into pieces must not change its tokens, whatever characters sit at the cuts."""
    pieces = split_pieces(text, size)
    TRIED["texts cut into pieces"] += 1
    assert "".join(pieces) == text
    whole = hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert [i for p in pieces for i in hf_tokenizer.encode(p, add_special_tokens=False).ids] == whole


@pytest.mark.parametrize("unit", ["日", ".", "!?", "日本."])
def test_texts_without_whitespace_are_cut_too(hf_tokenizer, unit):
    """A long run of punctuation or CJK (a token per character, no whitespace) is still cut into pieces."""
    text = unit * (5_000 // len(unit))
    pieces = split_pieces(text, 100)
    assert "".join(pieces) == text and max(len(p) for p in pieces) <= 100
    encoder = TextEncoder(hf_tokenizer, max_length=128, window_stride=96)
    assert encoder.encode([text])[0].tolist() == hf_tokenizer.encode(text, add_special_tokens=False).ids


def test_categories_cover_unicode():
    seen = {unicodedata.category(chr(c)) for c in range(0x110000)}
    assert seen == set(CATEGORIES)
