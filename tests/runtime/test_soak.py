"""Soak: 20,000 predictions in a loop in a fresh interpreter; resident memory must not creep.

The loop runs in a subprocess that imports only the runtime, so the figure is the runtime's own memory, not
the test process's (torch, hypothesis). Resident size comes from ``/proc/self/status`` (``VmRSS``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREDICTIONS = 20_000
WARM_UP = 2_000
MAX_GROWTH = 0.05

SOAK = r"""
import json, random, sys
from aidetect_infer import Detector

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

bundle, texts_path, predictions, warm_up = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = json.loads(open(texts_path, encoding="utf-8").read())
detector = Detector.from_pretrained(bundle, provider="cpu", threads=1, batch_size=8)
rng = random.Random(5)
odd = ["", " ", "\x00", "\ud800 lone", "日本語", "\u200d" * 50, "x" * 2_000]

def text(i):
    if i % 97 == 0:
        return " ".join(texts[:6])  # a long text: several windows
    if i % 13 == 0:
        return rng.choice(odd)
    base = rng.choice(texts)
    start = rng.randrange(max(1, len(base) - 40))
    return base[start : start + rng.randint(1, 400)]

for i in range(warm_up):
    detector.predict(text(i))
before = rss_kib()
samples, checksum = [], 0.0
for i in range(predictions):
    checksum += detector.predict(text(i)).score
    if (i + 1) % 2_000 == 0:
        samples.append(rss_kib())
print(json.dumps({"before_kib": before, "after_kib": rss_kib(), "samples_kib": samples, "checksum": checksum}))
"""


@pytest.mark.slow
def test_twenty_thousand_predictions_do_not_grow_memory(tiny_bundle, sample_texts, tmp_path, record_property):
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(sample_texts), encoding="utf-8")
    args = [str(tiny_bundle), str(texts_path), str(PREDICTIONS), str(WARM_UP)]
    result = subprocess.run([sys.executable, "-c", SOAK, *args], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth = (figures["after_kib"] - figures["before_kib"]) / figures["before_kib"]
    figures["growth_percent"] = round(100 * growth, 2)
    record_property("soak", figures)
    print(f"\n{PREDICTIONS} predictions after {WARM_UP} warm-up: {figures}")
    assert math.isfinite(figures["checksum"])  # no NaN score anywhere in the loop
    assert growth < MAX_GROWTH, f"resident memory grew by {100 * growth:.1f}% over {PREDICTIONS} predictions"
