"""The committed table of Unicode-version differences is what the generator produces today."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

GENERATOR = Path(__file__).resolve().parents[2] / "edge" / "tools" / "gen_unicode_compat.py"


@pytest.mark.slow
def test_unicode_compat_table_is_current():
    if ctypes.util.find_library("utf8proc") is None:
        pytest.skip("libutf8proc is not installed (apt-get install libutf8proc-dev)")
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, done.stderr
