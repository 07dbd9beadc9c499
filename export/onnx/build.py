"""Building the variant bundles of one checkpoint (the work behind ``python -m export.to_onnx``).

Writes ``--out/fp32/``, ``--out/int8/``, ``--out/fp16/`` (those asked for; see docs/bundle-format.md, "Several
variants"). The stages: export with a PyTorch parity check (:mod:`export.onnx.export`), graph optimization
with a second parity check (:mod:`export.onnx.optimize`), int8 quantization or the fp16 conversion
(:mod:`export.onnx.quantize`), then every variant is scored by the runtime's ``Detector`` on the ``--eval`` sets and
each reduced-precision variant must pass the accuracy gate against fp32 (:mod:`export.onnx.gates`).

int8: the settings in ``BuildConfig.quantize`` are tried in order (by default :data:`INT8_LADDER`, fastest
first: dynamic int8, dynamic with the FFN output projections as weight-only, weight-only); the first whose
bundle passes the gate is written, and the settings that failed before it are recorded in its recipe.

All or nothing: everything is built in a temporary directory beside ``--out`` and moved into place only when
every requested variant has passed; a failure at any stage exits non-zero with a message and leaves ``--out``
as it was.

Threshold: the checkpoint's ``training.json`` ``threshold`` (chosen on validation by the training run) when
present, else ``--threshold``, else 0.5; the rule is recorded in ``aidetect.json``'s recipe and the card.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.bundle.write import write_bundle
from export.data.records import DataError, load_records
from export.data.split import calibration_texts
from export.errors import ConfigError, InputError
from export.evaluate.sets import EvalSet, load_eval_set
from export.files import replace_dir
from export.onnx.export import Checkpoint, load_checkpoint, pad_rows
from export.onnx.quantize import convert_fp16
from export.onnx.recipe import DEFAULT_PARITY_FILE, VARIANTS, BuildConfig, check_output, resolve_threshold
from export.onnx.variants import VariantBuilder, VariantReport
from export.progress import LogProgress, Progress
from export.train.record import TrainingRecord

logger = logging.getLogger(__name__)


def _texts_by_length(eval_sets: Sequence[EvalSet], extra: Sequence[str]) -> list[str]:
    pool = [t for s in eval_sets for t in s.texts] + list(extra)
    if not pool:
        try:
            pool = [r.text for r in load_records(DEFAULT_PARITY_FILE)[:200]]
        except DataError as exc:
            raise DataError(f"parity needs real texts: pass --eval FILE or --calibration FILE ({exc})") from exc
    return sorted(pool, key=lambda t: (-len(t), t))


def calibration_feeds(cfg: BuildConfig, ckpt: Checkpoint) -> tuple[list[str], list[dict[str, NDArray[np.int64]]]]:
    """Calibration texts and their one-window feeds, for static quantization and the outlier channels.

    Only training data: a file with OUTFOX test records is refused, and the validation groups of the
    checkpoint's split (which the gates evaluate on) are left out.
    """
    if cfg.calibration is None:
        return [], []
    split = (ckpt.training or TrainingRecord()).split
    users = [q for q in cfg.quantize if q.needs_calibration]
    if not users:
        return calibration_texts(cfg.calibration, split, 64), []
    texts = calibration_texts(cfg.calibration, split, max(q.calibration_size for q in users))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ckpt.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=cfg.export.max_length)
    rows = [enc.ids for enc in tokenizer.encode_batch(texts)]
    # Histogram calibration (entropy, percentile) stacks activations, so its windows must share one length.
    stacked = any(q.mode == "static" and q.calibration_method != "minmax" for q in users)
    width = cfg.export.max_length if stacked else None
    return texts, [pad_rows([row], ckpt.pad_id, ckpt.input_names, width) for row in rows]


def build_bundles(cfg: BuildConfig, *, progress: Progress | None = None) -> list[VariantReport]:
    """Run the whole export and write the variant bundles under ``cfg.out`` (all or nothing).

    Args:
        cfg: The run's settings.
        progress: Told of stages and scored texts (for a progress display).

    Returns:
        One report per written variant in ``cfg.variants`` order, then a ``pytorch`` throughput row when
        ``cfg.bench_texts`` is not 0.

    Raises:
        CheckpointError: A missing or unusable checkpoint.
        OutputError: ``cfg.out`` cannot be written.
        ParityError: A graph does not match PyTorch.
        GateFailedError: A variant fails the accuracy gate.
        ExportError: Any other stage failed.
        export.data.DataError, ValueError: Unusable evaluation or calibration data.
    """
    progress = progress or LogProgress()
    out = Path(cfg.out).expanduser().resolve()
    check_output(out, cfg.overwrite)
    progress.stage("loading the checkpoint and the data")
    ckpt = load_checkpoint(cfg.checkpoint)
    threshold, rule = resolve_threshold(ckpt.training, cfg.threshold)
    eval_sets = [load_eval_set(s, training=ckpt.training, limit=cfg.eval_limit) for s in cfg.eval_specs]
    if cfg.gate is not None and any(v != "fp32" for v in cfg.variants) and not eval_sets:
        raise ConfigError(f"{', '.join(v for v in cfg.variants if v != 'fp32')} need --eval data for the gate")
    calib_texts, calib_feeds = calibration_feeds(cfg, ckpt)
    if all(q.needs_calibration for q in cfg.quantize) and "int8" in cfg.variants and not calib_feeds:
        raise ConfigError("static int8 and the outlier channels need --calibration FILE (training data)")
    progress.planned(len(set(cfg.variants) | {"fp32"}) * sum(len(s.texts) for s in eval_sets))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        run = VariantBuilder(cfg, ckpt, work, eval_sets, threshold, rule, progress)
        graphs = run.graphs(list(cfg.parity_texts) or _texts_by_length(eval_sets, calib_texts))
        meta, reference = run.evaluate("fp32", *graphs["fp32"], {})
        reports = [run.write("fp32", graphs["fp32"][0], meta)] if "fp32" in cfg.variants else []
        for variant in (v for v in cfg.variants if v != "fp32"):
            path, meta = run.int8(graphs["fp32"], calib_feeds, reference) if variant == "int8" else (
                graphs[variant][0], run.evaluate(variant, *graphs[variant], reference)[0])  # fmt: skip
            reports.append(run.write(variant, path, meta))
        if cfg.bench_texts:
            reports.append(run.torch_speed())
        progress.stage("moving the bundles into place")
        check_output(out, cfg.overwrite)
        replace_dir(work / "bundles", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for report in reports:
        if report.variant in VARIANTS:
            report.path = out / report.variant
    return reports


def derive_fp16(fp32_bundle: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the fp16 variant of an fp32 bundle (weights and arithmetic fp16, inputs and logits float32).

    For an fp32 bundle whose checkpoint is not at hand (the GPU benchmark): the fp16 stage of
    :func:`build_bundles`, applied to the bundle's graph, its recipe continued. Not gated: a CUDA parity check
    against fp32 is the caller's.

    Args:
        fp32_bundle: A bundle of precision ``fp32``.
        out: The new bundle directory (replaced if it exists).

    Returns:
        ``out`` as a path.

    Raises:
        export.errors.InputError: ``fp32_bundle`` is not an fp32 bundle.
    """
    from aidetect_infer.bundle import read_metadata

    source = Path(fp32_bundle)
    meta = read_metadata(source).to_dict()
    if meta.get("variant", {}).get("precision") != "fp32":
        raise InputError(f"{source}: not an fp32 bundle; pass a parent of variants or an fp32 bundle")
    recipe = list(meta.get("recipe") or [])
    with tempfile.TemporaryDirectory() as work:
        onnx_path = convert_fp16(source / "model.onnx", Path(work) / "fp16.onnx", recipe=recipe)
        for stale in ("files", "metrics", "gates", "created", "producer"):  # they describe the fp32 model
            meta.pop(stale, None)
        meta.update(name=f"{meta['name']}-fp16", variant={**meta["variant"], "precision": "fp16"}, recipe=recipe)
        return write_bundle(
            Path(out), onnx_path=onnx_path, tokenizer_path=source / "tokenizer.json", metadata=meta, overwrite=True
        )
