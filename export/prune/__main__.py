"""``python -m export.prune``: prune a checkpoint (:mod:`export.prune.job`) or sweep several targets
(:mod:`export.prune.sweep`).

    python -m export.prune --checkpoint runs/minilm --out runs/minilm-h8f768l4 --preset medium --distill \\
        --data detectgpt_family.jsonl.gz --data outfox_essays.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from export.console import BarProgress, fail
from export.data.records import use_data_dir
from export.errors import ExportError
from export.prune.config import PRESETS, PruneJob, SweepConfig, job_from_options, parse_targets

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "configs" / "default.toml"


def export_recipe(config: Path) -> dict[str, Any]:
    """The ``[export]`` table of a pipeline configuration (the options every sweep bundle is built with).

    Raises:
        export.errors.ConfigError: The file cannot be read.
    """
    from export.pipeline.config import read_pipeline_config

    return dict(read_pipeline_config(config).export)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m export.prune``."""
    p = argparse.ArgumentParser(
        prog="python -m export.prune",
        description="Prune a DistilBERT checkpoint (heads, FFN neurons, layers), recover it, and write a checkpoint;"
        " or sweep several targets and tabulate size, FLOPs, ROC AUC and int8 speed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="trained DistilBERT checkpoint (export.train output)")
    p.add_argument("--out", required=True, help="pruned checkpoint directory (with --sweep: the sweep directory)")
    p.add_argument("--data", required=True, nargs="+", action="extend", metavar="FILE", help="training data")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named target; --heads/--ffn/--layers override it")
    p.add_argument("--heads", type=int, help="attention heads kept per layer (default: all)")
    p.add_argument("--ffn", type=int, help="FFN neurons kept per layer (default: all)")
    p.add_argument("--layers", type=int, help="layers kept (default: all)")
    p.add_argument("--sweep", help="';'-separated targets, each a preset or 'heads,ffn,layers' ('-' keeps all)")
    p.add_argument("--importance-samples", type=int, default=256, help="training texts for the importance")
    p.add_argument("--recover-samples", type=int, default=2000, help="training texts for recovery (0: none)")
    p.add_argument("--recover-epochs", type=float, default=1.0)
    p.add_argument("--eval-samples", type=int, default=1000, help="validation texts (selection and threshold)")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned model during recovery")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the soft targets")
    p.add_argument("--temperature", type=float, default=2.0, help="temperature of the soft targets")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, help="tokens per text (default: the checkpoint's training value)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--eval-every", type=int, default=0, help="also validate every N recovery steps")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, help="PyTorch threads (default: every core)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--balance", action="store_true", help="domain-balanced draws with the training run's shares")
    p.add_argument("--augment", type=float, default=0.0, help="probability of perturbing a recovery text")
    p.add_argument("--data-dir", help="where bare data file names are found (default: the repository's data/)")
    p.add_argument("--held-out-samples", type=int, help="sweep: at most this many texts per held-out set")
    p.add_argument("--bench-texts", type=int, default=64, help="sweep: texts in the throughput sample")
    p.add_argument("--bench-threads", type=int, default=2, help="sweep: ONNX Runtime threads")
    p.add_argument(
        "--recipe", type=Path, default=DEFAULT_RECIPE,
        help="sweep: pipeline configuration whose [export] table builds every bundle (default: the shipped model's)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    return p


CLI_ONLY = (
    "checkpoint",
    "out",
    "sweep",
    "held_out_samples",
    "bench_texts",
    "bench_threads",
    "recipe",
    "data_dir",
    "verbose",
)


def job_from_args(args: argparse.Namespace) -> PruneJob:
    """The :class:`PruneJob` of parsed arguments (the preset, overridden by explicit sizes).

    Raises:
        export.errors.ConfigError: An option out of range.
    """
    options = {k: v for k, v in vars(args).items() if k not in CLI_ONLY}
    return job_from_options(args.checkpoint, args.out, options)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (see :mod:`export.errors`)."""

    args = build_parser().parse_args(argv)
    if args.data_dir:
        use_data_dir(args.data_dir)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    progress = BarProgress(unit="step")
    try:
        from export.prune.job import prune_checkpoint
        from export.prune.sweep import run_sweep

        if args.sweep and (args.preset or args.heads or args.ffn or args.layers):
            raise ValueError("--sweep names its own targets; leave out --preset, --heads, --ffn and --layers")
        job = job_from_args(args)
        if args.sweep:
            sweep = SweepConfig(
                targets=parse_targets(args.sweep), held_out_samples=args.held_out_samples,
                bench_texts=args.bench_texts, bench_threads=args.bench_threads, recipe=export_recipe(args.recipe),
            )  # fmt: skip
            result = run_sweep(job, sweep, progress=progress)
            print(result["markdown"])
            return 0
        out = prune_checkpoint(job, progress=progress)
    except (ExportError, ValueError, OSError) as exc:
        return fail(exc)
    finally:
        progress.close()
    record = json.loads((out / "pruning.json").read_text(encoding="utf-8"))
    params = record["parameters"]
    print(
        f"wrote {out}: {params['before']:,} -> {params['after']:,} parameters ({params['ratio']:.1%}); validation "
        f"ROC AUC {record['teacher_validation']['roc_auc']:.4f} unpruned, {record['recovery']['best']['roc_auc']:.4f}"
        f" pruned; threshold {record['threshold']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
