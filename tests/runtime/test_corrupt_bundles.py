"""Corrupt bundles, each loaded in a subprocess: a clear error at load (exit 2), never a crash of the interpreter.

Random byte flips and truncations are tried both with the recorded checksums (the checksum must catch them)
and with checksums rewritten to match (the damage reaches ONNX Runtime and the tokenizer parser). A tokenizer
with more tokens than the model's embeddings, a class axis that is not 2 wide, and weights that make the
logits NaN are refused at load too, never answered with a wrong or NaN score.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

from aidetect_infer import Detector
from aidetect_infer.errors import BundleError

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["A short text.", "Another one, somewhat longer, with more words and punctuation in it; " * 20]
FILES = ("model.onnx", "tokenizer.json", "aidetect.json")


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _refresh_checksums(bundle: Path) -> None:
    """Record the files' present sha256 and size, as a consistent but damaged writer would."""
    meta = json.loads((bundle / "aidetect.json").read_text())
    for name in ("model.onnx", "tokenizer.json"):
        blob = (bundle / name).read_bytes()
        meta["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (bundle / "aidetect.json").write_text(json.dumps(meta))


def load_in_subprocess(bundle: Path) -> tuple[int, str, list[dict]]:
    """Score :data:`TEXTS` with the CLI in a fresh interpreter: exit code, stderr, JSON records."""
    env = {k: v for k, v in os.environ.items() if k != "AIDETECT_MODEL"} | {"OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "aidetect_infer", "--json", "--model", str(bundle), "--provider", "cpu"]
    result = subprocess.run(
        [*args, "--threads", "1", *TEXTS], cwd=REPO, capture_output=True, text=True, timeout=180, env=env
    )
    records = [json.loads(line) for line in result.stdout.splitlines()] if result.returncode == 0 else []
    return result.returncode, result.stderr, records


def assert_refused_or_sound(bundle: Path) -> int:
    """Exit 2 with a one-line error naming a bundle file, or exit 0 with finite probabilities; nothing else."""
    code, stderr, records = load_in_subprocess(bundle)
    assert code in (0, 2), f"exit {code} (a crash or an unhandled error):\n{stderr[-2000:]}"
    if code == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aidetect: error: "), stderr[-2000:]
        assert any(name in lines[0] for name in FILES), lines[0]
    else:
        assert len(records) == len(TEXTS)
        assert all(math.isfinite(r["score"]) and 0.0 <= r["score"] <= 1.0 for r in records), records
    return code


def flip_bytes(path: Path, rng: random.Random, count: int) -> None:
    blob = bytearray(path.read_bytes())
    for _ in range(count):
        blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(blob))


def truncate(path: Path, rng: random.Random) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: rng.randrange(len(blob))])


DAMAGE: dict[str, Callable[[Path, random.Random], None]] = {
    "flip": lambda path, rng: flip_bytes(path, rng, rng.randint(1, 16)),
    "truncate": truncate,
}


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_caught_by_the_checksum(tiny_bundle, tmp_path, name, damage):
    bundle = _copy(tiny_bundle, tmp_path)
    DAMAGE[damage](bundle / name, random.Random(f"{name}{damage}"))
    code, stderr, _ = load_in_subprocess(bundle)
    assert code == 2 and name in stderr and ("sha256" in stderr or "bytes" in stderr), stderr


FAST_CASES = [("model.onnx", "flip", 1), ("model.onnx", "truncate", 2), ("tokenizer.json", "flip", 3)]
FAST_CASES += [("tokenizer.json", "truncate", 4), ("aidetect.json", "flip", 5), ("aidetect.json", "truncate", 6)]


@pytest.mark.parametrize(("name", "damage", "seed"), FAST_CASES)
def test_damage_behind_matching_checksums_is_refused_or_harmless(tiny_bundle, tmp_path, name, damage, seed):
    bundle = _copy(tiny_bundle, tmp_path)
    DAMAGE[damage](bundle / name, random.Random(seed))
    if name != "aidetect.json":
        _refresh_checksums(bundle)
    code = assert_refused_or_sound(bundle)
    if damage == "truncate" and name != "aidetect.json":
        assert code == 2  # a truncated protobuf or JSON document never parses


@pytest.mark.slow
def test_random_damage_sweep(tiny_bundle, tmp_path, record_property):
    """Many random flips and truncations behind matching checksums: every one refused or harmless."""
    rng = random.Random(20240607)
    outcomes: dict[str, int] = {}
    for trial in range(40):
        name, damage = rng.choice(FILES), rng.choice(sorted(DAMAGE))
        bundle = _copy(tiny_bundle, tmp_path / str(trial))
        DAMAGE[damage](bundle / name, rng)
        if name != "aidetect.json":
            _refresh_checksums(bundle)
        key = f"{name} {damage} exit {assert_refused_or_sound(bundle)}"
        outcomes[key] = outcomes.get(key, 0) + 1
    record_property("outcomes", outcomes)
    print(f"\n40 damaged bundles: {outcomes}")


def test_a_tokenizer_larger_than_the_model_is_refused_at_load(tiny_bundle, tmp_path):
    """Token ids past the embedding table would fail inside ONNX Runtime on some later text: refuse at load."""
    bundle = _copy(tiny_bundle, tmp_path)
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.add_tokens([f"extraword{i}" for i in range(300)])
    tokenizer.save(str(bundle / "tokenizer.json"))
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match="tokenizer.json.* 1300 tokens"):
        Detector.from_pretrained(bundle, provider="cpu", threads=1)
    code, stderr, _ = load_in_subprocess(bundle)
    assert code == 2 and "tokenizer" in stderr, stderr
    meta = json.loads((bundle / "aidetect.json").read_text())
    del meta["architecture"]["vocab_size"]  # without the recorded size, running the graph finds it
    (bundle / "aidetect.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tokenizer"):
        Detector.from_pretrained(bundle, provider="cpu", threads=1)


def _graph(path: Path, nodes: list, classes: int | str) -> None:
    """A graph over ``input_ids``/``attention_mask`` whose ``nodes`` compute ``logits`` ``[b, classes]``."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", classes])
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [output]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))


def _mean_tokens(columns: int, then: list) -> list:
    """Nodes: per row, the number of tokens (sum of the mask), passed through ``then``, repeated ``columns``."""
    return [
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("ReduceSum", ["m", "axes"], ["n"], keepdims=1),
        *then,
        helper.make_node("Concat", ["x"] * columns, ["logits"], axis=1),
    ]


def test_a_class_axis_that_is_not_two_wide_is_refused_at_load(tiny_bundle, tmp_path):
    """Logits as wide as the sequence pass the static check (the axis is symbolic); the probe at load sees 3."""
    bundle = _copy(tiny_bundle, tmp_path)
    nodes = [helper.make_node("Cast", ["attention_mask"], ["logits"], to=TensorProto.FLOAT)]
    _graph(bundle / "model.onnx", nodes, classes="s")
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match=r"model.onnx.*shape \(2, 3\)"):
        Detector.from_pretrained(bundle, provider="cpu", threads=1)
    assert load_in_subprocess(bundle)[0] == 2


def test_nan_weights_are_refused_at_load(tiny_bundle, tmp_path):
    bundle = _copy(tiny_bundle, tmp_path)
    model = onnx.load(str(bundle / "model.onnx"))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the embedding table
    array = numpy_helper.to_array(weights).copy()
    array[:] = np.nan
    weights.CopyFrom(numpy_helper.from_array(array, weights.name))
    onnx.save(model, str(bundle / "model.onnx"))
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match="non-finite"):
        Detector.from_pretrained(bundle, provider="cpu", threads=1)
    assert load_in_subprocess(bundle)[0] == 2


def test_nan_logits_on_some_texts_raise_a_typed_error_not_a_nan_score(tiny_bundle, tmp_path):
    """sqrt(5 - tokens): finite on the short probe, NaN on longer texts. Those get a BundleError, not NaN."""
    bundle = _copy(tiny_bundle, tmp_path)
    five = helper.make_node("Constant", [], ["five"], value=numpy_helper.from_array(np.array(5.0, np.float32)))
    nodes = [five, helper.make_node("Sub", ["five", "n"], ["d"]), helper.make_node("Sqrt", ["d"], ["x"])]
    _graph(bundle / "model.onnx", _mean_tokens(2, nodes), classes=2)
    _refresh_checksums(bundle)
    detector = Detector.from_pretrained(bundle, provider="cpu", threads=1)
    assert np.isfinite(detector.predict("one").score)
    with pytest.raises(BundleError, match="non-finite"):
        detector.predict_proba(["one", "a text of more than five tokens in all"])


def test_a_vocabulary_with_holes_is_refused_and_stdout_stays_clean(tiny_bundle, tmp_path):
    """Two tokens on one id (a damaged entry) leave a hole; the tokenizers library would print a warning to
    stdout on copying it, into the command's output. Refused at load instead."""
    bundle = _copy(tiny_bundle, tmp_path)
    data = json.loads((bundle / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    hole, vocab["a"] = vocab["a"], vocab["b"]
    (bundle / "tokenizer.json").write_text(json.dumps(data))
    _refresh_checksums(bundle)
    with pytest.raises(BundleError, match=rf"tokenizer.*no token with id \[{hole}\]"):
        Detector.from_pretrained(bundle, provider="cpu", threads=1)
    env = {k: v for k, v in os.environ.items() if k != "AIDETECT_MODEL"}
    args = [sys.executable, "-m", "aidetect_infer", "--model", str(bundle), "--provider", "cpu", "some text"]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 2 and result.stdout == "", (result.stdout, result.stderr)
