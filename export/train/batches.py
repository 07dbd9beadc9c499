"""Tokenized batches for training and scoring: seeds, the tokenizer, length-grouped batches, padding, the
optimizer and its schedule, and batched P(AI)."""

from __future__ import annotations

import platform
import random
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from export.data.records import Record


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def encode(tok: Tokenizer, records: list[Record]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch([r.text for r in records])]


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches by length, so each batch pads little; shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(ids: list[list[int]], pad_id: int, multiple: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest row, rounded up to ``multiple``: a handful of distinct shapes lets oneDNN reuse its
    compiled kernels (bf16 especially), where every new sequence length would cost a fresh compilation."""
    width = -(-max(len(x) for x in ids) // multiple) * multiple
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x)
        mask[row, : len(x)] = 1
    return input_ids, mask


def adamw_with_warmup(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, total_steps: int, warmup_ratio: float
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay on biases and LayerNorms), linear warm-up then linear decay to 0 at ``total_steps``."""
    exempt = ("bias", "LayerNorm", "layer_norm")
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in exempt)]
    no_decay = [p for n, p in model.named_parameters() if any(k in n for k in exempt)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate
    )
    warmup = int(total_steps * warmup_ratio)

    def lr_factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return max(0.0, (total_steps - s) / (total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, optimizer, scheduler, grad_clip: float) -> None:
    """Backward, clip the gradient norm, step the optimizer and the schedule, clear the gradients."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def score(model, ids: list[list[int]], pad_id: int, batch_size: int = 32, bf16: bool = False) -> np.ndarray:
    """P(AI) for pre-tokenized texts, batched by length."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.empty(len(ids), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = collate([ids[i] for i in idx], pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        out[idx] = torch.softmax(logits.float(), dim=-1)[:, 1].numpy()
    return out


def versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }
