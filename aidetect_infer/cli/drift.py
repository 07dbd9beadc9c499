"""``python -m aidetect_infer drift FILE``: do these texts still look like the bundle's validation texts?

The texts are scored, and their scores, lengths and unknown-token rates compared with the bundle's
``drift_reference`` by the population stability index (:mod:`aidetect_infer.drift`): one line per feature,
``feature<TAB>psi<TAB>status``, then ``N texts: STATUS``; ``--json`` prints the report as ``GET /v1/drift`` does.
"""

from __future__ import annotations

import argparse
import json
import sys

from aidetect_infer.cli.common import Command, add_model_arguments, load_detector
from aidetect_infer.errors import REBUILD_HINT, BundleError, ExitCode
from aidetect_infer.progress import ProgressBar
from aidetect_infer.textio import read_file


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        help="the texts: .jsonl/.ndjson with a 'text' field, or plain text with one text per line (.gz accepted; "
        "'-' is stdin)",
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")
    add_model_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from aidetect_infer.drift import FEATURES, DriftMonitor, DriftReference, prediction_features

    items = read_file(args.file)
    detector = load_detector(args)
    reference = DriftReference.from_metadata(detector.metadata.optional)
    if reference is None:
        raise BundleError(
            f"{detector.metadata.name}: the bundle records no drift_reference (python -m export.calibrate.backfill "
            f"--bundle DIR --data FILES... writes it); {REBUILD_HINT}"
        )
    monitor = DriftMonitor(reference)
    chunk = max(64, 4 * args.batch_size)
    bar = ProgressBar(len(items), sys.stderr, enabled=len(items) > chunk and sys.stderr.isatty())
    try:
        for begin in range(0, len(items), chunk):
            texts = [item.text for item in items[begin : begin + chunk]]
            monitor.observe(prediction_features(detector.predict(texts)))
            bar.update(len(texts))
    finally:
        bar.close()
    report = monitor.report()
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for name in FEATURES:
            print(f"{name}\t{report.psi[name]:.4f}\t{report.feature_status[name]}")
        print(f"{report.texts} texts: {report.status}")
    return ExitCode.OK


COMMAND = Command(
    "drift",
    "compare texts with the bundle's validation texts (PSI of scores, lengths, unknown tokens)",
    _add_arguments,
    _run,
)
