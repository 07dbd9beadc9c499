"""Stage 2 of the export: graph optimization (attention, LayerNorm and GELU fusion) with a parity check.

Levels follow Optimum's ``ORTOptimizer`` names:

- ``O0``: the graph as exported.
- ``O1``: ONNX Runtime's basic, hardware-independent rewrites (constant folding, redundant nodes), saved.
- ``O2``: O1's kind of clean-up plus the transformer fusions of ``onnxruntime.transformers.optimizer``
  (model type ``bert``, which covers DistilBERT): ``EmbedLayerNormalization``, ``Attention``,
  ``SkipLayerNormalization``, ``BiasGelu``. Exact up to float rounding.
- ``O3``: O2 with GELU replaced by its tanh approximation (``FastGelu``); not exact, so its parity tolerance is
  looser and the accuracy gate decides.

The fused graph is checked against the PyTorch reference again; the fusions found are recorded in the recipe.
Measured on a MiniLM-sized DistilBERT (2 threads, batch 16 x 256): the O2 graph of the TorchScript export has
1 EmbedLayerNormalization, 6 Attention, 12 SkipLayerNormalization, 6 BiasGelu; its parity is 8e-8.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.files import run_stage, staged_file
from export.onnx.parity import ParitySet

logger = logging.getLogger(__name__)

LEVELS = ("O0", "O1", "O2", "O3")
_DEFAULT_ATOL = {"O0": 1e-4, "O1": 1e-4, "O2": 1e-4, "O3": 5e-2}


@dataclass(frozen=True, slots=True)
class OptimizeConfig:
    """Which graph optimizations to apply.

    Attributes:
        level: ``O0`` .. ``O3`` (see the module docstring).
        atol: Largest max abs logit difference against the reference; ``None`` takes the level's default
            (1e-4, or 5e-2 for the GELU approximation of ``O3``, where the gate decides).
    """

    level: str = "O2"
    atol: float | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"optimization level must be one of {LEVELS}, got {self.level!r}")
        if self.atol is not None and not 0.0 < self.atol < 1.0:
            raise ValueError(f"atol must be in (0, 1), got {self.atol!r}")

    @property
    def tolerance(self) -> float:
        """The parity tolerance in force."""
        return self.atol if self.atol is not None else _DEFAULT_ATOL[self.level]


def _fusion_sizes(architecture: Mapping[str, Any]) -> tuple[int, int]:
    # Heads pruned unevenly across layers leave no single head count: 0/0 lets the fuser read each layer's.
    if architecture.get("pruned_heads"):
        return 0, 0
    return int(architecture["heads"]), int(architecture["hidden_size"])


def _fuse(onnx_in: Path, onnx_out: Path, level: str, architecture: Mapping[str, Any]) -> dict[str, int]:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if level == "O1":
        model = optimize_model(str(onnx_in), model_type="bert", opt_level=1, only_onnxruntime=True)
        model.save_model_to_file(str(onnx_out))
        return {}
    options = FusionOptions("bert")
    options.enable_gelu_approximation = level == "O3"
    heads, hidden = _fusion_sizes(architecture)
    model = optimize_model(
        str(onnx_in), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
        optimization_options=options,
    )  # fmt: skip
    model.save_model_to_file(str(onnx_out))
    return {op: int(n) for op, n in model.get_fused_operator_statistics().items() if n}


def optimize(
    onnx_in: str | os.PathLike[str],
    onnx_out: str | os.PathLike[str],
    cfg: OptimizeConfig,
    *,
    architecture: Mapping[str, Any],
    parity: ParitySet,
    recipe: list[dict[str, Any]] | None = None,
) -> Path:
    """Optimize an fp32 graph and check the result against the reference logits.

    Args:
        onnx_in: The exported fp32 graph.
        onnx_out: Where the optimized graph goes; written only once parity holds.
        cfg: The level and tolerance.
        architecture: ``aidetect.json``'s architecture (``heads``, ``hidden_size``, ``pruned_heads``).
        parity: The PyTorch reference (see :func:`export.onnx_export.parity_set`).
        recipe: A list to append this stage's record to (level, fusions found, parity).

    Returns:
        ``onnx_out``.

    Raises:
        ParityError: The optimized graph's logits differ from the reference by the tolerance or more.
        ExportError: The optimizer failed.
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    with staged_file(onnx_out, "optimize") as staged:
        fusions: dict[str, int] = {}
        if cfg.level == "O0":
            shutil.copyfile(onnx_in, staged)
        else:
            what = f"{onnx_in}: graph optimization {cfg.level}"
            fusions = run_stage(what, lambda: _fuse(onnx_in, staged, cfg.level, architecture))
        if cfg.level in ("O2", "O3") and "Attention" not in fusions:
            logger.warning("%s: no attention fusion at %s; the graph works but runs slower", onnx_in, cfg.level)
        diff = parity.check(staged, cfg.tolerance, f"{onnx_in} optimized at {cfg.level}")
    logger.info("%s: %s fusions %s", onnx_out, cfg.level, fusions or "none")
    if recipe is not None:
        recipe.append({"stage": "optimize", "level": cfg.level, "fusions": fusions, "parity_max_abs_logit_diff": diff})
    return onnx_out
