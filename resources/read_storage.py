"""Storage access under the SLA: every call a read makes to a store or the event loop runs
as a future that the read waits for only as long as its phase has left
(`SLATracker.timeout_s`); when that runs out the work is cancelled or abandoned and
`SeamlessSLAExceeded(phase)` is raised for the domain policy to turn into an error or a
partial result (`read_domains.py`). The lowest layer of the read path: it knows neither
the stores nor the domains.

Abandoned storage work cannot pile up: calls run on at most `workers` daemon threads of
the reader (daemon, so a call hung on a dead server never holds up interpreter exit), and
no new call starts while `max_abandoned` calls abandoned at their budget are still
running; a read waits for one of them to finish within its own budget, then breaches it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from seamless_assets.core.sla import SLATracker
from seamless_assets.errors import SeamlessSLAExceeded

T = TypeVar("T")
_Work = tuple[Future[Any], Callable[[], Any]]


class StorageExecutor:
    """At most `workers` daemon threads (started as needed, then reused) for storage calls,
    and a count of the calls still running after their caller stopped waiting."""

    def __init__(self, workers: int, max_abandoned: int) -> None:
        if workers < 1 or not 1 <= max_abandoned <= workers:
            raise ValueError(f"need 1 <= max_abandoned ({max_abandoned}) <= workers ({workers})")
        self.workers, self.max_abandoned = workers, max_abandoned
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._state = threading.Condition()
        self._threads = self._idle = self._pending = self._abandoned = 0

    @property
    def abandoned(self) -> int:
        """Calls still running whose caller gave up on them."""
        with self._state:
            return self._abandoned

    @property
    def threads(self) -> int:
        with self._state:
            return self._threads

    def admit(self, timeout_s: float | None) -> bool:
        """Wait (at most `timeout_s`; None: as long as it takes) until fewer than
        `max_abandoned` abandoned calls run; False if they still do."""
        with self._state:
            return self._state.wait_for(lambda: self._abandoned < self.max_abandoned, timeout_s)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._state:
            self._pending += 1
            if self._pending > self._idle and self._threads < self.workers:
                self._threads += 1
                threading.Thread(target=self._work, name="seamless-storage", daemon=True).start()
            self._queue.put((future, fn))
        return future

    def abandon(self, future: Future[Any]) -> None:
        """The caller stopped waiting: a queued call never runs; a running one is counted
        as abandoned until it returns."""
        if future.cancel():
            return
        with self._state:
            self._abandoned += 1
        future.add_done_callback(self._released)

    def shutdown(self, wait_s: float = 0.0) -> bool:
        """Idle workers exit; a worker stuck in an abandoned call exits after it. Waits up
        to `wait_s` for abandoned calls to return (the stores are closed next); True if
        none still runs."""
        with self._state:
            settled = self._state.wait_for(lambda: self._abandoned == 0, wait_s)
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)
        return settled

    def _released(self, _future: Future[Any]) -> None:
        with self._state:
            self._abandoned -= 1
            self._state.notify_all()

    def _work(self) -> None:
        while True:
            with self._state:
                self._idle += 1
            item = self._queue.get()
            with self._state:
                self._idle -= 1
                if item is None:
                    self._threads -= 1
                    return
                self._pending -= 1
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who may be gone
                future.set_exception(exc)


class BoundedCalls:
    """The calls of one read, each bounded by what its SLA phase has left."""

    def __init__(
        self, tracker: SLATracker, storage: StorageExecutor, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.tracker, self.storage, self.loop = tracker, storage, loop

    def store(self, fn: Callable[[], T]) -> T:
        """Run a storage call (`storage_wait`); abandon it when the budget runs out."""
        started = time.perf_counter()
        try:
            if not self.storage.admit(self.tracker.timeout_s("storage_wait")):
                raise self.breach(
                    "storage_wait",
                    started,
                    f"{self.storage.abandoned} storage calls abandoned at their budget are "
                    "still running (the store hangs); no new call was started",
                )
            future = self.storage.submit(fn)
            try:
                return future.result(timeout=self.tracker.timeout_s("storage_wait"))
            except FutureTimeout:
                self.storage.abandon(future)
                raise self.breach("storage_wait", started, "storage call abandoned") from None
        finally:
            self.tracker.record("storage_wait", (time.perf_counter() - started) * 1000)

    def on_loop(self, phase: str, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the reader's event loop under `phase`; cancel it when the
        budget runs out."""
        started = time.perf_counter()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=self.tracker.timeout_s(phase))
        except FutureTimeout:
            future.cancel()
            raise self.breach(phase, started, f"{phase} work cancelled") from None
        finally:
            self.tracker.record(phase, (time.perf_counter() - started) * 1000)

    def breach(self, phase: str, started: float, detail: str) -> SeamlessSLAExceeded:
        """The error of a wait in `phase` that ran out (begun at perf_counter `started`),
        named after the limit that bound it; marked on the tracker."""
        limit = self.tracker.binding(phase)
        self.tracker.mark_exceeded(limit)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return SeamlessSLAExceeded(limit, self.tracker.budget.of(limit), elapsed_ms, detail)
