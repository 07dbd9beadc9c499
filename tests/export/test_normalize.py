"""The look-alike fold written into tokenizer.json (export.train.normalize)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from export.data.augment import HOMOGLYPHS
from export.train.normalize import CONFUSABLES, fold_checkpoint, fold_tokenizer_file, folds

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / "models" / "default" / "tokenizer.json"


def _unfolded(path: Path) -> Path:
    """The shipped tokenizer with its look-alike fold taken out again (the base tokenizer's normalizer)."""
    parsed = json.loads(REAL.read_text(encoding="utf-8"))
    norm = parsed["normalizer"]
    if norm.get("type") == "Sequence":
        rest = [n for n in norm["normalizers"] if n.get("type") != "Replace"]
        parsed["normalizer"] = rest[0] if len(rest) == 1 else {"type": "Sequence", "normalizers": rest}
    path.write_text(json.dumps(parsed), encoding="utf-8")
    return path


def _folded(tmp_path: Path) -> Path:
    path = _unfolded(tmp_path / "tokenizer.json")
    assert fold_tokenizer_file(path)
    return path


def test_look_alikes_tokenize_as_latin(tmp_path: Path) -> None:
    plain = Tokenizer.from_file(str(_unfolded(tmp_path / "plain.json")))
    folded = Tokenizer.from_file(str(_folded(tmp_path)))
    latin = "The experiment shows a clear pattern across every sample we collected."
    attacked = "".join(HOMOGLYPHS.get(c, c) for c in latin)
    assert attacked != latin
    assert folded.encode(attacked).ids == plain.encode(latin).ids
    assert plain.encode(attacked).ids != plain.encode(latin).ids


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters=list(CONFUSABLES)), max_size=200))
def test_text_without_look_alikes_is_unchanged(text: str) -> None:
    plain, folded = _tokenizers()
    assert folded.encode(text).ids == plain.encode(text).ids


_CACHE: dict[str, Tokenizer] = {}


def _tokenizers() -> tuple[Tokenizer, Tokenizer]:
    if not _CACHE:
        import tempfile

        from export.train.normalize import with_fold

        with tempfile.TemporaryDirectory() as tmp:
            plain = _unfolded(Path(tmp) / "plain.json")
            _CACHE["plain"] = Tokenizer.from_file(str(plain))
            _CACHE["folded"] = Tokenizer.from_str(json.dumps(with_fold(json.loads(plain.read_text()))))
    return _CACHE["plain"], _CACHE["folded"]


def test_fold_is_idempotent_and_recorded(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _unfolded(ckpt / "tokenizer.json")
    (ckpt / "training.json").write_text("{}")
    assert fold_checkpoint(ckpt)
    first = (ckpt / "tokenizer.json").read_bytes()
    assert not fold_checkpoint(ckpt) and (ckpt / "tokenizer.json").read_bytes() == first
    assert folds(json.loads(first)) and json.loads((ckpt / "training.json").read_text())["tokenizer_normalizer"]
