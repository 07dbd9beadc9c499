"""Tokenization: the bundle's fast tokenizer, windows over long texts, length-sorted padded batches.

Texts are encoded without special tokens; each window of at most ``max_length - 2`` content tokens then gets
the tokenizer's own special tokens (``[CLS] ... [SEP]`` for BERT-family tokenizers), found once at load time
by comparing an encoding with and without them. Batches are padded to their own longest row.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from aidetect_infer.errors import REBUILD_HINT, BundleError, InvalidValueError, ModelFilesMissingError

logger = logging.getLogger(__name__)

# Texts longer than this are encoded in pieces cut at whitespace, so a multi-megabyte text never becomes one
# huge Encoding (offsets, token strings) in memory. For BERT-style normalizers and pre-tokenizers, which split
# at whitespace anyway, the ids are identical.
PIECE_CHARS = 100_000
_EMPTY: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
# Where a text may be cut without changing its tokens under a BERT-style normalizer and pre-tokenizer: before
# whitespace that the tokenizer treats as whitespace too (not \x0b \x0c \x1c-\x1f \x85: its normalizer deletes
# those control characters, joining their neighbours), else before an ASCII punctuation mark or a CJK
# ideograph, which its pre-tokenizer splits off as words of their own (runs of them have no whitespace).
_SPACE = r"[^\S\x0b\x0c\x1c-\x1f\x85]"
_SPLIT = r"[!-/:-@\[-`{-~\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_LAST_CUT = tuple(re.compile(rf"(?s).*({cls})") for cls in (_SPACE, _SPLIT))
_NEXT_CUT = re.compile(f"{_SPACE}|{_SPLIT}")
_PROBE = "probe text"
_FALLBACK_SPECIALS = (("[CLS]", "[SEP]"), ("<s>", "</s>"))
_PAD_TOKENS = ("[PAD]", "<pad>")
# Normalizers that map ASCII text to ASCII text (Unicode normal forms and case folding fix ASCII; BERT's cleans
# control characters, spaces Chinese ideographs, strips accents and lowercases).
_ASCII_CLOSED = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Strip", "StripAccents"}


def ascii_tokenizer(tokenizer: Tokenizer) -> Tokenizer | None:
    """A copy of ``tokenizer`` for ASCII texts without its non-ASCII ``Replace`` steps, or ``None``.

    A bundle folds look-alike letters to Latin with one ``Replace`` normalizer per letter (export.normalize), and
    each scans the whole text: on a 600-character text they are 30% of the encoding time. None of their
    patterns occurs in an ASCII text, so dropping them gives the same tokens and offsets there, provided every
    step before them keeps ASCII text ASCII. ``None`` when the normalizer has no such step to drop, or a step
    before one that may leave ASCII (``Prepend``, a precompiled map, a ``Replace`` writing non-ASCII).
    """
    spec = json.loads(tokenizer.to_str())
    norm = spec.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else []

    def droppable(step: dict[str, object]) -> bool:
        pattern = step.get("pattern")
        literal = pattern.get("String") if isinstance(pattern, dict) else None
        return step.get("type") == "Replace" and isinstance(literal, str) and not literal.isascii()

    def ascii_closed(step: dict[str, object]) -> bool:
        if step.get("type") != "Replace":
            return step.get("type") in _ASCII_CLOSED
        content = step.get("content")
        return isinstance(content, str) and content.isascii()

    last = max((i for i, step in enumerate(steps) if droppable(step)), default=-1)
    if last < 0 or not all(droppable(step) or ascii_closed(step) for step in steps[:last]):
        return None
    kept = [step for step in steps if not droppable(step)]
    spec["normalizer"] = {"type": "Sequence", "normalizers": kept} if kept else None
    return Tokenizer.from_str(json.dumps(spec))


def clean_text(text: str) -> str:
    """Replace lone surrogates with U+FFFD (valid surrogate pairs become their character).

    Python strings may hold code points that UTF-8 cannot encode; the Rust tokenizer must never see them.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def split_pieces(text: str, piece_chars: int = PIECE_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``piece_chars`` characters where the cuts do not change its tokens.

    Each cut is just before the last whitespace in reach, or, in a stretch without whitespace, just before the
    last ASCII punctuation mark or CJK ideograph. A text with no such place past a cut point is left whole
    from there on.
    """
    if len(text) <= piece_chars:
        return [text]
    pieces: list[str] = []
    start = 0
    while len(text) - start > piece_chars:
        limit = start + piece_chars
        cut = next((m.start(1) for pattern in _LAST_CUT if (m := pattern.match(text, start + 1, limit))), -1)
        if cut < 0:
            after = _NEXT_CUT.search(text, limit)
            if after is None:
                break
            cut = after.start()
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def window_spans(n_tokens: int, length: int, stride: int, *, truncation: bool = False) -> list[tuple[int, int]]:
    """The ``(start, stop)`` content-token spans scored for a text of ``n_tokens`` tokens.

    Windows of ``length`` tokens start every ``stride`` tokens; the last one ends at the end of the text.
    A text that fits one window (an empty text included) is a single span; ``truncation`` keeps the first.
    """
    if n_tokens <= length:
        return [(0, n_tokens)]
    if truncation:
        return [(0, length)]
    starts = list(range(0, n_tokens - length + 1, stride))
    if starts[-1] + length < n_tokens:
        starts.append(n_tokens - length)
    return [(s, s + length) for s in starts]


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Read a bundle's ``tokenizer.json``.

    Raises:
        ModelFilesMissingError: The file does not exist.
        BundleError: It is not a tokenizer the ``tokenizers`` library can read.
    """
    if not Path(path).is_file():
        raise ModelFilesMissingError(f"{path}: missing; {REBUILD_HINT}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception on malformed JSON
        raise BundleError(f"{path}: not a valid tokenizers tokenizer ({exc}); {REBUILD_HINT}") from exc


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


class TextEncoder:
    """Turns texts into content-token ids, windows and padded int64 batches for one bundle.

    The tokenizer is copied and configured once (no truncation, no padding); encoding calls only read it,
    so one encoder can serve many threads.

    Args:
        tokenizer: The bundle's tokenizer (copied, never modified).
        max_length: Tokens per window, special tokens included.
        window_stride: Content tokens a window advances by.
        source: Where the tokenizer came from, for error messages.

    Raises:
        BundleError: The vocabulary has ids without a token (a damaged file), the tokenizer has no way to add
            special tokens, or ``max_length`` leaves no room for content.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_length: int, window_stride: int, source: str = "tokenizer") -> None:
        # Checked before copying: serializing a vocabulary with holes prints a warning to stdout.
        ids = set(tokenizer.get_vocab(with_added_tokens=True).values())
        if ids and max(ids) >= len(ids):  # then some id below len(ids) has no token
            missing = [i for i in range(len(ids)) if i not in ids][:10]
            raise BundleError(
                f"{source}: the vocabulary has no token with id {missing} (entries of tokenizer.json that "
                f"share an id or were damaged); {REBUILD_HINT}"
            )
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._ascii = ascii_tokenizer(self._tokenizer)  # the same tokens for ASCII texts, sooner
        self.prefix, self.suffix = self._special_ids(source)
        self.content_length = max_length - len(self.prefix) - len(self.suffix)
        if self.content_length < 1:
            raise BundleError(f"{source}: max_length {max_length} leaves no room after the special tokens")
        self.max_length = max_length
        self.window_stride = min(window_stride, self.content_length)
        self.pad_id = self._pad_id()
        unk = getattr(self._tokenizer.model, "unk_token", None)
        self.unk_id: int | None = self._tokenizer.token_to_id(unk) if isinstance(unk, str) else None
        """The unknown token's id (``None`` for a tokenizer without one, such as byte-level BPE)."""

    def _special_ids(self, source: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        plain = self._tokenizer.encode(_PROBE, add_special_tokens=False).ids
        full = self._tokenizer.encode(_PROBE, add_special_tokens=True).ids
        at = _find(full, plain) if plain else -1
        if at >= 0 and len(full) > len(plain):
            prefix, suffix = full[:at], full[at + len(plain) :]
        else:
            for first, last in _FALLBACK_SPECIALS:
                first_id, last_id = self._tokenizer.token_to_id(first), self._tokenizer.token_to_id(last)
                if first_id is not None and last_id is not None:
                    logger.debug("%s: no post-processor, adding %s/%s", source, first, last)
                    prefix, suffix = [first_id], [last_id]
                    break
            else:
                raise BundleError(
                    f"{source}: the tokenizer has no post-processor and no [CLS]/[SEP] tokens, so windows "
                    f"cannot be framed; {REBUILD_HINT}"
                )
        return np.asarray(prefix, dtype=np.int64), np.asarray(suffix, dtype=np.int64)

    def _pad_id(self) -> int:
        for token in _PAD_TOKENS:
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        return 0  # masked out by attention_mask, so any valid id will do

    def encode(self, texts: Sequence[str]) -> list[NDArray[np.int64]]:
        """Content-token ids (no special tokens, no truncation) of each text, in order.

        Lone surrogates are replaced with U+FFFD first. Texts up to :data:`PIECE_CHARS` characters are
        encoded together with ``encode_batch`` (one text alone with ``encode``); longer ones piece by piece (cut
        at whitespace), so that only one piece's ``Encoding`` is alive at a time. ASCII texts go to the
        tokenizer without the look-alike folding (see :func:`ascii_tokenizer`), where the bundle has one.
        """
        cleaned = [clean_text(text) for text in texts]
        out: list[NDArray[np.int64]] = [_EMPTY] * len(cleaned)
        short = [i for i, text in enumerate(cleaned) if len(text) <= PIECE_CHARS]
        fast: list[int] = []
        rest: list[int] = []
        for i in short:
            (fast if self._tokenizer_for(cleaned[i]) is self._ascii else rest).append(i)
        for tokenizer, indices in ((self._ascii, fast), (self._tokenizer, rest)):
            if tokenizer is None or not indices:
                continue
            if len(indices) == 1:  # the batch call's thread hand-off costs more than one short text
                encodings = [tokenizer.encode(cleaned[indices[0]], add_special_tokens=False)]
            else:
                encodings = tokenizer.encode_batch([cleaned[i] for i in indices], add_special_tokens=False)
            for i, encoding in zip(indices, encodings, strict=True):
                out[i] = np.asarray(encoding.ids, dtype=np.int64)
        for i, text in enumerate(cleaned):
            if len(text) > PIECE_CHARS:
                parts = [self._encode_one(piece) for piece in split_pieces(text)]
                out[i] = np.concatenate(parts)
        return out

    def _tokenizer_for(self, text: str) -> Tokenizer:
        """The tokenizer without the look-alike fold for an ASCII text where the bundle has one, else the full one."""
        return self._ascii if self._ascii is not None and text.isascii() else self._tokenizer

    def _encode_one(self, text: str) -> NDArray[np.int64]:
        return np.asarray(self._tokenizer_for(text).encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def spans(self, n_tokens: int, *, truncation: bool = False) -> list[tuple[int, int]]:
        """The windows of a text of ``n_tokens`` content tokens (see :func:`window_spans`)."""
        return window_spans(n_tokens, self.content_length, self.window_stride, truncation=truncation)

    def pad_batch(self, rows: Sequence[NDArray[np.int64]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Frame each row with the special tokens and right-pad to the longest row.

        Args:
            rows: Content-token ids, each at most ``content_length`` long.

        Returns:
            ``(input_ids, attention_mask)``, both int64 of shape ``(len(rows), longest + specials)``.

        Raises:
            InvalidValueError: ``rows`` is empty or a row is longer than one window.
        """
        if not rows:
            raise InvalidValueError("pad_batch needs at least one row")
        longest = max(len(r) for r in rows)
        if longest > self.content_length:
            raise InvalidValueError(f"a row of {longest} tokens exceeds the window of {self.content_length}")
        n_special = len(self.prefix) + len(self.suffix)
        input_ids = np.full((len(rows), longest + n_special), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        p = len(self.prefix)
        for k, row in enumerate(rows):
            end = p + len(row)
            input_ids[k, :p] = self.prefix
            input_ids[k, p:end] = row
            input_ids[k, end : end + len(self.suffix)] = self.suffix
            attention_mask[k, : end + len(self.suffix)] = 1
        return input_ids, attention_mask
