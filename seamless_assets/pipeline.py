"""One node, a run of partitions: fetch what is missing, conform, store hot, publish segments.

Plain Python (no Dagster) so the asset, the CLI and the read resource share it. Order
matters for crash safety: bars reach the hot store (idempotent upsert) before any
segment is published, and a segment's manifest is written last by the artifact store.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, contextmanager
from typing import Any

from resources.artifacts.base import ArtifactStore
from resources.exchange import (
    DEFAULT_CANDLES_PER_CALL,
    ExchangeClient,
    FetchedBars,
)
from resources.hot_store.base import HotStore

from .core.coverage import (
    merge_ranges,
    missing_ranges,
)
from .core.frame import Range
from .core.stabilization import closed_end
from .history import history_start_s
from .nodes import NodeId
from .run_outcome import PartitionOutcome, PipelineSettings, RunOutcome
from .settle import ChunkSettler, FetchedChunk
from .sources import ArchiveRun, trades_pages

__all__ = ["PartitionOutcome", "PipelineSettings", "RunOutcome", "backfill", "stream_chunks"]

STREAM_CHUNK_BARS = 72_000  # bars per chunk of a streamed run (50 days of 1m)
#: chunks being fetched, fetched (their pages packed: ~2 MB a chunk) or settling at once:
#: the fetch runs this far ahead of the settling, so a short run is fetched at once
OUTSTANDING_CHUNKS = 4


async def _fetch(client: ExchangeClient, node: NodeId, ranges: list[Range]) -> list[FetchedBars]:
    return list(
        await asyncio.gather(
            *(
                client.fetch_bars(node.symbol, node.timeframe, r, pack=True, price=node.price)
                for r in ranges
            )
        )
    )


def stream_chunks(partitions: Sequence[Range], interval_s: int, per_call: int) -> list[list[Range]]:
    """Consecutive groups of whole partitions, each about `STREAM_CHUNK_BARS` bars: the
    run is fetched and settled chunk by chunk. A chunk spans a whole number of requests
    (`per_call` bars) where partitions allow it, so chunking costs no extra request."""
    bars = max(1, (partitions[0].end - partitions[0].start) // interval_s)
    aligned = math.lcm(bars, per_call) // bars  # partitions per whole number of requests
    if aligned * bars > 2 * STREAM_CHUNK_BARS:
        aligned = 1
    step = aligned * max(1, STREAM_CHUNK_BARS // (aligned * bars))
    return [list(partitions[i : i + step]) for i in range(0, len(partitions), step)]


def _take_fetched(
    queue: asyncio.Queue[asyncio.Task[FetchedChunk] | None],
    fetches: list[asyncio.Task[FetchedChunk]],
) -> bool:
    """Move queued fetches onto `fetches` while the last one there is fetched (without
    error): the chunks ready to settle together. True when the queue's end was taken."""
    while fetches[-1].done() and not fetches[-1].exception():
        try:
            queued = queue.get_nowait()
        except asyncio.QueueEmpty:
            return False
        if queued is None:
            return True
        fetches.append(queued)
    return False


class _BusyClock:
    """Seconds during which at least one `with` block was open (overlapping fetches)."""

    def __init__(self) -> None:
        self.busy_s, self._open, self._since = 0.0, 0, 0.0

    def __enter__(self) -> None:
        if self._open == 0:
            self._since = time.perf_counter()
        self._open += 1

    def __exit__(self, *exc: object) -> None:
        self._open -= 1
        if self._open == 0:
            self.busy_s += time.perf_counter() - self._since


_runs_frozen = 0  # runs inside `_heap_frozen` now (a reader may run several at once)
_frozen_before = False  # the heap was frozen when the first of them began (by the program)
_freeze_lock = threading.Lock()


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """Leave the objects alive before the run (imported libraries, Dagster's state: most
    of the heap) out of the cycle collector until the run ends. A full collection walks
    every tracked object; the run's pages trigger several, each of which held the event
    loop and the settling thread for 0.2-0.4 s. Garbage among those objects waits for
    the first full collection after the last concurrent run (`gc.unfreeze` returns them
    to it). A heap frozen before the first of them (`process.startup_heap`) stays frozen."""
    global _runs_frozen, _frozen_before
    with _freeze_lock:
        if _runs_frozen == 0:
            _frozen_before = gc.get_freeze_count() > 0
        _runs_frozen += 1
        gc.freeze()
    try:
        yield
    finally:
        with _freeze_lock:
            _runs_frozen -= 1
            if _runs_frozen == 0 and not _frozen_before:
                gc.unfreeze()


async def backfill(
    node: NodeId,
    partitions: Sequence[Range],
    *,
    hot: HotStore,
    artifacts: ArtifactStore,
    client_factory: Callable[[], ExchangeClient],
    settings: PipelineSettings,
    refetch_gaps: bool = False,
    refetch_stored: bool = False,
    log: Callable[[str], Any] = lambda _msg: None,
) -> RunOutcome:
    """Make `partitions` of `node` complete in the hot store and publish the stable ones.

    `refetch_gaps` retries windows the ledger marks confirmed-empty; `refetch_stored`
    downloads stored bars again too, so restated candles replace them (a restated
    partition then publishes a new segment; earlier snapshots keep the old one).

    The run streams: the missing bars are fetched chunk by chunk (`stream_chunks`) while
    the chunk before is conformed, stored and published in a worker thread, so the hot
    store and the artifact store work while the exchange answers, and only a few chunks
    are in memory at a time. Chunks settle in order; a failure stops the run after the
    chunk being settled, whose bars and segments are complete (a rerun goes on from there).
    """
    interval, origin = node.interval_s, node.timeframe.origin_s
    node_id = str(node)
    window = Range(partitions[0].start, partitions[-1].end)
    t0 = time.perf_counter()

    covered = [] if refetch_stored else hot.coverage(node_id, interval, window)
    retry_gaps = refetch_gaps or refetch_stored
    known = [] if retry_gaps else [g.range for g in hot.ledger_gaps(node_id, window)]
    local_closed = closed_end(int(time.time()), interval, origin_s=origin)
    wanted = window.intersect(Range(window.start, max(window.start, local_closed)))
    missing = missing_ranges(covered, wanted, interval, known, origin_s=origin) if wanted else []
    fetched_ranges = merge_ranges(missing)
    plan_s = time.perf_counter() - t0

    async with AsyncExitStack() as stack:
        # The settling thread's progress lines are written by this thread (the event loop's):
        # a line is an event in Dagster's log (a commit), which settling need not wait for.
        loop = asyncio.get_running_loop()

        def settle_log(message: str) -> None:
            loop.call_soon_threadsafe(log, message)

        listed = history_start_s(artifacts, node)  # holes before it are no candle outage
        run = stack.enter_context(
            ChunkSettler(node, settings, hot, artifacts, retry_gaps, settle_log, listed)
        )
        run.timings["plan_s"] = plan_s
        stack.enter_context(_heap_frozen())
        client = None
        archive_run: ArchiveRun | None = None
        per_call = DEFAULT_CANDLES_PER_CALL
        if fetched_ranges:
            log(
                f"{node_id}: fetching {len(fetched_ranges)} missing range(s): "
                + ", ".join(str(r) for r in fetched_ranges[:5])
            )
            client = await stack.enter_async_context(client_factory())
            per_call = client.candles_per_call(node.symbol)
            if settings.archives is not None:
                await client.check_symbol(node.symbol)
                archive_run = await stack.enter_async_context(
                    ArchiveRun(
                        node,
                        settings.archives,
                        client.exchange.market(node.symbol)["id"],
                        fetched_ranges,
                        client.exchange_time,
                        log,
                    )
                )
        # The next chunks' requests go out while the ones before are in flight or settling.
        outstanding = asyncio.Semaphore(OUTSTANDING_CHUNKS)
        fetching = _BusyClock()

        async def fetch_chunk(parts: list[Range]) -> FetchedChunk:
            chunk_window = Range(parts[0].start, parts[-1].end)
            ranges = [c for r in fetched_ranges if (c := r.intersect(chunk_window))]
            with fetching:
                pages, rest = await archive_run.take(ranges) if archive_run else ([], ranges)
                pages += await _fetch(client, node, rest) if rest and client else []
                if settings.trades_repair and client and pages:
                    stabilization = settings.stabilization_bars
                    pages += await trades_pages(
                        client, node, pages, stabilization, log, listed_s=listed
                    )
            return FetchedChunk(parts, ranges, pages)  # packed (~3.5 MB a chunk) until settled

        queue: asyncio.Queue[asyncio.Task[FetchedChunk] | None] = asyncio.Queue()

        async def produce() -> None:
            for parts in stream_chunks(partitions, interval, per_call):
                await outstanding.acquire()
                await queue.put(asyncio.ensure_future(fetch_chunk(parts)))
            await queue.put(None)

        # One settling thread, in order, while the event loop fetches; the chunks fetched
        # by the time it is free are settled together (one hot-store session).
        settler = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="settle"))
        producer = asyncio.create_task(produce())
        fetches: list[asyncio.Task[FetchedChunk]] = []  # taken from the queue, not settled
        try:
            ended = False
            while not ended or fetches:
                if not fetches:
                    if (first := await queue.get()) is None:
                        break
                    fetches.append(first)
                    del first
                await fetches[0]  # a failed fetch raises here, in chunk order
                ended = ended or _take_fetched(queue, fetches)
                ready = []
                while fetches and fetches[0].done() and not fetches[0].exception():
                    ready.append(fetches.pop(0).result())  # a done task holds its chunk
                if ended and not fetches and client is not None:
                    client.start_closing()  # every request answered: close while settling
                await loop.run_in_executor(settler, run.settle_chunks, ready)  # reads packed
                for _ in ready:
                    outstanding.release()
                del ready  # their bars are stored: let them go before the next chunks
            await loop.run_in_executor(settler, run.finish)
        finally:
            producer.cancel()
            while not queue.empty():
                if (queued := queue.get_nowait()) is not None:
                    fetches.append(queued)
            for task in fetches:
                task.cancel()
            await asyncio.gather(producer, *fetches, return_exceptions=True)
        run.timings["fetch_s"] = fetching.busy_s
        requests = client.stats if client else None
    run.timings["encode_s"] = sum(p.encode_s for p in run.outcomes)  # parallel: summed
    run.timings["total_s"] = time.perf_counter() - t0
    return RunOutcome(
        node=node,
        window=window,
        partitions=run.outcomes,
        stored=run.stored,
        fetched_ranges=fetched_ranges,
        fetched_rows=run.fetched_rows,
        forming_dropped=run.forming,
        flags=run.flags,
        requests=requests,
        timings_s=dict(run.timings),
    )
