"""The typed contracts between stages: the training record, the split, the evaluation sets, the pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export.data import Split, in_validation, load_records
from export.errors import CheckpointError, ConfigError, ExportError
from export.evaluate.sets import held_out_sets, load_eval_set, select
from export.pipeline.config import read_pipeline_config
from export.train.record import TrainingRecord

RECORD = {
    "config": {"max_length": 128, "val_fraction": 0.25, "split_salt": "s", "shares": {"a": 1.0}},
    "seed": 7,
    "data": [{"file": "a.jsonl", "sha256": "0" * 64}],
    "counts": {"train": 10, "validation": 3},
    "best": {"roc_auc": 0.9, "eer_threshold": 0.4},
    "threshold": 0.4,
    "threshold_rule": "equal error rate on the validation groups",
    "history": [{"step": 1, "roc_auc": 0.9}],
    "versions": {"torch": "x"},
    "tokenizer_normalizer": "confusables-v1",
    "something_new": {"kept": True},
}


def test_training_record_round_trips(tmp_path: Path) -> None:
    record = TrainingRecord.from_dict(RECORD)
    assert record.to_dict() == RECORD
    assert record.max_length == 128 and record.shares == {"a": 1.0} and record.validation_roc_auc == 0.9
    assert record.split == Split(0.25, "s")
    record.write(tmp_path)
    assert TrainingRecord.read(tmp_path) == record
    assert TrainingRecord.read(tmp_path / "nowhere") is None
    (tmp_path / "training.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(CheckpointError, match="JSON object"):
        TrainingRecord.read(tmp_path)


def test_an_empty_record_has_the_defaults() -> None:
    record = TrainingRecord()
    assert record.max_length == 256 and record.split == Split() and record.threshold is None
    with pytest.raises(ValueError, match="val_fraction"):
        Split(1.0)


def _rows() -> list[dict[str, Any]]:
    rows = [{"text": f"text {i}", "label": i % 2, "group": f"g{i}"} for i in range(200)]
    return rows + [
        {"text": f"essay {i}", "label": i % 2, "group": f"outfox:test:{i}", "attack": "dipper" if i % 3 else "none"}
        for i in range(30)
    ]


def test_one_vocabulary_for_every_evaluation(tmp_path: Path, jsonl: Any) -> None:
    path = jsonl(tmp_path / "d.jsonl", _rows())
    records, split = load_records(path), Split(0.25, "s")
    assert [r.group for r in select(records, "validation", split)] == [
        r.group for r in records if not r.held_out and in_validation(r.group, 0.25, "s")
    ]
    test, clean, attacked = (select(records, s, split) for s in ("test", "test-clean", "test-attacked"))
    assert {r.text for r in clean} | {r.text for r in attacked} == {r.text for r in test}
    assert all(r.attack == "none" for r in clean) and all(r.label == 0 or r.attack != "none" for r in attacked)
    training = TrainingRecord.from_dict({"config": {"val_fraction": 0.25, "split_salt": "s"}})
    assert load_eval_set(f"{path}@test", training=training).texts == tuple(r.text for r in test)
    sets = held_out_sets([path], split="test")
    assert set(sets) == {"d/test-clean", "d/test-attacked"}
    assert [r.text for r in sets["d/test-clean"]] == [r.text for r in clean]
    with pytest.warns(DeprecationWarning, match="validation"):
        old = held_out_sets([path], split="val", val_fraction=0.25, salt="s")
    assert old == held_out_sets([path], split="validation", val_fraction=0.25, salt="s")
    with pytest.raises(ValueError, match="unknown subset"):
        load_eval_set(f"{path}@tset")


def test_a_pipeline_file_is_checked_once_read(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text('name = "x"\n[export]\nvariant = ["fp32"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="no \\[\\[train\\]\\] stage"):
        read_pipeline_config(config)
    config.write_text('[[train]]\ndata = ["a"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="needs a base"):
        read_pipeline_config(config)
    config.write_text('[[train]]\nbase = "minilm"\ndata = ["a"]\n[exprot]\n', encoding="utf-8")
    with pytest.raises(ExportError, match="exprot"):
        read_pipeline_config(config)
    shipped = read_pipeline_config(Path(__file__).resolve().parents[2] / "configs" / "default.toml")
    assert shipped.variant == "int8" and shipped.fold_confusables and len(shipped.train) == 3
    assert shipped.train[-1]["out"] == "runs/mix3" and "base" not in shipped.train[-1]
    # four tuning stages after pruning (the last two int8-aware, the fourth with the technical prose), each from
    # the one before; every stage's options are valid training options
    assert [s["out"] for s in shipped.tune] == ["runs/tune4", "runs/tune5", "runs/tune6", "runs/tune7b"]
    assert [bool(s.get("int8_aware")) for s in shipped.tune] == [False, False, True, True]
    assert (
        "technical_prose.jsonl.gz" in shipped.tune[-1]["data"]
        and "technical_prose.jsonl.gz" not in shipped.tune[2]["data"]
    )
    assert all("base" not in s for s in shipped.tune)
    from export.train.config import config_from_values

    for stage in (*shipped.train, *shipped.tune):
        assert config_from_values({"base": "minilm", **stage}).out == stage["out"]
