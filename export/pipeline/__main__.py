"""``python -m export.pipeline``: reproduce a shipped bundle from the data and the base weights in one command.

    python -m export.pipeline --config configs/default.toml

The configuration file is described in :mod:`export.pipeline.config`, the stages in :mod:`export.pipeline.run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aidetect_infer.errors import AidetectError
from export.console import fail
from export.errors import ExportError
from export.pipeline.config import read_pipeline_config
from export.pipeline.run import STAGES, run_pipeline


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (see :mod:`export.errors`)."""
    p = argparse.ArgumentParser(
        prog="python -m export.pipeline", description=__doc__.split("\n\n")[0].split(": ", 1)[1]
    )
    p.add_argument("--config", required=True, type=Path, help="pipeline TOML file (see configs/)")
    p.add_argument("--resume", action="store_true", help="reuse stages whose complete output exists")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    p.add_argument(
        "--from-snapped", type=Path, metavar="CHECKPOINT",
        help="start at the snapped export from this checkpoint (python -m export.recover BUNDLE --out CHECKPOINT): "
        "the same weights through the configuration's export, calibration and shipping",
    )  # fmt: skip
    p.add_argument(
        "--from-checkpoint", type=Path, metavar="CHECKPOINT",
        help="start after pruning from this checkpoint: the configuration's [[tune]] stages, export, calibration "
        "and shipping",
    )  # fmt: skip
    p.add_argument(
        "--after-tune", type=int, default=0, metavar="N",
        help="with --from-checkpoint: the checkpoint is the output of the first N [[tune]] stages (e.g. recovered "
        "from the bundle they made); run only the stages after them",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_pipeline(
            read_pipeline_config(args.config),
            resume=args.resume,
            until=args.until,
            snapped=args.from_snapped,
            checkpoint=args.from_checkpoint,
            after_tune=args.after_tune,
        )
    except (ExportError, AidetectError, ValueError, OSError) as exc:
        return fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
