"""Dynamic batching: texts of concurrent requests are queued and scored together, off the event loop.

A collector task takes up to ``max_batch_texts`` queued texts at a time, waiting at most ``max_wait_ms`` after
the oldest of them arrived for more to join, and hands each batch to a thread pool. While a worker is busy,
new texts accumulate, so batches grow with the load on their own. Every request gets its own results back,
in its own order, whatever batches its texts were spread over.

Only the standard library is used here; the scoring function is any ``list[str] -> Sequence[result]``
(normally :meth:`aidetect_infer.Detector.predict`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from aidetect_infer.serve.config import ServeConfig
from aidetect_infer.serve.errors import QueueFullError, ServiceClosedError

logger = logging.getLogger(__name__)

R = TypeVar("R")

BatchObserver = Callable[[int, float], None]
"""Called on the event loop after each batch with its number of texts and its inference time in seconds."""


@dataclass(eq=False, slots=True)
class _Job(Generic[R]):
    """One request's texts and the future its caller awaits."""

    future: asyncio.Future[list[R]]
    results: list[R | None]
    remaining: int


@dataclass(slots=True)
class _Entry(Generic[R]):
    """One queued text: its job, its index in that job, when it arrived."""

    job: _Job[R]
    index: int
    text: str
    arrived: float


class DynamicBatcher(Generic[R]):
    """Queues texts from concurrent callers and scores them in batches on worker threads.

    Create it, ``await start()`` on the running event loop, ``await submit(texts)`` from any number of
    tasks, and ``await close()`` to finish the queued work and stop.

    Args:
        predict: Scores a list of texts; returns one result per text, in order. Runs on a worker thread.
        config: Batch size, wait limit, queue capacity, workers, and whether to batch at all.
        on_batch: Optional observer called after each batch (see :data:`BatchObserver`).
    """

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[R]],
        config: ServeConfig,
        *,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self._config = config
        self._on_batch = on_batch
        self._queue: deque[_Entry[R]] = deque()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def queue_depth(self) -> int:
        """Texts waiting to be taken into a batch."""
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        """Whether :meth:`submit` takes new work (started and not closing)."""
        return self._collector is not None and not self._closing

    async def start(self) -> None:
        """Start the collector on the running event loop (call once)."""
        if self._collector is not None:
            raise ServiceClosedError("the batcher was already started")
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self._config.workers)
        self._executor = ThreadPoolExecutor(max_workers=self._config.workers, thread_name_prefix="aidetect-infer")
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="aidetect-batcher")

    async def submit(self, texts: list[str]) -> list[R]:
        """Score ``texts`` in the next batches and return their results in the same order.

        Args:
            texts: The texts of one request.

        Returns:
            One result per text, in input order (an empty list for no texts).

        Raises:
            QueueFullError: Queuing the texts would exceed ``max_queue_texts``.
            ServiceClosedError: The batcher is not started or is shutting down.
            Exception: Whatever ``predict`` raised for a batch holding these texts.
        """
        if not self.accepting or self._arrived is None:
            raise ServiceClosedError("the service is shutting down and takes no new requests")
        if not texts:
            return []
        capacity = self._config.max_queue_texts
        if len(self._queue) + len(texts) > capacity:
            raise QueueFullError(
                f"the queue is full ({len(self._queue)} of {capacity} texts waiting); retry later",
                limit=capacity,
                retry_after_s=self._config.retry_after_s,
            )
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        job: _Job[R] = _Job(future=future, results=[None] * len(texts), remaining=len(texts))
        now = time.monotonic()
        self._queue.extend(_Entry(job, index, text, now) for index, text in enumerate(texts))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Stop taking work, score everything already queued, wait for running batches, stop the workers."""
        self._closing = True
        if self._collector is None:
            return
        assert self._arrived is not None  # set by start(), together with the collector
        self._arrived.set()
        await self._collector
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        logger.info("batcher stopped")

    async def _collect(self) -> None:
        assert self._arrived is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            if self._config.batching:
                await self._wait_for_more()
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_for_more(self) -> None:
        """Wait until a full batch is queued or the oldest text has waited ``max_wait_ms``."""
        assert self._arrived is not None
        limit, max_wait = self._config.max_batch_texts, self._config.max_wait_s
        while len(self._queue) < limit and not self._closing:
            remaining = self._queue[0].arrived + max_wait - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Entry[R]]:
        """The next batch: up to ``max_batch_texts`` texts, or one whole request when batching is off.

        Texts of requests that already finished (their caller went away, or an earlier batch failed) are
        dropped here.
        """
        batch: list[_Entry[R]] = []
        queue = self._queue
        if self._config.batching:
            limit = self._config.max_batch_texts
            while queue and len(batch) < limit:
                entry = queue.popleft()
                if not entry.job.future.done():
                    batch.append(entry)
            return batch
        first = queue.popleft()
        batch.append(first)
        while queue and queue[0].job is first.job:
            batch.append(queue.popleft())
        return batch if not first.job.future.done() else []

    async def _run(self, batch: list[_Entry[R]]) -> None:
        assert self._slots is not None
        texts = [entry.text for entry in batch]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, texts)
            if len(results) != len(batch):
                raise RuntimeError(f"predict returned {len(results)} results for {len(batch)} texts")
        except Exception as exc:
            logger.exception("a batch of %d texts failed", len(batch))
            for entry in batch:
                if not entry.job.future.done():
                    entry.job.future.set_exception(exc)
            return
        finally:
            self._slots.release()
        elapsed = time.perf_counter() - started
        for entry, result in zip(batch, results, strict=True):
            job = entry.job
            job.results[entry.index] = result
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(cast(list[R], job.results))  # every slot is filled now
        if self._on_batch is not None:
            self._on_batch(len(batch), elapsed)
