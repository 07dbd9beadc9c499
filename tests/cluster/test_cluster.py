"""``score --engine ray`` and ``score_dataset`` on a real two-node cluster: the same records as the local
``score``, nothing lost or doubled when an actor is killed mid-run, and an interrupted job that leaves no output
and gives the same output when run again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aidetect_infer import Detector
from aidetect_infer.streaming import score_file

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.from_pretrained(provider="cpu", threads=1)


@pytest.fixture(scope="module")
def corpus(sample_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 real texts (cut to ~80 tokens) with ids, a blank line and two lines that are not JSON objects."""
    path = tmp_path_factory.mktemp("corpus") / "texts.jsonl"
    lines = [json.dumps({"id": f"t{k}", "text": text[:400]}) for k, text in enumerate(sample_texts[:240])]
    lines[10:10] = [""]
    lines[50:50] = ["{not json"]
    lines[90:90] = ['{"id": 7, "text": 3}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_output(corpus: Path, detector: Detector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "scores.jsonl"
    score_file(detector, corpus, out)
    return out


def _job(cluster, corpus: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "aidetect_infer", "score", str(corpus), "--out", str(out), "--engine", "ray"]
    command += ["--address", cluster.address, "--actors", "2", "--threads", "1", *extra]
    return subprocess.Popen(command, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(job: subprocess.Popen[bytes]) -> str:
    output = job.communicate(timeout=JOB_TIMEOUT_S)[0].decode(errors="replace")
    assert job.returncode == 0, output
    return output


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _actor_processes() -> list:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.startswith("ray::MapWorker") and "DetectorActor" in cmdline:
            found.append(process)
    return found


def _wait_for_lines(path: Path, count: int, job: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (path.exists() and path.read_bytes().count(b"\n") >= count):
        assert job.poll() is None, job.communicate()[0].decode(errors="replace")
        assert time.monotonic() < deadline, "the job wrote nothing"
        time.sleep(0.2)


def test_the_cluster_writes_what_the_local_score_writes(ray_cluster, corpus, local_output, tmp_path):
    out = tmp_path / "scores.jsonl"
    summary = _finish(_job(ray_cluster, corpus, out))
    assert "240 scored, 2 errors" in summary
    assert out.read_bytes() == local_output.read_bytes()  # byte for byte: lines, ids, labels, scores
    errors = tmp_path / "scores.errors.jsonl"
    assert errors.read_bytes() == local_output.with_name("scores.errors.jsonl").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_an_actor_killed_mid_run_loses_and_doubles_nothing(ray_cluster, corpus, local_output, tmp_path):
    out = tmp_path / "scores.jsonl"
    job = _job(ray_cluster, corpus, out, "--chunk", "4")
    _wait_for_lines(out.with_name(out.name + ".partial"), 8, job)
    actors = _actor_processes()
    assert len(actors) == 2, actors
    actors[0].send_signal(signal.SIGKILL)
    assert job.poll() is None  # killed mid-run, not after the end
    _finish(job)
    got, want = _lines(out), _lines(local_output)
    assert len(got) == len(want) == 240
    assert len({r["line"] for r in got}) == len(got)  # none doubled
    assert got == want  # none lost, every score as the local run's


def test_an_interrupted_job_leaves_no_output_and_runs_again_to_the_same(ray_cluster, corpus, local_output, tmp_path):
    out = tmp_path / "scores.jsonl"
    job = _job(ray_cluster, corpus, out, "--chunk", "4")
    partial = out.with_name(out.name + ".partial")
    _wait_for_lines(partial, 4, job)
    job.send_signal(signal.SIGKILL)  # the driver dies: the job stops
    job.wait(timeout=60)
    assert not out.exists() and partial.exists()
    _finish(_job(ray_cluster, corpus, out))  # run again: starts over, replaces the stale partial output
    assert out.read_bytes() == local_output.read_bytes()
    assert not partial.exists()


def test_a_parquet_folder_in_parquet_out(ray_cluster, sample_texts, detector, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    folder = tmp_path / "in"
    folder.mkdir()
    texts = [t[:300] for t in sample_texts[:60]]
    for part in range(3):
        rows = texts[part * 20 : (part + 1) * 20]
        table = pa.table({"body": rows, "id": [part * 100 + k for k in range(20)], "lang": ["en"] * 20})
        pq.write_table(table, folder / f"part-{part}.parquet")
    out = tmp_path / "scored"
    command = [sys.executable, "-m", "aidetect_infer", "score", str(folder), "--out", str(out), "--engine", "ray"]
    command += ["--address", ray_cluster.address, "--actors", "2", "--threads", "1", "--text-column", "body"]
    done = subprocess.run(command, cwd=REPO, env=ray_cluster.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out).to_pylist()
    assert [(r["file"], r["line"], r["id"]) for r in table] == [
        (f"part-{p}.parquet", k + 1, str(p * 100 + k)) for p in range(3) for k in range(20)
    ]
    np.testing.assert_allclose([r["score"] for r in table], detector.predict_proba(texts), atol=1e-6)


SCORE_DATASET = """
import json, sys
import ray
from aidetect_infer.ray import score_dataset

texts = json.load(open(sys.argv[2]))
ray.init(address=sys.argv[1], logging_level="ERROR")
ds = ray.data.from_items([{"body": t, "n": k, "tag": "x" * k} for k, t in enumerate(texts)])
rows = score_dataset(ds, text_column="body", num_actors=2, batch_size=8).take_all()
print(json.dumps(sorted(rows, key=lambda r: r["n"])))
"""


def test_score_dataset_keeps_every_column(ray_cluster, sample_texts, detector, tmp_path):
    texts = [t[:300] for t in sample_texts[:40]]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    command = [sys.executable, "-c", SCORE_DATASET, ray_cluster.address, str(tmp_path / "texts.json")]
    done = subprocess.run(command, cwd=REPO, env=ray_cluster.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["n"] for r in rows] == list(range(40))
    assert all(r["body"] == t and r["tag"] == "x" * k for k, (r, t) in enumerate(zip(rows, texts, strict=True)))
    np.testing.assert_allclose([r["score"] for r in rows], detector.predict_proba(texts), atol=1e-6)
    assert [r["label"] for r in rows] == [p.label for p in detector.predict(texts)]
    assert all(r["windows"] >= 1 and r["tokens"] >= 0 for r in rows)


def test_refusals(corpus, tmp_path, capsys):
    from aidetect_infer import cli

    out = str(tmp_path / "o.jsonl")
    assert cli.main(["score", str(corpus), "--out", out, "--engine", "ray", "--resume"]) == 4
    assert "idempotent" in capsys.readouterr().err
    assert cli.main(["score", str(corpus), "--out", out, "--engine", "ray", "--actors", "0"]) == 4
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jsonl").write_text('{"text": "x"}\n')
    (mixed / "b.csv").write_text("text\nx\n")
    assert cli.main(["score", str(mixed), "--out", out, "--engine", "ray"]) == 4
    assert "mixes kinds" in capsys.readouterr().err
    assert cli.main(["score", str(corpus), "--out", str(corpus), "--engine", "ray", "--overwrite"]) == 4
    assert "three different paths" in capsys.readouterr().err
    assert cli.main(["score", str(corpus), "--out", out, "--errors", out, "--engine", "ray"]) == 4
    assert "three different paths" in capsys.readouterr().err
    assert cli.main(["score", str(mixed), "--out", str(mixed / "o.jsonl"), "--engine", "ray"]) == 4
    assert "outside the input folder" in capsys.readouterr().err
    assert cli.main(["score", str(corpus), "--out", out, "--errors", str(mixed), "--engine", "ray"]) == 4
    assert "is a directory" in capsys.readouterr().err
    assert not Path(out).exists()
