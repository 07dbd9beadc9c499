"""Stage 1 of the export: a Hugging Face sequence-classification checkpoint to an fp32 ONNX graph.

The graph takes ``input_ids`` and ``attention_mask`` (plus ``token_type_ids`` for BERT checkpoints), int64
``[batch, sequence]`` with both axes dynamic, and returns ``logits`` float32 ``[batch, 2]``. Before the graph is
moved into place, its logits are compared with PyTorch's on real texts of mixed lengths (16 tokens up to
``max_length``, one padded batch plus single texts): a difference above ``ExportConfig.atol`` (1e-4) raises
:class:`ParityError` and nothing is written.

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript tracer) by default. Measured on this machine
(torch 2.13, transformers 4.57, onnxruntime 1.32, a DistilBERT of MiniLM size, 2 threads, batch 16 x 256):

============================  =========  ==============  ===========================  ====================
exporter                      export s   parity (max)    fusions (ORT optimizer)      int8 speed vs fp32
============================  =========  ==============  ===========================  ====================
TorchScript (``dynamo=False``)  1.5       1.4e-7          Attention 6, SkipLN 12, ...  1.91x
Optimum ``main_export``         2.8       1.4e-7          the same graph               the same
dynamo (``dynamo=True``)        6.0       7.8e-8          no Attention fusion          1.78x
============================  =========  ==============  ===========================  ====================

Optimum's exporter runs the same TorchScript tracer underneath (identical graph), adds a dependency whose API
moves between major versions and writes extra files; the dynamo exporter is slower, needs opset >= 18, and its
graph is not recognised by the ONNX Runtime attention fusion, which costs int8 speed. ``exporter="dynamo"``
stays available for when the TorchScript tracer is removed from PyTorch; parity and gates check it the same way.
The model is loaded with SDPA attention: the ONNX Runtime fuser recognises DistilBERT's attention in the graph
traced from SDPA (6 of 6 layers fused), but not in the one traced from the eager implementation (0 of 6); BERT's
fuses either way. The traced example batch is padded, so the mask path is in the graph.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tokenizers import Tokenizer

from export.errors import CheckpointError
from export.files import run_stage, staged_file
from export.onnx.parity import ParitySet
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("distilbert", "bert")
EXPORTERS = ("torchscript", "dynamo")
TOKENIZER_FILE = "tokenizer.json"
_MIN_PARITY_LENGTH = 16
_PARITY_TEXTS = 8


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """How the PyTorch model becomes an ONNX graph.

    Attributes:
        opset: ONNX opset (the dynamo exporter needs 18 or later).
        exporter: ``"torchscript"`` (``torch.onnx.export(dynamo=False)``) or ``"dynamo"``.
        max_length: The longest window (tokens, special tokens included) the parity texts reach.
        atol: The largest max abs logit difference against PyTorch that passes.
    """

    opset: int = 17
    exporter: str = "torchscript"
    max_length: int = 256
    atol: float = 1e-4

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if not isinstance(self.opset, int) or not 14 <= self.opset <= 21:
            raise ValueError(f"opset must be an integer in [14, 21], got {self.opset!r}")
        if self.exporter == "dynamo" and self.opset < 18:
            raise ValueError(f"the dynamo exporter needs opset >= 18, got {self.opset}")
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= 8192:
            raise ValueError(f"max_length must be an integer in [8, 8192], got {self.max_length!r}")
        if not 0.0 < self.atol < 1.0:
            raise ValueError(f"atol must be in (0, 1), got {self.atol!r}")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, validated sequence-classification checkpoint.

    Attributes:
        path: The checkpoint directory.
        model: The PyTorch model in eval mode, SDPA attention.
        config: Its Hugging Face config.
        input_names: The graph inputs it takes, in order.
        training: The checkpoint's ``training.json``, or ``None`` when the directory has none.
    """

    path: Path
    model: torch.nn.Module
    config: Any
    input_names: tuple[str, ...]
    training: TrainingRecord | None

    @property
    def tokenizer_path(self) -> Path:
        """The checkpoint's ``tokenizer.json``."""
        return self.path / TOKENIZER_FILE

    @property
    def pad_id(self) -> int:
        """The padding token id (the config's, else 0)."""
        pad = getattr(self.config, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def architecture(self) -> dict[str, Any]:
        """Model type, sizes and parameter count, as ``aidetect.json`` records them."""
        c = self.config
        if c.model_type == "distilbert":
            sizes = {"layers": c.n_layers, "hidden_size": c.dim, "heads": c.n_heads, "ffn_size": c.hidden_dim}
        else:
            sizes = {
                "layers": c.num_hidden_layers,
                "hidden_size": c.hidden_size,
                "heads": c.num_attention_heads,
                "ffn_size": c.intermediate_size,
            }
        out: dict[str, Any] = {"model_type": c.model_type, **sizes, "vocab_size": c.vocab_size}
        out["max_position_embeddings"] = c.max_position_embeddings
        out["parameters"] = int(sum(p.numel() for p in self.model.parameters()))
        if getattr(c, "pruned_heads", None):
            out["pruned_heads"] = {str(k): sorted(v) for k, v in c.pruned_heads.items()}
        return out


def load_checkpoint(checkpoint: str | os.PathLike[str] | Checkpoint) -> Checkpoint:
    """Load and validate a Hugging Face DistilBERT/BERT sequence-classification checkpoint directory.

    Args:
        checkpoint: The directory (``config.json``, weights, ``tokenizer.json``, optionally ``training.json``),
            or an already loaded :class:`Checkpoint`, returned as is.

    Returns:
        The loaded checkpoint.

    Raises:
        CheckpointError: The directory or one of its files is missing or unreadable, the model has a number of
            labels other than 2, or its type is not DistilBERT/BERT.
    """
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist (train one with python -m export.train)")
    for name in ("config.json", TOKENIZER_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: no {name} in the checkpoint directory")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: cannot be read ({exc})") from exc
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type {config.model_type!r} is not supported (supported: {SUPPORTED_MODEL_TYPES})"
        )
    if config.num_labels != 2:
        raise CheckpointError(
            f"{path}: the model has {config.num_labels} labels; a detector needs exactly 2 (human, ai)"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, attn_implementation="sdpa"
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights cannot be loaded ({exc})") from exc
    training = TrainingRecord.read(path)
    names = ("input_ids", "attention_mask") + (("token_type_ids",) if config.model_type == "bert" else ())
    return Checkpoint(path=path, model=model.eval(), config=config, input_names=names, training=training)


def parity_set(checkpoint: Checkpoint, texts: Sequence[str], max_length: int) -> ParitySet:
    """Build the parity inputs from real texts and compute PyTorch's logits for them.

    Up to 8 texts are cut to lengths spread evenly from 16 tokens to ``max_length`` (texts shorter than their
    target keep their own length), padded into one batch; the shortest and the longest also run alone.

    Args:
        checkpoint: The loaded checkpoint.
        texts: Real texts, preferably longer than ``max_length`` tokens.
        max_length: The longest window, special tokens included.

    Raises:
        ValueError: No non-empty text.
    """
    texts = [t for t in texts if isinstance(t, str) and t.strip()][:_PARITY_TEXTS]
    if not texts:
        raise ValueError("parity needs at least one non-empty text")
    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_path))
    tokenizer.no_padding()
    low = min(_MIN_PARITY_LENGTH, max_length)
    targets = np.linspace(low, max_length, num=len(texts)).round().astype(int)
    rows: list[list[int]] = []
    for text, target in zip(texts, targets, strict=True):
        tokenizer.enable_truncation(max_length=int(target))
        rows.append(tokenizer.encode(text).ids)
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    groups = [rows, [rows[by_length[0]]], [rows[by_length[-1]]]]
    feeds = tuple(pad_rows(group, checkpoint.pad_id, checkpoint.input_names) for group in groups)
    return ParitySet(feeds=feeds, logits=tuple(torch_logits(checkpoint.model, f) for f in feeds))


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, names: Sequence[str], width: int | None = None
) -> dict[str, NDArray[np.int64]]:
    """Token id rows as one feed dict, padded to ``width`` (default: the longest row); token types are 0."""
    width = width or max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


def torch_logits(model: torch.nn.Module, feed: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
    """The PyTorch model's logits for one ONNX-style feed dict."""
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return out.logits.float().numpy()


class _LogitsOnly(torch.nn.Module):
    """Positional inputs in graph order, ``logits`` as the one output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def _trace(checkpoint: Checkpoint, parity: ParitySet, path: Path, cfg: ExportConfig) -> None:
    import onnx

    names = checkpoint.input_names
    wrapper = _LogitsOnly(checkpoint.model).eval()
    args = tuple(torch.from_numpy(parity.feeds[0][n]) for n in names)
    if args[0].shape[0] < 2:  # a batch of one would let the dynamo exporter specialise the batch axis
        args = tuple(a.repeat(2, 1) for a in args)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; parity is the real check
        if cfg.exporter == "torchscript":
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            torch.onnx.export(
                wrapper, args, str(path), input_names=list(names), output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=cfg.opset, dynamo=False,
                do_constant_folding=True,
            )  # fmt: skip
        else:
            batch = torch.export.Dim("batch")
            seq = torch.export.Dim("sequence", max=checkpoint.config.max_position_embeddings)
            program = torch.onnx.export(
                wrapper, args, input_names=list(names), output_names=["logits"], opset_version=cfg.opset,
                dynamic_shapes={n: {0: batch, 1: seq} for n in names}, dynamo=True, verbose=False,
            )  # fmt: skip
            program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))


def export_onnx(
    checkpoint: str | os.PathLike[str] | Checkpoint,
    out_path: str | os.PathLike[str],
    cfg: ExportConfig,
    *,
    parity: ParitySet | None = None,
    texts: Sequence[str] | None = None,
    recipe: list[dict[str, Any]] | None = None,
) -> Path:
    """Export a checkpoint to an fp32 ONNX graph and check it against PyTorch.

    Args:
        checkpoint: A checkpoint directory or a loaded :class:`Checkpoint`.
        out_path: Where the ``.onnx`` file goes; written only once parity holds.
        cfg: Exporter, opset, ``max_length`` and tolerance.
        parity: The reference to check against; built from ``texts`` when not given.
        texts: Real texts for :func:`parity_set` (needed when ``parity`` is not given).
        recipe: A list to append this stage's record to (settings and measured parity).

    Returns:
        ``out_path``.

    Raises:
        CheckpointError: See :func:`load_checkpoint`; also ``max_length`` beyond the model's positions.
        ParityError: The graph's logits differ from PyTorch's by ``cfg.atol`` or more.
        ExportError: The exporter failed.
    """
    ckpt = load_checkpoint(checkpoint)
    limit = ckpt.config.max_position_embeddings
    if cfg.max_length > limit:
        raise CheckpointError(f"{ckpt.path}: max_length {cfg.max_length} exceeds the model's {limit} positions")
    if parity is None:
        if texts is None:
            raise ValueError("export_onnx needs parity= or texts=")
        parity = parity_set(ckpt, texts, cfg.max_length)
    out_path = Path(out_path)
    with staged_file(out_path, "export") as staged:
        run_stage(
            f"{ckpt.path}: ONNX export ({cfg.exporter}, opset {cfg.opset})", lambda: _trace(ckpt, parity, staged, cfg)
        )
        diff = parity.check(staged, cfg.atol, f"{ckpt.path} -> ONNX ({cfg.exporter})")
    if recipe is not None:
        recipe.append(
            {
                "stage": "export",
                "exporter": cfg.exporter,
                "opset": cfg.opset,
                "inputs": list(ckpt.input_names),
                "parity_max_abs_logit_diff": diff,
                "parity_lengths": parity.lengths,
            }
        )
    return out_path
