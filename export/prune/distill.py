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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from export.evaluate import metrics
from export.progress import LogProgress, Progress
from export.prune.config import RecoveryConfig
from export.train.loop import adamw_with_warmup, collate, length_grouped_batches, optimizer_step

logger = logging.getLogger(__name__)


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
    progress: Progress | None = None,
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
        progress: Told of each optimizer step (a ``recovery`` stage), with the running loss.

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
        logger.info("recovery step %d: val roc_auc %.4f", step, row["roc_auc"])
        if row["roc_auc"] > best["roc_auc"] or not best_state:
            best.clear()
            best.update(row)
            best_state.update({k: v.detach().clone() for k, v in student.state_dict().items()})
        student.train()

    checkpoint(0, None)
    progress = progress or LogProgress()
    progress.stage("recovery")
    progress.planned(total_steps)
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
            progress.advance(1, loss=running)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                checkpoint(step, running)
        checkpoint(step, running)
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
