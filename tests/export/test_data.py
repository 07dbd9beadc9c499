"""Data loading, validation, filters and the split by group."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from export.data.records import (
    REPO_DATA_DIR,
    DataError,
    filter_records,
    in_validation,
    load_records,
    load_training_data,
    refuse_held_out,
    split_by_group,
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_kaggle_csv_layout(tmp_path: Path) -> None:
    path = tmp_path / "train_essays.csv"
    path.write_text('id,prompt_id,text,generated\na,0,"An essay, with a comma.",0\nb,1,Another,1\n', encoding="utf-8")
    records = load_records(path)
    assert [(r.text, r.label, r.group) for r in records] == [("An essay, with a comma.", 0, "0"), ("Another", 1, "1")]


def test_named_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"body": "hello", "is_ai": "true"}, {"body": "world", "is_ai": 0}])
    records = load_records(path, text_column="body", label_column="is_ai")
    assert [r.label for r in records] == [1, 0]
    # rows without a group become their own group, so they still split without leaking
    assert len({r.group for r in records}) == 2


def test_gzip_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "a", "label": 1, "group": "g", "domain": "news"}) + "\n")
    (r,) = load_records(path)
    assert (r.text, r.label, r.group, r.domain) == ("a", 1, "g", "news")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b'{"text": "a"}\n', "x.jsonl:1: missing column 'label'"),
        (b'{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n', "x.jsonl:2: label 2 is not 0 or 1"),
        (b'{"text": "a", "label": 1}\n{"text": "\xff\xfe", "label": 0}\n', "not valid UTF-8"),
        (b'{"text": "a", "label": 1}\nnot json\n', "x.jsonl:2: invalid JSON"),
        (b'{"text": "  ", "label": 1}\n', "x.jsonl:1: column 'text' is empty"),
    ],
)
def test_bad_data_is_refused_with_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_records(path)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown data format"):
        load_records(tmp_path / "x.parquet")


def test_split_keeps_groups_whole_and_is_deterministic(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 2, "group": f"g{i // 3}"} for i in range(3000)]
    records = load_records(write_jsonl(tmp_path / "x.jsonl", rows))
    train, val = split_by_group(records, 0.2)
    assert not {r.group for r in train} & {r.group for r in val}
    assert 0.15 < len(val) / len(records) < 0.25
    # the split depends on the group name only: reversing the rows changes nothing
    train2, val2 = split_by_group(records[::-1], 0.2)
    assert {r.text for r in val} == {r.text for r in val2}
    assert all(in_validation(r.group, 0.2) for r in val)


def test_held_out_half_never_reaches_training(tmp_path: Path) -> None:
    rows = [{"text": f"v{i}", "label": i % 2, "group": f"outfox:valid:{i}"} for i in range(20)]
    rows += [{"text": f"t{i}", "label": i % 2, "group": f"outfox:test:{i}"} for i in range(20)]
    path = write_jsonl(tmp_path / "essays.jsonl", rows)
    records = load_records(path)
    with pytest.raises(DataError, match="held-out OUTFOX test half"):
        refuse_held_out(records, path)
    train, val = load_training_data([path], val_fraction=0.5)
    assert all(not r.group.startswith("outfox:test:") for r in train + val)
    assert len(train + val) == 20


def test_filters(tmp_path: Path) -> None:
    rows = [
        {"text": "a", "label": 1, "group": "1", "domain": "xsum", "generator": "gpt2", "attack": "none"},
        {"text": "b", "label": 1, "group": "2", "domain": "essay", "generator": "gpt4", "attack": "dipper"},
        {"text": "c", "label": 0, "group": "3", "domain": "essay", "generator": "human"},
    ]
    records = load_records(write_jsonl(tmp_path / "x.jsonl", rows))
    assert [r.text for r in filter_records(records, domains=["essay"])] == ["b", "c"]
    assert [r.text for r in filter_records(records, generators=["gpt4", "human"])] == ["b", "c"]
    assert [r.text for r in filter_records(records, attacks=["none"])] == ["a", "c"]


def test_repository_data_split_has_no_leak() -> None:
    train, val = load_training_data(
        [REPO_DATA_DIR / "detectgpt_family.jsonl.gz", REPO_DATA_DIR / "outfox_essays.jsonl.gz"]
    )
    assert not {r.group for r in train} & {r.group for r in val}
    assert not any(r.held_out for r in train + val)
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12


def test_held_out_sets_of_repository_data() -> None:
    from export.evaluate.sets import held_out_sets

    sets = held_out_sets([REPO_DATA_DIR / "detectgpt_family.jsonl.gz", REPO_DATA_DIR / "outfox_essays.jsonl.gz"])
    assert set(sets) == {"detectgpt_family/validation", "outfox_essays/test-clean", "outfox_essays/test-attacked"}
    assert all(r.held_out and r.attack == "none" for r in sets["outfox_essays/test-clean"])
    attacked = sets["outfox_essays/test-attacked"]
    assert {r.label for r in attacked} == {0, 1} and all(r.attack != "none" for r in attacked if r.label == 1)
    _, val = load_training_data([REPO_DATA_DIR / "detectgpt_family.jsonl.gz"])
    assert {r.text for r in sets["detectgpt_family/validation"]} == {r.text for r in val}
