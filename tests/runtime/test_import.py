"""The runtime stays free of torch and transformers; its version matches the packaging."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

import aidetect_infer

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import aidetect_infer, aidetect_infer.cli
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
detector = aidetect_infer.Detector.from_pretrained(sys.argv[1], provider="cpu", threads=1)
detector.predict(["a text", ""])
heavy += sorted(m for m in ("torch", "transformers") if m in sys.modules)
print(",".join(heavy) or "clean")
"""


def test_runtime_imports_neither_torch_nor_transformers(tiny_bundle):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_bundle)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_version_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert aidetect_infer.__version__ == project["version"]


def test_public_api():
    for name in ("Detector", "Prediction", "BundleMetadata", "errors", "__version__", "BundleError"):
        assert hasattr(aidetect_infer, name)
    assert (Path(aidetect_infer.__file__).parent / "py.typed").exists()
