"""Recovery fine-tuning of a pruned classifier, optionally distilled from the unpruned model.

The loss is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)``
with distillation (Hinton et al. 2015; the ``T^2`` keeps the soft term's gradients on the scale of the hard
one), and plain cross-entropy without. The loop is :mod:`export.train`'s: AdamW, linear warm-up and decay,
gradient clipping, length-grouped batches with dynamic padding, optional bf16 autocast; the state with the best
validation ROC AUC is kept (the pruned model before recovery counts as a candidate), and the decision threshold
is the equal-error-rate threshold on validation.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from export import metrics
from export.train import adamw_with_warmup, collate, length_grouped_batches, optimizer_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryConfig:
    """How a pruned model is fine-tuned back.

    Attributes:
        epochs: Passes over the recovery texts (fractions allowed).
        learning_rate: AdamW peak learning rate.
        batch_size: Texts per step.
        warmup_ratio: Fraction of the steps spent warming the learning rate up.
        weight_decay: AdamW weight decay (not on biases and LayerNorms).
        grad_clip: Gradient-norm clipping.
        distill: Mix soft targets from the unpruned model into the loss.
        alpha: Weight of the soft-target term (``1 - alpha`` on the hard labels).
        temperature: Softmax temperature of the soft targets.
        precision: ``fp32`` or ``bf16`` (autocast on CPUs with AVX512-BF16/AMX).
        eval_every: Also evaluate on validation every N steps (0: at the end of every epoch only).
        seed: Seed of the batch order and of dropout.
    """

    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 16
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    distill: bool = False
    alpha: float = 0.5
    temperature: float = 2.0
    precision: str = "fp32"
    eval_every: int = 0
    seed: int = 42

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "learning_rate": self.learning_rate > 0,
            "batch_size": self.batch_size >= 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip > 0,
            "alpha": 0 <= self.alpha <= 1,
            "temperature": self.temperature > 0,
            "precision": self.precision in ("fp32", "bf16"),
            "eval_every": self.eval_every >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid recovery options: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


@dataclass(frozen=True)
class Labelled:
    """Pre-tokenized texts with their 0/1 labels."""

    ids: list[list[int]]
    labels: np.ndarray


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixed loss of the module docstring and its soft-target part (``T^2 * KL``, batch mean)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
        reduction="batchmean", log_target=True,
    ) * (t * t)  # fmt: skip
    return alpha * soft + (1 - alpha) * F.cross_entropy(student.float(), labels), soft


@torch.no_grad()
def predict_logits(
    model: Any, ids: list[list[int]], pad_id: int, batch_size: int = 32, bf16: bool = False
) -> np.ndarray:
    """Float32 logits ``[n, 2]`` for pre-tokenized texts, batched by length; the model is left in eval mode."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.empty((len(ids), 2), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = collate([ids[i] for i in idx], pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        out[idx] = logits.float().numpy()
    return out


def p_ai(logits: np.ndarray) -> np.ndarray:
    """P(AI) from logits ``[n, 2]``."""
    return torch.softmax(torch.from_numpy(logits).double(), dim=-1)[:, 1].numpy()


def soft_target_loss(student_logits: np.ndarray, teacher_logits: np.ndarray, temperature: float) -> float:
    """Mean ``T^2 * KL(teacher || student)`` at temperature ``T`` over precomputed logits."""
    s, t = torch.from_numpy(student_logits).double(), torch.from_numpy(teacher_logits).double()
    kl = F.kl_div(
        F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip
    return float(kl) * temperature**2


def evaluate(model: Any, data: Labelled, pad_id: int, bf16: bool = False) -> tuple[dict[str, Any], np.ndarray]:
    """Validation metrics at 0.5, the equal-error-rate threshold, and the logits."""
    logits = predict_logits(model, data.ids, pad_id, bf16=bf16)
    scores = p_ai(logits)
    row: dict[str, Any] = dict(metrics.binary_metrics(data.labels, scores, 0.5))
    row["eer_threshold"] = metrics.equal_error_threshold(data.labels, scores)
    return row, logits


def recover(
    student: Any,
    train: Labelled,
    validation: Labelled,
    cfg: RecoveryConfig,
    *,
    pad_id: int,
    teacher: Any | None = None,
    teacher_val_logits: np.ndarray | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``student`` in place and leave it at its best validation state.

    Args:
        student: The pruned classifier.
        train: Recovery texts from the training split.
        validation: Validation texts (the training run's validation groups).
        cfg: The recovery settings.
        pad_id: The padding token id.
        teacher: The unpruned classifier; needed when ``cfg.distill``.
        teacher_val_logits: The teacher's validation logits, to report the soft-target loss before and after.
        show_progress: Draw a progress bar on stderr (commands only).

    Returns:
        The record: settings, steps, the validation history, the best row, the threshold, and (with teacher
        logits) the validation soft-target loss before and after.

    Raises:
        ValueError: No recovery or validation texts, one class only in validation, or distillation without a
            teacher.
    """
    if not train.ids or not validation.ids:
        raise ValueError("recovery needs training and validation texts")
    if len(set(validation.labels.tolist())) < 2:
        raise ValueError("the validation texts hold one class only; the threshold cannot be chosen")
    if cfg.distill and teacher is None:
        raise ValueError("distillation needs the unpruned model as teacher")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    bf16 = cfg.precision == "bf16"
    steps_per_epoch = math.ceil(len(train.ids) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer, scheduler = adamw_with_warmup(
        student, cfg.learning_rate, cfg.weight_decay, total_steps, cfg.warmup_ratio
    )
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"roc_auc": -math.inf}
    best_state: dict[str, torch.Tensor] = {}

    def checkpoint(step: int, loss: float | None) -> None:
        row, logits = evaluate(student, validation, pad_id, bf16)
        row.update(step=step, epoch=round(step / steps_per_epoch, 3), train_loss=loss)
        if teacher_val_logits is not None:
            row["soft_target_loss"] = soft_target_loss(logits, teacher_val_logits, cfg.temperature)
        history.append(row)
        log.info("recovery step %d: val roc_auc %.4f", step, row["roc_auc"])
        if row["roc_auc"] > best["roc_auc"] or not best_state:
            best.clear()
            best.update(row)
            best_state.update({k: v.detach().clone() for k, v in student.state_dict().items()})
        student.train()

    checkpoint(0, None)
    from tqdm import tqdm

    bar = tqdm(total=total_steps, desc="recovery", disable=not show_progress, file=sys.stderr, mininterval=2.0)
    step, running = 0, None
    while step < total_steps:
        for batch in length_grouped_batches([len(x) for x in train.ids], cfg.batch_size, rng):
            if step >= total_steps:
                break
            input_ids, mask = collate([train.ids[i] for i in batch], pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = student(input_ids=input_ids, attention_mask=mask).logits
                if cfg.distill:
                    with torch.no_grad():
                        target = teacher(input_ids=input_ids, attention_mask=mask).logits  # type: ignore[misc]
            if cfg.distill:
                loss, _ = distillation_loss(logits, target, labels[batch], cfg.alpha, cfg.temperature)
            else:
                loss = F.cross_entropy(logits.float(), labels[batch])
            optimizer_step(student, loss, optimizer, scheduler, cfg.grad_clip)
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                checkpoint(step, running)
        checkpoint(step, running)
    bar.close()
    student.load_state_dict(best_state)
    student.eval()
    record: dict[str, Any] = {
        "config": asdict(cfg),
        "texts": len(train.ids),
        "validation_texts": len(validation.ids),
        "steps": step,
        "history": history,
        "best": best,
        "threshold": best["eer_threshold"],
    }
    if teacher_val_logits is not None:
        record["soft_target_loss"] = {"before": history[0]["soft_target_loss"], "after": best["soft_target_loss"]}
    return record
