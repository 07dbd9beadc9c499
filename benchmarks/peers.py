"""The runtimes a user would pick instead of this library, on the same model: CTranslate2 int8 and OpenVINO int8.

Both start from the same fine-tuned DistilBERT checkpoint as the aidetect bundles and tokenize with the same
``tokenizer.json`` (the ``tokenizers`` library, special tokens and truncation as the bundle's), so every engine
sees exactly the same tokens; scoring includes tokenization, strings in and P(AI) out.

- **CTranslate2** (``ctranslate2``): ``TransformersConverter`` turns the checkpoint's DistilBERT encoder into a
  CTranslate2 model quantized to int8 (its int8 quantizes activations per row). The encoder returns hidden
  states only, so the classification head (``pre_classifier``, ReLU, ``classifier``) is applied in numpy to the
  first token's state, as ``DistilBertForSequenceClassification`` does.
- **OpenVINO** (``openvino``, ``nncf``): the plain ONNX export (standard operators only: OpenVINO has no
  conversion for ONNX Runtime's fused ``Attention``/``QAttention`` contrib operators), converted with
  ``openvino.convert_model`` and quantized by ``nncf.quantize(..., model_type=nncf.ModelType.TRANSFORMER)``
  on real calibration windows (static int8 activations), compiled for ``CPU`` with ``INFERENCE_NUM_THREADS``.
  Batches are padded to their longest row, as OpenVINO's examples do.

Each library is imported only when its engine is built or loaded; a missing one skips its rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Scorer = Callable[[Sequence[str]], NDArray[np.float64]]
CALIBRATION_TEXTS = 300


def _tokenizer(tokenizer_file: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def _padded(tokenizer: Any, texts: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``input_ids`` and ``attention_mask``, right-padded to the batch's longest row."""
    encodings = tokenizer.encode_batch(list(texts))
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return ids, mask


def _p_ai(logits: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p: NDArray[np.float64] = e[:, 1] / e.sum(axis=1)
    return p


def build_ctranslate2(checkpoint: Path, out: Path) -> Path:
    """Convert the checkpoint's DistilBERT encoder to a CTranslate2 int8 model in ``out``; keep its head beside."""
    import ctranslate2
    from safetensors.numpy import load_file

    ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(str(out), quantization="int8", force=True)
    weights = load_file(str(checkpoint / "model.safetensors"))
    head = {
        k: weights[k] for k in ("pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias")
    }
    np.savez(out / "head.npz", **head)
    return out


def ctranslate2_scorer(model_dir: Path, tokenizer_file: Path, *, threads: int) -> Callable[[int, int], Scorer]:
    """``make(batch_size, max_length)`` returns a scorer running CTranslate2's int8 encoder and the numpy head."""
    import ctranslate2

    encoder = ctranslate2.Encoder(str(model_dir), device="cpu", compute_type="int8", intra_threads=threads)
    head = dict(np.load(model_dir / "head.npz"))

    def make(batch_size: int, max_length: int) -> Scorer:
        tokenizer = _tokenizer(tokenizer_file, max_length)

        def score(texts: Sequence[str]) -> NDArray[np.float64]:
            out = []
            for start in range(0, len(texts), batch_size):
                ids = [e.ids for e in tokenizer.encode_batch(list(texts[start : start + batch_size]))]
                hidden = np.asarray(encoder.forward_batch(ids).last_hidden_state)[:, 0, :]
                pooled = np.maximum(hidden @ head["pre_classifier.weight"].T + head["pre_classifier.bias"], 0.0)
                out.append(_p_ai(pooled @ head["classifier.weight"].T + head["classifier.bias"]))
            return np.concatenate(out) if out else np.zeros(0)

        return score

    return make


def build_openvino_int8(
    raw_onnx: Path, tokenizer_file: Path, texts: Sequence[str], out: Path, *, max_length: int
) -> Path:
    """Quantize the plain ONNX export with NNCF (static int8, transformer preset) on ``texts``; ``out/model.xml``."""
    import nncf
    import openvino as ov

    tokenizer = _tokenizer(tokenizer_file, max_length)
    windows = []
    for text in list(texts)[:CALIBRATION_TEXTS]:
        ids, mask = _padded(tokenizer, [text])
        windows.append({"input_ids": ids, "attention_mask": mask})
    model = ov.convert_model(str(raw_onnx))
    quantized = nncf.quantize(
        model, nncf.Dataset(windows), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(windows)
    )
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out / "model.xml"))
    (out / "calibration.json").write_text(json.dumps({"windows": len(windows), "max_length": max_length}))
    return out / "model.xml"


def openvino_scorer(model_xml: Path, tokenizer_file: Path, *, threads: int) -> Callable[[int, int], Scorer]:
    """``make(batch_size, max_length)``: a scorer running the OpenVINO model on CPU, batches padded to their longest."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_xml), "CPU", {"INFERENCE_NUM_THREADS": threads})
    logits_port = compiled.output(0)

    def make(batch_size: int, max_length: int) -> Scorer:
        tokenizer = _tokenizer(tokenizer_file, max_length)
        request = compiled.create_infer_request()

        def score(texts: Sequence[str]) -> NDArray[np.float64]:
            out = []
            for start in range(0, len(texts), batch_size):
                ids, mask = _padded(tokenizer, texts[start : start + batch_size])
                result = request.infer({"input_ids": ids, "attention_mask": mask})
                out.append(_p_ai(result[logits_port]))
            return np.concatenate(out) if out else np.zeros(0)

        return score

    return make
