"""Structured pruning of a DistilBERT classifier: whole layers, attention heads and FFN neurons.

    python -m export.prune --checkpoint runs/minilm --out runs/minilm-h8f768l4 --preset medium --distill \\
        --data detectgpt_family.jsonl.gz --data outfox_essays.jsonl.gz

The result is a smaller dense model (fewer layers, fewer heads per layer, a narrower FFN), so ONNX Runtime
really does less work; zeroed weights would buy nothing. Importance is measured on a few hundred texts of the
training split (the OUTFOX test half is never read), as :mod:`export.prune.importance` describes: layers by the loss
of greedy removal, heads by gradient-based head importance (Michel et al. 2019), FFN neurons by first-order
Taylor importance.

Layers go first; heads and neurons are then ranked on the model that remains. Every layer keeps the same number
of heads (``PruneConfig.heads``) and the same FFN width (``config.hidden_dim``). Heads are removed with
``model.prune_heads``, which records ``pruned_heads`` in the config so that ``from_pretrained`` rebuilds the
same shapes; FFN neurons by slicing ``ffn.lin1`` rows and ``ffn.lin2`` columns; layers by dropping
``transformer.layer[i]`` and updating ``n_layers``. Recovery fine-tuning (optionally distilled from the
unpruned model) is in :mod:`export.prune.distill`; the command and the checkpoint it writes in
:mod:`export.prune.job`; the sweep table in :mod:`export.prune.sweep`.

ONNX: a head-pruned layer has ``heads * head_dim`` smaller than the hidden size. The graph exports as usual, and
ONNX Runtime's attention fusion reads the head count and head size from each layer's Reshape constants (the
optimizer is given 0/0 for pruned models, see :mod:`export.onnx.optimize`): measured on MiniLM with 8 of 12 heads
kept, 6 of 6 Attention nodes fused (``num_heads=8``, QKV weight 384 x 768), parity 6.7e-8 against PyTorch, and
the int8 graph quantizes them to ``QAttention``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers.pytorch_utils import prune_linear_layer

from export.errors import PruneError
from export.prune.config import PruneConfig, transformer_layers
from export.prune.importance import FFN_METHOD, HEAD_METHOD, LAYER_METHOD, Batch, choose_layers, gradient_importance

logger = logging.getLogger(__name__)


def parameter_count(model: torch.nn.Module) -> int:
    """All parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))


def flops_per_token(model: Any, seq_len: int) -> dict[str, int]:
    """Forward FLOPs per token of the transformer layers, from the weight shapes (2 FLOPs per multiply-add).

    Embeddings, LayerNorms, softmax, GELU, biases and the classification head (once per text) are left out.

    Args:
        model: A DistilBERT classifier (pruned or not).
        seq_len: The sequence length the attention term is stated for.

    Returns:
        ``projections`` (Q, K, V, output), ``ffn``, ``attention`` (``QK^T`` and ``weights @ V``, which grow
        with ``seq_len``) and their ``total``.
    """
    proj = ffn = attn = 0
    for layer in transformer_layers(model):
        att = layer.attention
        inner = att.q_lin.out_features
        proj += 2 * (att.q_lin.in_features * inner * 3 + inner * att.out_lin.out_features)
        ffn += 2 * (layer.ffn.lin1.in_features * layer.ffn.lin1.out_features) * 2
        attn += 2 * 2 * inner * seq_len
    return {"projections": proj, "ffn": ffn, "attention": attn, "total": proj + ffn + attn}


def architecture(model: Any) -> dict[str, Any]:
    """Layers, heads per layer, FFN width and parameters of a DistilBERT classifier."""
    layers = transformer_layers(model)
    return {
        "layers": len(layers),
        "heads": [layer.attention.n_heads for layer in layers],
        "ffn": layers[0].ffn.lin1.out_features if len(layers) else 0,
        "hidden_size": model.config.dim,
        "parameters": parameter_count(model),
    }


def current_heads(attention: Any, n_heads: int) -> list[int]:
    """The original indices of the heads a (possibly pruned) attention module still has, in order."""
    return [h for h in range(n_heads) if h not in attention.pruned_heads]


# ---------------------------------------------------------------------------------------------- surgery


def remove_layers(model: Any, keep: Sequence[int]) -> None:
    """Keep only the layers ``keep`` (indices into the current layers), renumbering ``pruned_heads``.

    Raises:
        PruneError: No layer kept, or an index out of range.
    """
    layers = transformer_layers(model)
    keep = sorted(set(keep))
    if not keep or keep[0] < 0 or keep[-1] >= len(layers):
        raise PruneError(f"layers to keep {keep} must be a non-empty subset of 0..{len(layers) - 1}")
    transformer = model.distilbert.transformer
    transformer.layer = torch.nn.ModuleList(layers[i] for i in keep)
    transformer.n_layers = len(keep)
    model.config.n_layers = len(keep)
    old = {int(k): v for k, v in (model.config.pruned_heads or {}).items()}
    model.config.pruned_heads = {new: sorted(old[i]) for new, i in enumerate(keep) if old.get(i)}


def prune_heads(model: Any, keep: Sequence[Sequence[int]]) -> None:
    """Keep, in each layer, the heads at positions ``keep[layer]`` (positions among its current heads)."""
    n_heads = model.config.n_heads
    to_prune = {}
    for index, (layer, kept) in enumerate(zip(transformer_layers(model), keep, strict=True)):
        present = current_heads(layer.attention, n_heads)
        drop = [head for pos, head in enumerate(present) if pos not in set(kept)]
        if drop:
            to_prune[index] = drop
    if to_prune:
        model.prune_heads(to_prune)
        model.config.pruned_heads = {int(k): sorted(v) for k, v in model.config.pruned_heads.items()}


def prune_ffn(model: Any, keep: Sequence[Sequence[int]]) -> None:
    """Keep, in each layer, the FFN neurons ``keep[layer]``; every layer must keep the same number.

    Raises:
        PruneError: Layers keeping different numbers of neurons (the config has one ``hidden_dim``).
    """
    widths = {len(k) for k in keep}
    if len(widths) != 1:
        raise PruneError(f"every layer must keep the same FFN width, got {sorted(widths)}")
    for layer, kept in zip(transformer_layers(model), keep, strict=True):
        index = torch.tensor(sorted(kept), dtype=torch.long)
        layer.ffn.lin1 = prune_linear_layer(layer.ffn.lin1, index, dim=0)
        layer.ffn.lin2 = prune_linear_layer(layer.ffn.lin2, index, dim=1)
    model.config.hidden_dim = widths.pop()


def _top(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(int(i) for i in torch.topk(scores, k).indices)


def prune_model(model: Any, cfg: PruneConfig, batches: Sequence[Batch]) -> dict[str, Any]:
    """Prune ``model`` in place to ``cfg``: layers first, then heads and FFN neurons ranked on what remains.

    Args:
        model: A DistilBERT classifier.
        cfg: What to keep.
        batches: Labelled batches from the training split, for the importance measures.

    Returns:
        What was done: methods, scores, the kept layers (original indices), heads (original indices per kept
        layer) and neurons, and the architecture before and after.

    Raises:
        PruneError: ``cfg`` keeps more than the model has, or the model is not DistilBERT.
    """
    cfg.check(model)
    before = architecture(model)
    record: dict[str, Any] = {"config": {"heads": cfg.heads, "ffn": cfg.ffn, "layers": cfg.layers}}
    kept_layers = list(range(before["layers"]))
    if cfg.layers is not None and cfg.layers < before["layers"]:
        kept_layers, record["layer_importance"] = choose_layers(model, batches, cfg.layers)
        remove_layers(model, kept_layers)
    layers = transformer_layers(model)
    heads = cfg.heads if cfg.heads is not None and any(lay.attention.n_heads > cfg.heads for lay in layers) else None
    ffn = cfg.ffn if cfg.ffn is not None and layers[0].ffn.lin1.out_features > cfg.ffn else None
    if heads is not None or ffn is not None:
        imp = gradient_importance(model, batches)
        record["head_importance"] = [[round(float(s), 6) for s in h] for h in imp.heads]
        record["importance_batches"] = imp.batches
        if heads is not None:
            prune_heads(model, [_top(h, heads) for h in imp.heads])
        if ffn is not None:
            record["kept_ffn"] = [_top(f, ffn) for f in imp.ffn]
            prune_ffn(model, record["kept_ffn"])
    n_heads = model.config.n_heads
    record["kept_layers"] = kept_layers
    record["kept_heads"] = {str(i): current_heads(layer.attention, n_heads) for i, layer in enumerate(layers)}
    record["methods"] = {"layers": LAYER_METHOD, "heads": HEAD_METHOD, "ffn": FFN_METHOD}
    record["before"], record["after"] = before, architecture(model)
    logger.info("pruned %s -> %s parameters", before["parameters"], record["after"]["parameters"])
    return record
