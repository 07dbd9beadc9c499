"""Perturbations that real texts and evaders have, applied to training texts of both classes alike.

Applied with the same probability to human and AI texts, they teach the model that lowercase, typos, casual
punctuation or odd whitespace are not a sign of either class (people write casually far more often than
assistants do; evaders add typos and homoglyphs to AI text). Homoglyphs and zero-width characters are also
removed at input by the bundle's tokenizer (:mod:`export.train.normalize`), so these two mostly exercise the letters
the folding table does not cover.

Each perturbation is a pure function of the text and a seeded ``random.Random``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_WORD = re.compile(r"[A-Za-z]{3,}")
_ARTICLE = re.compile(r"\b(?:the|a|an|The|A|An) ")
_KEYBOARD_NEIGHBOURS = {
    "a": "qsz", "e": "wrd", "i": "uok", "o": "ipl", "u": "yij", "s": "adw", "t": "ryg", "n": "bmh", "r": "etf",
    "l": "kop", "h": "gjn", "d": "sfe", "c": "xvf", "m": "nj", "g": "fht", "p": "ol", "y": "tuh", "w": "qes",
}  # fmt: skip
# Latin letters and the Cyrillic/Greek letters that look the same (the common homoglyph attack)
HOMOGLYPHS = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "j": "\u0458", "o": "\u043e", "p": "\u0440",
    "s": "\u0455", "x": "\u0445", "y": "\u0443", "A": "\u0391", "B": "\u0392", "E": "\u0395", "H": "\u0397",
    "K": "\u039a", "M": "\u039c", "N": "\u039d", "O": "\u039f", "P": "\u03a1", "T": "\u03a4", "X": "\u03a7",
}  # fmt: skip
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")


def lowercase(text: str, rng: random.Random) -> str:
    return text.lower()


def typos(text: str, rng: random.Random, rate: float = 0.04) -> str:
    """Swap, drop, double or mistype one letter in about ``rate`` of the words."""

    def one(m: re.Match[str]) -> str:
        w = m.group(0)
        if rng.random() >= rate:
            return w
        i = rng.randrange(len(w) - 1)
        kind = rng.randrange(4)
        if kind == 0:
            return w[:i] + w[i + 1] + w[i] + w[i + 2 :]
        if kind == 1:
            return w[:i] + w[i + 1 :]
        if kind == 2:
            return w[:i] + w[i] + w[i:]
        near = _KEYBOARD_NEIGHBOURS.get(w[i].lower())
        return w[:i] + rng.choice(near) + w[i + 1 :] if near else w

    return _WORD.sub(one, text)


def casual_punctuation(text: str, rng: random.Random) -> str:
    """Drop apostrophes and most commas, end some sentences with '..' or '!!', lose a few full stops."""
    text = text.replace("'", "").replace("\u2019", "")
    text = re.sub(r",", lambda m: m.group(0) if rng.random() < 0.3 else "", text)

    def stop(m: re.Match[str]) -> str:
        r = rng.random()
        return ("..", "!!", "", ".")[0 if r < 0.15 else 1 if r < 0.25 else 2 if r < 0.4 else 3] + m.group(1)

    return re.sub(r"\.(\s)", stop, text)


def whitespace(text: str, rng: random.Random) -> str:
    """Double spaces, stray paragraph breaks and trailing spaces."""

    def space(m: re.Match[str]) -> str:
        r = rng.random()
        return "  " if r < 0.05 else "\n\n" if r < 0.07 else " \n" if r < 0.08 else m.group(0)

    return re.sub(r" ", space, text) + (" " * rng.randint(0, 3))


def homoglyphs(text: str, rng: random.Random, rate: float = 0.3) -> str:
    return "".join(HOMOGLYPHS[c] if c in HOMOGLYPHS and rng.random() < rate else c for c in text)


def zero_width(text: str, rng: random.Random, rate: float = 0.05) -> str:
    return "".join(c + rng.choice(ZERO_WIDTH) if c.isalpha() and rng.random() < rate else c for c in text)


def drop_articles(text: str, rng: random.Random, rate: float = 0.5) -> str:
    """Delete about ``rate`` of the articles (a learner's English; also an evasion trick)."""
    return _ARTICLE.sub(lambda m: "" if rng.random() < rate else m.group(0), text)


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "lowercase": lowercase,
    "typos": typos,
    "casual_punctuation": casual_punctuation,
    "whitespace": whitespace,
    "homoglyphs": homoglyphs,
    "zero_width": zero_width,
    "drop_articles": drop_articles,
}


def perturb(text: str, rng: random.Random, *, max_kinds: int = 2) -> tuple[str, tuple[str, ...]]:
    """Apply one to ``max_kinds`` distinct perturbations, chosen at random; return the text and their names."""
    names = rng.sample(sorted(PERTURBATIONS), rng.randint(1, max_kinds))
    for name in names:
        text = PERTURBATIONS[name](text, rng)
    return text, tuple(names)


def augment_texts(texts: list[str], probability: float, seed: int) -> tuple[list[str], int]:
    """Perturb each text with ``probability`` (seeded); return the texts and how many were changed."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {probability}")
    rng = random.Random(seed)
    out, changed = [], 0
    for t in texts:
        if probability and rng.random() < probability:
            t, _ = perturb(t, rng)
            changed += 1
        out.append(t)
    return out, changed
