"""``aidetect-edge`` on bad bundles, bad input and odd input files: clear errors, the Python runtime's answers."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from edge_support import jsonl
from onnx import TensorProto, helper, numpy_helper
from runtime.graphs import pooled_graph

from aidetect_infer import Detector
from aidetect_infer.bundle import sha256_file
from aidetect_infer.textio import read_lines
from export.bundle import write_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle, free to damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def edit_metadata(bundle: Path, **changes: object) -> None:
    path = bundle / "aidetect.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data), encoding="utf-8")


def refuse(run_edge, bundle: Path, *needles: str, code: int = 2) -> str:
    done = run_edge("--model", bundle, input="some text\n")
    assert done.returncode == code, done.stdout + done.stderr
    assert done.stderr.startswith("aidetect-edge: error: ") and done.stderr.count("\n") == 1
    for needle in needles:
        assert needle in done.stderr
    return done.stderr


def test_missing_and_wrong_paths(run_edge, tmp_path, monkeypatch):
    refuse(run_edge, tmp_path / "nowhere", "bundle directory does not exist", "export.to_onnx")
    (tmp_path / "file").write_text("x")
    refuse(run_edge, tmp_path / "file", "not a directory")
    refuse(run_edge, tmp_path, "no aidetect.json here and no variant sub-bundle")
    monkeypatch.delenv("AIDETECT_MODEL", raising=False)
    done = run_edge(input="text\n")
    assert done.returncode == 2 and "pass --model DIR or set AIDETECT_MODEL" in done.stderr


def test_checksum_and_size_are_checked(run_edge, bundle_copy):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    refuse(run_edge, bundle_copy, f"{model}: sha256", "does not match", "corrupt or replaced")
    tokenizer = bundle_copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:-10])
    model.unlink()
    refuse(run_edge, bundle_copy, f"{model}: missing from the bundle")


def test_truncated_tokenizer_is_refused(run_edge, bundle_copy):
    tokenizer = bundle_copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:-10])
    refuse(run_edge, bundle_copy, f"{tokenizer}:", "bytes, but aidetect.json records", "truncated or replaced")


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"format_version": 2}, ["format_version 2 is not supported"]),
        ({"format_version": "1"}, ['format_version "1" is not supported']),
        ({"threshold": None}, ["missing required keys ['threshold']"]),
        ({"threshold": 1.5, "labels": ["ai", "ai"]}, ["threshold must be a number in [0, 1]", "labels must be two"]),
        ({"max_length": 4}, ["max_length must be an integer in [8, 8192], got 4"]),
        ({"window_stride": 127}, ["window_stride must be an integer in [1, max_length - 2 = 126], got 127"]),
        ({"variant": {"precision": ""}}, ['variant must be an object with a string "precision"']),
        ({"files": {"model.onnx": {"sha256": "XY", "bytes": -1}}}, ['files["model.onnx"].sha256', "tokenizer.json"]),
    ],
)
def test_invalid_metadata_is_refused(run_edge, bundle_copy, changes, needles):
    edit_metadata(bundle_copy, **changes)
    refuse(run_edge, bundle_copy, "aidetect.json: ", *needles)


def test_metadata_that_is_not_json(run_edge, bundle_copy):
    (bundle_copy / "aidetect.json").write_text("{not json", encoding="utf-8")
    refuse(run_edge, bundle_copy, "aidetect.json: not valid JSON")


@pytest.mark.parametrize(
    ("graph", "needle"),
    [
        ({"output": "scores"}, "output 'logits' is missing"),
        ({"classes": 3}, "output 'logits' must have 2 classes"),
        ({"inputs": ("input_ids", "attention_mask", "extra")}, "input 'extra' is not one this runner can feed"),
        ({"inputs": ("input_ids",)}, "required input 'attention_mask' is missing"),
    ],
)
def test_graphs_the_runner_cannot_feed(run_edge, tiny_bundle, tmp_path, graph, needle):
    onnx_path = pooled_graph(tmp_path / "graph.onnx", **graph)
    meta = json.loads((tiny_bundle / "aidetect.json").read_text(encoding="utf-8"))
    bundle = write_bundle(
        tmp_path / "bad",
        onnx_path=onnx_path,
        tokenizer_path=tiny_bundle / "tokenizer.json",
        metadata=meta,
        verify=False,
    )
    refuse(run_edge, bundle, "model.onnx: ", needle)


def test_corrupt_model_file_is_refused(run_edge, tiny_bundle, tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"not a protobuf at all" * 10)
    meta = json.loads((tiny_bundle / "aidetect.json").read_text(encoding="utf-8"))
    bundle = write_bundle(
        tmp_path / "bad", onnx_path=bad, tokenizer_path=tiny_bundle / "tokenizer.json", metadata=meta, verify=False
    )
    assert (
        sha256_file(bundle / "model.onnx")
        == json.loads((bundle / "aidetect.json").read_text())["files"]["model.onnx"]["sha256"]
    )
    refuse(run_edge, bundle, "ONNX Runtime cannot load it")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--threads", "0"), "--threads must be a positive integer"),
        (("--batch-size", "0"), "batch_size must be a positive integer"),
        (("--max-length", "500"), "max_length must be in [8, 128]"),
        (("--max-length", "abc"), "--max-length needs an integer"),
        (("--variant", "int4"), "--variant must be fp32, int8 or fp16"),
        (("--frobnicate",), "unknown option --frobnicate"),
        (("--threads",), "--threads needs a value"),
        (("--batch-dependent=yes",), "--batch-dependent takes no value"),
        (("missing-file.txt",), "missing-file.txt: cannot read input file"),
        (("texts.jsonl.gz",), "compressed input is not supported"),
    ],
)
def test_bad_usage_exits_4(run_edge, tiny_bundle, args, needle):
    done = run_edge("--model", tiny_bundle, *args, input="text\n")
    assert done.returncode == 4, done.stderr
    assert needle in done.stderr


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        ('{"text": "fine"}\n{"text": broken\n', "<stdin>:2: not valid JSON"),
        ('{"text": "fine"}\n\n["a list"]\n', '<stdin>:3: expected a JSON object with a string "text" field'),
        ('{"id": 1, "text": 5}\n', '<stdin>:1: expected a JSON object with a string "text" field'),
    ],
)
def test_malformed_jsonl_exits_4(run_edge, tiny_bundle, lines, needle):
    done = run_edge("--model", tiny_bundle, "--jsonl", input=lines)
    assert done.returncode == 4 and needle in done.stderr


def test_input_lines_are_read_like_the_python_runtime(run_edge, tiny_bundle):
    """Universal newlines, blank (Unicode-whitespace) lines skipped, invalid UTF-8 replaced: same texts."""
    raw = (
        b"first line\r\nsecond\rthird\n\n   \t\n\xc2\xa0\xe3\x80\x80\n\x1f\nbad \xff\xfe bytes \xe2\x82\n"
        b"caf\xc3\xa9 \xf0\x9f\x98\x80\nlast without newline"
    )
    items = list(
        read_lines(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="replace"), jsonl=False, source="x")
    )
    done = run_edge("--model", tiny_bundle, "--json", "--digits", "12", "--threads", "1", input=raw)
    assert done.returncode == 0, done.stderr
    records = done.records()
    assert [r["line"] for r in records] == [item.line for item in items]
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)
    expected = detector.predict_proba([item.text for item in items])
    np.testing.assert_allclose([r["score"] for r in records], expected, atol=1e-5, rtol=0)


def test_jsonl_ids_lines_and_escapes(run_edge, tiny_bundle):
    texts = ["plain", "lone \ud800 surrogate", "pair \U0001f600", "", "\\u0041 literal backslash-u"]
    records_in = [json.dumps({"id": i if i % 2 else f"t{i}", "text": t}) for i, t in enumerate(texts)]
    done = run_edge(
        "--model",
        tiny_bundle,
        "--jsonl",
        "--json",
        "--digits",
        "12",
        "--threads",
        "1",
        input="\n".join(records_in) + "\n",
    )
    assert done.returncode == 0, done.stderr
    records = done.records()
    assert [r["id"] for r in records] == ["t0", 1, "t2", 3, "t4"]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1)
    np.testing.assert_allclose([r["score"] for r in records], detector.predict_proba(texts), atol=1e-5, rtol=0)
    assert list(records[0]) == ["index", "id", "line", "label", "score", "windows", "tokens"]
    assert [r["tokens"] for r in records] == [p.tokens for p in detector.predict(texts)]


def test_empty_input_prints_nothing(run_edge, tiny_bundle):
    done = run_edge("--model", tiny_bundle, input="\n  \n")
    assert done.returncode == 0 and done.stdout == ""
    done = run_edge("--model", tiny_bundle, "--jsonl", input=jsonl([]))
    assert done.returncode == 0 and done.stdout == ""


def test_version_names_the_pinned_onnxruntime(run_edge):
    done = run_edge("--version")
    assert done.returncode == 0 and done.stdout.startswith("aidetect-edge ")
    pinned = REPO / "edge" / "third_party" / "onnxruntime" / "VERSION"
    if pinned.is_file():
        assert f"ONNX Runtime {pinned.read_text().strip()}" in done.stdout
    assert run_edge("--help").stdout.startswith("usage: aidetect-edge")


def test_timing_goes_to_stderr(run_edge, tiny_bundle):
    done = run_edge("--model", tiny_bundle, "--threads", "1", "--timing", input="one\ntwo\n")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    assert re.search(r"loaded in [0-9.]+ s; scored 2 texts in [0-9.]+ s \(1 threads, [0-9.]+ s CPU\)", done.stderr)


def _refresh_checksums(bundle: Path) -> None:
    """Record the files' present size and sha256, as a consistent but damaged writer would."""
    meta = json.loads((bundle / "aidetect.json").read_text(encoding="utf-8"))
    for name in ("model.onnx", "tokenizer.json"):
        meta["files"][name] = {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}
    (bundle / "aidetect.json").write_text(json.dumps(meta), encoding="utf-8")


def _token_count_graph(path: Path, then: list, classes: int | str = 2) -> None:
    """``logits`` = ``then`` applied to each row's token count (sum of the mask), repeated over the classes."""
    count = [
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("ReduceSum", ["m", "axes"], ["n"], keepdims=1),
    ]
    tail = [helper.make_node("Concat", ["x", "x"], ["logits"], axis=1)] if classes == 2 else []
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", classes])
    graph = helper.make_graph(count + then + tail, "g", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_vocabulary_with_holes_is_refused(run_edge, bundle_copy):
    data = json.loads((bundle_copy / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    hole, vocab["a"] = vocab["a"], vocab["b"]
    (bundle_copy / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    _refresh_checksums(bundle_copy)
    refuse(run_edge, bundle_copy, f"tokenizer.json: the vocabulary has no token with id [{hole}]")


def test_a_tokenizer_larger_than_the_embeddings_is_refused(run_edge, bundle_copy):
    edit_metadata(bundle_copy, architecture={"model_type": "distilbert", "vocab_size": 500})
    refuse(run_edge, bundle_copy, "tokenizer.json: has 1000 tokens", "architecture.vocab_size) has 500")


def test_a_class_axis_that_is_not_two_wide_is_refused_at_load(run_edge, bundle_copy):
    """Logits as wide as the sequence pass the static check (the axis is symbolic); the probe at load sees 3."""
    _token_count_graph(
        bundle_copy / "model.onnx", [helper.make_node("Cast", ["attention_mask"], ["logits"], to=1)], "s"
    )
    _refresh_checksums(bundle_copy)
    refuse(run_edge, bundle_copy, "model.onnx: returned logits of shape [2, 3] for 2 windows, not [batch, 2]")


def test_nan_logits_are_an_error_not_a_score(run_edge, bundle_copy):
    """sqrt(5 - tokens): finite on the short probe and short texts, NaN on longer ones: exit 2, no NaN score."""
    five = helper.make_node("Constant", [], ["five"], value=numpy_helper.from_array(np.array(5.0, np.float32)))
    nodes = [five, helper.make_node("Sub", ["five", "n"], ["d"]), helper.make_node("Sqrt", ["d"], ["x"])]
    _token_count_graph(bundle_copy / "model.onnx", nodes)
    _refresh_checksums(bundle_copy)
    done = run_edge("--model", bundle_copy, "--json", input="one\n")
    assert done.returncode == 0 and len(done.records()) == 1
    done = run_edge("--model", bundle_copy, "--json", input="one\na text of more than five tokens in all\n")
    assert done.returncode == 2 and "returned non-finite logits (NaN or infinity)" in done.stderr
    assert "nan" not in done.stdout.lower()
