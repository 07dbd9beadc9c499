"""``python -m benchmarks.profile``: where an engine's time goes on the corpus.

    python -m benchmarks.profile --engine aidetect-int8 --engine transformers-pytorch-fp32 [--texts 128]

For the aidetect engines the ``Detector`` pipeline is replayed stage by stage with the runtime's own pieces
(tokenization, windows and padding, ONNX Runtime calls, the rest), and ONNX Runtime's profiler splits the
session time by operator type. For the pipeline engines: tokenization, the model's forward pass, and the
pipeline's own overhead (the whole call minus those two). Padding waste is the share of computed tokens that
are padding. Wall and CPU seconds are both given, so a profile taken on a loaded machine is still readable.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.engines import ENGINES, MAX_LENGTH, THREADS, load_engine, load_hf_model
from benchmarks.models import CACHE_DIR, PEERS, Models, build_models, is_built
from benchmarks.roofline import workload

DETECTOR_CHUNK = 256


class Clock:
    """Accumulates wall and CPU seconds per named stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block under ``name``."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu


def _bundle_encoder(models: Models, engine: str) -> tuple[Any, Any]:
    """The engine's verified bundle and a ``TextEncoder`` truncating at the common length."""
    from aidetect_infer.bundle import load_bundle
    from aidetect_infer.tokenization import TextEncoder, load_tokenizer

    path = models.files(engine)
    if path is None:
        raise FileNotFoundError(f"{engine}: no default bundle (models/default or $AIDETECT_MODEL)")
    bundle = load_bundle(path)
    length = min(MAX_LENGTH, bundle.metadata.max_length)
    encoder = TextEncoder(load_tokenizer(bundle.tokenizer_path), max_length=length, window_stride=length - 2)
    return bundle, encoder


def _aidetect_stages(bundle: Any, encoder: Any, texts: list[str], batch_size: int, clock: Clock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aidetect_infer.loading import intra_op_threads, load_parts
    from aidetect_infer.session import run_logits, validate_graph

    # As Detector.from_pretrained runs it: a batch-dependent graph one window per call, the calls spread over the
    # one-thread session from as many threads as the main session has.
    session, _, meta, parallel = load_parts(bundle.path, provider="cpu", threads=THREADS, variant=None)
    graph = validate_graph(session)
    size = 1 if meta.batch_dependent else batch_size
    callers = intra_op_threads(session) if parallel is not None else 1
    runner = parallel or session
    rows0 = [ids[: encoder.content_length] for ids in encoder.encode(texts[:batch_size])]
    run_logits(session, graph, *encoder.pad_batch(rows0[:size]))  # warm-up
    with clock.stage("whole call"):
        with clock.stage("tokenization"):
            ids = encoder.encode(texts)
        with clock.stage("windows, sort, padding"):
            rows = [row[: encoder.content_length] for row in ids]
            order = sorted(range(len(rows)), key=lambda k: -len(rows[k]))
            batches = [encoder.pad_batch([rows[k] for k in order[i : i + size]]) for i in range(0, len(rows), size)]
        with clock.stage("ONNX Runtime run"):
            with ThreadPoolExecutor(callers) as pool:
                logits = list(pool.map(lambda batch: run_logits(runner, graph, *batch), batches))
        with clock.stage("softmax, restore order"):
            np.concatenate(logits)


def ort_operator_profile(model_path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Share of ONNX Runtime node time per operator type over ``feeds`` (from its built-in profiler)."""
    import onnxruntime as ort

    from aidetect_infer.session import session_options

    options = session_options(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        for feed in feeds:
            session.run(["logits"], feed)
        trace = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return dict(sorted(((op, t / total) for op, t in per_op.items()), key=lambda kv: -kv[1]))


def _aidetect_feeds(bundle: Any, encoder: Any, texts: list[str], batch_size: int) -> list[dict[str, np.ndarray]]:
    size = 1 if bundle.metadata.batch_dependent else batch_size  # the calls the Detector makes
    rows = sorted((ids[: encoder.content_length] for ids in encoder.encode(texts)), key=len, reverse=True)
    feeds = []
    for i in range(0, len(rows), size):
        input_ids, mask = encoder.pad_batch(rows[i : i + size])
        feeds.append({"input_ids": input_ids, "attention_mask": mask})
    return feeds


def _pipeline_stages(models: Models, engine: str, texts: list[str], batch_size: int, clock: Clock) -> None:
    import torch
    from transformers import AutoTokenizer

    loaded = load_engine(models, engine, threads=THREADS)
    scorer = loaded.scorer(batch_size, MAX_LENGTH)
    scorer(texts[:batch_size])  # warm-up
    with clock.stage("whole call"):
        scorer(texts)
    tokenizer = AutoTokenizer.from_pretrained(models.minilm, model_input_names=["input_ids", "attention_mask"])
    model = _forward_of(models, engine)
    for i in range(0, len(texts), batch_size):
        with clock.stage("tokenization"):
            inputs = tokenizer(
                texts[i : i + batch_size], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
            )
        with clock.stage("model forward"), torch.no_grad():
            model(inputs)


def _forward_of(models: Models, engine: str) -> Callable[[Any], Any]:
    if engine.startswith("transformers-"):
        from transformers import AutoModelForSequenceClassification

        torch_model = AutoModelForSequenceClassification.from_pretrained(models.files(engine)).eval()
        return lambda inputs: torch_model(**inputs)
    ort_model = load_hf_model(models, engine, THREADS)
    return lambda inputs: ort_model(**inputs)


def _peer_stages(models: Models, engine: str, texts: list[str], batch_size: int, clock: Clock) -> None:
    """CTranslate2 and OpenVINO: their scorer is one call (tokenization included); no stages to split."""
    scorer = load_engine(models, engine, threads=THREADS).scorer(batch_size, MAX_LENGTH)
    scorer(texts[:batch_size])  # warm-up
    with clock.stage("whole call"), clock.stage("runtime call, tokenization included"):
        scorer(texts)


def profile(models: Models, engine: str, texts: list[str], batch_size: int, *, ops: bool = True) -> str:
    """Profile one engine on ``texts``; returns a Markdown section."""
    clock = Clock()
    aidetect = engine.startswith("aidetect-")
    peer = engine in PEERS
    if aidetect:
        bundle, encoder = _bundle_encoder(models, engine)  # verified once; load_parts verifies as the Detector does
        _aidetect_stages(bundle, encoder, texts, batch_size, clock)
    elif peer:
        _peer_stages(models, engine, texts, batch_size, clock)
    else:
        _pipeline_stages(models, engine, texts, batch_size, clock)
    whole = clock.wall.pop("whole call")
    whole_cpu = clock.cpu.pop("whole call")
    if not aidetect and not peer:
        clock.wall["pipeline overhead"] = max(0.0, whole - sum(clock.wall.values()))
        clock.cpu["pipeline overhead"] = max(0.0, whole_cpu - sum(clock.cpu.values()))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(models.tokenizer_file(engine)))
    tok.no_padding()
    tok.no_truncation()
    lengths = [min(len(e.ids), MAX_LENGTH) for e in tok.encode_batch(texts)]
    sort_chunk = max(DETECTOR_CHUNK, 16 * batch_size) if aidetect else None
    work = workload(models.architecture(engine), lengths, batch_size, sort_chunk=sort_chunk)
    waste = 1 - work["tokens"] / work["padded_tokens"]
    lines = [
        f"### {engine}: {len(texts)} texts, batch {batch_size}, {THREADS} threads",
        "",
        f"Whole call {whole:.2f} s wall, {whole_cpu:.2f} s CPU; {len(texts) / whole:.1f} texts/s; "
        f"padding {100 * waste:.1f}% of {work['padded_tokens']} computed tokens.",
        "",
        "| stage | wall s | share | CPU s |",
        "| --- | ---: | ---: | ---: |",
    ]
    total = sum(clock.wall.values()) or 1.0
    for name, seconds in clock.wall.items():
        lines.append(f"| {name} | {seconds:.3f} | {100 * seconds / total:.1f}% | {clock.cpu[name]:.3f} |")
    if aidetect and ops:
        shares = ort_operator_profile(bundle.model_path, _aidetect_feeds(bundle, encoder, texts, batch_size))
        lines += ["", "| ONNX Runtime operator | share of node time |", "| --- | ---: |"]
        lines += [f"| {op} | {100 * share:.1f}% |" for op, share in list(shares.items())[:10]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", action="append", choices=ENGINES, help="repeatable (default: aidetect-int8)")
    p.add_argument("--texts", type=int, default=128, help="how many corpus texts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--models", type=Path, help="a built model directory (default: build or reuse the cache)")
    p.add_argument("--no-ops", action="store_true", help="skip the ONNX Runtime operator profile")
    args = p.parse_args(argv)
    from benchmarks.corpus import load_corpus

    corpus = load_corpus(CACHE_DIR)
    if args.models is not None and not is_built(args.models):
        print(f"error: {args.models}: not a complete model build", file=sys.stderr)
        return 2
    models = Models.at(args.models) if args.models else build_models(corpus[:64])
    texts = corpus[: args.texts]
    for engine in args.engine or ["aidetect-int8"]:
        print(profile(models, engine, texts, args.batch_size, ops=not args.no_ops), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
