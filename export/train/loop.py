"""The training loop: one run of :class:`export.train.config.TrainConfig` to a checkpoint and its
:class:`export.train.record.TrainingRecord`.

Training: AdamW, linear warm-up then linear decay, gradient clipping, dynamic padding over length-grouped
batches, optional bf16 autocast (CPUs with AVX512-BF16/AMX), evaluation on the validation groups every
``eval_every`` steps and at the end of every epoch; the checkpoint with the best validation ROC AUC is kept.
The decision threshold stored for export is the equal-error-rate threshold on validation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.data import mix
from export.data.augment import augment_texts
from export.data.records import describe_file, load_training_data, use_data_dir
from export.data.split import Split
from export.evaluate import metrics
from export.progress import LogProgress, Progress
from export.train import int8_aware
from export.train.batches import (
    adamw_with_warmup,
    collate,
    encode,
    length_grouped_batches,
    load_tokenizer,
    optimizer_step,
    score,
    set_seed,
    versions,
)
from export.train.config import TrainConfig
from export.train.convert import load_base, save_checkpoint
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)


def _int8_plan(
    cfg: TrainConfig, model: torch.nn.Module, tok: Any
) -> tuple[int8_aware.Int8Plan | None, Callable[[], None]]:
    """With ``int8_aware``, the export's rounding of ``model`` (its outlier channels chosen on the export's
    calibration windows of ``int8_calibration``: :mod:`export.train.int8_aware`) and a function that chooses them
    again on the model as it is now (before every evaluation, so the saved checkpoint's are the ones the export
    will choose)."""
    if not cfg.int8_aware:
        return None, lambda: None
    windows: list[list[int]] = []
    if cfg.int8_outlier_products != "none":
        assert cfg.int8_calibration is not None  # TrainConfig checks it
        split = Split(val_fraction=cfg.val_fraction, salt=cfg.split_salt)
        windows = int8_aware.calibration_windows(cfg.int8_calibration, tok, split)

    def choose() -> int8_aware.Int8Plan:
        return int8_aware.plan(
            model, windows, products=cfg.int8_outlier_products, k=cfg.int8_outlier_channels,
            embeddings=cfg.int8_embeddings,
        )  # fmt: skip

    how = choose()
    logger.info("int8-aware: %d products with fp32 outlier channels, embeddings %s", len(how.columns),
                "rounded" if how.embeddings else "fp32")  # fmt: skip

    def again() -> None:
        new = choose()
        moved = sum(new.columns[n] != how.columns.get(n) for n in new.columns)
        if moved:
            logger.info("int8-aware: outlier channels chosen again in %d products", moved)
        int8_aware.update(how, new)

    return how, again


def train(cfg: TrainConfig, *, progress: Progress | None = None) -> Path:
    """Run one training job and return the checkpoint directory ``cfg.out``.

    Args:
        cfg: The run's settings.
        progress: Told of each epoch (a stage) and each optimizer step, with the running loss and learning rate.

    Raises:
        export.data.DataError: unusable data (named file and line).
        export.convert.BaseModelError: a base model that cannot be loaded.
    """
    progress = progress or LogProgress()
    started = time.time()
    out = Path(cfg.out)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    set_seed(cfg.seed)
    if cfg.data_dir is not None:
        use_data_dir(cfg.data_dir)
    train_recs, val_recs = load_training_data(
        cfg.data,
        val_fraction=cfg.val_fraction,
        salt=cfg.split_salt,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        domains=cfg.domains,
        generators=cfg.generators,
        attacks=cfg.attacks,
    )
    rng = random.Random(cfg.seed)
    balanced = cfg.balance == "domain"
    if not balanced and cfg.max_train_samples and len(train_recs) > cfg.max_train_samples:
        train_recs = rng.sample(train_recs, cfg.max_train_samples)
    if cfg.eval_max_samples and len(val_recs) > cfg.eval_max_samples:
        if balanced:
            val_recs = [
                val_recs[i]
                for i in mix.draw(val_recs, cfg.eval_max_samples, seed=cfg.seed + 1, shares=cfg.shares, replace=False)
            ]
        else:
            val_recs = random.Random(cfg.seed + 1).sample(val_recs, cfg.eval_max_samples)
    per_epoch = (cfg.samples_per_epoch or len(train_recs)) if balanced else len(train_recs)
    mix_record = mix.describe(train_recs, mix.balanced_weights(train_recs, cfg.shares)) if balanced else None
    logger.info("training on %d texts (%d per epoch), validating on %d", len(train_recs), per_epoch, len(val_recs))
    if mix_record:
        logger.info("draws per data set and label: %s", mix_record)

    model, tokenizer_json = load_base(cfg.base, seed=cfg.seed)
    # a checkpoint of this project carries its record on: what it was trained from, pruned to, and folded with
    base_record = TrainingRecord.read(cfg.base) if Path(cfg.base).is_dir() else None
    tok = load_tokenizer(tokenizer_json, cfg.max_length)
    pad_id = model.config.pad_token_id or 0
    val_ids = encode(tok, val_recs)
    val_y = np.array([r.label for r in val_recs])
    augmented = 0
    int8, choose_again = _int8_plan(cfg, model, tok)

    def epoch_data(epoch: int) -> tuple[list[list[int]], torch.Tensor]:
        """This epoch's token ids and labels: a fresh balanced draw and fresh perturbations each epoch."""
        nonlocal augmented
        if balanced:
            picked = [
                train_recs[i] for i in mix.draw(train_recs, per_epoch, seed=cfg.seed + 100 + epoch, shares=cfg.shares)
            ]
        else:
            picked = train_recs
        texts = [r.text for r in picked]
        if cfg.augment:
            texts, changed = augment_texts(texts, cfg.augment, cfg.seed + 200 + epoch)
            augmented += changed
        ids = [e.ids for e in tok.encode_batch(texts)]
        return ids, torch.tensor([r.label for r in picked])

    weight = None
    if cfg.class_weighting == "balanced":
        counts = torch.bincount(torch.tensor([r.label for r in train_recs]), minlength=2).float()
        weight = counts.sum() / (2 * counts.clamp(min=1))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer, scheduler = adamw_with_warmup(model, cfg.learning_rate, cfg.weight_decay, total_steps, cfg.warmup_ratio)
    bf16 = cfg.precision == "bf16"

    history: list[dict] = []
    best = {"roc_auc": -1.0}
    tmp_best = out.with_name(out.name + ".best.tmp")

    def evaluate(step: int, epoch: float, train_loss: float) -> None:
        choose_again()
        scores = score(model, val_ids, pad_id, bf16=bf16)
        row = {
            "step": step,
            "epoch": round(epoch, 3),
            "train_loss": train_loss,
            **metrics.binary_metrics(val_y, scores, 0.5),
        }
        row["eer_threshold"] = metrics.equal_error_threshold(val_y, scores)
        history.append(row)
        logger.info("step %d: val roc_auc %.4f acc %.4f loss %.4f", step, row["roc_auc"], row["accuracy"], train_loss)
        # the history is written as it grows, so a stopped run leaves its curve behind
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / f"{out.name}.history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
        if row["roc_auc"] > best["roc_auc"]:
            best.update(row)
            shutil.rmtree(tmp_best, ignore_errors=True)
            with int8_aware.rounded_weights(model, int8) if int8 else contextlib.nullcontext():
                save_checkpoint(model, tokenizer_json, tmp_best)
        model.train()

    step, running = 0, None
    model.train()
    epoch = 0
    # int8-aware: every forward pass, evaluation included, sees the weights as the int8 export rounds them
    with int8_aware.int8_forward(model, int8) if int8 else contextlib.nullcontext():
        while step < total_steps:
            train_ids, train_y = epoch_data(epoch)
            batches = length_grouped_batches([len(x) for x in train_ids], cfg.batch_size, rng)
            progress.stage(f"epoch {epoch + 1}")
            progress.planned(len(batches))
            for batch in batches:
                if step >= total_steps:
                    break
                input_ids, mask = collate([train_ids[i] for i in batch], pad_id)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = model(input_ids=input_ids, attention_mask=mask).logits
                loss = loss_fn(logits.float(), train_y[batch])
                optimizer_step(model, loss, optimizer, scheduler, cfg.grad_clip)
                step += 1
                running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
                progress.advance(1, loss=running, lr=scheduler.get_last_lr()[0])
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                    evaluate(step, step / steps_per_epoch, running)
            epoch += 1
            evaluate(step, step / steps_per_epoch, running if running is not None else float("nan"))

    if out.exists():
        shutil.rmtree(out)
    tmp_best.rename(out)
    record = TrainingRecord(
        # data files by name (found again through the data directory), never by a path of this machine
        config={**dataclasses.asdict(cfg), "data": [Path(p).name for p in cfg.data], "data_dir": None},
        seed=cfg.seed,
        data=tuple(describe_file(p) for p in cfg.data),
        counts={"train": len(train_recs), "per_epoch": per_epoch, "validation": len(val_ids), "augmented": augmented},
        mix=mix_record,
        steps=step,
        history=tuple(history),
        best=best,
        threshold=best["eer_threshold"],
        threshold_rule="equal error rate on the validation groups",
        wall_time_s=round(time.time() - started, 1),
        threads=torch.get_num_threads(),
        versions=versions(),
        pruning=base_record.pruning if base_record else None,
        source={"checkpoint": cfg.base, "training": base_record.to_dict()} if base_record else None,
        tokenizer_normalizer=base_record.tokenizer_normalizer if base_record else None,
    )
    record.write(out)
    logger.info("best validation roc_auc %.4f at step %d; wrote %s", best["roc_auc"], best["step"], out)
    return out
