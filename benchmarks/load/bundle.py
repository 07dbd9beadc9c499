"""A bundle of the default model's size for the load benchmark, when no trained model is at hand.

The MiniLM encoder converted to DistilBERT (``export.train.convert.load_base("minilm")``), with a freshly
initialised classification head, built by the one build function (:func:`export.onnx.build.build_bundles`) with
the shipped model's recipe (O2 fusion, LayerNorm as plain operators, dynamic int8 with int8 embedding tables):
every operation the trained model runs, at the same sizes, so the timings hold; its scores mean nothing. Built
once into a cache directory.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_LENGTH = 256
WINDOW_STRIDE = 192
SEED = 0


def build_stand_in(out: Path, *, int8: bool = True) -> Path:
    """Write the stand-in bundle to ``out`` (kept if it is already there).

    Args:
        out: The bundle directory.
        int8: Quantize the weights to int8 (dynamic, per channel), as the default bundle is.

    Returns:
        ``out``.
    """
    if (out / "aidetect.json").is_file():
        return out
    from export.files import replace_dir
    from export.onnx.build import build_bundles
    from export.onnx.recipe import build_config
    from export.train.convert import load_base, save_checkpoint

    variant = "int8" if int8 else "fp32"
    model, tokenizer_json = load_base("minilm", seed=SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.build-") as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        save_checkpoint(model.eval(), tokenizer_json, checkpoint)
        logger.info("building the MiniLM-sized stand-in bundle")
        options = {
            "variant": (variant,), "max_length": MAX_LENGTH, "window_stride": WINDOW_STRIDE, "int8": "avx512_vnni",
            "quantize_embeddings": True, "gate": False, "name": "load-benchmark-stand-in-minilm", "bench_texts": 0,
        }  # fmt: skip
        build_bundles(build_config(checkpoint, Path(tmp) / "bundles", options))
        replace_dir(Path(tmp) / "bundles" / variant, out)
    return out
