"""One pruning job: a trained checkpoint in, a pruned and recovered checkpoint directory out.

The directory holds what :mod:`export.train` writes (``config.json`` with ``pruned_heads``, ``n_layers`` and
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

import argparse
import copy
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export import mix
from export.augment import augment_texts
from export.bundle import replace_dir
from export.convert import save_checkpoint
from export.data import Record, describe_file, load_training_data, use_data_dir
from export.distill import Labelled, RecoveryConfig, evaluate, predict_logits, recover, soft_target_loss
from export.importance import Batch
from export.prune import PRESETS, PruneConfig, PruneError, flops_per_token, prune_model
from export.train import collate, encode, load_tokenizer, set_seed, versions

log = logging.getLogger(__name__)

RELOAD_ATOL = 1e-5


@dataclass(frozen=True)
class PruneJob:
    """Everything one pruning run decides; recorded in ``pruning.json``.

    Attributes:
        checkpoint: The trained DistilBERT checkpoint directory.
        out: The pruned checkpoint directory to write.
        data: Training data files (the OUTFOX test half is dropped on reading).
        prune: What to keep.
        recovery: How to fine-tune afterwards.
        importance_samples: Training texts the importance is measured on.
        recover_samples: Training texts recovery runs on (0: prune only, no recovery).
        eval_samples: Validation texts used for selection and the threshold (``None``: all).
        max_length: Tokens per text; ``None`` takes the checkpoint's training ``max_length`` (else 256).
        threads: PyTorch threads (``None``: every core).
        overwrite: Replace a non-empty ``out``.
        balance: Draw the importance, recovery and validation texts by domain-balanced weights
            (:mod:`export.mix`) with the source training run's ``shares``, instead of uniformly.
        augment: Perturb each recovery text with this probability (:mod:`export.augment`).
    """

    checkpoint: str
    out: str
    data: tuple[str, ...]
    prune: PruneConfig = field(default_factory=PruneConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    importance_samples: int = 256
    recover_samples: int = 2000
    eval_samples: int | None = 1000
    max_length: int | None = None
    threads: int | None = None
    overwrite: bool = False
    balance: bool = False
    augment: float = 0.0

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("at least one --data file is needed")
        if self.importance_samples < 1 or self.recover_samples < 0:
            raise ValueError("importance samples must be >= 1 and recovery samples >= 0")
        if self.eval_samples is not None and self.eval_samples < 2:
            raise ValueError(f"eval samples must be at least 2, got {self.eval_samples}")
        if self.max_length is not None and not 8 <= self.max_length <= 512:
            raise ValueError(f"max_length must be in [8, 512], got {self.max_length}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 0.0 <= self.augment <= 1.0:
            raise ValueError(f"augment must be in [0, 1], got {self.augment}")


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


def read_training(path: Path) -> dict[str, Any]:
    """The checkpoint's ``training.json``, or ``{}`` when it has none."""
    try:
        value = json.loads((path / "training.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PruneError(f"{path / 'training.json'}: unreadable ({exc})") from exc
    return value if isinstance(value, dict) else {}


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``overwrite``.

    Raises:
        FileExistsError: With the path and the option that overrides it.
    """
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise FileExistsError(f"{out}: exists and is not an empty directory; pass --overwrite to replace it")


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
        raise PruneError(f"{path}: the reloaded model differs from the pruned one by {diff:.3g} in the logits")
    return diff


def prune_checkpoint(job: PruneJob, *, show_progress: bool = False) -> Path:
    """Prune, recover and write ``job.out`` (see the module docstring).

    Args:
        job: The run's settings.
        show_progress: Draw progress bars on stderr (commands only).

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
    src_cfg = source.get("config") if isinstance(source.get("config"), dict) else {}
    max_length = int(job.max_length or src_cfg.get("max_length") or 256)
    split = {
        "val_fraction": float(src_cfg.get("val_fraction", 0.1)),
        "salt": str(src_cfg.get("split_salt", "aidetect")),
    }
    train_recs, val_recs = load_training_data(job.data, **split)
    shares = src_cfg.get("shares") if job.balance else None
    tok = load_tokenizer(src / "tokenizer.json", max_length)
    pad_id = model.config.pad_token_id or 0
    validation = labelled(tok, _sample(val_recs, job.eval_samples, seed + 2, shares, job.balance))
    bf16 = rc.precision == "bf16"
    teacher_row, teacher_logits = evaluate(model, validation, pad_id, bf16)
    log.info("unpruned model: val roc_auc %.4f", teacher_row["roc_auc"])
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
            show_progress=show_progress,
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
    training = {
        "config": {"max_length": max_length, "val_fraction": split["val_fraction"], "split_salt": split["salt"]},
        "seed": seed,
        "data": files,
        "counts": {"train": len(data.ids), "validation": len(validation.ids)},
        "best": recovery["best"],
        "threshold": recovery["threshold"],
        "threshold_rule": rule,
        "pruning": compact,
        "source": {"checkpoint": str(src), "training": source},
        "versions": pruning["versions"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_checkpoint(model, src / "tokenizer.json", staged)
        pruning["reload_max_abs_logit_diff"] = _verify_reload(model, staged, validation, pad_id)
        pruning["wall_time_s"] = round(time.time() - started, 1)
        for name, value in (("pruning.json", pruning), ("training.json", training)):
            text = json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"
            (staged / name).write_text(text, encoding="utf-8")
        check_output(out, job.overwrite)
        replace_dir(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("wrote %s: %s", out, compact)
    return out


def _plain(job: PruneJob) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(job), default=str))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m export.prune``."""
    p = argparse.ArgumentParser(
        prog="python -m export.prune",
        description="Prune a DistilBERT checkpoint (heads, FFN neurons, layers), recover it, and write a checkpoint;"
        " or sweep several targets and tabulate size, FLOPs, ROC AUC and int8 speed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="trained DistilBERT checkpoint (export.train output)")
    p.add_argument("--out", required=True, help="pruned checkpoint directory (with --sweep: the sweep directory)")
    p.add_argument("--data", required=True, nargs="+", action="extend", metavar="FILE", help="training data")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named target; --heads/--ffn/--layers override it")
    p.add_argument("--heads", type=int, help="attention heads kept per layer (default: all)")
    p.add_argument("--ffn", type=int, help="FFN neurons kept per layer (default: all)")
    p.add_argument("--layers", type=int, help="layers kept (default: all)")
    p.add_argument("--sweep", help="';'-separated targets, each a preset or 'heads,ffn,layers' ('-' keeps all)")
    p.add_argument("--importance-samples", type=int, default=256, help="training texts for the importance")
    p.add_argument("--recover-samples", type=int, default=2000, help="training texts for recovery (0: none)")
    p.add_argument("--recover-epochs", type=float, default=1.0)
    p.add_argument("--eval-samples", type=int, default=1000, help="validation texts (selection and threshold)")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned model during recovery")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the soft targets")
    p.add_argument("--temperature", type=float, default=2.0, help="temperature of the soft targets")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, help="tokens per text (default: the checkpoint's training value)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--eval-every", type=int, default=0, help="also validate every N recovery steps")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, help="PyTorch threads (default: every core)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--balance", action="store_true", help="domain-balanced draws with the training run's shares")
    p.add_argument("--augment", type=float, default=0.0, help="probability of perturbing a recovery text")
    p.add_argument("--data-dir", help="where bare data file names are found (default: the repository's data/)")
    p.add_argument("--held-out-samples", type=int, help="sweep: at most this many texts per held-out set")
    p.add_argument("--bench-texts", type=int, default=64, help="sweep: texts in the throughput sample")
    p.add_argument("--bench-threads", type=int, default=2, help="sweep: ONNX Runtime threads")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def job_from_args(args: argparse.Namespace) -> PruneJob:
    """The :class:`PruneJob` of parsed arguments (the preset, overridden by explicit sizes).

    Raises:
        ValueError: An option out of range.
    """
    base = PRESETS[args.preset]() if args.preset else PruneConfig()
    sizes = {k: getattr(args, k) for k in ("heads", "ffn", "layers") if getattr(args, k) is not None}
    recovery = RecoveryConfig(
        epochs=args.recover_epochs, learning_rate=args.lr, batch_size=args.batch_size, distill=args.distill,
        alpha=args.alpha, temperature=args.temperature, precision=args.precision, eval_every=args.eval_every,
        seed=args.seed,
    )  # fmt: skip
    return PruneJob(
        checkpoint=args.checkpoint, out=args.out, data=tuple(args.data),
        prune=dataclasses.replace(base, **sizes), recovery=recovery, importance_samples=args.importance_samples,
        recover_samples=args.recover_samples, eval_samples=args.eval_samples, max_length=args.max_length,
        threads=args.threads, overwrite=args.overwrite, balance=args.balance, augment=args.augment,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 written, 1 a parity check failed, 2 bad input)."""
    from export.prune_sweep import SweepConfig, parse_targets, run_sweep
    from export.stages import ExportError, ParityError

    args = build_parser().parse_args(argv)
    if args.data_dir:
        use_data_dir(args.data_dir)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.sweep and (args.preset or args.heads or args.ffn or args.layers):
            raise ValueError("--sweep names its own targets; leave out --preset, --heads, --ffn and --layers")
        job = job_from_args(args)
        if args.sweep:
            sweep = SweepConfig(
                targets=parse_targets(args.sweep), held_out_samples=args.held_out_samples,
                bench_texts=args.bench_texts, bench_threads=args.bench_threads,
            )  # fmt: skip
            result = run_sweep(job, sweep, show_progress=True)
            print(result["markdown"])
            return 0
        out = prune_checkpoint(job, show_progress=True)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = json.loads((out / "pruning.json").read_text(encoding="utf-8"))
    params = record["parameters"]
    print(
        f"wrote {out}: {params['before']:,} -> {params['after']:,} parameters ({params['ratio']:.1%}); validation "
        f"ROC AUC {record['teacher_validation']['roc_auc']:.4f} unpruned, {record['recovery']['best']['roc_auc']:.4f}"
        f" pruned; threshold {record['threshold']:.4f}"
    )
    return 0
