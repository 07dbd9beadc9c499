"""``python -m export.to_onnx`` end to end on the tiny checkpoints: bundles, parity, gates, errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from aidetect_infer import Detector, load_bundle
from export.bundle.card import render_card
from export.errors import CheckpointError, ExitCode, GateFailedError, ParityError
from export.evaluate.sets import load_eval_set
from export.onnx.export import ExportConfig, export_onnx, load_checkpoint, parity_set
from export.onnx.parity import ParitySet
from export.onnx.quantize import QuantizeConfig
from export.onnx.recipe import INT8_LADDER, check_output, resolve_threshold
from export.train.record import TrainingRecord

VARIANTS = ("fp32", "int8", "fp16")
GATE = {"max_auc_drop": 0.05, "min_agreement": 0.9}  # as in conftest.built


def torch_scores(model: Any, tokenizer_path: Path, texts: list[str], max_length: int) -> np.ndarray:
    """P(AI) from PyTorch with the tokenizer's own truncation (texts that fit one window)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    out = []
    for text in texts:
        ids = torch.tensor([tok.encode(text).ids])
        assert ids.shape[1] <= max_length, "the comparison needs texts that fit one window"
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        out.append(torch.softmax(logits.double(), dim=-1)[0, 1].item())
    return np.asarray(out)


def short_texts(texts: list[str], n: int = 12) -> list[str]:
    """Texts that fit one window of 32 tokens or more (so windowing plays no part)."""
    return [" ".join(t.split()[:12]) for t in texts[:n]]


def test_command_writes_every_variant(built: dict[str, Any]) -> None:
    assert built["code"] == 0, built["stderr"]
    out = built["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(VARIANTS)
    for variant in VARIANTS:
        bundle = load_bundle(out / variant)
        assert bundle.metadata.precision == variant
        files = {p.name for p in (out / variant).iterdir()}
        assert files == {"model.onnx", "tokenizer.json", "aidetect.json", "README.md"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary directories left behind"


def test_summary_table_lists_variants_and_pytorch(built: dict[str, Any]) -> None:
    lines = built["stdout"].splitlines()
    assert lines[0].split()[:3] == ["variant", "MB", "parity"]
    assert "AUC heldout" in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == [*VARIANTS, "pytorch"]


def test_fp32_bundle_matches_pytorch(
    built: dict[str, Any], tiny_checkpoint: Path, tiny_model: Any, sample_texts: list[str]
) -> None:
    texts = short_texts(sample_texts)
    detector = Detector.from_pretrained(built["out"], variant="fp32", provider="cpu", threads=1)
    expected = torch_scores(tiny_model, tiny_checkpoint / "tokenizer.json", texts, 128)
    assert np.abs(detector.predict_proba(texts) - expected).max() < 1e-5


def test_fp16_and_int8_stay_close_to_fp32(built: dict[str, Any], sample_texts: list[str]) -> None:
    texts = sample_texts[:40]
    scores = {
        v: Detector.from_pretrained(built["out"], variant=v, provider="cpu", threads=1).predict_proba(texts)
        for v in VARIANTS
    }
    assert np.abs(scores["fp16"] - scores["fp32"]).max() < 1e-2
    assert np.abs(scores["int8"] - scores["fp32"]).max() < 0.1
    assert not np.array_equal(scores["int8"], scores["fp32"])  # it really is another model


# Without VNNI, full-range int8 saturates and the ladder keeps its 7-bit-weight rung instead.
_CPUINFO = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
_HAS_VNNI = "avx512_vnni" in _CPUINFO or "avx_vnni" in _CPUINFO


def test_metadata_records_what_was_done(built: dict[str, Any], tiny_model: Any) -> None:
    for variant in VARIANTS:
        meta = json.loads((built["out"] / variant / "aidetect.json").read_text())
        assert meta["architecture"]["parameters"] == sum(p.numel() for p in tiny_model.parameters())
        assert meta["architecture"]["model_type"] == "distilbert"
        assert meta["max_length"] == 128 and meta["window_stride"] == 96
        assert meta["threshold"] == pytest.approx(built["threshold"])
        stages = [step["stage"] for step in meta["recipe"]]
        assert stages[:3] == ["export", "optimize", "threshold"]
        assert meta["recipe"][0]["parity_max_abs_logit_diff"] < 1e-4
        assert meta["recipe"][2]["rule"] == "given on the command line (--threshold)"
        metrics = meta["metrics"]["heldout"]
        assert metrics["n"] == 96 and 0.0 <= metrics["roc_auc"] <= 1.0
        assert {"accuracy", "f1", "tpr_at_1pct_fpr"} <= set(metrics)
        assert set(meta["producer"]) >= {"onnxruntime", "torch"}
    int8 = json.loads((built["out"] / "int8" / "aidetect.json").read_text())
    assert int8["variant"]["quantization"] == {
        "mode": "dynamic", "weight_type": "QInt8", "per_channel": True, "reduce_range": not _HAS_VNNI,
        "op_types": ["MatMul", "Attention"],
    }  # fmt: skip
    # the first, fastest setting passes with VNNI; without it the 7-bit-weight rung, after the full-range one
    assert len(int8["recipe"][-1].get("after_failed", [])) == (0 if _HAS_VNNI else 1)
    for variant in ("int8", "fp16"):
        gates = json.loads((built["out"] / variant / "aidetect.json").read_text())["gates"]
        figures = gates["sets"]["heldout"]
        assert gates["passed"] and gates["limits"] == {**GATE, "max_prob_diff": None, "max_batch_diff": 1e-5}
        # a text alone and in a batch: dynamic int8 runs one window per call, fp16 rows are independent
        assert gates["batch_invariance"]["texts"] > 1 and gates["batch_invariance"]["max_abs_diff"] <= 1e-5
        assert figures["agreement"] >= GATE["min_agreement"] and figures["auc_drop"] <= GATE["max_auc_drop"]
        assert 0 < figures["max_prob_diff"] < 0.05
        assert figures["auc_reference"] > 0.75  # labels are the model's own first-window decisions


def test_graphs_have_dynamic_axes_fusions_and_int8_ops(built: dict[str, Any]) -> None:
    graphs = {v: onnx.load(str(built["out"] / v / "model.onnx")) for v in VARIANTS}
    for graph in graphs.values():
        assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
        for tensor in graph.graph.input:
            assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
            dims = tensor.type.tensor_type.shape.dim
            assert dims[0].dim_param and dims[1].dim_param
        assert [o.name for o in graph.graph.output] == ["logits"]
        assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    meta = json.loads((built["out"] / "fp32" / "aidetect.json").read_text())
    fusions = meta["recipe"][1]["fusions"]
    ops = [n.op_type for n in graphs["fp32"].graph.node]
    assert fusions.get("Attention") == ops.count("Attention") == 2
    assert {n.op_type for n in graphs["int8"].graph.node} & {"DynamicQuantizeLinear", "QAttention", "MatMulInteger"}
    # the CPU variants carry LayerNorm as plain operators; the fp16 (CUDA) variant keeps the fused kernel
    for variant in ("fp32", "int8"):
        assert "SkipLayerNormalization" not in {n.op_type for n in graphs[variant].graph.node}
        recipe = json.loads((built["out"] / variant / "aidetect.json").read_text())["recipe"]
        assert [r for r in recipe if r["stage"] == "layernorm"][0]["nodes"] == 4
    assert [n.op_type for n in graphs["fp16"].graph.node].count("SkipLayerNormalization") == 4
    fp16_weights = [t for t in graphs["fp16"].graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_weights


def test_card_reports_metrics_gates_and_limits(built: dict[str, Any]) -> None:
    card = (built["out"] / "int8" / "README.md").read_text()
    for heading in ("## Metrics on held-out data", "## Accuracy gate against fp32", "## Limits", "## Training data"):
        assert heading in card
    meta = json.loads((built["out"] / "int8" / "aidetect.json").read_text())
    assert f"{meta['metrics']['heldout']['roc_auc']:.4f}" in card


@pytest.mark.parametrize("gate", [("--gate-agreement", "1.01"), ("--gate-auc-drop", "-1")])
def test_impossible_gate_fails_and_writes_nothing(
    gate: tuple[str, str], tiny_checkpoint: Path, eval_file: Path, tmp_path: Path, cli: Any
) -> None:
    out = tmp_path / "bundles"
    code, _, err = cli(
        "--checkpoint", tiny_checkpoint, "--out", out, "--variant", "fp32", "int8", "--eval", eval_file,
        "--max-length", 64, "--bench-texts", 0, "--int8", "avx512_vnni", *gate,
    )  # fmt: skip
    assert code == ExitCode.CHECK_FAILED
    assert "int8 fails the accuracy gate against fp32" in err
    assert list(tmp_path.iterdir()) == []


def test_int8_falls_back_to_the_next_setting(tiny_checkpoint: Path, eval_file: Path, tmp_path: Path) -> None:
    from export.onnx.build import build_bundles
    from export.onnx.gates import GateConfig
    from export.onnx.recipe import BuildConfig

    # The second setting quantizes nothing (the graph has no Conv), so it matches fp32 and must be the one kept.
    ladder = (QuantizeConfig.avx512_vnni(), QuantizeConfig(op_types=("Conv",)))
    cfg = BuildConfig(
        checkpoint=tiny_checkpoint, out=tmp_path / "bundles", variants=("int8",), quantize=ladder,
        gate=GateConfig(max_prob_diff=1e-5, min_agreement=0.5), eval_specs=(str(eval_file),),
        export=ExportConfig(max_length=64), bench_texts=0,
    )  # fmt: skip
    (report,) = build_bundles(cfg)
    meta = json.loads((report.path / "aidetect.json").read_text())
    assert meta["variant"]["quantization"]["op_types"] == ["Conv"]
    (failed,) = meta["recipe"][-1]["after_failed"]
    assert "max probability difference" in failed and "'Attention'" in failed
    assert meta["gates"]["sets"]["eval"]["max_prob_diff"] <= 1e-5
    with pytest.raises(GateFailedError, match="no int8 setting passed"):
        build_bundles(dataclasses.replace(cfg, quantize=ladder[:1] * 2, out=tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_bert_checkpoint_exports_with_token_type_ids(
    tiny_bert_checkpoint: Path,
    tiny_bert_model: Any,
    eval_file: Path,
    sample_texts: list[str],
    tmp_path: Path,
    cli: Any,
) -> None:
    out = tmp_path / "bert"
    code, _, err = cli(
        "--checkpoint", tiny_bert_checkpoint, "--out", out, "--variant", "fp32", "int8", "--eval", eval_file,
        "--max-length", 64, "--bench-texts", 0, "--gate-auc-drop", GATE["max_auc_drop"],
        "--gate-agreement", GATE["min_agreement"],
    )  # fmt: skip
    assert code == 0, err
    graph = onnx.load(str(out / "fp32" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    texts = short_texts(sample_texts)
    got = Detector.from_pretrained(out, variant="fp32", provider="cpu", threads=1).predict_proba(texts)
    expected = torch_scores(tiny_bert_model, tiny_bert_checkpoint / "tokenizer.json", texts, 64)
    assert np.abs(got - expected).max() < 1e-5
    assert Detector.from_pretrained(out, provider="cpu").predict_proba(texts).shape == (len(texts),)


def test_missing_checkpoint(tmp_path: Path, eval_file: Path, cli: Any) -> None:
    code, _, err = cli("--checkpoint", tmp_path / "nope", "--out", tmp_path / "out", "--eval", eval_file)
    assert code == ExitCode.INPUT and "checkpoint directory does not exist" in err
    assert not (tmp_path / "out").exists()


def test_three_label_checkpoint_is_refused(tmp_path: Path, eval_file: Path, tiny_checkpoint: Path, cli: Any) -> None:
    ckpt = tmp_path / "three"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b", "2": "c"}
    config["label2id"] = {"a": 0, "b": 1, "c": 2}
    (ckpt / "config.json").write_text(json.dumps(config))
    code, _, err = cli("--checkpoint", ckpt, "--out", tmp_path / "out", "--eval", eval_file)
    assert code == ExitCode.INPUT and "has 3 labels" in err
    with pytest.raises(CheckpointError, match="exactly 2"):
        load_checkpoint(ckpt)


def test_non_empty_out_dir_needs_overwrite(tmp_path: Path, tiny_checkpoint: Path, cli: Any) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli("--checkpoint", tiny_checkpoint, "--out", out, "--variant", "fp32", "--max-length", 32)
    assert code == ExitCode.INPUT and "not empty" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    code, _, err = cli(
        "--checkpoint", tiny_checkpoint, "--out", out, "--variant", "fp32", "--max-length", 32, "--overwrite"
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["fp32"]


def test_output_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    from export.errors import OutputError

    with pytest.raises(OutputError, match="not a directory"):
        check_output(tmp_path / "file" / "out", overwrite=False)
    with pytest.raises(OutputError, match="not a directory"):
        check_output(tmp_path / "file", overwrite=True)


def test_reduced_precision_needs_eval_data(tmp_path: Path, tiny_checkpoint: Path, cli: Any) -> None:
    code, _, err = cli("--checkpoint", tiny_checkpoint, "--out", tmp_path / "o", "--variant", "int8")
    assert code == ExitCode.INPUT and "need --eval" in err


def test_calibration_on_the_outfox_test_half_is_refused(
    tmp_path: Path, tiny_checkpoint: Path, eval_file: Path, cli: Any, jsonl: Any
) -> None:
    calib = jsonl(tmp_path / "c.jsonl", [{"text": "some essay text", "label": 1, "group": "outfox:test:7"}])
    code, _, err = cli(
        "--checkpoint", tiny_checkpoint, "--out", tmp_path / "o", "--variant", "int8", "--int8", "static_qdq",
        "--calibration", calib, "--eval", eval_file,
    )  # fmt: skip
    assert code == ExitCode.INPUT and "held-out OUTFOX test half" in err
    assert not (tmp_path / "o").exists()


def test_calibration_leaves_out_validation_groups(tiny_checkpoint: Path, tmp_path: Path, jsonl: Any) -> None:
    from export.data.records import in_validation
    from export.onnx.build import calibration_feeds
    from export.onnx.recipe import BuildConfig

    rows = [{"text": f"training text number {i}", "label": i % 2, "group": f"g{i}"} for i in range(300)]
    path = jsonl(tmp_path / "calib.jsonl", rows)
    cfg = BuildConfig(checkpoint=tiny_checkpoint, out=tmp_path / "o", calibration=path,
                      quantize=(QuantizeConfig.static_qdq(size=500),), export=ExportConfig(max_length=32))  # fmt: skip
    texts, feeds = calibration_feeds(cfg, load_checkpoint(tiny_checkpoint))
    expected = [r["text"] for r in rows if not in_validation(r["group"], 0.1, "aidetect")]
    assert sorted(texts) == sorted(expected) and 200 < len(texts) < 300
    assert len(feeds) == len(texts) and all(f["input_ids"].shape[0] == 1 for f in feeds)
    wide = dataclasses.replace(cfg, quantize=(QuantizeConfig.static_qdq("percentile", 8),))
    assert {f["input_ids"].shape for f in calibration_feeds(wide, load_checkpoint(tiny_checkpoint))[1]} == {(1, 32)}


def test_threshold_rule() -> None:
    assert resolve_threshold(
        TrainingRecord.from_dict({"threshold": 0.37, "threshold_rule": "equal error rate"}), 0.9
    ) == (
        0.37,
        "equal error rate (training.json)",
    )
    assert resolve_threshold(None, 0.8) == (0.8, "given on the command line (--threshold)")
    assert resolve_threshold(TrainingRecord.from_dict({"seed": 1}), None)[0] == 0.5


def test_quantize_embeddings_applies_to_every_int8_setting(tmp_path: Path) -> None:
    from export.onnx.__main__ import build_parser, config_from_args

    argv = ["--checkpoint", str(tmp_path), "--out", str(tmp_path / "out"), "--max-length", "64"]
    plain = config_from_args(build_parser().parse_args(argv))
    tables = config_from_args(build_parser().parse_args([*argv, "--quantize-embeddings"]))
    assert len(tables.quantize) == len(plain.quantize) == len(INT8_LADDER)
    assert not any(q.embeddings for q in plain.quantize) and all(q.embeddings for q in tables.quantize)
    assert [dataclasses.replace(q, embeddings=False) for q in tables.quantize] == list(plain.quantize)


def test_training_threshold_reaches_the_bundle(tiny_checkpoint: Path, tmp_path: Path, cli: Any) -> None:
    ckpt = tmp_path / "trained"
    shutil.copytree(tiny_checkpoint, ckpt)
    record = {"threshold": 0.42, "threshold_rule": "equal error rate on validation", "seed": 7,
              "config": {"max_length": 48}, "data": [{"path": "d.jsonl", "sha256": "ab" * 32}]}  # fmt: skip
    (ckpt / "training.json").write_text(json.dumps(record))
    code, _, err = cli("--checkpoint", ckpt, "--out", tmp_path / "o", "--variant", "fp32", "--bench-texts", 0)
    assert code == 0, err
    meta = json.loads((tmp_path / "o" / "fp32" / "aidetect.json").read_text())
    assert meta["threshold"] == 0.42 and meta["max_length"] == 48
    assert meta["training"]["seed"] == 7
    assert "equal error rate on validation" in (tmp_path / "o" / "fp32" / "README.md").read_text()


def test_parity_failure_raises_and_writes_nothing(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    good = parity_set(ckpt, sample_texts, 64)
    bad = ParitySet(feeds=good.feeds, logits=tuple(x + 1e-3 for x in good.logits))
    target = tmp_path / "m.onnx"
    with pytest.raises(ParityError, match="exceeds 0.0001"):
        export_onnx(ckpt, target, ExportConfig(max_length=64), parity=bad)
    assert list(tmp_path.iterdir()) == []
    assert export_onnx(ckpt, target, ExportConfig(max_length=64), parity=good) == target


def test_parity_set_spans_lengths(tiny_checkpoint: Path, tiny_bert_checkpoint: Path) -> None:
    long_texts = [" ".join(["word"] * 300) + f" {i}" for i in range(8)]
    p = parity_set(load_checkpoint(tiny_checkpoint), long_texts, 128)
    assert p.lengths[0] == 16 and p.lengths[-1] == 128 and p.lengths == sorted(p.lengths)
    assert [f["input_ids"].shape[0] for f in p.feeds] == [8, 1, 1]
    assert "token_type_ids" not in p.feeds[0]
    assert "token_type_ids" in parity_set(load_checkpoint(tiny_bert_checkpoint), long_texts, 32).feeds[0]
    with pytest.raises(ValueError, match="non-empty"):
        parity_set(load_checkpoint(tiny_checkpoint), ["  "], 32)


def test_eval_subsets(tmp_path: Path, jsonl: Any) -> None:
    from export.data.records import in_validation

    rows = [{"text": f"text {i}", "label": i % 2, "group": f"g{i}"} for i in range(200)]
    rows += [
        {"text": f"essay {i}", "label": i % 2, "group": f"outfox:test:{i}", "attack": "dipper" if i % 3 else "none"}
        for i in range(30)
    ]
    path = jsonl(tmp_path / "d.jsonl", rows)
    training = {"config": {"val_fraction": 0.25, "split_salt": "s"}}
    val = load_eval_set(f"{path}@validation", training=TrainingRecord.from_dict(training))
    assert val.name == "d_validation"
    assert list(val.texts) == [r["text"] for r in rows[:200] if in_validation(r["group"], 0.25, "s")]
    test = load_eval_set(f"essays={path}@test")
    assert test.name == "essays" and len(test.texts) == 30
    assert len(load_eval_set(f"{path}@test-clean").texts) == 10
    limited = load_eval_set(str(path), limit=20)
    assert len(limited.texts) == 20 and set(limited.texts) <= {r["text"] for r in rows}
    with pytest.raises(ValueError, match="unknown subset"):
        load_eval_set(f"{path}@train")


def test_card_without_training_or_gates() -> None:
    meta = {"name": "x-fp32", "labels": ["human", "ai"], "max_length": 64, "window_stride": 48, "threshold": 0.5,
            "variant": {"precision": "fp32", "optimization": "O2"}, "architecture": {"model_type": "bert"},
            "gates": {"parity_max_abs_logit_diff": 1e-6}, "metrics": {}}  # fmt: skip
    card = render_card(meta, threshold_rule="default")
    assert "training data is not recorded" in card and "## Parity" in card and "## Accuracy gate" not in card


def test_card_states_the_calibrated_threshold_rule_once_the_bundle_records_a_decision() -> None:
    meta = {"name": "x-int8", "labels": ["human", "ai"], "max_length": 64, "window_stride": 48, "threshold": 0.9514,
            "variant": {"precision": "int8"}, "architecture": {"model_type": "bert"},
            "training": {"seed": 1}}  # fmt: skip
    exported = render_card(meta, threshold_rule="equal error rate")
    assert "Decision threshold: 0.9514 (equal error rate)." in exported
    calibrated = render_card({**meta, "decision": {"false_positive_rate": 0.02}}, threshold_rule="equal error rate")
    assert "Decision threshold: 0.9514 (at most 2.0% of the validation human texts at or above it;" in calibrated
    assert "equal error rate" not in calibrated


def test_card_of_a_pruned_model_states_kept_heads_and_every_training_run() -> None:
    pruning = {"ffn": 768}
    trained = {"counts": {"train": 90}, "seed": 1}
    recovered = {"counts": {"train": 30}, "pruning": pruning, "seed": 2, "source": {"training": trained}}
    tuned = {"counts": {"train": 20}, "pruning": pruning, "seed": 3, "config": {"int8_aware": True},
             "source": {"training": recovered}}  # fmt: skip
    meta = {"name": "x-int8", "labels": ["human", "ai"], "max_length": 64, "window_stride": 48, "threshold": 0.5,
            "variant": {"precision": "int8", "optimization": "O2"},
            "architecture": {"model_type": "distilbert", "heads": 12, "pruned_heads": {"0": [1, 2], "1": [0, 3]}},
            "training": recovered}  # fmt: skip
    card = render_card(meta, threshold_rule="default")
    assert "| heads | 10 of 12 per layer (structurally pruned) |" in card
    assert "- fine-tuning (seed 1): train 90.\n- recovery after pruning (seed 2): train 30.\n" in card
    card = render_card({**meta, "training": tuned}, threshold_rule="default")
    assert (
        "- recovery after pruning (seed 2): train 30.\n- tuning after pruning, int8-aware (seed 3): train 20." in card
    )
    single = render_card({**meta, "training": {"counts": {"train": 5}}}, threshold_rule="default")
    assert "Texts: train 5." in single and "Training stages" not in single


def test_onnx_eval_command_reproduces_the_recorded_metrics(
    built: dict[str, Any], separable_eval: tuple[Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    from export.onnx_eval import main

    assert main(["--bundle", str(built["out"] / "int8"), "--eval", f"heldout={separable_eval[0]}"]) == 0
    printed = json.loads(capsys.readouterr().out)["heldout"]
    recorded = json.loads((built["out"] / "int8" / "aidetect.json").read_text())["metrics"]["heldout"]
    assert printed["roc_auc"] == pytest.approx(recorded["roc_auc"], abs=1e-9)
    assert printed["accuracy"] == pytest.approx(recorded["accuracy"])
    assert main(["--bundle", str(built["out"]), "--eval", "missing.jsonl"]) == ExitCode.INPUT
