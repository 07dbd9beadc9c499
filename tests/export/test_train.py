"""End-to-end training on a tiny configuration: the loss falls, the record is complete, runs are reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.data.records import sha256_file  # noqa: E402
from export.train.__main__ import config_from_args  # noqa: E402
from export.train.config import TrainConfig  # noqa: E402
from export.train.loop import train  # noqa: E402

MARKERS = " Furthermore, it is important to note the intricate tapestry."


@pytest.fixture(scope="module")
def train_file(sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 texts; the AI-labelled half carries a learnable phrase, so one tiny epoch must lower the loss."""
    rows = []
    for i, text in enumerate(sample_texts[:200]):
        words = " ".join(text.split()[:40])
        label = i % 2
        rows.append({"text": words + (MARKERS if label else ""), "label": label, "group": f"g{i // 2}"})
    path = tmp_path_factory.mktemp("train") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(base: Path, data: Path, out: Path, **kw) -> TrainConfig:
    defaults = dict(
        base=str(base),
        data=(str(data),),
        out=str(out),
        epochs=2.0,
        batch_size=16,
        learning_rate=3e-3,
        max_length=64,
        val_fraction=0.2,
        threads=1,
        seed=7,
        warmup_ratio=0.1,
    )
    return TrainConfig(**(defaults | kw))


def _mean_loss(checkpoint: Path, data: Path) -> tuple[float, np.ndarray]:
    from transformers import AutoModelForSequenceClassification

    from export.data.records import load_records
    from export.train.batches import collate, load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tok = load_tokenizer(checkpoint / "tokenizer.json", 64)
    records = load_records(data)
    ids, mask = collate([e.ids for e in tok.encode_batch([r.text for r in records])], model.config.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([r.label for r in records]))
    return loss.item(), logits.numpy()


@pytest.fixture(scope="module")
def trained(tiny_checkpoint: Path, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(_config(tiny_checkpoint, train_file, tmp_path_factory.mktemp("run") / "ckpt"))


def test_loss_falls_and_checkpoint_is_written(trained: Path, tiny_checkpoint: Path, train_file: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (trained / name).is_file(), name
    # the tokenizer is the base's, byte for byte
    assert (trained / "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()
    before, _ = _mean_loss(tiny_checkpoint, train_file)
    after, _ = _mean_loss(trained, train_file)
    assert after < 0.8 * before, (before, after)


def test_training_record(trained: Path, train_file: Path) -> None:
    record = json.loads((trained / "training.json").read_text())
    assert record["seed"] == 7 and record["config"]["learning_rate"] == 3e-3
    assert record["data"][0] == {"file": train_file.name, "sha256": sha256_file(train_file)}
    assert record["config"]["data"] == [train_file.name]  # names, never a path of the machine that trained
    assert record["counts"]["train"] + record["counts"]["validation"] == 200
    assert len(record["history"]) == 2  # one evaluation per epoch
    assert 0.0 <= record["threshold"] <= 1.0 and record["wall_time_s"] > 0
    assert record["best"]["roc_auc"] == max(h["roc_auc"] for h in record["history"])


def test_reload_gives_same_logits_and_same_seed_same_metrics(
    trained: Path, tiny_checkpoint: Path, train_file: Path, tmp_path: Path
) -> None:
    again = train(_config(tiny_checkpoint, train_file, tmp_path / "again"))
    a = json.loads((trained / "training.json").read_text())["history"]
    b = json.loads((again / "training.json").read_text())["history"]
    assert [h["roc_auc"] for h in a] == [h["roc_auc"] for h in b]
    _, logits_a = _mean_loss(trained, train_file)
    _, logits_b = _mean_loss(again, train_file)
    np.testing.assert_allclose(logits_a, logits_b, atol=1e-5)


def test_config_file_and_overrides(tmp_path: Path, train_file: Path) -> None:
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(f'data = ["{train_file}"]\nout = "x"\nepochs = 3\nseed = 5\n', encoding="utf-8")
    cfg = config_from_args(["--config", str(cfg_file), "--seed", "9"])
    assert (cfg.epochs, cfg.seed, cfg.data) == (3, 9, (str(train_file),))
    with pytest.raises(ValueError, match="max_length=4"):
        TrainConfig(data=("x",), out="y", max_length=4)


def test_an_int8_aware_run_saves_the_weights_its_forward_pass_used(
    tiny_checkpoint: Path, train_file: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from export.train.int8_aware import round_rows, round_table

    out = train(
        _config(tiny_checkpoint, train_file, tmp_path / "ckpt", epochs=1.0, int8_aware=True,
                int8_outlier_products="none")
    )  # fmt: skip
    weights = load_file(str(out / "model.safetensors"))
    base = load_file(str(tiny_checkpoint / "model.safetensors"))
    matrices = [k for k, v in weights.items() if v.ndim == 2 and "embeddings" not in k]
    assert matrices and all(torch.allclose(round_rows(weights[k]), weights[k], atol=1e-6) for k in matrices)
    tables = [k for k in weights if k.startswith("distilbert.embeddings.")]
    assert len(tables) == 4 and all(torch.allclose(round_table(weights[k]), weights[k], atol=1e-6) for k in tables)
    assert not all(torch.equal(weights[k], base[k]) for k in matrices)  # and it trained
    assert json.loads((out / "training.json").read_text())["config"]["int8_aware"] is True


def test_int8_aware_options_on_the_command_line() -> None:
    cfg = config_from_args(["--data", "a.jsonl", "--out", "o", "--int8-aware", "--int8-calibration", "c.jsonl",
                            "--int8-outlier-products", "ffn", "--no-int8-embeddings"])  # fmt: skip
    assert cfg.int8_aware and cfg.int8_calibration == "c.jsonl" and cfg.int8_outlier_products == "ffn"
    assert not cfg.int8_embeddings and cfg.int8_outlier_channels == 8
    assert not config_from_args(["--data", "a.jsonl", "--out", "o"]).int8_aware
