"""Session-scoped fixtures shared by the runtime and export tests: a tiny tokenizer, tiny models, bundles.

Everything is built on the fly (no model hub): a WordPiece tokenizer trained on a fixed sample of real texts,
a 2-layer DistilBERT and BERT classifier with random weights, their ONNX exports and bundles.
"""

from __future__ import annotations

import gzip
import json
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from export.data import REPO_DATA_DIR

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_DATA_DIR  # the labelled sets shipped with the repository (data/README.md)
SAMPLE_FILE = DATA_DIR / "detectgpt_family.jsonl.gz"
SAMPLE_SIZE = 300
SAMPLE_EVERY = 53  # a fixed, spread-out sample: rows 0, 53, 106, ... (all domains and generators)
VOCAB_SIZE = 1000
MAX_LENGTH = 128
WINDOW_STRIDE = 96
SEED = 1234
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _read_sample() -> list[str]:
    texts: list[str] = []
    with gzip.open(SAMPLE_FILE, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f):
            if number % SAMPLE_EVERY == 0:
                texts.append(json.loads(line)["text"])
                if len(texts) == SAMPLE_SIZE:
                    break
    return texts


def _synthetic_sample() -> list[str]:
    """Stand-in texts when the shared data directory is absent (a bare clone)."""
    rng = random.Random(SEED)
    words = (
        "the a of to and in is was for on that with as by it this be are from at an or have not which "
        "model text people year study results data report city water school government market power music "
        "said found showed would could however because although during between against through"
    ).split()
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(5, 220))).capitalize() + "." for _ in range(SAMPLE_SIZE)
    ]


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    """A fixed sample of real texts from ``detectgpt_family`` (synthetic ones if the data is absent)."""
    return _read_sample() if SAMPLE_FILE.is_file() else _synthetic_sample()


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Any:
    """A BERT-uncased-style WordPiece tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    def bert_style(model: Any) -> Any:
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        return tokenizer

    trained = bert_style(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    trained.train_from_iterator(texts, trainer=trainer)
    # The trainer breaks frequency ties in a different order on every run, so the same tokens get different ids
    # (and the tiny models built on them behave differently from run to run). Number them in a fixed order.
    ordinary = sorted(set(trained.get_vocab()) - set(SPECIAL_TOKENS))
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *ordinary])}
    tokenizer = bert_style(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(sample_texts: list[str]) -> Any:
    """The trained ``tokenizers.Tokenizer`` (vocabulary of about 1,000)."""
    return train_tokenizer(sample_texts)


def _save_checkpoint(model: Any, tokenizer: Any, out: Path, input_names: list[str]) -> Path:
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(out)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=input_names,
    )
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HF checkpoint directory: 2-layer DistilBertForSequenceClassification (dim 32) + tokenizer files."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(SEED)
    config = DistilBertConfig(
        vocab_size=tiny_tokenizer.get_vocab_size(),
        n_layers=2,
        dim=32,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=512,
        num_labels=2,
        pad_token_id=tiny_tokenizer.token_to_id("[PAD]"),
        initializer_range=0.2,  # wide enough that scores spread over (0, 1) instead of sitting at 0.5
        attn_implementation="eager",
    )
    model = DistilBertForSequenceClassification(config).eval()
    out = tmp_path_factory.mktemp("tiny_distilbert")
    return _save_checkpoint(model, tiny_tokenizer, out, ["input_ids", "attention_mask"])


@pytest.fixture(scope="session")
def tiny_bert_checkpoint(tiny_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HF checkpoint directory: 2-layer BertForSequenceClassification (takes ``token_type_ids``)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(SEED + 1)
    config = BertConfig(
        vocab_size=tiny_tokenizer.get_vocab_size(),
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
        pad_token_id=tiny_tokenizer.token_to_id("[PAD]"),
        initializer_range=0.2,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config).eval()
    out = tmp_path_factory.mktemp("tiny_bert")
    return _save_checkpoint(model, tiny_tokenizer, out, ["input_ids", "token_type_ids", "attention_mask"])


def load_torch_model(checkpoint: Path) -> Any:
    """The checkpoint's classifier in eval mode (eager attention, float32)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(checkpoint, attn_implementation="eager").eval()


def export_onnx(model: Any, path: Path, *, opset: int = 17) -> Path:
    """Export a sequence classifier to ONNX: int64 inputs with dynamic batch/sequence axes, output ``logits``.

    The inputs are those of ``input_ids``, ``attention_mask``, ``token_type_ids`` that the model takes.
    Uses the TorchScript-based exporter (``dynamo=False``), whose dynamic axes are the simplest to declare.
    """
    import inspect

    import torch

    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).logits

    dummy_ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]], dtype=torch.int64)
    dummy = {
        "input_ids": dummy_ids,
        "attention_mask": (dummy_ids != 0).long(),
        "token_type_ids": torch.zeros_like(dummy_ids),
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(
            Logits().eval(),
            tuple(dummy[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def bundle_metadata(model: Any, **overrides: Any) -> dict[str, Any]:
    """Valid ``aidetect.json`` contents (without ``files``) describing ``model``."""
    config = model.config
    meta: dict[str, Any] = {
        "format_version": 1,
        "name": f"tiny-{config.model_type}",
        "labels": ["human", "ai"],
        "max_length": MAX_LENGTH,
        "window_stride": WINDOW_STRIDE,
        "threshold": 0.5,
        "variant": {"precision": "fp32", "optimization": None, "quantization": None, "pruning": None},
        "architecture": {
            "model_type": config.model_type,
            "layers": getattr(config, "n_layers", getattr(config, "num_hidden_layers", None)),
            "hidden_size": getattr(config, "dim", getattr(config, "hidden_size", None)),
            "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "training": {"seed": SEED, "data": "random weights (test fixture)"},
    }
    meta.update(overrides)
    return meta


def build_bundle(checkpoint: Path, out: Path, **overrides: Any) -> Path:
    """Export ``checkpoint`` to ONNX and write a bundle at ``out`` (metadata ``overrides`` applied)."""
    from export.bundle import write_bundle

    model = load_torch_model(checkpoint)
    onnx_path = export_onnx(model, out.parent / f"{out.name}.onnx")
    return write_bundle(
        out,
        onnx_path=onnx_path,
        tokenizer_path=checkpoint / "tokenizer.json",
        metadata=bundle_metadata(model, **overrides),
    )


@pytest.fixture(scope="session")
def onnx_exporter() -> Callable[..., Path]:
    """:func:`export_onnx`, for tests that export their own models."""
    return export_onnx


@pytest.fixture(scope="session")
def bundle_builder() -> Callable[..., Path]:
    """:func:`build_bundle`: ``bundle_builder(checkpoint, out_dir, **metadata_overrides) -> Path``."""
    return build_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified fp32 bundle of the tiny DistilBERT (max_length 128, window_stride 96)."""
    return build_bundle(tiny_checkpoint, tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def tiny_bert_bundle(tiny_bert_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified fp32 bundle of the tiny BERT (its graph declares ``token_type_ids``)."""
    return build_bundle(tiny_bert_checkpoint, tmp_path_factory.mktemp("bundles") / "tiny_bert")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> Any:
    """The tiny DistilBERT as a torch module (the reference the ONNX runtime is compared with)."""
    return load_torch_model(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_bert_model(tiny_bert_checkpoint: Path) -> Any:
    """The tiny BERT as a torch module."""
    return load_torch_model(tiny_bert_checkpoint)


DRIFT_TEXTS = 1200  # half the reference of drift_bundle, half in-distribution texts (tests/*/test_drift.py)


@pytest.fixture(scope="session")
def drift_texts() -> tuple[list[str], list[str]]:
    """Texts of ``detectgpt_family`` (every 7th row): ``(reference, in_distribution)``, interleaved halves."""
    texts: list[str] = []
    if SAMPLE_FILE.is_file():
        with gzip.open(SAMPLE_FILE, "rt", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for number, line in enumerate(f) if number % 7 == 3][:DRIFT_TEXTS]
    if len(texts) < DRIFT_TEXTS:
        texts = (_synthetic_sample() * 4)[:DRIFT_TEXTS]
    return texts[0::2], texts[1::2]


@pytest.fixture(scope="session")
def drift_bundle(tiny_bundle: Path, drift_texts: tuple[list[str], list[str]], tmp_path_factory) -> Path:
    """A copy of the tiny bundle with a ``drift_reference`` of the reference half of :func:`drift_texts`, written
    as the factory writes it (:func:`export.calibrate.drift.drift_reference`)."""
    import shutil

    from aidetect_infer import Detector
    from export.calibrate.drift import drift_reference

    out = tmp_path_factory.mktemp("bundles") / "tiny_drift"
    shutil.copytree(tiny_bundle, out)
    detector = Detector.from_pretrained(out, provider="cpu", threads=1)
    predictions = detector.predict(drift_texts[0])
    meta_path = out / "aidetect.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["drift_reference"] = drift_reference(predictions, [SAMPLE_FILE.name])
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out
