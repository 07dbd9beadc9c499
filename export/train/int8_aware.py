"""Int8-aware training (``int8_aware = true``): the forward pass sees the weights as the int8 export will hold them.

Training a checkpoint whose weights already sit on the int8 grid (one recovered from a bundle, ``export.recover``)
at a small learning rate moves most weights by less than half an int8 step: the export then rounds them back to
where they were, and what the training learned is gone. Measured on the shipped model's weights after 625 steps at
learning rate 2e-5: the largest weight change 0.0015, half a step 0.002-0.004; the result's weights rounded to
int8 (in fp32) agreed with the result itself on 93.4% of the detectgpt validation decisions.

Here every quantized weight is replaced in the forward pass by its int8 rounding, with the gradient passed
straight through to the fp32 weight the optimizer keeps (the straight-through estimator), so training moves weights
across rounding boundaries when that lowers the loss. The rounding is the export's (:mod:`export.onnx.quantize`,
:mod:`export.onnx.outliers`):

- every ``nn.Linear``: symmetric int8 per output channel, ``scale = max |w| / 127``, levels -127..127;
- with outlier channels (``outlier_products``): the ``k`` input channels of each FFN product (and with
  ``"ffn_attention"`` the attention output product) whose activations peak highest on the export's 128
  calibration windows stay in fp32 and are left out of the scales; the FFN output product's outlier neurons are
  computed in fp32 end to end, so those rows of the FFN input product stay fp32 as well;
- the word and position embedding tables and the embedding LayerNorm's weight and bias (``embeddings``):
  asymmetric uint8 with one scale per tensor, as ONNX Runtime's ``QEmbedLayerNormalization`` holds them.

The checkpoint is saved with the weights rounded (:func:`rounded_weights`): its fp32 graph is then the model the
training evaluated, and the int8 export of it changes only what activation quantization changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from export.data.split import Split, calibration_texts
from export.onnx.outliers import OUTLIER_PRODUCTS
from export.onnx.quantize import QuantizeConfig

LEVELS = 127
"""Symmetric int8 weights: levels -127..127 (ONNX Runtime's per-channel QInt8 weights)."""
PRODUCTS = ("none", *OUTLIER_PRODUCTS)


@dataclass
class Int8Plan:
    """What is rounded and what stays fp32: per ``nn.Linear`` (by module name) the input columns and output rows
    kept in fp32, and whether the embedding tables are rounded."""

    columns: dict[str, list[int]] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)
    embeddings: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"fp32_input_channels": self.columns, "fp32_output_rows": self.rows, "embeddings": self.embeddings}


def round_rows(weight: torch.Tensor, columns: Sequence[int] = (), rows: Sequence[int] = ()) -> torch.Tensor:
    """``weight`` ([out, in]) rounded to symmetric int8 per output row; ``columns`` and ``rows`` kept as they are
    and left out of the scales. The gradient passes straight through."""
    keep = torch.ones_like(weight, dtype=torch.bool)
    if len(columns):
        keep[:, list(columns)] = False
    if len(rows):
        keep[list(rows), :] = False
    inliers = torch.where(keep, weight, torch.zeros_like(weight))
    scale = (inliers.detach().abs().amax(dim=1, keepdim=True) / LEVELS).clamp_min(torch.finfo(weight.dtype).tiny)
    rounded = torch.clamp(torch.round(inliers / scale), -LEVELS, LEVELS) * scale
    return weight + (torch.where(keep, rounded, weight) - weight).detach()


def round_table(weight: torch.Tensor) -> torch.Tensor:
    """An embedding table rounded to asymmetric uint8 with one scale (the range always holds 0)."""
    w = weight.detach()
    low, high = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    if high == low:
        return weight
    scale = (high - low) / 255.0
    zero = round(-low / scale)
    rounded = (torch.clamp(torch.round(w / scale) + zero, 0, 255) - zero) * scale
    return weight + (rounded - w)


def calibration_windows(path: str | Path, tokenizer: Any, split: Split, size: int | None = None) -> list[list[int]]:
    """The export's calibration windows (:func:`export.data.split.calibration_texts`, ``size`` of them, by default
    as many as the outlier channels are chosen on), one truncated window per text."""
    size = size if size is not None else QuantizeConfig.outlier_channels().calibration_size
    return [e.ids for e in tokenizer.encode_batch(calibration_texts(path, split, size))]


def _targets(model: torch.nn.Module, products: str) -> dict[str, torch.nn.Linear]:
    if products == "none":
        return {}
    names = ("ffn.lin1", "ffn.lin2") + (("attention.out_lin",) if products == "ffn_attention" else ())
    return {
        n: m for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layer." in n and n.endswith(names)
    }  # fmt: skip


def _peaks(
    model: torch.nn.Module, targets: dict[str, torch.nn.Linear], windows: Sequence[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """Per target, the largest |input| per channel over ``windows`` (one window per forward pass)."""
    peaks: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            peak = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
            peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for ids in windows:
                model(input_ids=torch.tensor([list(ids)]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return peaks


def plan(
    model: torch.nn.Module, windows: Sequence[Sequence[int]], *, products: str = "ffn_attention", k: int = 8,
    embeddings: bool = True, rounds: int = 4,
) -> Int8Plan:  # fmt: skip
    """Choose the fp32 outlier channels as the export does: per target product, the ``k`` input channels with the
    largest |activation| over ``windows``.

    The export chooses them on the checkpoint as saved, i.e. rounded; the rounding depends on the choice, so the
    choice is made on ``model`` as it is, then again under the rounding it gives, until it holds (at most
    ``rounds`` times; within :func:`int8_forward` the model is already rounded).
    """
    if products not in PRODUCTS:
        raise ValueError(f"outlier products must be one of {PRODUCTS}, got {products!r}")
    targets = _targets(model, products)
    rounded = any("forward" in vars(m) for m in model.modules())  # within int8_forward already
    result = Int8Plan(embeddings=embeddings)
    for attempt in range(1 if rounded else max(rounds, 1)):
        with int8_forward(model, result) if attempt else contextlib.nullcontext():
            peaks = _peaks(model, targets, windows)
        chosen = Int8Plan(embeddings=embeddings)
        for name, module in targets.items():
            if name not in peaks:
                continue
            count = min(k, module.in_features - 1)
            top = sorted(int(i) for i in torch.argsort(-peaks[name], stable=True)[:count])
            chosen.columns[name] = top
            if name.endswith("ffn.lin2"):  # its outlier neurons: computed in fp32 from the FFN input
                chosen.rows[name[: -len("lin2")] + "lin1"] = top
        if chosen.columns == result.columns:
            break
        result = chosen
    return chosen


def update(how: Int8Plan, new: Int8Plan) -> None:
    """Make ``how`` choose what ``new`` does (an :func:`int8_forward` block in progress follows it)."""
    how.columns, how.rows, how.embeddings = new.columns, new.rows, new.embeddings


def _linear_forward(module: torch.nn.Linear, name: str, how: Int8Plan) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:  # the plan read at every call: see update()
        return F.linear(x, round_rows(module.weight, how.columns.get(name, []), how.rows.get(name, [])), module.bias)

    return forward


def _embedding_forward(module: torch.nn.Embedding) -> Any:
    def forward(ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, round_table(module.weight), module.padding_idx)

    return forward


def _layer_norm_forward(module: torch.nn.LayerNorm) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        weight, bias = round_table(module.weight), round_table(module.bias)
        return F.layer_norm(x, module.normalized_shape, weight, bias, module.eps)

    return forward


def _embedding_tensors(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules ``QEmbedLayerNormalization`` holds in uint8: the word and position tables, the LayerNorm."""
    names = ("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.LayerNorm")
    return {n: m for n, m in model.named_modules() if n.endswith(names)}


@contextlib.contextmanager
def int8_forward(model: torch.nn.Module, how: Int8Plan) -> Iterator[None]:
    """Within the block, ``model``'s forward pass uses the int8-rounded weights of ``how``."""
    patched: list[torch.nn.Module] = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                module.forward = _linear_forward(module, name, how)  # type: ignore[method-assign]
                patched.append(module)
        if how.embeddings:
            for module in _embedding_tensors(model).values():
                if isinstance(module, torch.nn.Embedding):
                    module.forward = _embedding_forward(module)  # type: ignore[method-assign]
                elif isinstance(module, torch.nn.LayerNorm):
                    module.forward = _layer_norm_forward(module)  # type: ignore[method-assign]
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


@contextlib.contextmanager
def rounded_weights(model: torch.nn.Module, how: Int8Plan) -> Iterator[None]:
    """Within the block, ``model``'s parameters hold their int8-rounded values (to save them); the fp32 values the
    optimizer works on come back afterwards."""
    values: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            values.append((module.weight, round_rows(module.weight, how.columns.get(name, []), how.rows.get(name, []))))
    if how.embeddings:
        for module in _embedding_tensors(model).values():
            values += [(p, round_table(p)) for p in (module.weight, getattr(module, "bias", None)) if p is not None]
    saved = [(param, param.detach().clone()) for param, _ in values]
    with torch.no_grad():
        for param, value in values:
            param.copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)
