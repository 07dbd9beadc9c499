"""``python -m export.calibrate``: calibration, operating points and the per-domain report of a bundle
(:mod:`export.calibrate.fit`).

    python -m export.calibrate --bundle runs/default/bundles/int8 --data detectgpt_family.jsonl.gz \\
        outfox_essays.jsonl.gz l2r_rewrites.jsonl.gz assistant_synth.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aidetect_infer.errors import AidetectError
from export.calibrate.fit import CalibrateConfig, calibrate_bundle
from export.calibrate.report import card_section
from export.console import fail
from export.data.records import use_data_dir
from export.errors import ExportError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.calibrate",
        description="Decide how a bundle decides: calibration, operating points, uncertain band, per-domain report.",
    )
    p.add_argument("--bundle", required=True, help="bundle directory to update")
    p.add_argument("--data", required=True, nargs="+", action="extend", help="data files (validation groups used)")
    p.add_argument("--false-positive-rate", type=float, default=0.01)
    p.add_argument("--uncertain-false-positive-rate", type=float, default=0.1)
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--min-length-auc", type=float, default=0.7,
        help="shortest text judged: the ROC AUC the validation texts cut to that length must reach (default 0.7)",
    )  # fmt: skip
    p.add_argument("--data-dir", help="where bare data file names are found (default: the repository's data/)")
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.data_dir:
        use_data_dir(args.data_dir)
    try:
        cfg = CalibrateConfig(
            bundle=args.bundle, data=tuple(args.data), false_positive_rate=args.false_positive_rate,
            uncertain_false_positive_rate=args.uncertain_false_positive_rate, threads=args.threads,
            min_length_auc=args.min_length_auc,
        )  # fmt: skip
        result = calibrate_bundle(cfg)
    except (ExportError, AidetectError, ValueError, OSError) as exc:
        return fail(exc)
    print(card_section(result["decision"], result["validation"], result["generators"], result["held_out"]))
    if args.report:
        args.report.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
