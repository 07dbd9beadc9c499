"""The human technical-prose data set built from the Python installation."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from export.data.records import load_records
from export.data.technical_prose import MAX_WORDS, MIN_WORDS, build, chunks, debian_docs, docstrings, prose

SENTENCE = "The parser reads the whole file before it returns the first value to the caller."


def test_prose_keeps_sentences_and_drops_code_markup_and_tables() -> None:
    raw = f"""Title
=====

{SENTENCE} See :func:`load` and `the docs <https://example.org>`_ or [the guide](https://example.org/g).

>>> load("x")
{{'a': 1}}

```python
x = load("y")
```

| option | meaning |
| --- | --- |

.. note:: a directive line

**Bold** words stay as words, and a *short* emphasis too, in a sentence that ends.
"""
    paragraphs = prose(raw)
    assert paragraphs == [
        f"{SENTENCE} See load and the docs or the guide.",
        "Bold words stay as words, and a short emphasis too, in a sentence that ends.",
    ]


def test_chunks_join_paragraphs_within_the_word_limits() -> None:
    para = " ".join(["word"] * 30) + "."
    out = list(chunks([para] * 25))
    assert all(MIN_WORDS <= len(t.split()) <= MAX_WORDS for t in out)
    assert sum(len(t.split()) for t in out) == 25 * 30
    assert list(chunks(["Too short to stand alone."])) == []


def test_docstrings_give_one_group_per_module_with_provenance_and_skip_tests(tmp_path: Path) -> None:
    body = " ".join([SENTENCE] * 5)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(f'"""{body}"""\n\ndef f():\n    """{body}"""\n', encoding="utf-8")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_x.py").write_text(f'"""{body}"""\n', encoding="utf-8")
    (tmp_path / "broken.py").write_text("def (:\n", encoding="utf-8")
    rows = list(docstrings(tmp_path))
    assert [r["group"] for r in rows] == ["pydoc:pkg.mod"]
    assert rows[0]["text"] == f"{body}\n\n{body}" and "Lib/pkg/mod.py (PSF License 2.0)" in rows[0]["source"]


def test_build_writes_human_rows_in_the_data_layout_the_same_bytes_each_time(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "m.py").write_text(f'"""{" ".join([SENTENCE] * 4)}"""\n', encoding="utf-8")
    (tmp_path / "again").mkdir()
    first, second = tmp_path / "t.jsonl.gz", tmp_path / "again" / "t.jsonl.gz"
    counts = build(first, tmp_path / "lib")
    build(second, tmp_path / "lib")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    with gzip.open(first, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert counts["python-docstring"] == 1 and len(rows) == sum(counts.values())
    assert {r["label"] for r in rows} == {0} and {r["generator"] for r in rows} == {"human"}
    # the READMEs come only from distributions under a permissive licence, which each row names
    readmes = [r for r in rows if r["domain"] == "package-readme"]
    assert all(r["source"].startswith("PyPI ") and r["group"].startswith("readme:") for r in readmes)
    assert all(any(k in r["source"] for k in ("MIT", "BSD", "Apache", "PSF", "Python", "ISC")) for r in readmes)
    assert len(load_records(str(first))) == len(rows)  # the trainer's loader reads it


def test_debian_docs_read_plain_and_gzipped_readmes_a_few_texts_a_package(tmp_path: Path) -> None:
    body = "\n\n".join([" ".join([SENTENCE] * 3)] * 20)
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "README").write_text(body, encoding="utf-8")
    (tmp_path / "lib").mkdir()
    with gzip.open(tmp_path / "lib" / "README.Debian.gz", "wt", encoding="utf-8") as f:
        f.write(body)
    (tmp_path / "lib" / "README.broken.gz").write_bytes(b"not gzip")
    rows = list(debian_docs(tmp_path, per_package=2))
    assert [r["group"] for r in rows] == ["debian:lib:README.Debian.gz"] * 2 + ["debian:tool:README"] * 2
    assert all(r["domain"] == "debian-readme" and "copyright" in r["source"] for r in rows)
    out = tmp_path / "debian.jsonl.gz"
    assert build(out, debian=tmp_path) == {"debian-readme": 6}  # three a package by default
