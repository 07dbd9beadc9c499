"""Helpers shared by the edge runner tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
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


def jsonl(texts: Sequence[str]) -> str:
    """Texts as JSONL records ``{"text": ...}`` (lone surrogates kept as escapes, as Python writes them)."""
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)
