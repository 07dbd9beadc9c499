"""``python -m export.calibrate.backfill``: add the drift reference (:mod:`export.calibrate.drift`) to a bundle
that was calibrated before the record existed: the same validation groups as ``python -m export.calibrate``,
scored by the bundle as it ships; nothing else in the bundle changes::

    python -m export.calibrate.backfill --bundle models/default --data detectgpt_family.jsonl.gz \\
        outfox_essays.jsonl.gz l2r_rewrites.jsonl.gz assistant_synth.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.calibrate.drift import drift_reference
from export.calibrate.fit import bundle_split, predicted, split_records, write_metadata


def write_drift_reference(bundle: str | Path, data: Sequence[str], threads: int | None = None) -> dict[str, Any]:
    """Score the validation groups of ``data`` with the bundle as it is and write its ``drift_reference``."""
    from aidetect_infer import Detector

    meta_path = Path(bundle) / "aidetect.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    val_fraction, salt, _ = bundle_split(meta)
    val, _ = split_records(data, val_fraction, salt)
    detector = Detector.from_pretrained(bundle, provider="cpu", threads=threads)
    meta["drift_reference"] = drift_reference(predicted(detector, val)[0], data)
    write_metadata(meta_path, meta)
    Detector.from_pretrained(bundle, provider="cpu", threads=1)  # still loads
    return dict(meta["drift_reference"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.calibrate.backfill", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle directory to update")
    p.add_argument("--data", required=True, nargs="+", action="extend", help="data files (validation groups used)")
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = write_drift_reference(args.bundle, args.data, args.threads)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
