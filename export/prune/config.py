"""What a pruning run decides: the target (:class:`PruneConfig` and its presets), the recovery
(:class:`RecoveryConfig`), the job (:class:`PruneJob`, also from named options) and the sweep (:class:`SweepConfig`).

Plain frozen dataclasses, validated on construction; nothing here imports PyTorch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.errors import ConfigError, PruneError

if TYPE_CHECKING:
    import torch

KEEP_ALL = ("", "-", "all", "none")


@dataclass(frozen=True)
class PruneConfig:
    """What a pruned model keeps; ``None`` keeps everything of that kind.

    Attributes:
        heads: Attention heads kept in every layer.
        ffn: FFN width (neurons) kept in every layer.
        layers: Transformer layers kept.
    """

    heads: int | None = None
    ffn: int | None = None
    layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("heads", "ffn", "layers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None (keep all), got {value!r}")

    @classmethod
    def light(cls) -> PruneConfig:
        """MiniLM (12 heads, FFN 1536, 6 layers) to 8 heads, FFN 1024, all 6 layers: 2/3 of the layer weights."""
        return cls(heads=8, ffn=1024, layers=6)

    @classmethod
    def medium(cls) -> PruneConfig:
        """8 heads, FFN 768, 4 layers: about 1/3 of MiniLM's transformer weights and FLOPs."""
        return cls(heads=8, ffn=768, layers=4)

    @classmethod
    def small(cls) -> PruneConfig:
        """6 heads, FFN 512, 3 layers: about 1/6 of MiniLM's transformer weights and FLOPs."""
        return cls(heads=6, ffn=512, layers=3)

    @classmethod
    def parse(cls, spec: str) -> PruneConfig:
        """A preset name (``light``, ``medium``, ``small``) or ``"heads,ffn,layers"`` (``-`` keeps all).

        Raises:
            ValueError: An unknown preset, not three fields, or a field that is not a positive integer.
        """
        spec = spec.strip()
        if spec in PRESETS:
            return PRESETS[spec]()
        fields = [f.strip() for f in spec.split(",")]
        if len(fields) != 3:
            raise ValueError(f"{spec!r}: expected a preset ({', '.join(PRESETS)}) or 'heads,ffn,layers'")
        values: list[int | None] = []
        for name, text in zip(("heads", "ffn", "layers"), fields, strict=True):
            if text.lower() in KEEP_ALL:
                values.append(None)
            elif text.isdigit():
                values.append(int(text))
            else:
                raise ValueError(f"{spec!r}: {name} {text!r} is not a positive integer or '-'")
        return cls(*values)

    @property
    def label(self) -> str:
        """A short name such as ``h8-f768-l4`` (``all`` for what is kept whole)."""
        return "-".join(f"{k}{'all' if v is None else v}" for k, v in zip("hfl", self.to_tuple(), strict=True))

    def to_tuple(self) -> tuple[int | None, int | None, int | None]:
        """``(heads, ffn, layers)``."""
        return self.heads, self.ffn, self.layers

    def check(self, model: Any) -> None:
        """Raise :class:`PruneError` when ``model`` has fewer heads, neurons or layers than this keeps."""
        layers = transformer_layers(model)
        sizes = {
            "heads": min(layer.attention.n_heads for layer in layers),
            "ffn": min(layer.ffn.lin1.out_features for layer in layers),
            "layers": len(layers),
        }
        what = {"heads": "attention heads per layer", "ffn": "FFN neurons per layer", "layers": "layers"}
        for name, has in sizes.items():
            wanted = getattr(self, name)
            if wanted is not None and wanted > has:
                raise PruneError(f"cannot keep {wanted} {what[name]}: the model has {has}")


PRESETS: dict[str, Callable[[], PruneConfig]] = {
    "light": PruneConfig.light,
    "medium": PruneConfig.medium,
    "small": PruneConfig.small,
}


def transformer_layers(model: Any) -> torch.nn.ModuleList:
    """The transformer blocks of a ``DistilBertForSequenceClassification``.

    Raises:
        PruneError: Not a DistilBERT classifier.
    """
    if getattr(model.config, "model_type", None) != "distilbert" or not hasattr(model, "distilbert"):
        raise PruneError(f"structured pruning needs a DistilBERT classifier, got {type(model).__name__}")
    return model.distilbert.transformer.layer


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
            (:mod:`export.data.mix`) with the source training run's ``shares``, instead of uniformly.
        augment: Perturb each recovery text with this probability (:mod:`export.data.augment`).
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


@dataclass(frozen=True)
class SweepConfig:
    """The targets of a sweep and how they are measured.

    Attributes:
        targets: The pruning targets (the unpruned model is always measured as the baseline).
        held_out_samples: At most this many texts per held-out set (``None``: all).
        bench_texts: Texts in the throughput sample.
        bench_threads: ONNX Runtime intra-op threads, for scoring and throughput.
        bench_batch: Windows per ONNX Runtime call in the throughput measurement.
        bench_rounds: Interleaved timing rounds.
        recipe: Build options of every bundle (a pipeline's ``[export]`` table, :func:`export.onnx.recipe.build_config`
            names), so the sweep times the graph that ships; variants, gate and evaluation sets are the sweep's.
    """

    targets: tuple[PruneConfig, ...]
    held_out_samples: int | None = None
    bench_texts: int = 64
    bench_threads: int = 2
    bench_batch: int = 16
    bench_rounds: int = 5
    recipe: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a sweep needs at least one target")
        if len({t.label for t in self.targets}) != len(self.targets):
            raise ValueError("the sweep names a target twice")
        if self.held_out_samples is not None and self.held_out_samples < 2:
            raise ValueError(f"held-out samples must be at least 2, got {self.held_out_samples}")
        if self.bench_texts < 1 or self.bench_threads < 1 or self.bench_batch < 1 or self.bench_rounds < 1:
            raise ValueError("bench texts, threads, batch and rounds must be positive")


def parse_targets(text: str) -> tuple[PruneConfig, ...]:
    """``"light;medium;8,512,3"`` to pruning targets.

    Raises:
        ValueError: An empty list or an unparsable target.
    """
    targets = tuple(PruneConfig.parse(part) for part in text.split(";") if part.strip())
    if not targets:
        raise ValueError(f"--sweep {text!r} names no target")
    return targets


def job_from_options(checkpoint: str | Path, out: str | Path, options: Mapping[str, Any]) -> PruneJob:
    """The :class:`PruneJob` of named options (``python -m export.prune``'s flags, a pipeline's ``[prune]`` keys).

    ``preset`` names a target of :data:`export.prune.structure.PRESETS`; ``heads``, ``ffn`` and ``layers``
    override it. The recovery options are those of :class:`RecoveryConfig` (``recover_epochs``, ``lr`` or
    ``learning_rate``, ``batch_size``, ``distill``, ``alpha``, ``temperature``, ``precision``, ``eval_every``,
    ``seed``); the rest are :class:`PruneJob`'s fields.

    Raises:
        ConfigError: An unknown option, or a value out of range.
    """
    o = {k: v for k, v in options.items() if v is not None}
    if "learning_rate" in o:
        o["lr"] = o.pop("learning_rate")
    recovery_keys = {
        "recover_epochs": "epochs", "lr": "learning_rate", "batch_size": "batch_size", "distill": "distill",
        "alpha": "alpha", "temperature": "temperature", "precision": "precision", "eval_every": "eval_every",
        "seed": "seed",
    }  # fmt: skip
    job_keys = {"data", "importance_samples", "recover_samples", "eval_samples", "max_length", "threads", "overwrite",
                "balance", "augment"}  # fmt: skip
    unknown = set(o) - set(recovery_keys) - job_keys - {"preset", "heads", "ffn", "layers"}
    if unknown:
        raise ConfigError(f"unknown prune option(s): {', '.join(sorted(unknown))}")
    preset = o.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(sorted(PRESETS))}, got {preset!r}")
    try:
        base = PRESETS[preset]() if preset else PruneConfig()
        sizes = {k: o[k] for k in ("heads", "ffn", "layers") if k in o}
        recovery = RecoveryConfig(**{field: o[key] for key, field in recovery_keys.items() if key in o})
        fields = {k: o[k] for k in job_keys if k in o}
        fields["data"] = tuple(fields.get("data", ()))
        return PruneJob(
            checkpoint=str(checkpoint), out=str(out), prune=dataclasses.replace(base, **sizes), recovery=recovery,
            **fields,
        )  # fmt: skip
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
