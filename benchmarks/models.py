"""The contenders' models, built once into a cache directory.

Every model has the architecture of the library's starting point (a DistilBERT with MiniLM sizes: 6 layers,
dim 384, FFN 1536), built from the converted MiniLM weights with a fresh classification head, so the suite
needs no training; ``transformers-pytorch-distilbert-base`` has ``distilbert-base-uncased`` sizes with random
weights (timing does not depend on trained weights); ``aidetect-default`` is the bundle ``Detector()`` loads,
when it exists. The aidetect bundles are built by the project's one build function,
:func:`export.onnx.build.build_bundles` (export, O2 fusion, LayerNorm rewrite, dynamic int8); the Optimum ones
through Optimum's exporter and ``ORTQuantizer`` (``avx512_vnni``, dynamic).

The cache lives in ``.benchmarks/models/<key>/``, the key a hash of the library versions and of the code that
builds the models (this module and the export stages), so a change to either rebuilds them. This module imports
only the standard library at load time, so the cold-start subprocess measures the engine's own imports.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / ".benchmarks" / "models"
BASELINE = "transformers-pytorch-fp32"
ENGINES = (
    BASELINE,
    "transformers-pytorch-distilbert-base",
    "optimum-ort-fp32",
    "optimum-ort-int8",
    "aidetect-fp32",
    "aidetect-int8",
    "aidetect-default",
    "ctranslate2-int8",
    "openvino-int8",
    "aidetect-int8-openvino",
    "aidetect-default-openvino",
)
ON_OPENVINO = {"aidetect-int8-openvino": "aidetect-int8", "aidetect-default-openvino": "aidetect-default"}
"""The aidetect bundles again on ``provider="openvino"`` (the ``[openvino]`` extra): engine -> its bundle's engine."""
PEERS = {"ctranslate2-int8": ("ctranslate2",), "openvino-int8": ("openvino", "nncf")}
"""The other runtimes (``benchmarks.peers``) and the libraries each needs (``pip install '.[peers]'``)."""
MINILM_ENGINES = frozenset(ENGINES) - {
    "transformers-pytorch-distilbert-base", "aidetect-default", "aidetect-default-openvino",
}  # fmt: skip
BUNDLE_MAX_LENGTH = 512  # the built bundles take up to 512 tokens, so the 512-token latency runs one window
HEAD_STD = 0.1
DISTILBERT_BASE = {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072}
_VERSIONED = (
    "torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "tokenizers", "numpy", "ctranslate2",
    "openvino", "nncf",
)  # fmt: skip
_DONE = "complete.json"


def versions() -> dict[str, str]:
    """Versions of the libraries the contenders run on (those installed)."""
    out = {}
    for dist in ("aidetect-infer", *_VERSIONED):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def cache_key() -> str:
    """A hash of the library versions and the model-building code: a change to either rebuilds the cache.

    The code is the export package and this module's build functions and constants (not the whole module, so
    editing how a built model is read does not rebuild it).
    """
    h = hashlib.sha256(json.dumps(versions(), sort_keys=True).encode())
    h.update(repr((BUNDLE_MAX_LENGTH, HEAD_STD, sorted(DISTILBERT_BASE.items()))).encode())
    for fn in (build_models, _build_checkpoints, _build_bundles, _build_optimum, _build_peers):
        h.update(inspect.getsource(fn).encode())
    for path in sorted((REPO / "export").rglob("*.py")):
        h.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:16]


def default_bundle() -> Path | None:
    """The bundle ``Detector()`` loads (``$AIDETECT_MODEL`` or ``models/default``), or ``None`` if absent."""
    from aidetect_infer.detector import default_model_path

    path = default_model_path()
    return path if path.exists() else None


@dataclass(frozen=True)
class Models:
    """Where each contender's files are.

    Attributes:
        root: The cache directory of this build.
        minilm: Hugging Face checkpoint of the MiniLM-sized DistilBERT (PyTorch contenders load it).
        distilbert_base: Checkpoint of the ``distilbert-base-uncased``-sized model (random weights).
        bundles: Parent of the aidetect ``fp32/`` and ``int8/`` bundles.
        optimum_fp32: Optimum's exported model directory.
        optimum_int8: Optimum's quantized model directory.
        ctranslate2: CTranslate2's int8 model directory (with the classification head as ``head.npz``).
        openvino: OpenVINO's int8 model directory (``model.xml``).
    """

    root: Path
    minilm: Path
    distilbert_base: Path
    bundles: Path
    optimum_fp32: Path
    optimum_int8: Path
    ctranslate2: Path
    openvino: Path

    @classmethod
    def at(cls, root: Path) -> Models:
        """The layout of a cache directory (whether built or not)."""
        return cls(
            root=root, minilm=root / "minilm", distilbert_base=root / "distilbert-base", bundles=root / "aidetect",
            optimum_fp32=root / "optimum-fp32", optimum_int8=root / "optimum-int8",
            ctranslate2=root / "ctranslate2-int8", openvino=root / "openvino-int8",
        )  # fmt: skip

    @property
    def default(self) -> Path | None:
        """The default bundle, or ``None`` (looked up on each call, importing the runtime only then)."""
        return default_bundle()

    def files(self, engine: str) -> Path | None:
        """The directory holding ``engine``'s model files (``None`` for an absent default bundle)."""
        engine = ON_OPENVINO.get(engine, engine)
        if engine == "aidetect-default":
            return self.default
        return {
            BASELINE: self.minilm,
            "transformers-pytorch-distilbert-base": self.distilbert_base,
            "optimum-ort-fp32": self.optimum_fp32,
            "optimum-ort-int8": self.optimum_int8,
            "aidetect-fp32": self.bundles / "fp32",
            "aidetect-int8": self.bundles / "int8",
            "ctranslate2-int8": self.ctranslate2,
            "openvino-int8": self.openvino,
        }[engine]

    def tokenizer_file(self, engine: str) -> Path:
        """The ``tokenizer.json`` the engine tokenizes with."""
        engine = ON_OPENVINO.get(engine, engine)
        if engine == "aidetect-default":
            from aidetect_infer.bundle import resolve_bundle_dir

            if self.default is None:
                raise FileNotFoundError("aidetect-default: no default bundle (models/default or $AIDETECT_MODEL)")
            return resolve_bundle_dir(self.default) / "tokenizer.json"
        return self.minilm / "tokenizer.json"

    def disk_bytes(self, engine: str) -> int:
        """Bytes on disk of the engine's model and tokenizer files."""
        engine = ON_OPENVINO.get(engine, engine)
        where = self.files(engine)
        if where is None:
            return 0
        if engine == "aidetect-default":
            from aidetect_infer.bundle import load_bundle

            bundle = load_bundle(where)
            return bundle.model_path.stat().st_size + bundle.tokenizer_path.stat().st_size
        tokenizer = (self.minilm / "tokenizer.json").stat().st_size if engine.startswith(("optimum", *PEERS)) else 0
        return tokenizer + sum(p.stat().st_size for p in where.rglob("*") if p.is_file())

    def architecture(self, engine: str) -> dict[str, Any]:
        """``aidetect.json``-style architecture of the engine's model (layers, sizes, pruned heads)."""
        engine = ON_OPENVINO.get(engine, engine)
        if engine == "aidetect-default":
            from aidetect_infer.bundle import load_bundle

            if self.default is None:
                raise FileNotFoundError("aidetect-default: no default bundle (models/default or $AIDETECT_MODEL)")
            return dict(load_bundle(self.default).metadata.architecture)
        if engine == "transformers-pytorch-distilbert-base":
            sizes = DISTILBERT_BASE
        else:
            sizes = json.loads((self.minilm / "config.json").read_text(encoding="utf-8"))
        return {
            "model_type": "distilbert", "layers": sizes["n_layers"], "hidden_size": sizes["dim"],
            "heads": sizes["n_heads"], "ffn_size": sizes["hidden_dim"],
        }  # fmt: skip


def is_built(root: Path) -> bool:
    """Whether ``root`` holds a complete build."""
    return (root / _DONE).is_file()


def build_models(parity_texts: Sequence[str], cache_dir: Path = CACHE_DIR) -> Models:
    """Build every contender's model into ``cache_dir/<cache_key()>`` unless already there.

    Args:
        parity_texts: Real texts for the export's parity checks (long ones preferred).
        cache_dir: The parent of the keyed cache directories.

    Returns:
        The model locations.
    """
    root = cache_dir / cache_key()
    if (root / _DONE).is_file():
        return Models.at(root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        started = time.perf_counter()
        models = Models.at(work)
        _build_checkpoints(models)
        _build_bundles(models, parity_texts)
        _build_optimum(models)
        _build_peers(models, parity_texts)
        (work / _DONE).write_text(
            json.dumps({"versions": versions(), "seconds": round(time.perf_counter() - started, 1)}), encoding="utf-8"
        )
        if (root / _DONE).is_file():  # another run finished first
            shutil.rmtree(work)
        else:
            shutil.rmtree(root, ignore_errors=True)
            os.replace(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("benchmark models built in %s", root)
    return Models.at(root)


def _build_checkpoints(models: Models) -> None:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from export.train.convert import load_base, save_checkpoint

    model, tokenizer_json = load_base("minilm", seed=0)
    # A wider head spreads P(AI) over (0, 1) (a default one leaves every score near 0.5), so the check that
    # all engines agree on the same texts means something; timing does not depend on the weights.
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in (model.pre_classifier, model.classifier):
            layer.weight.normal_(0.0, HEAD_STD)
            layer.bias.zero_()
    save_checkpoint(model, tokenizer_json, models.minilm)
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=model.config.vocab_size, max_position_embeddings=512, num_labels=2,
        id2label={0: "human", 1: "ai"}, label2id={"human": 0, "ai": 1}, **DISTILBERT_BASE,
    )  # fmt: skip
    save_checkpoint(DistilBertForSequenceClassification(config).eval(), tokenizer_json, models.distilbert_base)


def _build_bundles(models: Models, parity_texts: Sequence[str]) -> None:
    """The aidetect fp32 and int8 bundles, built by the one build function as the shipped model's recipe builds
    them (LayerNorm as plain operators, dynamic int8 with the outlier input channels in fp32, chosen on training
    windows of the L2R set, and int8 embedding tables), without a gate: the untrained head's scores mean
    nothing, and timing does not depend on them."""
    from export.onnx.build import build_bundles
    from export.onnx.recipe import build_config

    options = {
        "variant": ("fp32", "int8"), "max_length": BUNDLE_MAX_LENGTH, "int8": "outlier_channels",
        "calibration": "l2r_rewrites.jsonl.gz", "quantize_embeddings": True, "gate": False,
        "name": "benchmark-minilm", "bench_texts": 0, "parity_texts": sorted(parity_texts, key=len, reverse=True),
    }  # fmt: skip
    build_bundles(build_config(models.minilm, models.bundles, options))


def _build_optimum(models: Models) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    model = ORTModelForSequenceClassification.from_pretrained(models.minilm, export=True)
    model.save_pretrained(models.optimum_fp32)
    quantizer = ORTQuantizer.from_pretrained(models.optimum_fp32)
    quantizer.quantize(
        save_dir=models.optimum_int8, quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False)
    )


def peer_installed(engine: str) -> bool:
    """Whether the libraries of a peer engine (:data:`PEERS`) are installed."""
    import importlib.util

    return all(importlib.util.find_spec(module) is not None for module in PEERS.get(engine, ()))


def _build_peers(models: Models, calibration_texts: Sequence[str]) -> None:
    """CTranslate2 and OpenVINO int8 models of the same checkpoint, each only where its library is installed."""
    from benchmarks import peers

    if peer_installed("ctranslate2-int8"):
        peers.build_ctranslate2(models.minilm, models.ctranslate2)
    if peer_installed("openvino-int8"):
        from export.onnx.export import ExportConfig, export_onnx, load_checkpoint

        raw = models.root / "openvino-raw.onnx"
        texts = sorted(calibration_texts, key=len, reverse=True)
        export_onnx(load_checkpoint(models.minilm), raw, ExportConfig(max_length=BUNDLE_MAX_LENGTH), texts=texts[:8])
        peers.build_openvino_int8(
            raw, models.minilm / "tokenizer.json", calibration_texts, models.openvino, max_length=BUNDLE_MAX_LENGTH
        )
        raw.unlink()
