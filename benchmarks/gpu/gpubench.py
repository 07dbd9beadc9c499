"""The GPU benchmark's parts: bundles, texts, the engines compared, the parity check and the report.

Used by ``driver.py`` (parity, report) and ``bench_gpu.py`` (the pytest-benchmark cases). Every part also
runs on the CPU (``device="cpu"``) so that the code paths can be tried on a machine without a GPU.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.data import REPO_DATA_DIR

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "default"
DEFAULT_TEXTS = REPO_DATA_DIR / "detectgpt_family.jsonl.gz"
CONFIG_ENV = "AIDETECT_GPU_BENCH"
BATCHES = (1, 16, 64, 256)
LATENCY_TOKENS = 128
PARITY_TEXTS = 256
TARGET_BATCH, TARGET_RATIO = 64, 2.0
# Maximum absolute P(AI) difference against the fp32 model on the CPU.
PARITY_TOLERANCE = {"fp32": 2e-3, "fp16": 1e-2}

Engine = Callable[[Sequence[str]], NDArray[np.floating[Any]]]


@dataclass(frozen=True)
class Config:
    """What the benchmark cases need, written to a JSON file whose path is in ``$AIDETECT_GPU_BENCH``.

    Attributes:
        device: ``"cuda"`` or ``"cpu"`` (a dry run of the code paths).
        fp32: The fp32 bundle directory.
        fp16: The fp16 bundle directory.
        texts: The texts to score (at least ``max(batches)``).
        latency_text: A text of exactly :data:`LATENCY_TOKENS` tokens.
        batches: Batch sizes of the throughput cases.
        rounds: Timed rounds per case.
        checkpoint: A Hugging Face checkpoint for the PyTorch baseline; ``None`` builds the bundle's
            architecture with random weights (the same speed; its scores are not compared).
        threads: CPU threads of every engine (ONNX Runtime intra-op, torch); ``None`` leaves the defaults.
    """

    device: str
    fp32: str
    fp16: str
    texts: list[str]
    latency_text: str
    batches: list[int] = field(default_factory=lambda: list(BATCHES))
    rounds: int = 30
    checkpoint: str | None = None
    threads: int | None = None

    def engines(self) -> list[str]:
        """The engine names compared, ours first."""
        torch_dtype = "fp16" if self.device == "cuda" else "fp32"  # fp16 matmuls on a CPU measure nothing useful
        return ["aidetect-fp16", "aidetect-fp32", f"transformers-pytorch-{torch_dtype}"]

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Config:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def prepare_cuda() -> None:
    """Load the CUDA and cuDNN libraries of NVIDIA's pip packages, if onnxruntime can (onnxruntime-gpu >= 1.21)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()


def fp16_variant(fp32_bundle: Path, out: Path) -> Path:
    """Write an fp16 bundle converted from an fp32 bundle (:func:`export.onnx.build.derive_fp16`).

    Args:
        fp32_bundle: A bundle of precision ``fp32``.
        out: The new bundle directory (replaced if it exists).

    Returns:
        ``out``.
    """
    from export.onnx.build import derive_fp16

    return derive_fp16(fp32_bundle, out)


def find_variants(model: Path, work: Path) -> tuple[Path, Path]:
    """The fp32 and fp16 bundles of ``model`` (a bundle or a parent of variants); fp16 is made when absent."""
    from aidetect_infer.bundle import is_bundle_dir, read_metadata

    fp32 = model if is_bundle_dir(model) else model / "fp32"
    if read_metadata(fp32).precision != "fp32":
        raise SystemExit(f"{fp32}: not an fp32 bundle; pass a parent of variants or an fp32 bundle")
    fp16 = model / "fp16"
    if not is_bundle_dir(fp16):
        fp16 = fp16_variant(fp32, work / "fp16")
    return fp32, fp16


def load_texts(path: Path | None, n: int, seed: int = 0) -> list[str]:
    """``n`` texts from a JSONL(.gz) file with a ``text`` field, spread over it; random words if it is absent."""
    rng = random.Random(seed)
    if path is not None and path.is_file():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f if line.strip()]
        if len(texts) >= n:
            return [texts[i] for i in sorted(rng.sample(range(len(texts)), n))]
    words = "the of and to in that was for with as on by at from this which model data study city report".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 400))) for _ in range(n)]


def text_of_tokens(tokenizer_file: Path, texts: Sequence[str], tokens: int) -> str:
    """A text that the bundle's tokenizer frames as exactly ``tokens`` tokens (special tokens included)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = len(tokenizer.encode("").ids)
    for text in texts:
        encoding = tokenizer.encode(text)
        if len(encoding.ids) <= tokens:
            continue
        content = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
        cut = text[: encoding.offsets[content[tokens - specials - 1]][1]]
        if len(tokenizer.encode(cut).ids) == tokens:
            return cut
    raise SystemExit(f"no text of exactly {tokens} tokens could be cut from the {len(texts)} texts")


def aidetect_engine(bundle: str, device: str, batch_size: int, threads: int | None = None) -> Engine:
    """This library: the bundle on CUDA (IOBinding) or the CPU, long texts truncated like the baseline's."""
    from aidetect_infer import Detector

    provider = "cuda" if device == "cuda" else "cpu"
    detector = Detector.from_pretrained(
        bundle, provider=provider, threads=threads, batch_size=batch_size, truncation=True
    )
    return detector.predict_proba


def _torch_model(bundle: Path, checkpoint: str | None) -> Any:
    from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig

    if checkpoint is not None:
        return AutoModelForSequenceClassification.from_pretrained(checkpoint)
    arch = json.loads((bundle / "aidetect.json").read_text(encoding="utf-8"))["architecture"]
    hidden, layers = int(arch["hidden_size"]), int(arch["layers"])
    heads = int(arch.get("heads") or max(1, hidden // 64))
    ffn = int(arch.get("ffn_size") or 4 * hidden)
    common = {"vocab_size": int(arch["vocab_size"]), "max_position_embeddings": 512, "num_labels": 2}
    if arch["model_type"] == "distilbert":
        config = DistilBertConfig(n_layers=layers, dim=hidden, n_heads=heads, hidden_dim=ffn, **common)
    else:
        config = BertConfig(
            num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn, **common
        )
    return AutoModelForSequenceClassification.from_config(config)


def torch_engine(
    bundle: str, device: str, batch_size: int, checkpoint: str | None = None, threads: int | None = None
) -> Engine:
    """The baseline a user would write: transformers' fast tokenizer and the model in PyTorch, fp16 on CUDA."""
    import torch
    from transformers import PreTrainedTokenizerFast

    if threads is not None:
        torch.set_num_threads(threads)

    path = Path(bundle)
    max_length = int(json.loads((path / "aidetect.json").read_text(encoding="utf-8"))["max_length"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path / "tokenizer.json"),
        model_max_length=max_length,
        **{f"{k}_token": f"[{k.upper()}]" for k in ("pad", "unk", "cls", "sep", "mask")},
    )
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = _torch_model(path, checkpoint).eval().to(device=device, dtype=dtype)

    def run(texts: Sequence[str]) -> NDArray[np.floating[Any]]:
        out = []
        with torch.inference_mode():
            for begin in range(0, len(texts), batch_size):
                batch = tokenizer(
                    list(texts[begin : begin + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                    return_token_type_ids=False,
                ).to(device)
                logits = model(**batch).logits
                out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    return run


def make_engine(config: Config, name: str, batch_size: int) -> Engine:
    """The engine ``name`` (one of :meth:`Config.engines`) at ``batch_size``."""
    if name.startswith("aidetect-"):
        bundle = config.fp16 if name.endswith("fp16") else config.fp32
        return aidetect_engine(bundle, config.device, batch_size, config.threads)
    return torch_engine(config.fp32, config.device, batch_size, config.checkpoint, config.threads)


def parity(config: Config, n: int = PARITY_TEXTS) -> dict[str, Any]:
    """Both bundles on ``config.device`` against the fp32 bundle on the CPU, on ``n`` texts.

    Returns:
        Per variant: providers, whether IOBinding ran, max and mean abs P(AI) difference, decision agreement,
        the tolerance and ``passed``; and ``passed`` overall.
    """
    from aidetect_infer import Detector

    texts = config.texts[:n]
    reference = Detector.from_pretrained(
        config.fp32, provider="cpu", threads=config.threads, batch_size=64, truncation=True
    )
    expected = reference.predict_proba(texts).astype(np.float64)
    threshold = reference.threshold
    result: dict[str, Any] = {"texts": len(texts), "device": config.device, "variants": {}}
    for variant, bundle in (("fp32", config.fp32), ("fp16", config.fp16)):
        provider = "cuda" if config.device == "cuda" else "cpu"
        detector = Detector.from_pretrained(
            bundle, provider=provider, threads=config.threads, batch_size=64, truncation=True
        )
        got = detector.predict_proba(texts).astype(np.float64)
        diff = np.abs(got - expected)
        result["variants"][variant] = {
            "providers": detector.providers,
            "io_binding": bool(detector._graph.io_binding),
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "decision_agreement": float(np.mean((got >= threshold) == (expected >= threshold))),
            "tolerance": PARITY_TOLERANCE[variant],
            "passed": bool(diff.max() < PARITY_TOLERANCE[variant]),
        }
    result["passed"] = all(v["passed"] for v in result["variants"].values())
    return result


def _percentile(data: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(data), q)) if data else float("nan")


def summarize(benchmark_json: dict[str, Any]) -> dict[str, Any]:
    """Throughput (texts/s per engine and batch) and latency (ms) from pytest-benchmark's JSON."""
    throughput: dict[str, dict[str, float]] = {}
    latency: dict[str, dict[str, float]] = {}
    for bench in benchmark_json.get("benchmarks", []):
        info, stats = bench["extra_info"], bench["stats"]
        if info["kind"] == "throughput":
            throughput.setdefault(info["engine"], {})[str(info["batch"])] = info["texts"] / stats["median"]
        else:
            data = stats.get("data") or []
            latency[info["engine"]] = {
                "median_ms": 1e3 * stats["median"],
                "mean_ms": 1e3 * stats["mean"],
                "p95_ms": 1e3 * _percentile(data, 95),
                "tokens": info["tokens"],
            }
    return {"throughput": throughput, "latency": latency}


def render_report(env: dict[str, Any], parity_result: dict[str, Any], summary: dict[str, Any]) -> str:
    """The Markdown report: the card, parity, texts/s per batch, latency, and the ratio to PyTorch."""
    engines = list(summary["throughput"]) or list(summary["latency"])
    batches = sorted({int(b) for per in summary["throughput"].values() for b in per})
    baseline = next((e for e in engines if e.startswith("transformers-")), None)
    lines = [f"# GPU benchmark: {env.get('device_name', 'unknown device')}", ""]
    if env.get("device") != "cuda":
        lines += ["**Dry run on the CPU: these are not GPU figures.**", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += ["", f"## Parity against fp32 on the CPU ({parity_result['texts']} texts)", ""]
    lines += ["| variant | providers | IOBinding | max abs diff | mean abs diff | agreement | tolerance | ok |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, v in parity_result["variants"].items():
        lines.append(
            f"| {name} | {', '.join(v['providers'])} | {v['io_binding']} | {v['max_abs_diff']:.2e} | "
            f"{v['mean_abs_diff']:.2e} | {v['decision_agreement']:.4f} | {v['tolerance']:.0e} | "
            f"{'yes' if v['passed'] else 'NO'} |"
        )
    lines += ["", "## Throughput (texts/s, median of the rounds; texts truncated to the bundle's max_length)", ""]
    lines += ["| engine | " + " | ".join(f"batch {b}" for b in batches) + " |"]
    lines += ["| --- |" + " --- |" * len(batches)]
    for engine in engines:
        per = summary["throughput"].get(engine, {})
        lines.append(f"| {engine} | " + " | ".join(f"{per.get(str(b), float('nan')):,.1f}" for b in batches) + " |")
    if baseline is not None:
        for engine in engines:
            if engine == baseline:
                continue
            ratios = [_ratio(summary, engine, baseline, b) for b in batches]
            lines.append(f"| {engine} / {baseline} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    lines += ["", f"## Latency (one text of {LATENCY_TOKENS} tokens, batch 1)", ""]
    lines += ["| engine | median ms | mean ms | p95 ms |", "| --- | --- | --- | --- |"]
    for engine, v in summary["latency"].items():
        lines.append(f"| {engine} | {v['median_ms']:.2f} | {v['mean_ms']:.2f} | {v['p95_ms']:.2f} |")
    if baseline is not None and TARGET_BATCH in batches:
        ratio = _ratio(summary, "aidetect-fp16", baseline, TARGET_BATCH)
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        lines += ["", f"Target aidetect-fp16 >= {TARGET_RATIO:g}x {baseline} at batch {TARGET_BATCH}: "]
        lines[-1] += f"{ratio:.2f}x, {verdict}."
    return "\n".join(lines) + "\n"


def _ratio(summary: dict[str, Any], engine: str, baseline: str, batch: int) -> float:
    ours = summary["throughput"].get(engine, {}).get(str(batch), float("nan"))
    theirs = summary["throughput"].get(baseline, {}).get(str(batch), float("nan"))
    return ours / theirs if theirs else float("nan")
