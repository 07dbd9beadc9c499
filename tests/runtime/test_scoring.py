"""Batch scoring (``score``): results against the Detector, errors, refusals, streaming, and resuming."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aidetect_infer import Prediction, cli, streaming
from aidetect_infer.errors import BundleError, InvalidValueError
from aidetect_infer.streaming import default_errors_path, score_file, truncate_after

REPO = Path(__file__).resolve().parents[2]


def _jsonl(rows: list[object]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


MIXED_ROWS: list[object] = [
    {"id": "a-1", "text": "The first text, with an id."},
    {"text": "No id on this one."},
    "",
    "{not json",
    {"id": 7, "text": ""},
    {"id": None, "text": "An explicit null id."},
    {"text": 42},
    "   ",
    ["a list, not an object"],
    {"id": [1, "x"], "text": "A compound id \ud800 with a lone surrogate."},
]


def test_results_match_the_detector_line_by_line(detector, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(_jsonl(MIXED_ROWS), encoding="utf-8", errors="surrogatepass")
    summary = score_file(detector, source, tmp_path / "out.jsonl", chunk_texts=2)
    results = _records(tmp_path / "out.jsonl")
    good = {n: r for n, r in enumerate(MIXED_ROWS, start=1) if isinstance(r, dict) and isinstance(r["text"], str)}
    assert [r["line"] for r in results] == list(good)
    expected = detector.predict([r["text"] for r in good.values()])
    for result, row, prediction in zip(results, good.values(), expected, strict=True):
        assert ("id" in result) == ("id" in row) and result.get("id") == row.get("id")
        assert result["label"] == prediction.label and result["windows"] == prediction.windows
        assert result["score"] == pytest.approx(prediction.score, abs=1e-6)
    errors = _records(tmp_path / "out.errors.jsonl")
    assert [e["line"] for e in errors] == [4, 7, 9]
    assert "not valid JSON" in errors[0]["error"] and errors[0]["excerpt"] == "{not json"
    assert all('string "text"' in e["error"] for e in errors[1:])
    assert (summary.scored, summary.errors, summary.blank, summary.lines) == (5, 3, 2, 10)


@pytest.mark.parametrize("name", ["in.txt", "in.txt.gz", "in.ndjson.gz"])
def test_plain_gzip_and_ndjson_inputs(detector, tmp_path, sample_texts, name):
    texts = [t[:150].replace("\n", " ") for t in sample_texts[:9]]
    body = _jsonl([{"text": t} for t in texts]) if "ndjson" in name else "\n".join(texts) + "\n"
    source = tmp_path / name
    source.write_bytes(gzip.compress(body.encode()) if name.endswith(".gz") else body.encode())
    score_file(detector, source, tmp_path / "out.jsonl", chunk_texts=4)
    results = _records(tmp_path / "out.jsonl")
    assert [r["line"] for r in results] == list(range(1, 10)) and not any("id" in r for r in results)
    scores = detector.predict_proba(texts)
    assert [r["score"] for r in results] == pytest.approx(scores.tolist(), abs=1e-6)
    assert not (tmp_path / "out.errors.jsonl").exists()


def test_default_errors_path():
    assert default_errors_path("d/out.jsonl") == Path("d/out.errors.jsonl")
    assert default_errors_path("d/results") == Path("d/results.errors.jsonl")


def test_refusals(detector, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(_jsonl([{"text": "x"}]))
    out = tmp_path / "out.jsonl"
    cases = [
        ({"input_path": "-"}, "not stdin"),
        ({"input_path": tmp_path / "missing.jsonl"}, "cannot read input file"),
        ({"input_path": tmp_path}, "cannot read input file"),
        ({"output_path": source}, "three different files"),
        ({"errors_path": out}, "three different files"),
        ({"output_path": tmp_path / "no" / "out.jsonl"}, "output directory does not exist"),
        ({"output_path": tmp_path}, "is a directory"),
        ({"errors_path": tmp_path}, "is a directory"),
        ({"chunk_texts": 0}, "chunk sizes"),
    ]
    for overrides, message in cases:
        kwargs = {"input_path": source, "output_path": out, **overrides}
        with pytest.raises(InvalidValueError, match=message):
            score_file(detector, **kwargs)
    score_file(detector, source, out)
    with pytest.raises(InvalidValueError, match="already holds results"):
        score_file(detector, source, out)
    assert score_file(detector, source, out, overwrite=True).scored == 1


def test_resume_refuses_an_output_of_another_input(detector, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_jsonl([{"id": i, "text": f"text {i}"} for i in range(5)]))
    score_file(detector, source, out)
    source.write_text(_jsonl([{"id": i + 100, "text": f"text {i}"} for i in range(5)]))
    with pytest.raises(InvalidValueError, match="does not match line 5"):
        score_file(detector, source, out, resume=True)
    source.write_text(_jsonl([{"id": 0, "text": "text 0"}]))
    with pytest.raises(InvalidValueError, match="up to input line 5, but .* has 1 lines"):
        score_file(detector, source, out, resume=True)


def test_resume_without_an_output_starts_fresh(detector, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_jsonl(["oops", {"text": "fine"}]))
    (tmp_path / "out.errors.jsonl").write_text('{"line": 1, "error": "stale"}\n')
    summary = score_file(detector, source, out, resume=True)
    assert (summary.resumed_after, summary.scored, summary.errors) == (0, 1, 1)
    assert [e["line"] for e in _records(tmp_path / "out.errors.jsonl")] == [1]
    assert "stale" not in (tmp_path / "out.errors.jsonl").read_text()


def test_truncate_after_drops_partial_and_garbage_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"line": 1}\n{"line": 3}\n{"line": 4, "sc' + b"\n\x00\x00garbage\n" + b'{"line": 9')
    assert truncate_after(path) == {"line": 3}
    assert path.read_bytes() == b'{"line": 1}\n{"line": 3}\n'
    assert truncate_after(path, limit=2) == {"line": 1}
    assert truncate_after(path, limit=0) is None and path.read_bytes() == b""
    assert truncate_after(tmp_path / "absent.jsonl") is None
    long_line = json.dumps({"line": 2, "pad": "x" * 200_000}).encode()  # longer than one backward block
    path.write_bytes(b'{"line": 1}\n' + long_line + b"\n" + b"{" * 70_000)
    assert truncate_after(path)["line"] == 2 and path.read_bytes().endswith(b"x" * 10 + b'"}\n')


class HashScorer:
    """A deterministic stand-in for the Detector: a score from the text's crc32, exactly reproducible."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def predict(self, texts: list[str]) -> list[Prediction]:
        self.calls += 1
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise BundleError("model.onnx returned non-finite logits")
        out = []
        for text in texts:
            score = zlib.crc32(text.encode("utf-8", "replace")) % 1_000_000 / 1_000_000
            out.append(Prediction(label="ai" if score >= 0.5 else "human", score=score, threshold=0.5, windows=1))
        return out


def test_a_failing_chunk_is_scored_text_by_text(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_jsonl([{"text": f"text {i}"} for i in range(5)] + [{"text": "poison"}, {"text": "after"}]))
    summary = score_file(HashScorer(fail_on="poison"), source, out, chunk_texts=4)
    assert [r["line"] for r in _records(out)] == [1, 2, 3, 4, 5, 7]
    (error,) = _records(tmp_path / "out.errors.jsonl")
    assert error["line"] == 6 and "non-finite" in error["error"] and summary.errors == 1


class Killed(BaseException):
    """Stands for the process dying in the middle of a write."""


ROWS = st.lists(
    st.one_of(
        st.builds(lambda t, i: {"id": i, "text": t}, st.text(max_size=30), st.one_of(st.integers(), st.floats())),
        st.builds(lambda t: {"text": t}, st.text(max_size=30)),
        st.sampled_from(["", "  ", "{broken", '{"text": null}']),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, chunk=st.integers(1, 6), kill_at=st.integers(0, 30), cut=st.floats(0, 1))
def test_killed_mid_write_then_resumed_equals_an_uninterrupted_run(tmp_path_factory, rows, chunk, kill_at, cut):
    """Every state a kill can leave (each write, cut anywhere) resumes to the uninterrupted run's bytes."""
    tmp = tmp_path_factory.mktemp("resume")
    source = tmp / "in.jsonl"
    source.write_text(_jsonl(rows), encoding="utf-8", errors="surrogatepass")
    score_file(HashScorer(), source, tmp / "full.jsonl", chunk_texts=chunk)
    real_write, writes = streaming._write, [0]

    def dying_write(f, records):
        if writes[0] == kill_at:
            buffer = io.BytesIO()
            real_write(buffer, records)
            data = buffer.getvalue()
            f.write(data[: int(cut * len(data))])
            f.flush()
            raise Killed
        writes[0] += 1
        real_write(f, records)

    streaming._write = dying_write
    try:
        score_file(HashScorer(), source, tmp / "out.jsonl", chunk_texts=chunk)
    except Killed:
        pass
    finally:
        streaming._write = real_write
    score_file(HashScorer(), source, tmp / "out.jsonl", chunk_texts=chunk, resume=True)
    assert (tmp / "out.jsonl").read_bytes() == (tmp / "full.jsonl").read_bytes()
    full_errors, errors = tmp / "full.errors.jsonl", tmp / "out.errors.jsonl"
    assert errors.exists() == full_errors.exists()
    if errors.exists():
        assert errors.read_bytes() == full_errors.read_bytes()


def test_resuming_a_finished_run_scores_nothing_again(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_jsonl([{"text": f"t{i}"} for i in range(10)] + ["bad"]))
    score_file(HashScorer(), source, out)
    before = out.read_bytes()
    scorer = HashScorer()
    summary = score_file(scorer, source, out, resume=True)
    assert out.read_bytes() == before and scorer.calls == 0
    assert (summary.resumed_after, summary.scored, summary.errors, summary.lines) == (10, 0, 1, 11)


@pytest.mark.parametrize("odd_id", [float("nan"), float("inf"), {"b": [1, 2], "a": None}, "\ud800", 10**30])
def test_resume_after_a_record_with_an_odd_id(tmp_path, odd_id):
    """The last result's id is matched against the input by its JSON text, so NaN (never equal) still resumes."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(_jsonl([{"id": 1, "text": "first"}, {"id": odd_id, "text": "second"}, {"text": "third"}]))
    score_file(HashScorer(), source, out, chunk_texts=2)
    full = out.read_bytes()
    out.write_bytes(full[: full.index(b"\n", full.index(b"\n") + 1) + 1])  # as if killed after line 2
    assert score_file(HashScorer(), source, out, resume=True).resumed_after == 2
    assert out.read_bytes() == full


def test_input_is_streamed_not_read_whole(tmp_path):
    """Through a pipe: the first results must be on disk while the writer still holds back the rest."""
    fifo, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    seen_early: list[int] = []

    def writer() -> None:
        with open(fifo, "w") as f:
            f.write(_jsonl([{"text": f"first {i}"} for i in range(8)]))
            f.flush()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not out.read_bytes().count(b"\n") >= 4:
                time.sleep(0.01)
            seen_early.append(out.read_bytes().count(b"\n"))
            f.write(_jsonl([{"text": f"later {i}"} for i in range(8)]))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    summary = score_file(HashScorer(), fifo, out, chunk_texts=4)
    thread.join(timeout=30)
    assert seen_early and seen_early[0] >= 4
    assert summary.scored == 16 and len(_records(out)) == 16


def test_cli_score_with_progress_and_summary(tmp_path, tiny_bundle, detector, monkeypatch, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    texts = [f"text number {i} for the command line" for i in range(70)]
    source.write_text(_jsonl([{"id": i, "text": t} for i, t in enumerate(texts)] + ["nope"]))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    args = ["score", str(source), "--out", str(out), "--model", str(tiny_bundle), "--provider", "cpu"]
    assert cli.main([*args, "--threads", "1", "--chunk", "16"]) == 0
    drawn = terminal.getvalue()
    assert "71/71 texts" in drawn and "70 scored, 1 errors" in drawn
    assert [r["score"] for r in _records(out)] == pytest.approx(detector.predict_proba(texts).tolist(), abs=1e-6)
    assert cli.main([*args]) == 4
    assert "already holds results" in terminal.getvalue()
    assert cli.main([*args, "--chunk", "0", "--overwrite"]) == 4
    assert cli.main([*args, "--resume", "--overwrite"]) == 4  # mutually exclusive
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def kill_run(tmp_path_factory, tiny_bundle, sample_texts) -> tuple[Path, list[str], Path]:
    """A few thousand short lines (some blank, some broken), the command that scores them, an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("kill")
    words = " ".join(sample_texts).split()
    rows: list[object] = []
    for i in range(3000):
        if i % 97 == 50:
            rows.append("")
        elif i % 211 == 100:
            rows.append(f'{{"id": {i}, "text": ')
        else:
            rows.append({"id": f"doc-{i}", "text": " ".join(words[(7 * i) % 5000 : (7 * i) % 5000 + 3 + i % 20])})
    source = tmp / "in.jsonl"
    source.write_text(_jsonl(rows))
    command = [sys.executable, "-m", "aidetect_infer", "score", str(source), "--model", str(tiny_bundle)]
    command += ["--provider", "cpu", "--threads", "1", "--batch-size", "8", "--chunk", "32"]
    full = subprocess.run([*command, "--out", str(tmp / "full.jsonl")], cwd=REPO, capture_output=True, timeout=600)
    assert full.returncode == 0, full.stderr
    return source, command, tmp / "full.jsonl"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_run_resumes_to_the_uninterrupted_output(kill_run, tmp_path, how, record_property):
    source, command, full = kill_run
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [*command, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # a shell that starts jobs in the background (nohup, `&`, some CI runners) hands them SIGINT ignored,
        # and Python then installs no KeyboardInterrupt handler: restore the default so the signal arrives
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 300:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(how)
    code = process.wait(timeout=60)
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert code == (-signal.SIGKILL if how == signal.SIGKILL else cli.EXIT_INTERRUPTED), stderr
    left = out.read_bytes()
    complete = left.count(b"\n")
    resumed = subprocess.run([*command, "--out", str(out), "--resume"], cwd=REPO, capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _records(full), _records(out)
    numbers = [r["line"] for r in got]
    assert numbers == sorted(set(numbers)), "a line is duplicated or out of order"
    assert len(got) == len(expected) and 3 < complete < len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert {k: v for k, v in mine.items() if k != "score"} == {k: v for k, v in theirs.items() if k != "score"}
        assert mine["score"] == pytest.approx(theirs["score"], abs=2e-6)
    assert (tmp_path / "out.errors.jsonl").read_bytes() == full.with_name("full.errors.jsonl").read_bytes()
    figures = {
        "results": len(expected),
        "complete_before": complete,
        "partial_bytes": len(left) - left.rfind(b"\n") - 1,
    }
    record_property("resume", figures)
    print(f"\n{how.name}: {figures}; {resumed.stderr.decode().strip()}")
