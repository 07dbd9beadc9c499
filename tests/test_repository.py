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
