"""Domain-balanced sampling (export.data.mix) and training perturbations (export.data.augment)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.data import augment, mix
from export.data.records import Record


def _records() -> list[Record]:
    recs = []
    # a large set with two domains of very different sizes and a 1:4 human/AI ratio
    for i in range(400):
        recs.append(Record(text=f"big a {i}", label=int(i % 5 != 0), group=f"a{i}", domain="a", dataset="big"))
    for i in range(50):
        recs.append(Record(text=f"big b {i}", label=int(i % 5 != 0), group=f"b{i}", domain="b", dataset="big"))
    # a small AI-only set
    for i in range(20):
        recs.append(Record(text=f"synth {i}", label=1, group=f"s{i}", domain="s", dataset="synth"))
    return recs


def test_weights_balance_domains_labels_and_data_sets() -> None:
    recs = _records()
    w = mix.balanced_weights(recs, {"big": 3.0, "synth": 1.0})
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    by = Counter()
    for r, x in zip(recs, w, strict=True):
        by[(r.dataset, r.domain, r.label)] += x
    # human and AI halves over the whole mix
    assert sum(v for k, v in by.items() if k[2] == 0) == pytest.approx(0.5)
    # inside a data set, the small domain weighs as much as the large one, label by label
    assert by[("big", "a", 0)] == pytest.approx(by[("big", "b", 0)])
    assert by[("big", "a", 1)] == pytest.approx(by[("big", "b", 1)])
    # the AI-only set keeps its share of the AI draws (1 of 4 before the label rebalancing)
    ai = sum(v for k, v in by.items() if k[2] == 1)
    assert by[("synth", "s", 1)] / ai == pytest.approx(1.0 / (1.0 + 3.0 / 2.0))


def test_draw_is_seeded_and_follows_the_weights() -> None:
    recs = _records()
    a = mix.draw(recs, 4000, seed=3)
    assert a == mix.draw(recs, 4000, seed=3) and a != mix.draw(recs, 4000, seed=4)
    human = sum(recs[i].label == 0 for i in a) / len(a)
    assert 0.46 < human < 0.54
    small = sum(recs[i].domain == "b" for i in a) / sum(recs[i].dataset == "big" for i in a)
    assert 0.45 < small < 0.55  # 50 records weigh as much as 400
    unique = mix.draw(recs, 10_000, seed=1, replace=False)
    assert len(unique) == len(set(unique)) == len(recs)


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="not loaded"):
        mix.balanced_weights(_records(), {"nope": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        mix.balanced_weights(_records(), {"big": -1.0})
    with pytest.raises(ValueError, match="no records"):
        mix.balanced_weights([])


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=300), st.integers(0, 2**32 - 1))
def test_every_perturbation_returns_text_and_is_seeded(text: str, seed: int) -> None:
    for name, fn in augment.PERTURBATIONS.items():
        out = fn(text, random.Random(seed))
        assert isinstance(out, str), name
        assert out == fn(text, random.Random(seed)), name


def test_perturbations_do_what_they_say() -> None:
    text = "The model was trained on the data. It works, and it's fast. An example is given."
    rng = random.Random(0)
    assert augment.lowercase(text, rng) == text.lower()
    assert "'" not in augment.casual_punctuation(text, rng)
    glyphs = augment.homoglyphs(text, random.Random(0), rate=1.0)
    assert glyphs != text and set(glyphs) & set(augment.HOMOGLYPHS.values())
    zw = augment.zero_width(text, random.Random(0), rate=1.0)
    assert "".join(c for c in zw if c not in augment.ZERO_WIDTH) == text
    assert "the " not in augment.drop_articles(text, random.Random(0), rate=1.0).lower().replace("they", "")


def test_augment_texts_rate() -> None:
    texts = ["a sentence with the words in it."] * 2000
    out, changed = augment.augment_texts(texts, 0.25, seed=1)
    assert len(out) == len(texts) and 400 < changed < 600
    assert np.mean([o != t for o, t in zip(out, texts, strict=True)]) <= changed / len(texts)
    with pytest.raises(ValueError):
        augment.augment_texts(texts, 1.5, seed=1)
