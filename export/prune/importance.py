"""Importance of layers, attention heads and FFN neurons of a DistilBERT classifier, measured on training data.

- Heads (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate ``xi_h = 1`` multiplies each
  head's output; the importance is ``|dL/dxi_h|``, the gradient summed over the tokens and texts of a batch, its
  absolute value accumulated over batches and L2-normalised per layer.
- FFN neurons: first-order Taylor importance, the same kind of gate on each neuron's activation:
  ``|dL/dm_n| = |sum over tokens of a_n * dL/da_n|``, accumulated over batches.
- Layers: greedy; one at a time, the layer whose removal raises the mean training loss least is dropped (each
  candidate is measured with the layer skipped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(input_ids, attention_mask, labels)``."""

HEAD_METHOD = (
    "gradient of a per-head output gate (Michel et al. 2019): |dL/dxi| summed over tokens per batch, "
    "accumulated over batches, L2-normalised per layer"
)
FFN_METHOD = "first-order Taylor: |sum over tokens of activation * dL/dactivation| per neuron, accumulated"
LAYER_METHOD = "greedy: drop the layer whose removal raises the mean training loss least, one at a time"


@dataclass(frozen=True)
class Importance:
    """Head and neuron importance of every layer.

    Attributes:
        heads: Per layer, one score per current head (L2-normalised per layer).
        ffn: Per layer, one score per FFN neuron.
        batches: How many batches were accumulated.
    """

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]
    batches: int


@contextmanager
def _gates(model: Any) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Gates of ones on every head's output (before ``out_lin``) and every neuron's activation (before ``lin2``).

    Scaling a head's output by ``xi`` is the same as scaling its attention weights by ``xi`` (Michel et al.'s
    head mask), since the output is linear in them; a gate before ``out_lin`` works with any attention kernel.
    """
    heads: list[torch.Tensor] = []
    ffn: list[torch.Tensor] = []
    handles = []
    for layer in model.distilbert.transformer.layer:
        att = layer.attention
        head_gate = torch.ones(att.n_heads, requires_grad=True)
        ffn_gate = torch.ones(layer.ffn.lin1.out_features, requires_grad=True)
        size = att.attention_head_size

        def gate_heads(_m: Any, args: tuple, g: torch.Tensor = head_gate, s: int = size) -> tuple:
            return (args[0] * g.repeat_interleave(s),)

        def gate_ffn(_m: Any, args: tuple, g: torch.Tensor = ffn_gate) -> tuple:
            return (args[0] * g,)

        handles.append(att.out_lin.register_forward_pre_hook(gate_heads))
        handles.append(layer.ffn.lin2.register_forward_pre_hook(gate_ffn))
        heads.append(head_gate)
        ffn.append(ffn_gate)
    try:
        yield heads, ffn
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; restored afterwards."""
    training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        model.train(training)


def gradient_importance(model: Any, batches: Sequence[Batch]) -> Importance:
    """Head and FFN-neuron importance from the gradients of the cross-entropy loss (see the module docstring).

    Args:
        model: A DistilBERT classifier; left unchanged (eval mode while measuring).
        batches: Labelled batches from the training split.

    Returns:
        The scores per layer.

    Raises:
        ValueError: No batches.
    """
    if not batches:
        raise ValueError("importance needs at least one batch of training texts")
    with _frozen(model), _gates(model) as (heads, ffn):
        head_acc = [torch.zeros_like(g) for g in heads]
        ffn_acc = [torch.zeros_like(g) for g in ffn]
        for ids, mask, labels in batches:
            logits = model(input_ids=ids, attention_mask=mask).logits
            grads = torch.autograd.grad(F.cross_entropy(logits.float(), labels), heads + ffn)
            for acc, grad in zip(head_acc + ffn_acc, grads, strict=True):
                acc += grad.abs()
    return Importance(
        heads=[a / a.norm().clamp_min(1e-12) for a in head_acc],
        ffn=[a / len(batches) for a in ffn_acc],
        batches=len(batches),
    )


@contextmanager
def _only_layers(model: Any, keep: Sequence[int]) -> Iterator[None]:
    transformer = model.distilbert.transformer
    full = transformer.layer
    transformer.layer = torch.nn.ModuleList(full[i] for i in keep)
    try:
        yield
    finally:
        transformer.layer = full


@torch.no_grad()
def mean_loss(model: Any, batches: Sequence[Batch]) -> float:
    """Mean cross-entropy over ``batches``, weighted by batch size."""
    total, count = 0.0, 0
    for ids, mask, labels in batches:
        logits = model(input_ids=ids, attention_mask=mask).logits
        total += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        count += len(labels)
    return total / max(count, 1)


def choose_layers(model: Any, batches: Sequence[Batch], keep: int) -> tuple[list[int], dict[str, Any]]:
    """Greedily pick the ``keep`` layers to retain: drop, one at a time, the layer that costs the least loss.

    Args:
        model: A DistilBERT classifier; left unchanged.
        batches: Labelled batches from the training split.
        keep: How many layers remain.

    Returns:
        The kept layer indices (ascending) and a record: the loss with all layers and, per step, the loss of
        each candidate removal and the layer removed.
    """
    with _frozen(model):
        kept = list(range(len(model.distilbert.transformer.layer)))
        record: dict[str, Any] = {"loss_all_layers": mean_loss(model, batches), "steps": []}
        while len(kept) > keep:
            trials = {}
            for i in kept:
                with _only_layers(model, [j for j in kept if j != i]):
                    trials[i] = mean_loss(model, batches)
            drop = min(trials, key=lambda i: trials[i])
            kept.remove(drop)
            record["steps"].append({"removed": drop, "loss": trials[drop], "candidates": trials})
            logger.info("layer %d removed: training loss %.4f", drop, trials[drop])
    return kept, record
