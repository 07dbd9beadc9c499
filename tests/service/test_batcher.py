"""The dynamic batcher on its own: a recording scorer instead of a model, asyncio without a server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aidetect_infer.errors import InvalidValueError
from aidetect_infer.serve import DynamicBatcher, QueueFullError, ServeConfig, ServiceClosedError


class Recorder:
    """A scorer that maps each text to ``f"{text}!"`` and records the batches it was given and on which thread."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot score {self.fail_on!r}")
        return [f"{t}!" for t in texts]


def run(
    scorer: Callable[[list[str]], list[str]],
    config: ServeConfig,
    body: Callable[[DynamicBatcher[str]], Coroutine[Any, Any, Any]],
) -> Any:
    """Start a batcher, run ``body`` with it, close it; return what ``body`` returned."""

    async def main() -> Any:
        batcher: DynamicBatcher[str] = DynamicBatcher(scorer, config)
        await batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_concurrent_requests_are_merged_and_answered_in_order():
    scorer = Recorder()
    requests = [[f"r{r}t{k}" for k in range(r % 3 + 1)] for r in range(10)]  # 19 texts, 1 to 3 per request

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(texts) for texts in requests))

    answers = run(scorer, ServeConfig(max_batch_texts=8, max_wait_ms=200), body)
    assert answers == [[f"{t}!" for t in texts] for texts in requests]
    assert [len(b) for b in scorer.batches] == [8, 8, 3]  # all queued before the first batch was cut
    assert sorted(t for b in scorer.batches for t in b) == sorted(t for texts in requests for t in texts)
    assert threading.get_ident() not in scorer.threads  # inference ran off the event loop's thread


def test_a_request_larger_than_a_batch_is_split_and_reassembled():
    scorer = Recorder()
    texts = [f"t{k}" for k in range(11)]

    async def body(batcher):
        return await batcher.submit(texts)

    assert run(scorer, ServeConfig(max_batch_texts=4, max_wait_ms=0), body) == [f"{t}!" for t in texts]
    assert [len(b) for b in scorer.batches] == [4, 4, 3]


def test_the_wait_limit_bounds_how_long_a_lone_text_waits():
    scorer = Recorder()

    async def body(batcher):
        started = time.perf_counter()
        answer = await batcher.submit(["alone"])
        return answer, time.perf_counter() - started

    answer, elapsed = run(scorer, ServeConfig(max_batch_texts=32, max_wait_ms=150), body)
    assert answer == ["alone!"]
    assert 0.14 <= elapsed < 2.0  # waited for company up to the limit, then went alone
    assert scorer.batches == [["alone"]]


def test_texts_arriving_while_the_worker_is_busy_form_the_next_batch():
    scorer = Recorder(delay=0.2)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # the first batch is running now
        rest = [asyncio.ensure_future(batcher.submit([f"later{k}"])) for k in range(5)]
        return await first, await asyncio.gather(*rest)

    first, rest = run(scorer, ServeConfig(max_batch_texts=32, max_wait_ms=0), body)
    assert first == ["first!"]
    assert rest == [[f"later{k}!"] for k in range(5)]
    assert scorer.batches == [["first"], [f"later{k}" for k in range(5)]]


def test_without_batching_each_request_is_scored_alone():
    scorer = Recorder()
    requests = [["a", "b"], ["c"], ["d", "e", "f"]]

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(texts) for texts in requests))

    answers = run(scorer, ServeConfig(batching=False, max_wait_ms=200), body)
    assert answers == [[f"{t}!" for t in texts] for texts in requests]
    assert scorer.batches == requests


def test_a_full_queue_refuses_with_the_limit_and_keeps_what_it_holds():
    scorer = Recorder()
    config = ServeConfig(max_batch_texts=64, max_wait_ms=300, max_queue_texts=4, max_texts_per_request=4)

    async def body(batcher):
        held = asyncio.ensure_future(batcher.submit(["a", "b", "c"]))
        await asyncio.sleep(0.02)
        assert batcher.queue_depth == 3
        with pytest.raises(QueueFullError) as refused:
            await batcher.submit(["d", "e"])
        fits = await batcher.submit(["d"])  # exactly fills the queue
        return refused.value, await held, fits

    refused, held, fits = run(scorer, config, body)
    assert refused.limit == 4 and refused.retry_after_s == config.retry_after_s
    assert "4 texts" in str(refused)
    assert held == ["a!", "b!", "c!"] and fits == ["d!"]


def test_a_failing_batch_fails_its_requests_only():
    scorer = Recorder(fail_on="bad")

    async def body(batcher):
        bad = await asyncio.gather(batcher.submit(["x", "bad"]), return_exceptions=True)
        good = await batcher.submit(["y"])
        return bad, good

    bad, good = run(scorer, ServeConfig(max_wait_ms=0), body)
    assert isinstance(bad[0], RuntimeError) and "bad" in str(bad[0])
    assert good == ["y!"]


def test_close_scores_what_is_queued_then_refuses_new_work():
    scorer = Recorder()

    async def main():
        batcher: DynamicBatcher[str] = DynamicBatcher(scorer, ServeConfig(max_wait_ms=10_000))
        await batcher.start()
        pending = asyncio.ensure_future(batcher.submit(["queued"]))
        await asyncio.sleep(0.02)
        await batcher.close()  # does not wait out the 10 s limit
        with pytest.raises(ServiceClosedError):
            await batcher.submit(["late"])
        return await pending

    started = time.perf_counter()
    assert asyncio.run(main()) == ["queued!"]
    assert time.perf_counter() - started < 5


def test_texts_of_a_caller_that_went_away_are_not_scored():
    scorer = Recorder(delay=0.1)

    async def body(batcher):
        busy = asyncio.ensure_future(batcher.submit(["busy"]))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        kept = await batcher.submit(["kept"])
        return await busy, kept

    busy, kept = run(scorer, ServeConfig(max_wait_ms=0), body)
    assert busy == ["busy!"] and kept == ["kept!"]
    assert "gone" not in [t for b in scorer.batches for t in b]


def test_submit_before_start_and_empty_requests():
    batcher: DynamicBatcher[str] = DynamicBatcher(Recorder(), ServeConfig())
    with pytest.raises(ServiceClosedError):
        asyncio.run(batcher.submit(["x"]))
    scorer = Recorder()
    assert run(scorer, ServeConfig(), lambda b: b.submit([])) == []
    assert scorer.batches == []


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=12),
    max_batch=st.integers(min_value=1, max_value=10),
    workers=st.integers(min_value=1, max_value=3),
    batching=st.booleans(),
)
def test_every_caller_gets_its_own_answers_in_order(sizes, max_batch, workers, batching):
    scorer = Recorder()
    requests = [[f"r{r}t{k}" for k in range(n)] for r, n in enumerate(sizes)]
    config = ServeConfig(max_batch_texts=max_batch, max_wait_ms=1, workers=workers, batching=batching)

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(texts) for texts in requests))

    assert run(scorer, config, body) == [[f"{t}!" for t in texts] for texts in requests]
    scored = [t for b in scorer.batches for t in b]
    assert sorted(scored) == sorted(t for texts in requests for t in texts)  # each text scored exactly once
    if batching:
        assert all(1 <= len(b) <= max_batch for b in scorer.batches)
    else:
        assert sorted(scorer.batches) == sorted(texts for texts in requests if texts)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_texts": 0},
        {"max_wait_ms": -1},
        {"max_wait_ms": float("nan")},
        {"workers": 0},
        {"max_body_bytes": True},
        {"max_queue_texts": 8, "max_texts_per_request": 9},
        {"batching": "yes"},
    ],
)
def test_config_refuses_values_out_of_range(kwargs):
    with pytest.raises(InvalidValueError):
        ServeConfig(**kwargs)
