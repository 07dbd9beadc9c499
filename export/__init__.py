"""The model factory: data, training, pruning, ONNX export, evaluation, bundles, calibration and the pipeline.

The public functions and configurations of every stage are importable from here (``from export import
build_bundles``); they are loaded on first use, so that importing :mod:`export` (and ``python -m export.<stage>
--help``) does not pull in PyTorch.

======================  ===========================================================================
package                 what it holds
======================  ===========================================================================
:mod:`export.data`      records, the group split, domain-balanced draws, perturbations
:mod:`export.train`     the run configuration, the loop, ``training.json``, MiniLM conversion, the tokenizer fold
:mod:`export.prune`     importance, structural pruning, recovery, the pruning job and the sweep
:mod:`export.onnx`      export, parity, fusion, LayerNorm rewrite, quantization, gates, the one build function
:mod:`export.evaluate`  the evaluation sets' vocabulary, metrics, scoring checkpoints and bundles
:mod:`export.bundle`    the bundle writer and the model card
:mod:`export.calibrate` temperature, operating points and the per-domain report of a bundle
:mod:`export.pipeline`  every stage of a TOML recipe, from the data to the shipped bundle
======================  ===========================================================================
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export.errors": ("ExportError", "ExitCode", "exit_code"),
    "export.progress": ("Progress", "LogProgress"),
    "export.data.records": ("Record", "load_records", "load_training_data"),
    "export.data.split": ("Split",),
    "export.train.config": ("TrainConfig",),
    "export.train.loop": ("train",),
    "export.train.record": ("TrainingRecord",),
    "export.prune.config": ("PruneConfig", "RecoveryConfig", "PruneJob", "SweepConfig", "job_from_options"),
    "export.prune.structure": ("prune_model",),
    "export.prune.job": ("prune_checkpoint",),
    "export.prune.sweep": ("run_sweep",),
    "export.onnx.recipe": ("BuildConfig", "build_config"),
    "export.onnx.build": ("build_bundles", "derive_fp16"),
    "export.onnx.export": ("ExportConfig", "export_onnx", "load_checkpoint"),
    "export.onnx.optimize": ("OptimizeConfig", "optimize"),
    "export.onnx.quantize": ("QuantizeConfig", "quantize", "convert_fp16"),
    "export.onnx.gates": ("GateConfig",),
    "export.evaluate.sets": ("EvalSet", "held_out_sets", "load_eval_set"),
    "export.bundle.write": ("write_bundle",),
    "export.calibrate.fit": ("CalibrateConfig", "calibrate_bundle"),
    "export.pipeline.config": ("PipelineConfig", "read_pipeline_config"),
    "export.pipeline.run": ("run_pipeline",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
