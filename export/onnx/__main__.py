"""``python -m export.to_onnx``: a trained checkpoint to verified model bundles, one per variant.

Writes ``--out/fp32/``, ``--out/int8/``, ``--out/fp16/`` (the variants asked for), each a bundle that
``aidetect_infer.Detector`` loads; ``Detector.from_pretrained(out)`` picks a variant (docs/bundle-format.md).
What happens and in which order is described in :mod:`export.onnx.build`. Every stage checks its result:
parity against PyTorch before anything else, again after graph optimization, and the accuracy gate of each
reduced-precision variant against fp32 on the ``--eval`` sets. Any failure exits non-zero, prints why, and
leaves ``--out`` untouched.

Example::

    python -m export.to_onnx --checkpoint runs/minilm --out models/minilm --variant fp32 int8 fp16 \\
        --eval detectgpt_family.jsonl.gz@validation outfox_essays.jsonl.gz@test
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from export.console import BarProgress, fail
from export.errors import ExportError
from export.onnx.build import VariantReport, build_bundles
from export.onnx.export import EXPORTERS
from export.onnx.layernorm import MODES as LAYERNORM_MODES
from export.onnx.optimize import LEVELS
from export.onnx.quantize import EMBEDDING_SCALES, OUTLIER_PRODUCT_SETS
from export.onnx.recipe import INT8_PRESETS, VARIANTS, BuildConfig, build_config

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m export.to_onnx``."""
    p = argparse.ArgumentParser(
        prog="python -m export.to_onnx",
        description="Export a checkpoint to verified ONNX model bundles (fp32, int8, fp16).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory (export.train output)")
    p.add_argument("--out", required=True, type=Path, help="parent directory of the variant bundles")
    p.add_argument("--variant", nargs="+", choices=VARIANTS, default=["fp32", "int8"], help="variants to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 18 for dynamo)")
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    p.add_argument("--optimize", choices=LEVELS, default="O2", help="graph optimization level")
    p.add_argument(
        "--int8", choices=list(INT8_PRESETS), default="auto",
        help="int8 preset; auto tries avx512_vnni, avx2, outlier_channels (with --calibration), early_ffn_fp32, "
        "avx512_vnni_mixed, weight_only; the first that passes is kept",
    )  # fmt: skip
    p.add_argument(
        "--quantize-embeddings", action="store_true",
        help="int8: quantize the embedding tables too (a MiniLM-sized bundle 59 -> 23 MB; costs some agreement)",
    )  # fmt: skip
    p.add_argument(
        "--embedding-scales", choices=EMBEDDING_SCALES, default="tensor",
        help="with --quantize-embeddings: one scale for the word table (tensor) or one per vocabulary row (row)",
    )  # fmt: skip
    p.add_argument(
        "--outlier-products", choices=OUTLIER_PRODUCT_SETS, default="ffn_attention",
        help="int8 with outlier channels: split the FFN products and the attention output projection, or the FFN's"
        " only",
    )  # fmt: skip
    p.add_argument(
        "--layernorm", choices=LAYERNORM_MODES, default="standard",
        help="fp32/int8: LayerNorm as plain operators or ONNX LayerNormalization (both faster on ONNX Runtime's "
        "CPU provider than the fused kernels), or fused",
    )  # fmt: skip
    p.add_argument("--calibration", type=Path, help="training data: static int8 calibration, the outlier channels")
    p.add_argument("--eval", nargs="+", default=[], metavar="SPEC", help="held-out sets, [NAME=]PATH[@SUBSET]")
    p.add_argument("--eval-limit", type=int, default=None, help="at most this many texts per evaluation set")
    p.add_argument("--max-length", type=int, default=None, help="window length (default: training's, or 256)")
    p.add_argument("--window-stride", type=int, default=None, help="tokens between windows (default 3/4 window)")
    p.add_argument("--threshold", type=float, default=None, help="used when training.json has no threshold")
    p.add_argument("--gate-auc-drop", type=float, default=0.005, help="largest ROC AUC drop against fp32")
    p.add_argument("--gate-agreement", type=float, default=0.99, help="smallest decision agreement with fp32")
    p.add_argument("--gate-prob-diff", type=float, default=None, help="largest P(AI) difference (default: report)")
    p.add_argument(
        "--gate-batch-diff", type=float, default=1e-5,
        help="largest change of a text's P(AI) between scoring it alone and in a batch (default 1e-5)",
    )  # fmt: skip
    p.add_argument("--name", default=None, help="bundle name prefix (default: the checkpoint directory name)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--threads", type=int, default=2, help="threads for scoring and throughput")
    p.add_argument("--bench-texts", type=int, default=64, help="texts of the first --eval set to time (0: skip)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """Turn parsed arguments into a validated :class:`BuildConfig` (through :func:`build_config`).

    Raises:
        export.errors.ConfigError: An option out of range.
    """
    options = {k: v for k, v in vars(args).items() if k not in ("checkpoint", "out", "verbose")}
    return build_config(args.checkpoint, args.out, options)


def summary_table(reports: Sequence[VariantReport]) -> str:
    """The end-of-run table: size, parity, ROC AUC per set, agreement with fp32, throughput."""
    sets = list(dict.fromkeys(name for r in reports for name in r.metrics))
    header = ["variant", "MB", "parity", *(f"AUC {s}" for s in sets), "agreement", "texts/s"]
    rows = []
    for r in reports:
        agreement = [m["agreement"] for m in r.gates.get("sets", {}).values()]
        rows.append([
            r.variant,
            "" if math.isnan(r.megabytes) else f"{r.megabytes:.1f}",
            f"{r.parity:.2g}" if r.variant != "pytorch" else "",
            *(f"{r.metrics[s]['roc_auc']:.4f}" if s in r.metrics else "" for s in sets),
            f"{min(agreement):.4f}" if agreement else "",
            f"{r.texts_per_s:.1f}" if r.texts_per_s is not None else "",
        ])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in [header, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (see :mod:`export.errors`: 4 bad input, 10 a check failed)."""
    args = build_parser().parse_args(argv)
    # The quantizer logs advice on the root logger; show only this project's messages below ERROR.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for name in ("export", "aidetect_infer"):
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        return fail(exc)
    progress = BarProgress()
    try:
        reports = build_bundles(cfg, progress=progress)
    except (ExportError, ValueError, OSError) as exc:
        progress.close()
        return fail(exc, note=f"nothing was written to {cfg.out}")
    progress.close()
    print(summary_table(reports))
    print(f"wrote {', '.join(str(r.path) for r in reports if r.variant in VARIANTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
