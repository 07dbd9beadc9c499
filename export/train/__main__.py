"""``python -m export.train``: Fine-tune a DistilBERT classifier (human = 0, AI = 1) on labelled text.

    python -m export.train --base minilm --data detectgpt_family.jsonl.gz --data outfox_essays.jsonl.gz \
        --out runs/minilm

Data files are named by path or by file name in the data directory (``--data-dir``, default the repository's
``data/``). With ``--balance domain`` every epoch draws ``--samples-per-epoch`` texts by domain-balanced weights
(:mod:`export.data.mix`) and ``--augment P`` perturbs each drawn text with probability P (:mod:`export.data.augment`),
human and AI texts alike.

Every option can also come from a TOML or JSON file (``--config run.toml``; command-line options win). The
resolved configuration, the seed, the data files with their sha256, per-evaluation metrics and wall time are
written to ``training.json`` beside the checkpoint, so a run is reproducible from its record.

Training: AdamW, linear warm-up then linear decay, gradient clipping, dynamic padding over length-grouped
batches, optional bf16 autocast (CPUs with AVX512-BF16/AMX), evaluation on the validation groups every
``eval_every`` steps and at the end of every epoch; the checkpoint with the best validation ROC AUC is kept.
The decision threshold stored for export is the equal-error-rate threshold on validation.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from export.console import BarProgress, fail
from export.errors import ExportError
from export.onnx.outliers import OUTLIER_PRODUCTS
from export.train.config import TrainConfig, config_from_values, read_config_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.train", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--config", help="TOML or JSON file with any of the options below (command line wins)")
    p.add_argument("--base", help="minilm (offline MiniLM weights), a local DistilBERT/BERT dir, or a hub name")
    p.add_argument("--data", action="append", help="training data file (JSONL/CSV, .gz ok); repeatable")
    p.add_argument("--out", help="checkpoint directory to write")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", "--lr", type=float)
    p.add_argument("--max-length", type=int, help="tokens per text, special tokens included")
    p.add_argument("--warmup-ratio", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float, help="fraction of groups held out for validation")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps as well as each epoch")
    p.add_argument("--eval-max-samples", type=int)
    p.add_argument("--max-train-samples", type=int, help="random subset (seeded) of the training records")
    p.add_argument("--class-weighting", choices=["none", "balanced"])
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast on CPUs with AVX512-BF16/AMX")
    p.add_argument("--threads", type=int)
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--domain", action="append", dest="domains")
    p.add_argument("--generator", action="append", dest="generators")
    p.add_argument("--attack", action="append", dest="attacks")
    p.add_argument("--balance", choices=["none", "domain"], help="domain-balanced draws (export.data.mix)")
    p.add_argument("--samples-per-epoch", type=int, help="draws per epoch with --balance domain")
    p.add_argument("--augment", type=float, help="probability of perturbing a drawn text (export.data.augment)")
    p.add_argument("--data-dir", help="where bare data file names are found (default: the repository's data/)")
    p.add_argument(
        "--int8-aware", action="store_true", default=None,
        help="round the weights in the forward pass as the int8 export does and save them rounded "
        "(export.train.int8_aware)",
    )  # fmt: skip
    p.add_argument("--int8-calibration", help="with --int8-aware: the export's --calibration file (outlier channels)")
    p.add_argument("--int8-outlier-products", choices=["none", *OUTLIER_PRODUCTS],
                   help="with --int8-aware: the export's --outlier-products")  # fmt: skip
    p.add_argument("--int8-outlier-channels", type=int, help="with --int8-aware: fp32 channels per product (8)")
    p.add_argument("--int8-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="with --int8-aware: round the embedding tables (as --quantize-embeddings)")  # fmt: skip
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line (options of ``--config`` first, the command line winning).

    Raises:
        export.errors.ConfigError: An unknown or missing option, or a value out of range.
    """
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return config_from_values(values)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (see :mod:`export.errors`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress = None
    try:
        cfg = config_from_args(argv)
        from export.train.loop import train

        progress = BarProgress(unit="step")
        train(cfg, progress=progress)
    except (ExportError, ValueError, OSError) as exc:
        return fail(exc)
    finally:
        if progress is not None:
            progress.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
