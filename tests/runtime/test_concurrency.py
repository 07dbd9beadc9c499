"""One Detector shared by many threads: the same answers as single-threaded calls, and no deadlock."""

from __future__ import annotations

import random
import threading
import time

import pytest

from aidetect_infer import Detector, Prediction

THREADS = 8
CALLS = 200
DEADLINE_S = 600.0


def _inputs(sample_texts: list[str], seed: int) -> list[list[str]]:
    """``CALLS`` inputs for one thread: one to three texts each, now and then a long one or an odd one."""
    rng = random.Random(seed)
    odd = ["", "   ", "\x00\u200d\ud800", "日本語のテキスト", "a" * 3_000]
    long_text = " ".join(sample_texts[:3])  # longer than one window
    calls = []
    for call in range(CALLS):
        texts = [rng.choice(sample_texts)[: rng.randint(1, 300)] for _ in range(rng.randint(1, 3))]
        if call % 50 == seed:
            texts.append(long_text)
        if call % 10 == 3:
            texts.append(rng.choice(odd))
        calls.append(texts)
    return calls


def _run_threads(target, count: int) -> tuple[list[threading.Thread], float]:
    threads = [threading.Thread(target=target, args=(k,), daemon=True) for k in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()], time.perf_counter() - start


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["intra-op 1", "intra-op 2"])
def test_eight_threads_agree_exactly_with_single_threaded_calls(tiny_bundle, sample_texts, threads, record_property):
    detector = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=threads, batch_size=4)
    inputs = [_inputs(sample_texts, seed) for seed in range(THREADS)]
    start = time.perf_counter()
    expected = [[detector.predict(texts) for texts in calls] for calls in inputs]
    alone_s = time.perf_counter() - start
    results: list[list[list[Prediction] | None]] = [[None] * CALLS for _ in range(THREADS)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(k: int) -> None:
        try:
            barrier.wait(timeout=60)
            for call, texts in enumerate(inputs[k]):
                results[k][call] = detector.predict(texts)
        except BaseException as exc:  # reported below, with the thread's other failures
            failures.append(exc)

    stuck, together_s = _run_threads(work, THREADS)
    assert not stuck, f"{len(stuck)} threads still running after {DEADLINE_S:.0f} s: deadlock or stall"
    assert not failures, failures[:3]
    mismatches = [(k, c) for k in range(THREADS) for c in range(CALLS) if results[k][c] != expected[k][c]]
    assert not mismatches, f"{len(mismatches)} calls differ from single-threaded ones, first {mismatches[:5]}"
    figures = {
        "threads": THREADS,
        "calls": THREADS * CALLS,
        "alone_s": round(alone_s, 2),
        "8_threads_s": round(together_s, 2),
    }
    record_property("concurrency", figures)
    print(f"\n{figures}")
