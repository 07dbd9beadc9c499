"""Structured pruning on the tiny DistilBERT: shapes, reload, export, importance, recovery, command and sweep."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aidetect_infer import Detector
from export.errors import ExitCode, PruneError
from export.prune.__main__ import main
from export.prune.config import PRESETS, PruneConfig, transformer_layers
from export.prune.distill import Labelled, RecoveryConfig, predict_logits, recover, soft_target_loss
from export.prune.importance import choose_layers, gradient_importance, mean_loss
from export.prune.job import importance_batches, load_classifier
from export.prune.structure import flops_per_token, parameter_count, prune_model, remove_layers
from export.train.batches import load_tokenizer
from export.train.convert import save_checkpoint

MAX_LENGTH = 64
TEXTS = 48


def run(*argv: str | Path) -> tuple[int, str, str]:
    """``python -m export.prune`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def logits_of(model: Any, data: Labelled) -> np.ndarray:
    return predict_logits(model, data.ids, pad_id=0)


@pytest.fixture(scope="module")
def data(tiny_checkpoint: Path, sample_texts: list[str]) -> Labelled:
    tok = load_tokenizer(tiny_checkpoint / "tokenizer.json", MAX_LENGTH)
    ids = [e.ids for e in tok.encode_batch(sample_texts[:TEXTS])]
    return Labelled(ids, np.array([i % 2 for i in range(TEXTS)], dtype=np.int64))


@pytest.fixture(scope="module")
def batches(data: Labelled) -> list[Any]:
    return importance_batches(data, pad_id=0, batch_size=16)


@pytest.fixture(scope="module")
def data_files(sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory, jsonl: Any) -> list[Path]:
    """A file of ordinary groups (validation split) and an OUTFOX-like file with a held-out test half."""
    root = tmp_path_factory.mktemp("prune_data")
    texts = sample_texts[:240]
    plain = [{"text": t, "label": i % 2, "group": f"doc{i // 2}"} for i, t in enumerate(texts[:180])]
    essays = [
        {"text": t, "label": i % 2, "group": f"outfox:{'test' if i % 3 == 0 else 'valid'}:{i // 2}"}
        for i, t in enumerate(texts[180:])
    ]
    return [jsonl(root / "plain.jsonl", plain), jsonl(root / "essays.jsonl", essays)]


@pytest.fixture(scope="module")
def pruned_dir(tiny_checkpoint: Path, data_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pruned") / "ck"
    code, stdout, stderr = run(
        "--checkpoint", tiny_checkpoint, "--out", out, "--data", *data_files, "--heads", 1, "--ffn", 32,
        "--layers", 1, "--importance-samples", 32, "--recover-samples", 48, "--recover-epochs", 1, "--distill",
        "--lr", "1e-3", "--batch-size", 8, "--max-length", MAX_LENGTH, "--threads", 1,
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}")
    return out


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs", [{"heads": 0}, {"layers": 0}, {"ffn": -1}, {"heads": True}, {"ffn": 1.5}, {"layers": "4"}]
)
def test_bad_config_values_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PruneConfig(**kwargs)


def test_presets_and_specs() -> None:
    assert PruneConfig.light().to_tuple() == (8, 1024, 6)
    assert PruneConfig.medium().to_tuple() == (8, 768, 4)
    assert set(PRESETS) == {"light", "medium", "small"}
    assert PruneConfig.parse(" medium ") == PruneConfig.medium()
    assert PruneConfig.parse("8, 512, 3") == PruneConfig(8, 512, 3)
    assert PruneConfig.parse("-,512,all") == PruneConfig(None, 512, None)
    assert PruneConfig(8, None, 4).label == "h8-fall-l4"
    for bad in ("huge", "8,512", "8,x,3", "8,0,3"):
        with pytest.raises(ValueError):
            PruneConfig.parse(bad)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [(PruneConfig(heads=3), "3 attention heads"), (PruneConfig(ffn=65), "65 FFN"), (PruneConfig(layers=3), "3 layers")],
)
def test_more_than_the_model_has_raises(
    cfg: PruneConfig, message: str, tiny_checkpoint: Path, batches: list[Any]
) -> None:
    model = load_classifier(tiny_checkpoint)
    before = parameter_count(model)
    with pytest.raises(PruneError, match=message):
        prune_model(model, cfg, batches)
    assert parameter_count(model) == before


def test_bert_is_refused(tiny_bert_model: Any) -> None:
    with pytest.raises(PruneError, match="DistilBERT"):
        PruneConfig(heads=1).check(tiny_bert_model)


# ------------------------------------------------------------------------------------------------ surgery


def test_pruned_shapes_are_what_was_asked(tiny_checkpoint: Path, batches: list[Any]) -> None:
    model = load_classifier(tiny_checkpoint)
    record = prune_model(model, PruneConfig(heads=1, ffn=16, layers=1), batches)
    (layer,) = transformer_layers(model)
    att, ffn = layer.attention, layer.ffn
    assert (att.n_heads, att.q_lin.weight.shape, att.k_lin.weight.shape, att.v_lin.weight.shape) == (
        1, (16, 32), (16, 32), (16, 32),
    )  # fmt: skip
    assert att.out_lin.weight.shape == (32, 16)
    assert (ffn.lin1.weight.shape, ffn.lin2.weight.shape) == ((16, 32), (32, 16))
    assert (model.config.n_layers, model.config.hidden_dim) == (1, 16)
    assert {k: len(v) for k, v in model.config.pruned_heads.items()} == {0: 1}
    vocab = model.config.vocab_size
    embeddings = vocab * 32 + 512 * 32 + 2 * 32
    attention = 3 * (32 * 16 + 16) + (16 * 32 + 32) + 2 * 32
    ffn_params = (32 * 16 + 16) + (16 * 32 + 32) + 2 * 32
    head = (32 * 32 + 32) + (32 * 2 + 2)
    assert parameter_count(model) == embeddings + attention + ffn_params + head
    assert record["after"]["parameters"] == parameter_count(model) < record["before"]["parameters"]
    assert len(record["kept_layers"]) == 1 and len(record["kept_ffn"][0]) == 16


def test_save_and_reload_give_identical_logits(
    tiny_checkpoint: Path, batches: list[Any], data: Labelled, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    model = load_classifier(tiny_checkpoint)
    prune_model(model, PruneConfig(heads=1, ffn=24, layers=1), batches)
    save_checkpoint(model, tiny_checkpoint / "tokenizer.json", tmp_path)
    expected = logits_of(model, data)
    for attention in ("sdpa", "eager"):
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation=attention)
        np.testing.assert_allclose(logits_of(reloaded, data), expected, atol=1e-6, rtol=0)
    assert (tmp_path / "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("cfg", [PruneConfig(), PruneConfig(heads=2, ffn=64, layers=2)])
def test_pruning_nothing_gives_identical_logits(
    cfg: PruneConfig, tiny_checkpoint: Path, batches: list[Any], data: Labelled
) -> None:
    model = load_classifier(tiny_checkpoint)
    expected = logits_of(load_classifier(tiny_checkpoint), data)
    record = prune_model(model, cfg, batches)
    assert record["before"] == record["after"]
    np.testing.assert_allclose(logits_of(model, data), expected, atol=1e-6, rtol=0)


def test_layer_surgery_renumbers_pruned_heads(tiny_checkpoint: Path) -> None:
    model = load_classifier(tiny_checkpoint)
    model.prune_heads({1: [0]})
    remove_layers(model, [1])
    assert model.config.pruned_heads == {0: [0]} and model.config.n_layers == 1
    with pytest.raises(PruneError):
        remove_layers(model, [])


def test_flops_match_pytorch_flop_counter(tiny_checkpoint: Path, batches: list[Any]) -> None:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification

    model = load_classifier(tiny_checkpoint)
    prune_model(model, PruneConfig(heads=1, ffn=24, layers=1), batches)
    model = AutoModelForSequenceClassification.from_config(model.config, attn_implementation="eager").eval()
    ids = torch.randint(5, 100, (3, 20))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    dim = model.config.dim
    per_text_head = 2 * dim * dim + 2 * dim * 2  # pre-classifier and classifier, once per text
    assert counter.get_total_flops() == 3 * (20 * flops_per_token(model, 20)["total"] + per_text_head)


# ------------------------------------------------------------------------------------------------ importance


def test_a_head_with_zeroed_output_weights_ranks_lowest(tiny_checkpoint: Path, batches: list[Any]) -> None:
    model = load_classifier(tiny_checkpoint)
    att = transformer_layers(model)[1].attention
    with torch.no_grad():
        att.out_lin.weight[:, : att.attention_head_size] = 0  # head 0 of layer 1 contributes nothing
    model.train()
    imp = gradient_importance(model, batches)
    scores = torch.stack(imp.heads)
    others = torch.cat([scores[0], scores[1, 1:]])
    assert scores[1, 0] == 0 and bool((others > 0).all())
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_zeroed_ffn_neurons_rank_lowest_and_are_pruned(tiny_checkpoint: Path, batches: list[Any]) -> None:
    model = load_classifier(tiny_checkpoint)
    with torch.no_grad():
        transformer_layers(model)[0].ffn.lin2.weight[:, [3, 7]] = 0
    assert gradient_importance(model, batches).ffn[0][[3, 7]].abs().sum() == 0
    record = prune_model(model, PruneConfig(ffn=62), batches)
    assert not {3, 7} & set(record["kept_ffn"][0]) and len(record["kept_ffn"][1]) == 62


def test_layer_choice_matches_the_losses_of_real_removals(tiny_checkpoint: Path, batches: list[Any]) -> None:
    model = load_classifier(tiny_checkpoint)
    kept, record = choose_layers(model, batches, keep=1)
    losses = {}
    for drop in (0, 1):
        reference = load_classifier(tiny_checkpoint)
        remove_layers(reference, [1 - drop])
        losses[drop] = mean_loss(reference, batches)
    assert kept == [1 - min(losses, key=lambda k: losses[k])]
    assert record["steps"][0]["candidates"] == pytest.approx(losses, abs=1e-6)
    assert len(transformer_layers(model)) == 2, "choosing must not change the model"


# ------------------------------------------------------------------------------------------------ recovery


def test_recovery_with_distillation_lowers_the_distillation_loss(
    tiny_checkpoint: Path, batches: list[Any], data: Labelled
) -> None:
    teacher = load_classifier(tiny_checkpoint)
    student = load_classifier(tiny_checkpoint)
    prune_model(student, PruneConfig(heads=1, ffn=16, layers=1), batches)
    teacher_logits = logits_of(teacher, data)
    before = soft_target_loss(logits_of(student, data), teacher_logits, 2.0)
    cfg = RecoveryConfig(epochs=3, learning_rate=3e-3, batch_size=8, distill=True, alpha=0.9, temperature=2.0)
    record = recover(student, data, data, cfg, pad_id=0, teacher=teacher, teacher_val_logits=teacher_logits)
    history = [row["soft_target_loss"] for row in record["history"]]
    assert history[0] == pytest.approx(before)
    assert history[-1] < 0.5 * before, history
    assert record["steps"] == 18 and record["config"]["distill"] is True
    after = soft_target_loss(logits_of(student, data), teacher_logits, 2.0)
    assert after == pytest.approx(record["best"]["soft_target_loss"], rel=1e-4)


def test_recovery_refuses_what_it_cannot_do(tiny_checkpoint: Path, data: Labelled) -> None:
    model = load_classifier(tiny_checkpoint)
    with pytest.raises(ValueError, match="teacher"):
        recover(model, data, data, RecoveryConfig(distill=True), pad_id=0)
    one_class = Labelled(data.ids, np.zeros_like(data.labels))
    with pytest.raises(ValueError, match="one class"):
        recover(model, data, one_class, RecoveryConfig(), pad_id=0)
    with pytest.raises(ValueError, match="alpha"):
        RecoveryConfig(alpha=1.5)


# ------------------------------------------------------------------------------------------------ command


def test_command_writes_a_pruned_checkpoint(pruned_dir: Path, tiny_checkpoint: Path) -> None:
    names = {p.name for p in pruned_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "pruning.json", "training.json"} <= names
    assert (pruned_dir / "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()
    record = json.loads((pruned_dir / "pruning.json").read_text())
    training = json.loads((pruned_dir / "training.json").read_text())
    assert record["prune"]["config"] == {"heads": 1, "ffn": 32, "layers": 1}
    assert record["parameters"]["after"] < record["parameters"]["before"]
    assert record["flops_per_token"]["after"]["total"] < record["flops_per_token"]["before"]["total"]
    assert record["recovery"]["config"]["distill"] is True and record["recovery"]["steps"] == 6
    assert record["reload_max_abs_logit_diff"] <= 1e-5
    assert {d["file"] for d in record["data"]} == {d["file"] for d in training["data"]}
    assert 0 <= training["threshold"] == record["threshold"] <= 1
    assert training["config"]["max_length"] == MAX_LENGTH
    assert training["pruning"]["parameters_after"] == record["parameters"]["after"]
    assert training["counts"]["train"] == 48
    model = load_classifier(pruned_dir)
    assert (len(transformer_layers(model)), model.config.hidden_dim) == (1, 32)
    assert transformer_layers(model)[0].attention.n_heads == 1


def test_training_on_from_a_pruned_checkpoint_keeps_its_shape_and_records(
    pruned_dir: Path, data_files: list[Path], tmp_path: Path
) -> None:
    from export.train.config import config_from_values
    from export.train.loop import train

    out = train(
        config_from_values(
            {"base": str(pruned_dir), "data": [str(p) for p in data_files], "out": str(tmp_path / "tuned"),
             "epochs": 1.0, "max_length": MAX_LENGTH, "batch_size": 8, "threads": 1}
        )
    )  # fmt: skip
    model = load_classifier(out)
    assert (len(transformer_layers(model)), model.config.hidden_dim) == (1, 32)
    pruned = json.loads((pruned_dir / "training.json").read_text())
    tuned = json.loads((out / "training.json").read_text())
    assert tuned["pruning"] == pruned["pruning"]  # the bundle's variant.pruning still says what was cut
    assert tuned["source"] == {"checkpoint": str(pruned_dir), "training": pruned}


def test_pruned_checkpoint_exports_and_matches_pytorch_in_detector(
    pruned_dir: Path, eval_file: Path, cli: Any, sample_texts: list[str], tmp_path: Path
) -> None:
    code, _, stderr = cli(
        "--checkpoint", pruned_dir, "--out", tmp_path / "b", "--variant", "fp32", "--eval", f"heldout={eval_file}",
        "--bench-texts", 0,
    )  # fmt: skip
    assert code == 0, stderr
    detector = Detector.from_pretrained(tmp_path / "b" / "fp32", provider="cpu", threads=1, truncation=True)
    meta = json.loads((tmp_path / "b" / "fp32" / "aidetect.json").read_text())
    assert meta["variant"]["pruning"]["parameters_after"] == parameter_count(load_classifier(pruned_dir))
    assert meta["max_length"] == MAX_LENGTH
    fusions = next(r for r in meta["recipe"] if r["stage"] == "optimize")["fusions"]
    assert fusions.get("Attention") == 1, fusions  # the head-pruned layer still fuses (1 of 2 heads kept)
    texts = sample_texts[:12]
    tok = load_tokenizer(pruned_dir / "tokenizer.json", MAX_LENGTH)
    logits = predict_logits(load_classifier(pruned_dir), [e.ids for e in tok.encode_batch(texts)], pad_id=0)
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(detector.predict_proba(texts), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--heads", "3"], "cannot keep 3 attention heads"),
        (["--layers", "0"], "layers must be a positive integer"),
        (["--preset", "medium"], "cannot keep 8 attention heads"),
        (["--sweep", "1,32,1", "--heads", "1"], "--sweep names its own targets"),
        (["--sweep", "1,32,1;h"], "preset"),
        (["--sweep", "1,32,1;3,32,1"], "cannot keep 3 attention heads"),
    ],
)
def test_command_refuses_bad_requests(
    extra: list[str], message: str, tiny_checkpoint: Path, data_files: list[Path], tmp_path: Path
) -> None:
    code, _, stderr = run("--checkpoint", tiny_checkpoint, "--out", tmp_path / "x", "--data", *data_files, *extra)
    assert code == ExitCode.INPUT and message in stderr, stderr
    assert not (tmp_path / "x").exists()


def test_command_keeps_a_non_empty_out_dir(tiny_checkpoint: Path, data_files: list[Path], tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    code, _, stderr = run("--checkpoint", tiny_checkpoint, "--out", tmp_path, "--data", *data_files, "--heads", "1")
    assert code == ExitCode.INPUT and "--overwrite" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_sweep_writes_the_table(tiny_checkpoint: Path, data_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    code, stdout, stderr = run(
        "--checkpoint", tiny_checkpoint, "--out", out, "--data", *data_files, "--sweep", "1,32,1;-,48,-",
        "--importance-samples", 16, "--recover-samples", 16, "--max-length", MAX_LENGTH, "--threads", 1,
        "--held-out-samples", 24, "--bench-texts", 8, "--bench-threads", 1,
    )  # fmt: skip
    assert code == 0, stderr
    result = json.loads((out / "sweep.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["unpruned", "h1-f32-l1", "hall-f48-lall"]
    assert set(result["sets"]) == {"plain/validation", "essays/test-clean"}
    assert rows["unpruned"]["speedup"] == 1.0
    assert rows["h1-f32-l1"]["parameters"] < rows["hall-f48-lall"]["parameters"] < rows["unpruned"]["parameters"]
    for name, row in rows.items():
        assert set(row["held_out"]) == set(result["sets"]) and row["texts_per_s"] > 0
        assert 0 <= row["held_out"]["essays/test-clean"]["roc_auc"] <= 1
        assert (out / name / "int8" / "model.onnx").stat().st_size == row["int8_bytes"]
        Detector.from_pretrained(out / name / "int8", provider="cpu", threads=1).predict_proba(["a short text"])
    table = (out / "sweep.md").read_text().splitlines()
    assert table[0].startswith("| model | heads | FFN | layers | params (M)") and "speed vs unpruned" in table[0]
    assert len(table) == 2 + 3 and stdout.strip() == "\n".join(table)
