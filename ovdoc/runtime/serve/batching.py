"""Micro-batching: concurrent requests to one bundle become one model batch, scored in a worker thread.

A single worker per bundle takes everything queued (whole requests, up to `max_batch` images), waits at
most `max_wait_s` for more while the batch is short, and scores it with one `features` call in its own
thread, so the event loop never blocks. Requests that arrive while a batch is being scored queue up and
form the next batch: under load batches fill by themselves, alone a request waits only `max_wait_s`.
A queue past `max_queue` images answers 503 at once rather than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ovdoc.runtime.serve.inputs import BadInput


@dataclass
class Job:
    images: list[np.ndarray]
    want_map: bool
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """One bundle's queue and worker; `score` is awaited by request handlers on the event loop."""

    def __init__(self, score: Callable[[list[np.ndarray], list[bool]], list[dict]], max_batch: int,
                 max_wait_s: float = 0.005, max_queue: int = 256, name: str = "bundle",
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.run = score
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.max_queue = max(1, int(max_queue))
        self.on_batch = on_batch
        self.queued = 0  # images waiting (not yet in a batch)
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"ovdoc-score-{name}")

    def start(self) -> None:
        """Call on the event loop that will await `score`."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def score(self, images: list[np.ndarray], want_map: bool = False) -> list[dict]:
        if self.queued + len(images) > self.max_queue:
            raise BadInput(f"busy: {self.queued} images queued; retry shortly", status=503)
        job = Job(images, want_map, asyncio.get_running_loop().create_future())
        self.queued += len(images)
        self._queue.put_nowait(job)
        return await job.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            n = len(jobs[0].images)
            deadline = loop.time() + self.max_wait_s
            while n < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                jobs.append(job)
                n += len(job.images)
            self.queued -= n
            await self._dispatch(loop, jobs)

    async def _dispatch(self, loop, jobs: list[Job]) -> None:
        images = [im for job in jobs for im in job.images]
        flags = [job.want_map for job in jobs for _ in job.images]
        if self.on_batch:
            self.on_batch(len(images))
        try:
            results = await loop.run_in_executor(self._executor, self.run, images, flags)
        except Exception as exc:  # the model failed on this batch: every request in it learns why
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        at = 0
        for job in jobs:
            if not job.future.done():  # a client that went away cancelled its future
                job.future.set_result(results[at : at + len(job.images)])
            at += len(job.images)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
