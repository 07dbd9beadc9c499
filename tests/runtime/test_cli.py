"""The command line, run as ``python -m aidetect_infer`` in a subprocess and through ``main`` in-process."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aidetect_infer import cli
from aidetect_infer.progress import ProgressBar

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AIDETECT_MODEL"}
    return subprocess.run(
        [sys.executable, "-m", "aidetect_infer", *args],
        cwd=REPO,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def model_args(tiny_bundle) -> list[str]:
    return ["--model", str(tiny_bundle), "--provider", "cpu", "--threads", "1"]


def test_text_arguments(model_args, detector):
    texts = ["The first text to score.", "And a second one, a little longer than the first."]
    result = run_cli(*texts, *model_args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, prediction in zip(lines, detector.predict(texts), strict=True):
        label, score = line.split("\t")
        assert label == prediction.label
        assert float(score) == pytest.approx(prediction.score, abs=1e-4)


def test_stdin_one_text_per_line_json(model_args, detector):
    result = run_cli("--json", *model_args, stdin="first line\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1] and [r["line"] for r in records] == [1, 3]
    expected = detector.predict(["first line", "second line"])
    for record, prediction in zip(records, expected, strict=True):
        assert record["label"] == prediction.label and record["windows"] == prediction.windows
        assert record["score"] == pytest.approx(prediction.score, abs=1e-6)


def test_plain_text_file(tmp_path, model_args, capsys, detector):
    path = tmp_path / "texts.txt"
    path.write_text("one text\n\n   \nanother text\r\nthird\n", encoding="utf-8")
    assert cli.main([*model_args, "--file", str(path), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in records] == [1, 4, 5]
    scores = detector.predict_proba(["one text", "another text", "third"])
    assert [r["score"] for r in records] == pytest.approx(scores.tolist(), abs=1e-6)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_jsonl_file_with_ids(tmp_path, model_args, capsys, detector, suffix):
    rows = [{"id": "a-1", "text": "first"}, {"text": "no id here"}, {"id": 7, "text": "", "label": 1}]
    body = "\n".join(json.dumps(r) for r in rows) + "\n"
    path = tmp_path / f"texts{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path.write_text(body)
    assert cli.main([*model_args, "--file", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    scores = detector.predict_proba([r["text"] for r in rows])
    assert lines[0].startswith("a-1\t") and lines[2].startswith("7\t")
    assert lines[1].count("\t") == 1
    assert [float(line.split("\t")[-1]) for line in lines] == pytest.approx(scores.tolist(), abs=1e-4)


def test_truncate_and_batch_size_options(model_args, capsys, sample_texts, tiny_bundle):
    from aidetect_infer import Detector

    long_text = " ".join(sample_texts[:3])
    assert cli.main([long_text, *model_args, "--truncate", "--batch-size", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = Detector.from_pretrained(tiny_bundle, provider="cpu", truncation=True).predict(long_text)
    assert record["windows"] == 1 and record["score"] == pytest.approx(expected.score, abs=1e-6)


def test_progress_bar_on_a_terminal_for_many_texts(tmp_path, model_args, capsys, monkeypatch):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"text number {i}" for i in range(120)))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main([*model_args, "--file", str(path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 120
    drawn = terminal.getvalue()
    assert "\r[" in drawn and "120/120 texts" in drawn and drawn.endswith("\n")


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, model_args):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"text number {i}" for i in range(60)))
    result = run_cli(*model_args, "--file", str(path))
    assert result.returncode == 0 and result.stderr == ""


def test_progress_bar_render():
    bar = ProgressBar(200, io.StringIO(), width=8)
    bar.update(50)
    assert bar.render().startswith("[##......] 50/200 texts")
    bar.update(500)
    assert bar.done == 200


def test_explicit_predict_command(model_args, capsys):
    assert cli.main(["predict", "predict", *model_args]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aidetect: error: ")
    return lines[0]


def test_missing_bundle_exits_2(tmp_path):
    result = run_cli("some text", "--model", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in _one_line_error(result)


def test_corrupt_bundle_exits_2(tiny_bundle, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    (bundle / "model.onnx").write_bytes(b"broken")
    result = run_cli("some text", "--model", str(bundle))
    assert result.returncode == 2
    assert "model.onnx" in _one_line_error(result)


def test_unavailable_provider_exits_3(tiny_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = run_cli("some text", "--model", str(tiny_bundle), "--provider", "cuda")
    assert result.returncode == 3
    assert "CUDAExecutionProvider not available" in _one_line_error(result)


def test_bad_jsonl_exits_4(tmp_path, tiny_bundle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    result = run_cli("--file", str(path), "--model", str(tiny_bundle))
    assert result.returncode == 4
    assert "bad.jsonl:2" in _one_line_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "/nonexistent/texts.txt"], "cannot read input file"),
        (["--batch-size", "many", "text"], "invalid int value"),
        (["--batch-size", "0", "text"], "batch_size"),
        (["text", "--file", "x.txt"], "not both"),
        (["--provider", "gpu", "text"], "invalid choice"),
    ],
)
def test_bad_input_exits_4(args, message, tiny_bundle, capsys):
    code = cli.main([*args, "--model", str(tiny_bundle)])
    err = capsys.readouterr().err.strip()
    assert code == 4
    assert err.startswith("aidetect: error: ") and message in err and "\n" not in err


def test_help_lists_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the epilog wherever the width falls
    assert "--file" in out and "predict" in out and "Exit codes" in out


def test_max_length_variant_and_verbose(tiny_bundle, tmp_path, capsys, sample_texts):
    from aidetect_infer import Detector

    parent = tmp_path / "variants"
    shutil.copytree(tiny_bundle, parent / "fp32")
    text = sample_texts[3]
    args = [text, "--model", str(parent), "--variant", "fp32", "--max-length", "32", "--json", "-v"]
    assert cli.main([*args, "--provider", "cpu"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    expected = Detector.from_pretrained(tiny_bundle, provider="cpu", max_length=32).predict(text)
    assert record["windows"] == expected.windows > 1
    assert record["score"] == pytest.approx(expected.score, abs=1e-6)
    assert "CPUExecutionProvider" in captured.err


def test_lone_surrogate_id_is_written_escaped(tmp_path, model_args):
    source = tmp_path / "ids.jsonl"
    source.write_text('{"id": "\\ud800x", "text": "hello there"}\n{"id": 2, "text": "caf\\u00e9"}\n', encoding="utf-8")
    done = run_cli(*model_args, "--json", "--file", str(source))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in records] == ["\ud800x", 2]
    plain = run_cli(*model_args, "--file", str(source))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0].startswith("\\ud800x\t")
