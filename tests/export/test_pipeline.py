"""One command from data to a shipped bundle, on the tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from export.pipeline.__main__ import main  # noqa: E402
from export.pipeline.run import to_argv  # noqa: E402


def test_to_argv() -> None:
    argv = to_argv({"batch_size": 16, "distill": True, "quiet": False, "variant": ["fp32", "int8"], "x": None})
    assert argv == ["--batch-size", "16", "--distill", "--variant", "fp32", "int8"]


def _tiny_config(tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path, top: str = "", tail: str = "") -> Path:
    """A pipeline of one short training stage and an int8 export of the tiny checkpoint; ``top``: more keys,
    ``tail``: more tables."""
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": i % 2, "group": f"g{i}"}) + "\n" for i, t in enumerate(sample_texts)),
        encoding="utf-8",
    )
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f"""
name = "tiny-pipeline"
work_dir = "{tmp_path / "work"}"
out = "{tmp_path / "shipped"}"
variant = "int8"
{top}

[[train]]
base = "{tiny_checkpoint}"
data = ["{data}"]
epochs = 1.0
max_length = 64
threads = 1

[export]
variant = ["fp32", "int8"]
eval = ["{data}@validation"]
gate_auc_drop = 1.0
gate_agreement = 0.0
threads = 1
{tail}
""",
        encoding="utf-8",
    )
    return config


def test_pipeline_trains_exports_and_ships(tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path) -> None:
    config = _tiny_config(tiny_checkpoint, sample_texts, tmp_path)
    assert main(["--config", str(config)]) == 0
    shipped = tmp_path / "shipped"
    meta = json.loads((shipped / "aidetect.json").read_text())
    assert meta["variant"]["precision"] == "int8"
    assert meta["reproduce"]["command"].endswith(f"--config {config.as_posix()}")

    from aidetect_infer import Detector

    det = Detector.from_pretrained(shipped, provider="cpu", threads=1)
    ref = Detector.from_pretrained(tmp_path / "work" / "bundles" / "int8", provider="cpu", threads=1)
    np.testing.assert_array_equal(det.predict_proba(sample_texts[:8]), ref.predict_proba(sample_texts[:8]))
    # --resume reuses every finished stage and ships the same bundle again
    assert main(["--config", str(config), "--resume"]) == 0
    assert (shipped / "model.onnx").read_bytes() == (tmp_path / "work" / "bundles" / "int8" / "model.onnx").read_bytes()


def test_snapped_weights_are_exactly_what_the_shipped_int8_holds(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    from export.recover import recover

    config = _tiny_config(tiny_checkpoint, sample_texts, tmp_path, top="snap_weights = true")
    assert main(["--config", str(config)]) == 0
    shipped = tmp_path / "shipped"
    meta = json.loads((shipped / "aidetect.json").read_text())
    first = json.loads((tmp_path / "work" / "bundles" / "int8" / "aidetect.json").read_text())
    assert meta["recipe"][0]["stage"] == "snap"
    assert meta["recipe"][0]["source_sha256"] == first["files"]["model.onnx"]["sha256"]
    assert "1. stage: snap" in (shipped / "README.md").read_text(encoding="utf-8")  # the card says so too
    assert (shipped / "model.onnx").read_bytes() == (
        tmp_path / "work" / "bundles-snapped" / "int8" / "model.onnx"
    ).read_bytes()
    # the snapped weights lie on the int8 grid, so quantizing them again loses nothing where the same outlier
    # channels are chosen (as here; on the shipped model 5 of 18 products chose others, and 0.03% of the weights
    # moved by one step): the shipped graph's weights, recovered, are the snapped checkpoint's
    recover(shipped, tmp_path / "again")
    snapped = load_file(str(tmp_path / "work" / "snapped" / "model.safetensors"))
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    for name, weight in snapped.items():
        np.testing.assert_allclose(again[name], weight, rtol=0, atol=2e-6 * max(1.0, float(np.abs(weight).max())))

    # --from-snapped: the shipped bundle's recovered weights through the export again, without training
    from aidetect_infer import Detector

    before = Detector.from_pretrained(shipped, provider="cpu", threads=1).predict_proba(sample_texts[:8])
    shipped_sha = meta["files"]["model.onnx"]["sha256"]
    assert main(["--config", str(config), "--from-snapped", str(tmp_path / "again")]) == 0
    meta = json.loads((shipped / "aidetect.json").read_text())
    assert [r["stage"] for r in meta["recipe"]].count("snap") == 1
    assert meta["recipe"][0]["source_sha256"] == shipped_sha
    assert "--from-snapped" in meta["reproduce"]["export_only"]
    after = Detector.from_pretrained(shipped, provider="cpu", threads=1).predict_proba(sample_texts[:8])
    np.testing.assert_allclose(after, before, atol=0.02)  # the same weights; int8 activations round alike


def test_from_snapped_refuses_a_config_without_snapping_and_a_plain_checkpoint(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = _tiny_config(tiny_checkpoint, sample_texts, tmp_path)
    assert main(["--config", str(plain), "--from-snapped", str(tiny_checkpoint)]) != 0
    assert "snap_weights" in capsys.readouterr().err
    snapping = _tiny_config(tiny_checkpoint, sample_texts, tmp_path, top="snap_weights = true")
    assert main(["--config", str(snapping), "--from-snapped", str(tiny_checkpoint)]) != 0
    assert "not a recovered checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "shipped").exists()


def test_tune_stages_train_after_pruning_and_from_checkpoint_starts_there(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    tune = f'[[tune]]\ndata = ["{data}"]\nepochs = 1.0\nmax_length = 64\nlearning_rate = 1e-5\nseed = 7\nthreads = 1\n'
    config = _tiny_config(tiny_checkpoint, sample_texts, tmp_path, tail=tune)
    assert main(["--config", str(config), "--until", "tune"]) == 0
    work = tmp_path / "work"
    tuned = json.loads((work / "tune-1" / "training.json").read_text())
    # the tune stage continues from the last training stage and carries its record
    assert tuned["config"]["base"] == str(work / "train-1")
    assert tuned["source"]["checkpoint"] == str(work / "train-1")
    assert tuned["source"]["training"] == json.loads((work / "train-1" / "training.json").read_text())
    assert not (work / "bundles").exists() and not (tmp_path / "shipped").exists()

    # --from-checkpoint: the tune stage from another checkpoint, then export and ship; the record says how
    assert main(["--config", str(config), "--from-checkpoint", str(work / "train-1")]) == 0
    meta = json.loads((tmp_path / "shipped" / "aidetect.json").read_text())
    assert meta["training"]["source"]["checkpoint"] == str(work / "train-1")
    assert meta["reproduce"]["after_pruning"].endswith(f"--from-checkpoint {(work / 'train-1').as_posix()}")
    from safetensors.numpy import load_file

    before = load_file(str(work / "train-1" / "model.safetensors"))
    after = load_file(str(work / "tune-1" / "model.safetensors"))
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # the tune stage trained

    # a directory that is not a checkpoint, and a start that skips the stage asked to stop after
    assert main(["--config", str(config), "--from-checkpoint", str(tmp_path)]) != 0
    assert "not a checkpoint" in capsys.readouterr().err
    assert main(["--config", str(config), "--from-checkpoint", str(work / "train-1"), "--until", "prune"]) != 0
    assert "starts after the prune stage" in capsys.readouterr().err


def test_after_tune_runs_only_the_tune_stages_after_the_checkpoint(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    tune = f'[[tune]]\ndata = ["{data}"]\nepochs = 1.0\nmax_length = 64\nlearning_rate = 1e-5\nseed = 7\nthreads = 1\n'
    config = _tiny_config(
        tiny_checkpoint, sample_texts, tmp_path, tail=tune + "\n" + tune.replace("seed = 7", "seed = 8")
    )
    assert main(["--config", str(config), "--until", "train"]) == 0
    work = tmp_path / "work"
    start = ["--config", str(config), "--from-checkpoint", str(work / "train-1")]
    assert main([*start, "--after-tune", "1"]) == 0
    # the checkpoint stands for the first stage: only the second trains, from it, and the record says so
    assert not (work / "tune-1").exists()
    tuned = json.loads((work / "tune-2" / "training.json").read_text())
    assert tuned["config"]["base"] == str(work / "train-1") and tuned["seed"] == 8
    meta = json.loads((tmp_path / "shipped" / "aidetect.json").read_text())
    assert meta["reproduce"]["after_pruning"].endswith(f"{(work / 'train-1').as_posix()} --after-tune 1")
    # without a checkpoint, or past the last stage
    assert main(["--config", str(config), "--after-tune", "1"]) != 0
    assert "after_tune=1 needs a checkpoint" in capsys.readouterr().err
    assert main([*start, "--after-tune", "3"]) != 0
    assert "at most the 2 [[tune]] stages" in capsys.readouterr().err


def test_snap_weights_needs_the_int8_variant(tmp_path: Path) -> None:
    from export.errors import ConfigError
    from export.pipeline.config import read_pipeline_config

    config = tmp_path / "p.toml"
    config.write_text('variant = "fp32"\nsnap_weights = true\n[[train]]\nbase = "minilm"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="snap_weights"):
        read_pipeline_config(config)


def test_an_int8_aware_tune_stage_rounds_as_the_export_does(
    tiny_checkpoint: Path, sample_texts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    tune = f'[[tune]]\ndata = ["{data}"]\nepochs = 1.0\nmax_length = 64\nthreads = 1\nint8_aware = true\n'
    export = (
        f'int8 = "outlier_channels"\noutlier_products = "ffn"\ncalibration = "{data}"\nquantize_embeddings = true\n'
    )
    # the [export] table's options, then the tune stage: [[tune]] after [export] in the file
    config = _tiny_config(tiny_checkpoint, sample_texts, tmp_path, tail=export + "\n" + tune)
    assert main(["--config", str(config), "--from-checkpoint", str(tiny_checkpoint), "--until", "tune"]) == 0
    options = json.loads((tmp_path / "work" / "tune-1" / "training.json").read_text())["config"]
    assert options["int8_aware"] and options["int8_outlier_products"] == "ffn" and options["int8_embeddings"]
    assert options["int8_calibration"] == str(data) and options["int8_outlier_channels"] == 8

    # a stage that rounds otherwise than the export would is refused before anything runs
    clash = tune + 'int8_outlier_products = "ffn_attention"\n'
    (tmp_path / "clash").mkdir()
    config = _tiny_config(tiny_checkpoint, sample_texts, tmp_path / "clash", tail=export + "\n" + clash)
    assert main(["--config", str(config), "--from-checkpoint", str(tiny_checkpoint), "--until", "tune"]) != 0
    assert "int8_outlier_products" in capsys.readouterr().err
