"""Tokenization against the tokenizer's own encoding; windows; length-sorted, self-padded batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from aidetect_infer.errors import BundleError, InvalidValueError, ModelFilesMissingError
from aidetect_infer.tokenization import (
    TextEncoder,
    ascii_tokenizer,
    clean_text,
    load_tokenizer,
    split_pieces,
    window_spans,
)

SHIPPED_TOKENIZER = Path(__file__).resolve().parents[2] / "models" / "default" / "tokenizer.json"


@pytest.fixture(scope="module")
def encoder(hf_tokenizer) -> TextEncoder:
    return TextEncoder(hf_tokenizer, max_length=128, window_stride=96)


def test_content_ids_equal_the_tokenizers_own(encoder, hf_tokenizer, sample_texts):
    got = encoder.encode(sample_texts[:50])
    for text, ids in zip(sample_texts[:50], got, strict=True):
        assert ids.dtype == np.int64
        assert ids.tolist() == hf_tokenizer.encode(text, add_special_tokens=False).ids


def test_special_tokens_come_from_the_tokenizer(encoder, hf_tokenizer):
    assert encoder.prefix.tolist() == [hf_tokenizer.token_to_id("[CLS]")]
    assert encoder.suffix.tolist() == [hf_tokenizer.token_to_id("[SEP]")]
    assert encoder.content_length == 126
    assert encoder.pad_id == hf_tokenizer.token_to_id("[PAD]")


def test_framed_rows_equal_the_post_processed_encoding(encoder, hf_tokenizer, sample_texts):
    texts = [t[:200] for t in sample_texts[:10]]
    ids, mask = encoder.pad_batch(encoder.encode(texts))
    for k, text in enumerate(texts):
        expected = hf_tokenizer.encode(text).ids
        assert ids[k, : len(expected)].tolist() == expected
        assert mask[k].tolist() == [1] * len(expected) + [0] * (ids.shape[1] - len(expected))


def test_batches_pad_to_their_own_longest_row(encoder):
    rows = [np.arange(5, 5 + n, dtype=np.int64) for n in (3, 10, 0)]
    ids, mask = encoder.pad_batch(rows)
    assert ids.shape == (3, 12) and ids.dtype == np.int64 and mask.dtype == np.int64
    assert mask.sum(axis=1).tolist() == [5, 12, 2]
    assert (ids[mask == 0] == encoder.pad_id).all()


def test_pad_batch_refuses_bad_rows(encoder):
    with pytest.raises(InvalidValueError):
        encoder.pad_batch([])
    with pytest.raises(InvalidValueError):
        encoder.pad_batch([np.zeros(127, dtype=np.int64)])


def test_tokenizer_truncation_settings_are_ignored(hf_tokenizer, sample_texts):
    truncating = Tokenizer.from_str(hf_tokenizer.to_str())
    truncating.enable_truncation(max_length=8)
    truncating.enable_padding(length=300)
    encoder = TextEncoder(truncating, max_length=128, window_stride=96)
    assert truncating.truncation is not None  # the caller's object is left as it was
    assert (
        encoder.encode([sample_texts[0]])[0].tolist()
        == hf_tokenizer.encode(sample_texts[0], add_special_tokens=False).ids
    )


def test_tokenizer_without_post_processor_falls_back_to_cls_sep(hf_tokenizer):
    bare = Tokenizer.from_str(hf_tokenizer.to_str())
    bare.post_processor = None
    encoder = TextEncoder(bare, max_length=16, window_stride=8)
    assert encoder.prefix.tolist() == [hf_tokenizer.token_to_id("[CLS]")]
    assert encoder.suffix.tolist() == [hf_tokenizer.token_to_id("[SEP]")]


def test_tokenizer_without_any_special_tokens_is_refused():
    from tokenizers import models

    plain = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(BundleError, match="no post-processor"):
        TextEncoder(plain, max_length=16, window_stride=8)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ModelFilesMissingError):
        load_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(BundleError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_huge_texts_are_encoded_in_pieces_with_identical_ids(encoder, hf_tokenizer, sample_texts):
    text = "\n".join(sample_texts) * 2
    assert len(text) > 2 * 100_000
    assert len(split_pieces(text)) > 2
    assert encoder.encode([text])[0].tolist() == hf_tokenizer.encode(text, add_special_tokens=False).ids


@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab \n\t."), max_size=400), size=st.integers(1, 50))
def test_split_pieces_rejoins_and_cuts_before_whitespace(text, size):
    pieces = split_pieces(text, size)
    assert "".join(pieces) == text
    assert all(p[0].isspace() or p[0] == "." for p in pieces[1:])  # "." only where no whitespace is in reach


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3000), length=st.integers(1, 300), data=st.data())
def test_window_spans_cover_the_text(n, length, data):
    stride = data.draw(st.integers(1, length))
    spans = window_spans(n, length, stride)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(0 <= a < b <= n or (a == b == n == 0) for a, b in spans)
    assert all(b - a == min(length, n) for a, b in spans)
    covered = set()
    for a, b in spans:
        covered.update(range(a, b))
    assert covered == set(range(n))
    starts = [a for a, _ in spans]
    assert all(0 < later - earlier <= stride for earlier, later in zip(starts, starts[1:], strict=False))
    assert window_spans(n, length, stride, truncation=True) == [(0, min(n, length))]


def test_clean_text_replaces_only_lone_surrogates():
    assert clean_text("plain ✓") == "plain ✓"
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("\ud83d\ude00") == "😀"


@pytest.fixture(scope="module")
def folding() -> Tokenizer:
    """The shipped tokenizer, which folds look-alike letters with one Replace step per letter (unpadded)."""
    tokenizer = load_tokenizer(SHIPPED_TOKENIZER)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@pytest.fixture(scope="module")
def folding_encoder(folding) -> TextEncoder:
    return TextEncoder(folding, max_length=256, window_stride=192)


@settings(max_examples=150, deadline=None)
@given(
    ascii_texts=st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=300), max_size=6),
    other=st.lists(st.text(alphabet=st.sampled_from("aеоρ Ѕx.\u00e9\u200b,Ａ"), max_size=60), max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_ascii_fast_path_gives_the_full_tokenizers_ids(folding, folding_encoder, ascii_texts, other, order):
    texts = ascii_texts + other
    order.shuffle(texts)
    for group in (texts, texts[:1]):  # a batch of both kinds, and one text alone
        got = folding_encoder.encode(group)
        assert [g.tolist() for g in got] == [folding.encode(t, add_special_tokens=False).ids for t in group]


def test_ascii_tokenizer_drops_only_non_ascii_replaces_behind_ascii_safe_steps(folding, hf_tokenizer):
    fast = ascii_tokenizer(folding)
    assert fast is not None
    steps = json.loads(fast.to_str())["normalizer"]["normalizers"]
    assert [s["type"] for s in steps] == ["BertNormalizer"]
    assert len(json.loads(folding.to_str())["normalizer"]["normalizers"]) > 40  # the shipped one is unchanged
    assert ascii_tokenizer(hf_tokenizer) is None  # nothing to drop

    def with_steps(*steps: dict) -> Tokenizer:
        spec = json.loads(folding.to_str())
        spec["normalizer"] = {"type": "Sequence", "normalizers": list(steps)}
        return Tokenizer.from_str(json.dumps(spec))

    fold = {"type": "Replace", "pattern": {"String": "\u0430"}, "content": "a"}
    assert ascii_tokenizer(with_steps({"type": "Prepend", "prepend": "\u2581"}, fold)) is None
    assert (
        ascii_tokenizer(with_steps({"type": "Replace", "pattern": {"String": "x"}, "content": "\u0430"}, fold)) is None
    )
    # a replacement that writes ASCII keeps ASCII text ASCII, whatever it matches; a step after the last
    # dropped one may do anything: ASCII text reaches it unchanged either way
    assert ascii_tokenizer(with_steps({"type": "Replace", "pattern": {"Regex": "[^a]"}, "content": "b"}, fold))
    assert ascii_tokenizer(with_steps({"type": "Lowercase"}, fold, {"type": "Prepend", "prepend": "\u2581"}))
