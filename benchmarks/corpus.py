"""The fixed benchmark corpus: held-out texts drawn with a fixed seed, and texts of an exact token length.

Half of the corpus comes from the OUTFOX ``test`` half (essays, attacked ones included: ~50 to ~1,600 words),
half from the validation groups of ``detectgpt_family`` (~13 to ~200 words), both as
:func:`export.evaluate.held_out_sets` names them. Benchmarks only read these texts; nothing is trained or tuned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.data import REPO_DATA_DIR

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_DATA_DIR
OUTFOX = DATA_DIR / "outfox_essays.jsonl.gz"
DETECTGPT = DATA_DIR / "detectgpt_family.jsonl.gz"
CORPUS_SIZE = 512
SEED = 0


class CorpusUnavailableError(FileNotFoundError):
    """The data files the corpus is drawn from are missing from ``data/``."""


def _files_stamp(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def draw_corpus(size: int = CORPUS_SIZE, seed: int = SEED) -> list[str]:
    """Draw ``size`` texts: half from the OUTFOX test half, half from the detectgpt validation groups.

    Raises:
        CorpusUnavailableError: A data file is missing.
    """
    from export.evaluate.sets import held_out_sets

    for path in (OUTFOX, DETECTGPT):
        if not path.is_file():
            raise CorpusUnavailableError(f"{path}: the benchmark corpus needs the data files of data/")
    sets = held_out_sets([OUTFOX, DETECTGPT], split="auto")
    # the sets in the order held_out_sets gives them (test-clean before test-attacked), so the draw stays the same
    essays = [r.text for name, recs in sets.items() if name.startswith("outfox") for r in recs]
    news = [r.text for name, recs in sets.items() if name.startswith("detectgpt") for r in recs]
    rng = random.Random(seed)
    half = size // 2
    texts = rng.sample(essays, half) + rng.sample(news, size - half)
    rng.shuffle(texts)
    return texts


def load_corpus(cache_dir: Path, size: int = CORPUS_SIZE, seed: int = SEED) -> list[str]:
    """:func:`draw_corpus`, cached as JSON in ``cache_dir`` (keyed by the data files' size and mtime)."""
    path = cache_dir / f"corpus-{size}-{seed}-{_files_stamp([OUTFOX, DETECTGPT])}.json"
    if path.is_file():
        texts: list[str] = json.loads(path.read_text(encoding="utf-8"))
        return texts
    texts = draw_corpus(size, seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(texts), encoding="utf-8")
    tmp.replace(path)
    return texts


def text_of_tokens(tokenizer: Any, source: str, tokens: int) -> str:
    """A prefix of ``source`` that the tokenizer encodes to exactly ``tokens`` ids, special tokens included.

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` with its post-processor (``[CLS] ... [SEP]``).
        source: A text with more than ``tokens`` tokens.
        tokens: The wanted length.

    Raises:
        ValueError: ``source`` is too short, or no prefix has exactly that length.
    """
    tok = tokenizer.__class__.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    full = tok.encode(source)
    specials = len(full.ids) - len(tok.encode(source, add_special_tokens=False).ids)
    content = tokens - specials
    if content < 1 or len(full.ids) - specials <= content:
        raise ValueError(f"need a source text of more than {tokens} tokens")
    offsets = tok.encode(source, add_special_tokens=False).offsets
    # A cut inside a word can re-tokenize differently; try the nearby token boundaries, nearest first.
    target = offsets[content - 1][1]
    nearby = {end for _, end in offsets[max(0, content - 8) : content + 8]}
    for end in sorted(nearby, key=lambda e: abs(e - target)):
        if len(tok.encode(source[:end]).ids) == tokens:
            return source[:end]
    raise ValueError(f"no prefix of the source text encodes to exactly {tokens} tokens")
