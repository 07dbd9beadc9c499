"""One pruning job: a trained checkpoint in, a pruned and recovered checkpoint directory out.

The directory holds what :mod:`export.train.loop` writes (``config.json`` with ``pruned_heads``, ``n_layers`` and
``hidden_dim`` updated, ``model.safetensors``, the tokenizer files, ``tokenizer.json`` byte for byte), so
``python -m export.to_onnx --checkpoint`` takes it as it is, plus:

- ``pruning.json``: the request, the importance method and scores, the kept layers, heads and neurons,
  parameters and FLOPs per token before and after, the recovery settings and its validation history, the
  soft-target loss against the unpruned model before and after recovery, seed, data and versions;
- ``training.json``: what the export reads from a training record (``config.max_length``, the validation split
  settings, ``threshold`` chosen on validation after recovery, data, counts, seed) with a compact ``pruning``
  summary that the bundle's ``variant.pruning`` records, and the source checkpoint's own record under
  ``source``.

The directory is written to a temporary sibling, reloaded with ``from_pretrained`` and compared with the model
in memory (max abs logit difference at most 1e-5), then moved into place.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.data import mix
from export.data.augment import augment_texts
from export.data.records import Record, describe_file, load_training_data
from export.errors import OutputExistsError, ReloadError
from export.files import replace_dir
from export.progress import Progress
from export.prune.config import PruneJob
from export.prune.distill import Labelled, evaluate, predict_logits, recover, soft_target_loss
from export.prune.importance import Batch
from export.prune.structure import PruneError, flops_per_token, prune_model
from export.train.batches import collate, encode, load_tokenizer, set_seed, versions
from export.train.convert import save_checkpoint
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)

RELOAD_ATOL = 1e-5


def load_classifier(path: Path) -> Any:
    """Load a DistilBERT classifier checkpoint (SDPA attention, eval mode).

    Raises:
        PruneError: Not a checkpoint directory, no ``tokenizer.json``, or not a DistilBERT classifier.
    """
    from transformers import AutoConfig, DistilBertForSequenceClassification

    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise PruneError(f"{path}: not a checkpoint directory (config.json and tokenizer.json are needed)")
    config = AutoConfig.from_pretrained(path)
    if config.model_type != "distilbert" or config.num_labels != 2:
        raise PruneError(f"{path}: pruning needs a 2-label DistilBERT classifier, got {config.model_type}")
    return DistilBertForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()


def read_training(path: Path) -> TrainingRecord:
    """The checkpoint's training record (an empty one when it has none).

    Raises:
        export.errors.CheckpointError: ``training.json`` is not a JSON object.
    """
    return TrainingRecord.read(path) or TrainingRecord()


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``overwrite``.

    Raises:
        OutputExistsError: With the path and the option that overrides it.
    """
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise OutputExistsError(f"{out}: exists and is not an empty directory; pass --overwrite to replace it")


def _sample(
    records: list[Record], n: int | None, seed: int, shares: dict[str, float] | None = None, balanced: bool = False
) -> list[Record]:
    """``n`` records (all when ``n`` is ``None`` or too large), uniformly or by domain-balanced weights."""
    if n is None or len(records) <= n:
        return list(records)
    if balanced:
        return [records[i] for i in mix.draw(records, n, seed=seed, shares=shares, replace=False)]
    return random.Random(seed).sample(records, n)


def labelled(tok: Any, records: list[Record]) -> Labelled:
    """Tokenized texts and labels."""
    return Labelled(encode(tok, records), np.array([r.label for r in records], dtype=np.int64))


def importance_batches(data: Labelled, pad_id: int, batch_size: int) -> list[Batch]:
    """Batches of texts of similar length, with their labels."""
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = collate([data.ids[i] for i in idx], pad_id)
        batches.append((ids, mask, torch.from_numpy(data.labels[idx])))
    return batches


def summary(record: dict[str, Any], job: PruneJob, recovered: int) -> dict[str, Any]:
    """The compact description that the bundle's ``variant.pruning`` and its card show (``recovered``: texts)."""
    rc = job.recovery
    how = "none"
    if recovered:
        how = f"distillation (alpha {rc.alpha}, T {rc.temperature})" if rc.distill else "fine-tuning"
    return {
        **record["config"],
        "kept_layers": record["kept_layers"],
        "parameters_before": record["before"]["parameters"],
        "parameters_after": record["after"]["parameters"],
        "recovery": how,
        "recovery_texts": recovered,
    }


def _verify_reload(model: Any, path: Path, data: Labelled, pad_id: int) -> float:
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()
    sample = data.ids[:16]
    diff = float(np.abs(predict_logits(model, sample, pad_id) - predict_logits(reloaded, sample, pad_id)).max())
    if not diff <= RELOAD_ATOL:
        raise ReloadError(f"{path}: the reloaded model differs from the pruned one by {diff:.3g} in the logits")
    return diff


def prune_checkpoint(job: PruneJob, *, progress: Progress | None = None) -> Path:
    """Prune, recover and write ``job.out`` (see the module docstring).

    Args:
        job: The run's settings.
        progress: Told of the recovery steps.

    Returns:
        ``job.out`` as a path.

    Raises:
        PruneError: An unusable checkpoint, a request beyond its sizes, or a reload that does not match.
        FileExistsError: ``job.out`` is not empty and ``job.overwrite`` is false.
        export.data.DataError: Unusable data.
        ValueError: Too little data (no validation texts, one class only).
    """
    started = time.time()
    src, out = Path(job.checkpoint), Path(job.out)
    check_output(out, job.overwrite)
    torch.set_num_threads(job.threads or os.cpu_count() or 1)
    seed, rc = job.recovery.seed, job.recovery
    set_seed(seed)
    model = load_classifier(src)
    job.prune.check(model)
    source = read_training(src)
    max_length = int(job.max_length or source.max_length)
    split = source.split
    train_recs, val_recs = load_training_data(job.data, val_fraction=split.val_fraction, salt=split.salt)
    shares = source.shares if job.balance else None
    tok = load_tokenizer(src / "tokenizer.json", max_length)
    pad_id = model.config.pad_token_id or 0
    validation = labelled(tok, _sample(val_recs, job.eval_samples, seed + 2, shares, job.balance))
    bf16 = rc.precision == "bf16"
    teacher_row, teacher_logits = evaluate(model, validation, pad_id, bf16)
    logger.info("unpruned model: val roc_auc %.4f", teacher_row["roc_auc"])
    teacher = copy.deepcopy(model).eval() if rc.distill and job.recover_samples else None
    flops_before = flops_per_token(model, max_length)
    imp = labelled(tok, _sample(train_recs, job.importance_samples, seed, shares, job.balance))
    record = prune_model(model, job.prune, importance_batches(imp, pad_id, rc.batch_size))
    recover_recs = (
        _sample(train_recs, job.recover_samples, seed + 1, shares, job.balance) if job.recover_samples else []
    )
    if job.augment and recover_recs:
        texts, _ = augment_texts([r.text for r in recover_recs], job.augment, seed + 3)
        recover_recs = [dataclasses.replace(r, text=t) for r, t in zip(recover_recs, texts, strict=True)]
    data = labelled(tok, recover_recs)
    if data.ids:
        recovery = recover(
            model, data, validation, rc, pad_id=pad_id, teacher=teacher, teacher_val_logits=teacher_logits,
            progress=progress,
        )  # fmt: skip
    else:
        row, logits = evaluate(model, validation, pad_id, bf16)
        loss = soft_target_loss(logits, teacher_logits, rc.temperature)
        row["soft_target_loss"] = loss
        recovery = {"skipped": True, "best": row, "threshold": row["eer_threshold"]}
        recovery["soft_target_loss"] = {"before": loss, "after": loss}
    files = [describe_file(p) for p in job.data]
    compact = summary(record, job, len(data.ids))
    rule = "equal error rate on the validation groups, after pruning and recovery"
    pruning = {
        "job": _plain(job),
        "source_checkpoint": str(src),
        "prune": record,
        "importance_texts": len(imp.ids),
        "parameters": {
            "before": record["before"]["parameters"],
            "after": record["after"]["parameters"],
            "ratio": record["after"]["parameters"] / record["before"]["parameters"],
        },
        "flops_per_token": {"seq_len": max_length, "before": flops_before, "after": flops_per_token(model, max_length)},
        "teacher_validation": teacher_row,
        "recovery": recovery,
        "threshold": recovery["threshold"],
        "threshold_rule": rule,
        "seed": seed,
        "data": files,
        "versions": versions(),
        "threads": torch.get_num_threads(),
    }
    training = TrainingRecord(
        config={"max_length": max_length, "val_fraction": split.val_fraction, "split_salt": split.salt},
        seed=seed,
        data=tuple(files),
        counts={"train": len(data.ids), "validation": len(validation.ids)},
        best=recovery["best"],
        threshold=recovery["threshold"],
        threshold_rule=rule,
        pruning=compact,
        source={"checkpoint": str(src), "training": source.to_dict()},
        versions=pruning["versions"],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_checkpoint(model, src / "tokenizer.json", staged)
        pruning["reload_max_abs_logit_diff"] = _verify_reload(model, staged, validation, pad_id)
        pruning["wall_time_s"] = round(time.time() - started, 1)
        text = json.dumps(pruning, indent=2, sort_keys=True, default=str) + "\n"
        (staged / "pruning.json").write_text(text, encoding="utf-8")
        training.write(staged)
        check_output(out, job.overwrite)
        replace_dir(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    logger.info("wrote %s: %s", out, compact)
    return out


def _plain(job: PruneJob) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(job), default=str))
