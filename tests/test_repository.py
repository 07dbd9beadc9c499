"""The repository stands on its own: its data files match their manifest, and no committed file names a path
outside the checkout (a user's clone has nothing beside it)."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from export.data import REPO_DATA_DIR, describe_file, load_records

REPO = Path(__file__).resolve().parents[1]
# the sibling shared folder and absolute paths of a development machine ("$staging/root/lib" is not matched)
OUTSIDE = re.compile(r"\.\./shared\b|(?<![\w.$}/-])/(?:work|root|home)/")


def _manifest() -> list[dict[str, object]]:
    return json.loads((REPO_DATA_DIR / "MANIFEST.json").read_text(encoding="utf-8"))["files"]


def test_data_files_match_their_manifest() -> None:
    files = _manifest()
    assert {f["file"] for f in files} == {p.name for p in REPO_DATA_DIR.glob("*.jsonl.gz")}
    for entry in files:
        path = REPO_DATA_DIR / str(entry["file"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
        assert path.stat().st_size == entry["bytes"], path
        with gzip.open(path, "rt", encoding="utf-8") as f:
            labels = [json.loads(line)["label"] for line in f if line.strip()]
        assert (len(labels), labels.count(0), labels.count(1)) == (entry["rows"], entry["human"], entry["ai"]), path


def test_data_files_are_named_by_file_name_and_sha256() -> None:
    entry = _manifest()[0]
    assert describe_file(str(entry["file"])) == {"file": entry["file"], "sha256": entry["sha256"]}
    records = load_records(str(entry["file"]))  # a bare name is found in the data directory
    assert records and records[0].dataset == str(entry["file"]).split(".")[0]


def test_every_data_file_has_its_licence_and_source_in_the_readme() -> None:
    readme = (REPO_DATA_DIR / "README.md").read_text(encoding="utf-8")
    for entry in _manifest():
        assert f"`{entry['file']}`" in readme
    assert "CC BY 3.0" in readme and "MIT" in readme and "Apache-2.0" in readme


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_no_committed_file_names_a_path_outside_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    offenders = []
    for name in filter(None, listed.decode().split("\0")):
        path = REPO / name
        if not path.is_file() or path.suffix in (".gz", ".onnx", ".png") or path.stat().st_size > 5_000_000:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [
            f"{name}:{n}: {line.strip()[:120]}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)
        ]
    assert not offenders, "\n".join(offenders)


# Import cycles of the runtime that its ongoing refactoring has not removed yet; empty once it has.
KNOWN_RUNTIME_CYCLES: tuple[frozenset[str], ...] = ()


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(*packages: str) -> dict[str, set[str]]:
    """Which module of ``packages`` imports which, read from the source (every import statement, including
    those inside functions and under ``TYPE_CHECKING``); nothing is imported."""
    import ast

    modules = {name: path for package in packages for name, path in _modules(package).items()}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                deps.update(resolve(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                # `from a import b` imports the module a.b when there is one, else a name of a
                deps.update(resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else resolve(base)
                            for alias in node.names)  # fmt: skip
        graph[name] = {d for d in deps if d is not None and d != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_import_graph_sees_imports_of_every_kind() -> None:
    graph = import_graph("export")
    assert "export.onnx.export" in graph["export.onnx.build"]  # from a.b import name
    assert "export.data.mix" in graph["export.train.loop"]  # from a import module
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_import_cycles_in_the_factory_and_the_benchmarks() -> None:
    cycles = import_cycles(import_graph("export", "benchmarks"))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_no_import_cycles_in_the_runtime() -> None:
    cycles = [c for c in import_cycles(import_graph("aidetect_infer")) if c not in KNOWN_RUNTIME_CYCLES]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_shipped_bundle_records_the_configuration_that_made_it() -> None:
    repo = REPO_DATA_DIR.parent
    meta = json.loads((repo / "models" / "default" / "aidetect.json").read_text(encoding="utf-8"))
    config = repo / meta["reproduce"]["config"]
    assert meta["reproduce"]["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
