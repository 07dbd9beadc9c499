"""Helpers shared by the edge runner tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EdgeRun:
    """One finished run of the binary."""

    returncode: int
    stdout: str
    stderr: str

    def records(self) -> list[dict]:
        """stdout parsed as one JSON object per line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


Runner = Callable[..., EdgeRun]

TOLERANCE = 1e-5  # |C++ - Python| on every score


def jsonl(texts: Sequence[str]) -> str:
    """Texts as JSONL records ``{"text": ...}`` (lone surrogates kept as escapes, as Python writes them)."""
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def edge_records(run_edge: Runner, bundle: os.PathLike[str] | str, texts: Sequence[str], *args: str) -> list[dict]:
    """``aidetect-edge --json`` records (12 score digits, one thread) for ``texts``, checked to be in order."""
    done = run_edge(
        "--model", bundle, "--json", "--digits", "12", "--jsonl", "--threads", "1", *args, input=jsonl(texts)
    )
    assert done.returncode == 0, done.stderr
    records = done.records()
    assert [r["index"] for r in records] == list(range(len(texts)))
    return records


# Cyrillic and Greek letters drawn like Latin ones (a subset of what export.normalize folds into bundles).
LOOKALIKES = {
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c", "\u0443": "y", "\u0445": "x",
    "\u0456": "i", "\u0458": "j", "\u0455": "s", "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K",
    "\u041c": "M", "\u041d": "H", "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X",
    "\u03bf": "o", "\u03b1": "a", "\u03bd": "v", "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0397": "H",
    "\u0399": "I", "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T",
}  # fmt: skip


def replace_node(pattern: str, content: str) -> dict:
    """A ``tokenizers`` Replace normalizer with a String pattern, as tokenizer.json writes it."""
    return {"type": "Replace", "pattern": {"String": pattern}, "content": content}


def folded(
    path: os.PathLike[str] | str,
    *,
    extra: Sequence[tuple[str, str]] = (),
    after: Sequence[tuple[str, str]] = (),
) -> str:
    """The tokenizer.json at ``path`` with Sequence[Replace (LOOKALIKES, then ``extra``), its own normalizer,
    Replace (``after``)] as its normalizer."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    steps = [replace_node(c, latin) for c, latin in LOOKALIKES.items()] + [replace_node(p, c) for p, c in extra]
    steps += [data["normalizer"], *(replace_node(p, c) for p, c in after)]
    data["normalizer"] = {"type": "Sequence", "normalizers": steps}
    return json.dumps(data)
