"""Human technical prose from the Python installation: ``python -m export.data.technical_prose --out FILE``.

The default model before this set flagged about half of the human software READMEs it was shown as AI (62 of
132 package descriptions of this project's own dependencies at its 1%-FPR threshold). Technical English written
by people is on every machine that runs this library, so this builds a human-only data set from two local sources:

- ``python-docstring``: the docstrings of CPython's standard library (``Lib/*.py`` and its packages, tests left
  out), PSF License 2.0; one group per module.
- ``package-readme``: the long descriptions (``METADATA``) of the installed distributions whose licence is
  permissive (MIT, BSD, Apache, PSF, ISC), as that licence allows; one group per distribution.

``--debian-docs`` builds an evaluation set instead, never stored or trained on: ``debian-readme``, the prose of
the ``README*`` files under ``/usr/share/doc`` (at most three texts a package; each under its package's licence,
named in ``/usr/share/doc/<package>/copyright``), human technical prose of another kind than the two above.

Doctest sessions, code blocks, tables, link targets and reST/Markdown markup are dropped; what is left is
split at paragraph breaks into texts of 40 to 300 words. Every row records where it came from and under which
licence. The READMEs of current releases may carry edits by writing assistants: a small label noise this set
accepts, as the kept-back evaluation sets do.
"""

from __future__ import annotations

import argparse
import ast
import email
import gzip
import json
import re
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from email import policy
from importlib import metadata
from pathlib import Path

PERMISSIVE = ("MIT", "BSD", "Apache", "PSF", "Python Software Foundation", "ISC")
MIN_WORDS, MAX_WORDS = 40, 300

_DROP_LINE = re.compile(r"^\s*(\.\. .*|\|.*\||[-=~^*#+`]{3,}\s*|>>>.*|\.\.\. .*|\$ .*|:[\w ]+:.*$|\+[-+=]+\+)$")
_MARKUP = [
    (re.compile(r"```.*?```", re.S), " "),
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), " "),
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (re.compile(r"`([^`<]*)<[^>]*>`_*"), r"\1"),
    (re.compile(r"<[^>]+>"), " "),
    (re.compile(r":[a-z]+:`~?([^`]*)`"), r"\1"),
    (re.compile(r"`+([^`]*)`+_*"), r"\1"),
    (re.compile(r"\*\*([^*]+)\*\*|\*([^*]+)\*"), r"\1\2"),
]


def prose(raw: str) -> list[str]:
    """The prose paragraphs of a docstring or README: markup, code and tables removed, whitespace collapsed."""
    text = raw.replace("\r\n", "\n")
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if any(line.lstrip().startswith(">>>") for line in lines):
            continue  # a doctest session and its output
        if all(line.startswith(("    ", "\t")) for line in lines if line.strip()) and paragraphs:
            continue  # an indented code block after prose
        kept = [line.strip() for line in lines if line.strip() and not _DROP_LINE.match(line)]
        para = re.sub(r"\s+", " ", " ".join(kept)).strip()
        words = para.split()
        # prose: sentences of words, not an option list, a heading or a row of symbols
        if len(words) >= 8 and para[-1:] in ".:;)!?" and sum(w.isalpha() for w in words) >= 0.6 * len(words):
            paragraphs.append(para)
    return paragraphs


def chunks(paragraphs: Sequence[str]) -> Iterator[str]:
    """Consecutive paragraphs joined into texts of MIN_WORDS to MAX_WORDS words (a longer paragraph stands alone)."""
    cur: list[str] = []
    count = 0
    for para in paragraphs:
        n = len(para.split())
        if cur and count + n > MAX_WORDS:
            if count >= MIN_WORDS:
                yield "\n\n".join(cur)
            cur, count = [], 0
        cur.append(para)
        count += n
    if count >= MIN_WORDS:
        yield "\n\n".join(cur)


def docstrings(lib: Path) -> Iterator[dict[str, str]]:
    """Rows from the docstrings of the standard library under ``lib``, one group per module."""
    version = ".".join(map(str, sys.version_info[:3]))
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib)
        if rel.parts[0] in ("site-packages", "test", "idlelib", "lib2to3", "tkinter") or "tests" in rel.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        paragraphs = [p for n in nodes if (doc := ast.get_docstring(n)) for p in prose(doc)]
        module = ".".join(rel.with_suffix("").parts)
        for text in chunks(paragraphs):
            yield {
                "text": text,
                "domain": "python-docstring",
                "group": f"pydoc:{module}",
                "source": f"CPython {version} Lib/{rel.as_posix()} (PSF License 2.0)",
            }


def _licence(meta: email.message.Message) -> str:
    named = (meta.get("License-Expression") or meta.get("License") or "").strip().splitlines()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if "License" in c]
    for candidate in [*(named[:1] if named and len(named[0]) < 60 else []), *classifiers]:
        if any(p.lower() in candidate.lower() for p in PERMISSIVE):
            return candidate
    return ""


def readmes() -> Iterator[dict[str, str]]:
    """Rows from the long descriptions of the installed distributions under permissive licences."""
    seen: set[str] = set()
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").strip()
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        raw = dist.read_text("METADATA") or ""
        meta = email.message_from_string(raw, policy=policy.compat32)
        licence = _licence(meta)
        body = meta.get_payload() if not meta.is_multipart() else ""
        if not licence or not isinstance(body, str):
            continue
        for text in chunks(prose(body)):
            yield {
                "text": text,
                "domain": "package-readme",
                "group": f"readme:{name.lower()}",
                "source": f"PyPI {name} {dist.version} METADATA description ({licence})",
            }


def debian_docs(root: Path = Path("/usr/share/doc"), per_package: int = 3) -> Iterator[dict[str, str]]:
    """Rows from the ``README*`` files of the Debian packages documented under ``root`` (evaluation only)."""
    for path in sorted(root.glob("*/README*")):
        try:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8", errors="replace") as f:
                raw = f.read()
        except (OSError, EOFError):
            continue
        package = path.parent.name
        for text in list(chunks(prose(raw)))[:per_package]:
            yield {
                "text": text,
                "domain": "debian-readme",
                "group": f"debian:{package}:{path.name}",
                "source": f"{path} (Debian package {package}; licence in {path.parent / 'copyright'})",
            }


def build(out: Path, lib: Path | None = None, *, debian: Path | None = None) -> dict[str, int]:
    """Write the data set to ``out`` (gzip JSONL in the data sets' layout); returns the rows per domain.

    With ``debian`` (a ``/usr/share/doc`` folder), the evaluation set of its READMEs instead.
    """
    lib = lib or Path(sysconfig.get_paths()["stdlib"])
    rows = list(debian_docs(debian)) if debian is not None else [*docstrings(lib), *readmes()]
    counts: dict[str, int] = {}
    lines = []
    for row in rows:
        counts[row["domain"]] = counts.get(row["domain"], 0) + 1
        record = {"text": row["text"], "label": 0, "domain": row["domain"], "generator": "human",
                  "group": row["group"], "source": row["source"]}  # fmt: skip
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    with open(out, "wb") as raw:  # no time in the gzip header: the same rows give the same bytes
        with gzip.GzipFile(filename=out.name, fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
            f.write("".join(lines).encode("utf-8"))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.data.technical_prose", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the .jsonl.gz file to write")
    parser.add_argument("--stdlib", type=Path, default=None, help="the standard library folder (default: this one)")
    parser.add_argument(
        "--debian-docs", type=Path, nargs="?", const=Path("/usr/share/doc"), default=None, metavar="DIR",
        help="build the evaluation set of the Debian READMEs under DIR (default /usr/share/doc) instead",
    )  # fmt: skip
    args = parser.parse_args(argv)
    counts = build(args.out, args.stdlib, debian=args.debian_docs)
    print(json.dumps({"file": str(args.out), "rows": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
