"""Fine-tune a DistilBERT classifier (human = 0, AI = 1) on labelled text.

    python -m export.train --base minilm --data detectgpt_family.jsonl.gz --data outfox_essays.jsonl.gz \
        --out runs/minilm

Data files are named by path or by file name in the data directory (``--data-dir``, default the repository's
``data/``). With ``--balance domain`` every epoch draws ``--samples-per-epoch`` texts by domain-balanced weights
(:mod:`export.mix`) and ``--augment P`` perturbs each drawn text with probability P (:mod:`export.augment`),
human and AI texts alike.

Every option can also come from a TOML or JSON file (``--config run.toml``; command-line options win). The
resolved configuration, the seed, the data files with their sha256, per-evaluation metrics and wall time are
written to ``training.json`` beside the checkpoint, so a run is reproducible from its record.

Training: AdamW, linear warm-up then linear decay, gradient clipping, dynamic padding over length-grouped
batches, optional bf16 autocast (CPUs with AVX512-BF16/AMX), evaluation on the validation groups every
``eval_every`` steps and at the end of every epoch; the checkpoint with the best validation ROC AUC is kept.
The decision threshold stored for export is the equal-error-rate threshold on validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from export import metrics, mix
from export.augment import augment_texts
from export.convert import load_base, save_checkpoint
from export.data import Record, describe_file, load_training_data, use_data_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded in ``training.json``."""

    data: tuple[str, ...]
    out: str
    base: str = "minilm"
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 5e-5
    max_length: int = 256
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 42
    val_fraction: float = 0.1
    split_salt: str = "aidetect"
    eval_every: int = 0
    eval_max_samples: int | None = None
    max_train_samples: int | None = None
    class_weighting: str = "none"
    precision: str = "fp32"
    threads: int | None = None
    text_column: str | None = None
    label_column: str | None = None
    domains: tuple[str, ...] | None = None
    generators: tuple[str, ...] | None = None
    attacks: tuple[str, ...] | None = None
    balance: str = "none"
    shares: dict[str, float] | None = None
    samples_per_epoch: int | None = None
    augment: float = 0.0
    data_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("at least one --data file is needed")
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "max_length": 8 <= self.max_length <= 512,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "val_fraction": 0 < self.val_fraction < 1,
            "class_weighting": self.class_weighting in ("none", "balanced"),
            "precision": self.precision in ("fp32", "bf16"),
            "balance": self.balance in ("none", "domain"),
            "samples_per_epoch": self.samples_per_epoch is None or self.samples_per_epoch >= 1,
            "augment": 0.0 <= self.augment <= 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training options: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


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


def _progress(iterable, total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=2.0, file=sys.stderr)


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


def train(cfg: TrainConfig) -> Path:
    """Run one training job and return the checkpoint directory ``cfg.out``.

    Raises:
        export.data.DataError: unusable data (named file and line).
        export.convert.BaseModelError: a base model that cannot be loaded.
    """
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
    log.info("training on %d texts (%d per epoch), validating on %d", len(train_recs), per_epoch, len(val_recs))
    if mix_record:
        log.info("draws per data set and label: %s", mix_record)

    model, tokenizer_json = load_base(cfg.base, seed=cfg.seed)
    tok = load_tokenizer(tokenizer_json, cfg.max_length)
    pad_id = model.config.pad_token_id or 0
    val_ids = encode(tok, val_recs)
    val_y = np.array([r.label for r in val_recs])
    augmented = 0

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
        scores = score(model, val_ids, pad_id, bf16=bf16)
        row = {
            "step": step,
            "epoch": round(epoch, 3),
            "train_loss": train_loss,
            **metrics.binary_metrics(val_y, scores, 0.5),
        }
        row["eer_threshold"] = metrics.equal_error_threshold(val_y, scores)
        history.append(row)
        log.info("step %d: val roc_auc %.4f acc %.4f loss %.4f", step, row["roc_auc"], row["accuracy"], train_loss)
        # the history is written as it grows, so a stopped run leaves its curve behind
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / f"{out.name}.history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
        if row["roc_auc"] > best["roc_auc"]:
            best.update(row)
            shutil.rmtree(tmp_best, ignore_errors=True)
            save_checkpoint(model, tokenizer_json, tmp_best)
        model.train()

    step, running = 0, None
    model.train()
    epoch = 0
    while step < total_steps:
        train_ids, train_y = epoch_data(epoch)
        batches = length_grouped_batches([len(x) for x in train_ids], cfg.batch_size, rng)
        bar = _progress(batches, len(batches), f"epoch {epoch + 1}")
        for batch in bar:
            if step >= total_steps:
                break
            input_ids, mask = collate([train_ids[i] for i in batch], pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = loss_fn(logits.float(), train_y[batch])
            optimizer_step(model, loss, optimizer, scheduler, cfg.grad_clip)
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                evaluate(step, step / steps_per_epoch, running)
        epoch += 1
        evaluate(step, step / steps_per_epoch, running if running is not None else float("nan"))

    if out.exists():
        shutil.rmtree(out)
    tmp_best.rename(out)
    record = {
        # data files by name (found again through the data directory), never by a path of this machine
        "config": {**dataclasses.asdict(cfg), "data": [Path(p).name for p in cfg.data], "data_dir": None},
        "seed": cfg.seed,
        "data": [describe_file(p) for p in cfg.data],
        "counts": {
            "train": len(train_recs),
            "per_epoch": per_epoch,
            "validation": len(val_ids),
            "augmented": augmented,
        },
        "mix": mix_record,
        "steps": step,
        "history": history,
        "best": best,
        "threshold": best["eer_threshold"],
        "threshold_rule": "equal error rate on the validation groups",
        "wall_time_s": round(time.time() - started, 1),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("best validation roc_auc %.4f at step %d; wrote %s", best["roc_auc"], best["step"], out)
    return out


def _read_config_file(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".toml"):
        import tomllib

        return tomllib.loads(text)
    return json.loads(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="TOML or JSON file with any of the options below (command line wins)")
    p.add_argument("--base", help="minilm (offline MiniLM weights), a local DistilBERT/BERT dir, or a hub name")
    p.add_argument("--data", action="append", help="training data file (JSONL/CSV, .gz ok); repeatable")
    p.add_argument("--out", help="checkpoint directory to write")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", "--lr", type=float)
    p.add_argument("--max-length", type=int, help="tokens per text, special tokens included")
    p.add_argument("--warmup-ratio", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float, help="fraction of groups held out for validation")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps as well as each epoch")
    p.add_argument("--eval-max-samples", type=int)
    p.add_argument("--max-train-samples", type=int, help="random subset (seeded) of the training records")
    p.add_argument("--class-weighting", choices=["none", "balanced"])
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast on CPUs with AVX512-BF16/AMX")
    p.add_argument("--threads", type=int)
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--domain", action="append", dest="domains")
    p.add_argument("--generator", action="append", dest="generators")
    p.add_argument("--attack", action="append", dest="attacks")
    p.add_argument("--balance", choices=["none", "domain"], help="domain-balanced draws (export.mix)")
    p.add_argument("--samples-per-epoch", type=int, help="draws per epoch with --balance domain")
    p.add_argument("--augment", type=float, help="probability of perturbing a drawn text (export.augment)")
    p.add_argument("--data-dir", help="where bare data file names are found (default: the repository's data/)")
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    values = _read_config_file(args.config) if args.config else {}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            values[key] = value
    for key in ("data", "domains", "generators", "attacks"):
        if values.get(key) is not None:
            values[key] = tuple(values[key]) if not isinstance(values[key], str) else (values[key],)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise SystemExit(f"error: unknown option(s) in config: {', '.join(sorted(unknown))}")
    if "out" not in values or "data" not in values:
        raise SystemExit("error: --data and --out are required (on the command line or in --config)")
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from export.convert import BaseModelError
    from export.data import DataError

    try:
        cfg = config_from_args(argv)
        train(cfg)
    except (DataError, BaseModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
