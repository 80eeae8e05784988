"""Admission control: a fixed concurrency (inferences at once), a bounded wait queue, draining.

A request that finds ``concurrency`` inferences running waits in a FIFO queue of at most ``max_queue`` entries;
one that finds the queue full, waits longer than ``queue_timeout_s``, or arrives while the
service is draining is refused at once with :class:`AdmissionRefused` (the HTTP layer answers 503 with
``Retry-After``). Work runs on a thread pool with exactly ``concurrency`` threads, so ONNX Runtime
(which releases the GIL) runs off the event loop and never oversubscribes the cores.

A place is released when its thread finishes, not when the request's coroutine does: a client
that disconnects mid-inference cannot free a place that is still computing.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


# Inference threads run this much nicer than the event loop (Linux: niceness is per thread),
# so refusals, probes and uploads are answered at once even when every core computes.
INFERENCE_NICENESS = 5


def _yield_to_event_loop() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INFERENCE_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


class AdmissionRefused(Exception):
    """The request cannot be admitted now; ``reason`` is ``queue_full``, ``queue_timeout``
    or ``draining``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Admission:
    """Concurrency + queue + draining flag for one app, used from its event loop only.

    Args:
        concurrency: inferences running at once (also the thread-pool size).
        max_queue: requests allowed to wait for one to finish.
        queue_timeout_s: the longest a request waits in the queue.
    """

    def __init__(self, concurrency: int, max_queue: int, queue_timeout_s: float) -> None:
        if concurrency < 1 or max_queue < 0:
            raise ValueError(
                f"need concurrency >= 1 and max_queue >= 0, got {concurrency}, {max_queue}"
            )
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.draining = False
        self.drain_started: float | None = None
        self._active = 0
        self._accepted = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def active(self) -> int:
        """Inferences running (threads computing, including ones whose client left)."""
        return self._active

    @property
    def queued(self) -> int:
        """Requests waiting for an inference to finish."""
        return len(self._waiters)

    @property
    def accepted_count(self) -> int:
        """Requests accepted and not yet answered (receiving, queued or running)."""
        return self._accepted

    @property
    def idle(self) -> bool:
        """No request accepted (reading its body, queued or running) and no thread busy."""
        return self._active == 0 and self._accepted == 0 and not self._waiters

    def start(self) -> None:
        """Create the thread pool (called from the app's lifespan)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="fcn-infer", initializer=_yield_to_event_loop
            )

    def stop(self) -> None:
        """Drop the thread pool without waiting for threads still running (exit must not hang)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def start_draining(self) -> None:
        """Refuse new work from now on; work already admitted or queued still runs."""
        if not self.draining:
            self.draining = True
            self.drain_started = time.monotonic()

    @contextmanager
    def accepted(self) -> Iterator[None]:
        """Accept a request (see :meth:`check`) for the block's duration.

        An accepted request is in flight: draining waits for it even while its body is still
        arriving, and it is not refused for draining later.
        """
        self.check()
        self._accepted += 1
        try:
            yield
        finally:
            self._accepted -= 1

    def check(self) -> None:
        """Refuse at once, before the body is read, when no place could be had now.

        Raises:
            AdmissionRefused: draining, or every inference and queue place is taken.
        """
        if self.draining:
            raise AdmissionRefused(
                "draining", "the service is shutting down; retry on another instance"
            )
        self._check_capacity()

    def _check_capacity(self) -> None:
        if self._active >= self.concurrency and len(self._waiters) >= self.max_queue:
            raise AdmissionRefused(
                "queue_full",
                f"the service is busy ({self.concurrency} inferences running, "
                f"{len(self._waiters)} waiting); retry shortly",
            )

    async def run(self, func: Callable[..., T], *args: object) -> T:
        """Wait for a place, then run ``func(*args)`` on the pool and return its result.

        Raises:
            AdmissionRefused: queue full, or no place within ``queue_timeout_s``.
        """
        await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            if self._executor is None:
                raise RuntimeError("admission thread pool is not started")
            future: Future[T] = self._executor.submit(func, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        # shield: a cancelled request (client gone) leaves the computation and its place alone.
        return await asyncio.shield(asyncio.wrap_future(future))

    async def _acquire(self) -> None:
        self._check_capacity()
        if self._active < self.concurrency and not self._waiters:
            self._active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # a place was handed to us as we gave up: pass it on
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise AdmissionRefused(
                    "queue_timeout",
                    f"no inference finished within {self.queue_timeout_s:g} s; retry later",
                ) from None
            raise

    def _release(self) -> None:
        # Hand the place straight to the oldest waiter, so nobody can jump the queue.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1
