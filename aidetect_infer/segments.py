"""Segments for :meth:`~aidetect_infer.Detector.explain`: sentence-aligned spans of a size the model can judge.

A text is cut into sentences: after ``.``, ``!``, ``?`` or ``…`` (and the closing quotes or brackets after them)
where whitespace follows, after ``。``, ``！`` or ``？``, and at line breaks; the whitespace after a sentence stays
with it. A sentence longer than ``max_tokens`` is cut further at whitespace (and, in a stretch without
whitespace, before CJK ideographs and kana). Consecutive pieces are then joined into segments: a segment takes
the next piece while it holds fewer than ``min_tokens`` tokens and the piece keeps it within ``max_tokens``,
but ends at a blank line (a paragraph's end) once it holds half of ``min_tokens``; a last segment shorter than
``min_tokens`` joins the one before when the two together stay within ``max_tokens``. With the defaults (64 and
128 tokens) a segment is two to five sentences of ordinary prose.

The spans **tile** the text: the first starts at 0, each ends where the next starts, the last ends at
``len(text)``, and the offsets are indices into the Python string (Unicode code points, not UTF-8 bytes or
UTF-16 units). The empty string has no segments; any other text has at least one (a whitespace-only text is one
segment). Token counts only decide where segments end, so any tokenizer gives valid spans; a stretch with no
place to cut (a very long "word") stays whole and may exceed ``max_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aidetect_infer.errors import InvalidValueError

MIN_SEGMENT_TOKENS = 64
"""A segment takes more sentences until it holds this many tokens: below the shipped model's ``min_tokens``
(48) every verdict is "uncertain", and the model's ROC AUC on validation texts rises from 0.77 at 64 tokens to
0.85 at 128 (``decision.by_length`` in ``models/default/aidetect.json``)."""
MAX_SEGMENT_TOKENS = 128
"""A segment takes no sentence that would carry it past this many tokens (one sentence alone may, when it
cannot be cut)."""

TokenCounter = Callable[[list[str]], Sequence[int]]
"""Content-token counts of a list of texts, in order."""

_CLOSERS = "\"'\u201d\u2019)\\]\u00bb\u300d\u300f"
_SENTENCE_END = re.compile(rf"[.!?\u2026]+[{_CLOSERS}]*\s+|[\u3002\uff01\uff1f]+[{_CLOSERS}]*\s*|\n\s*")
_PARAGRAPH_END = re.compile(r"\n[^\S\n]*\n\s*\Z")  # a blank line at the end of a piece
# Inside an over-long sentence: after whitespace, or before an ideograph or kana (such text has no spaces).
_CUT = re.compile(r"\s+|(?=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


@dataclass(frozen=True, slots=True)
class Segment:
    """One scored span of a text.

    Attributes:
        start: Offset of its first character in the text (a Python string index).
        end: Offset just past its last character: ``text[start:end]`` is the segment.
        text: ``text[start:end]``.
        score: P(AI) of the segment scored alone, as ``predict_proba(segment.text)`` gives it.
        label: The verdict on the segment alone (``"uncertain"`` when it is shorter than the bundle's
            ``min_tokens``).
        tokens: Content tokens of the segment.
    """

    start: int
    end: int
    text: str
    score: float
    label: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdict on a whole text and on each of its segments.

    Attributes:
        label: The document's label, as ``predict(text)`` gives it.
        score: The document's P(AI), as ``predict(text)`` gives it (not a mean of the segments).
        threshold: The AI threshold used.
        windows: Windows the document was scored in.
        tokens: Content tokens of the document.
        segments: Spans that tile the text in order (none for the empty string); see :mod:`aidetect_infer.segments`.
        unknown_tokens: The document's content tokens that are the tokenizer's unknown token.
    """

    label: str
    score: float
    threshold: float
    windows: int
    tokens: int
    segments: tuple[Segment, ...]
    unknown_tokens: int = 0


def _check_sizes(min_tokens: int, max_tokens: int) -> None:
    for name, value in (("min_tokens", min_tokens), ("max_tokens", max_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")
    if min_tokens > max_tokens:
        raise InvalidValueError(f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})")


def _pieces(text: str, pattern: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """``text[start:end]`` cut just after each match of ``pattern`` (empty pieces dropped)."""
    cuts = [m.end() for m in pattern.finditer(text, start, end) if start < m.end() < end]
    bounds = [start, *sorted(set(cuts)), end]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The sentences of ``text`` as ``(start, end)`` spans that tile it (see the module docstring)."""
    return _pieces(text, _SENTENCE_END, 0, len(text))


def segment_spans(
    text: str,
    count_tokens: TokenCounter,
    *,
    min_tokens: int = MIN_SEGMENT_TOKENS,
    max_tokens: int = MAX_SEGMENT_TOKENS,
) -> list[tuple[int, int]]:
    """The segments of ``text`` as ``(start, end)`` spans that tile it.

    Args:
        text: The text.
        count_tokens: Counts the content tokens of each of a list of texts (the detector's tokenizer).
        min_tokens: A segment takes more sentences until it holds this many tokens.
        max_tokens: A segment takes no sentence that would carry it past this many.

    Returns:
        The spans, in order; none for the empty string.

    Raises:
        InvalidValueError: ``min_tokens`` or ``max_tokens`` not a positive integer, or ``min_tokens > max_tokens``.
    """
    _check_sizes(min_tokens, max_tokens)
    pieces = sentence_spans(text)
    counts = list(count_tokens([text[a:b] for a, b in pieces]))
    if any(n > max_tokens for n in counts):
        finer: list[tuple[int, int]] = []
        for (a, b), n in zip(pieces, counts, strict=True):
            finer.extend(_pieces(text, _CUT, a, b) if n > max_tokens else [(a, b)])
        pieces = finer
        counts = list(count_tokens([text[a:b] for a, b in pieces]))
    groups: list[list[int]] = []  # [start, end, tokens]
    for (a, b), n in zip(pieces, counts, strict=True):
        if groups:
            last = groups[-1]
            fits = last[2] < min_tokens and last[2] + n <= max_tokens
            # a paragraph ends a segment that holds at least half the tokens it wants
            paragraph = last[2] >= min_tokens // 2 and _PARAGRAPH_END.search(text, last[0], last[1]) is not None
            if n == 0 or last[2] == 0 or (fits and not paragraph):
                last[1], last[2] = b, last[2] + n
                continue
        groups.append([a, b, n])
    if len(groups) > 1 and groups[-1][2] < min_tokens and groups[-2][2] + groups[-1][2] <= max_tokens:
        tail = groups.pop()
        groups[-1][1], groups[-1][2] = tail[1], groups[-1][2] + tail[2]
    return [(a, b) for a, b, _ in groups]
