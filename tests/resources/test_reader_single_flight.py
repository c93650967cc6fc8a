"""Single flight: concurrent reads of the same missing window make one exchange fetch, in
one process (a lock per node and window) and across processes (a Redis lease)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from resources.reader import ComputeContext, CoverageReport, SeamlessReader
from sandbox import SandboxExchange
from seamless_assets.core.frame import Range
from tests.assets.conftest import open_hot
from tests.services import REDIS_ADDR, REDIS_DSN, require_service

from .test_reader_support import (
    DAY,
    NODE_ID,
    T0,
    endpoint_requests,
    frozen_sandbox,
    project,
    reader_for,
)

T = TypeVar("T")
READERS = 20
#: One day of 1m bars is 1440; binance serves 1000 per call, so one fill is 2 requests.
KLINES_PER_DAY_FILL = 2


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox(latency_ms=50) as exchange:  # wide enough for every thread to pile up
        yield exchange


def all_at_once(count: int, call: Callable[[int], T]) -> list[T]:
    """`call(i)` on `count` threads released together."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait()
        return call(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_concurrent_ensure_coverage_calls_make_one_fetch(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox)
    window = (T0 + 4 * DAY + 3600, T0 + 4 * DAY + 3 * 3600)
    with reader_for(config) as reader:
        reports = all_at_once(READERS, lambda _: reader.ensure_coverage(NODE_ID, *window))
        assert endpoint_requests(sandbox, "klines") == KLINES_PER_DAY_FILL
        assert endpoint_requests(sandbox, "exchangeInfo") == 1  # one client: one fill
        assert sum(r.led for r in reports) == 1
        assert all(r.complete and r.missing_before for r in reports)
        led = next(r for r in reports if r.led)
        assert led.fetched == (Range(T0 + 4 * DAY, T0 + 5 * DAY),)

        again = reader.ensure_coverage(NODE_ID, *window)  # covered now: nothing to do
        assert not again.led and not again.missing_before
    assert endpoint_requests(sandbox, "klines") == KLINES_PER_DAY_FILL


def test_twenty_concurrent_live_reads_of_an_uncovered_window_make_one_fetch(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config = project(tmp_path, sandbox)
    window = (T0 + 5 * DAY + 3600, T0 + 5 * DAY + 2 * 3600)
    context = ComputeContext("w1", "live", strategy="AUTO_BACKFILL")
    with reader_for(config) as reader:
        results = all_at_once(READERS, lambda _: reader.fetch(NODE_ID, *window, context))
    assert endpoint_requests(sandbox, "klines") == KLINES_PER_DAY_FILL
    assert endpoint_requests(sandbox, "exchangeInfo") == 1
    fingerprints = {meta.dataset_fingerprint for _, meta in results}
    assert len(fingerprints) == 1
    assert all(len(frame) == 60 and not meta.partial for frame, meta in results)


def test_a_redis_lease_makes_two_processes_fill_a_window_once(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    require_service("redis", REDIS_ADDR)
    # A fresh Redis database key space per run is not needed: lease keys name the node and
    # window, and a random day keeps reruns from meeting an earlier run's lease.
    index = 1 + uuid.uuid4().int % 7
    window = (T0 + index * DAY + 60, T0 + index * DAY + 120)
    config = project(tmp_path, sandbox, rate_limit={"redis_dsn": REDIS_DSN})
    # Two readers = two processes' worth of state (each has its own in-process flights).
    first, second = reader_for(config), reader_for(config)
    try:
        readers: list[SeamlessReader] = [first, second]

        def call(i: int) -> CoverageReport:
            return readers[i % 2].ensure_coverage(NODE_ID, *window)

        reports = all_at_once(10, call)
    finally:
        first.close()
        second.close()
    assert endpoint_requests(sandbox, "exchangeInfo") == 1
    assert endpoint_requests(sandbox, "klines") == KLINES_PER_DAY_FILL
    assert all(r.complete for r in reports)
    assert sum(1 for r in reports if r.led and r.fetched) == 1


class StoredBetweenItsCalls:
    """A real hot store on which another read's fill of the window ends right after this
    read took its bars and before it asks for their coverage (the first `read_range`
    returns what it read before running `fill`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fill: Callable[[], object] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_range(self, *args: Any, **kwargs: Any) -> Any:
        frame = self.inner.read_range(*args, **kwargs)
        fill, self.fill = self.fill, None
        if fill is not None:
            worker = threading.Thread(target=fill)
            worker.start()
            worker.join()
        return frame


def test_a_live_read_never_returns_fewer_bars_than_the_coverage_it_saw(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    """Whenever another read's fill lands between a live read's bars and its coverage, the
    read delivers the bars that coverage promises, not the empty frame it read first."""
    config = project(tmp_path, sandbox)
    window = (T0 + 6 * DAY + 3600, T0 + 6 * DAY + 2 * 3600)
    hot = StoredBetweenItsCalls(open_hot(config))
    with reader_for(config, hot=hot) as reader:
        hot.fill = lambda: reader.ensure_coverage(NODE_ID, *window)
        frame, meta = reader.fetch(NODE_ID, *window, ComputeContext("w1", "live"))
        assert hot.fill is None  # the fill did run in between
        assert len(frame) == 60 and not meta.partial, (len(frame), meta.downgrade_reason)
        assert frame["ts"].tolist() == list(range(window[0], window[1], 60))
