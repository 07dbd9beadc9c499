"""A bundle of the default model's size for the load benchmark, when no trained model is at hand.

The MiniLM encoder converted to DistilBERT (``export.convert.load_base("minilm")``), with a freshly initialised
classification head, exported to ONNX and quantized to int8 like the default bundle: every operation the
trained model runs, at the same sizes, so the timings hold; its scores mean nothing. Built once into a cache
directory.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MAX_LENGTH = 256
WINDOW_STRIDE = 192
SEED = 0


def _export(model: torch.nn.Module, path: Path) -> None:
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2178, 102, 0, 0, 0]], dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits().eval(),
            (ids, (ids != 0).long()),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


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
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from export.bundle import write_bundle
    from export.convert import load_base

    model, tokenizer_json = load_base("minilm", seed=SEED)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        logger.info("exporting the MiniLM-sized stand-in to ONNX")
        _export(model, fp32)
        onnx_path = fp32
        if int8:
            onnx_path = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(fp32, onnx_path, per_channel=True, weight_type=QuantType.QInt8)
        config = model.config
        metadata = {
            "name": "load-benchmark-stand-in-minilm",
            "labels": ["human", "ai"],
            "max_length": MAX_LENGTH,
            "window_stride": WINDOW_STRIDE,
            "threshold": 0.5,
            "variant": {
                "precision": "int8" if int8 else "fp32",
                "optimization": None,
                "quantization": {"mode": "dynamic", "per_channel": True, "weight_type": "QInt8"} if int8 else None,
                "pruning": None,
            },
            "architecture": {
                "model_type": "distilbert",
                "layers": config.n_layers,
                "hidden_size": config.dim,
                "heads": config.n_heads,
                "ffn_size": config.hidden_dim,
                "vocab_size": config.vocab_size,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "training": {"seed": SEED, "data": "none: MiniLM encoder with an untrained head (timing only)"},
        }
        return write_bundle(out, onnx_path=onnx_path, tokenizer_path=tokenizer_json, metadata=metadata)
