"""Single-flight fills: concurrent requests for the same missing window share one exchange
fetch (a lock per (node, window) in this process, a Redis lease across processes). A
caller waits at most until its deadline; a fill nobody waits for any more runs on with
`backfill.mode: background` (the next read finds its bars) and is cancelled with `sync`.

Used by `SeamlessReader.ensure_coverage` and, under a read's SLA, by `read_plan.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout

from seamless_assets.core.coverage import missing_ranges
from seamless_assets.core.frame import Range
from seamless_assets.core.read_context import CoverageReport
from seamless_assets.errors import SeamlessSLAExceeded
from seamless_assets.nodes import NodeId
from seamless_assets.pipeline import RunOutcome, backfill

from .read_runtime import Flight, Lease, ReaderRuntime
from .read_windows import closed_end_at, partition_windows

log = logging.getLogger(__name__)

LEASE_POLL_S = 0.05
FILLS_ENDED_MAX = 1024  # end times of fills kept per reader
FlightKey = tuple[str, int, int]


def ensure(
    rt: ReaderRuntime,
    node: NodeId,
    window: Range,
    timeout_s: float | None,
    phase: str,
    *,
    missing: list[Range] | None = None,
    recheck: bool = True,
) -> CoverageReport:
    """Fill the closed bars of `window` the hot store lacks, waiting at most `timeout_s`
    (None: until done), else `SeamlessSLAExceeded(phase)`. `missing`: what the caller
    already knows is missing (the store is not asked again); `recheck=False`: the caller
    re-reads the store itself (missing_after stays empty)."""
    seen_at = time.monotonic()
    before = missing if missing is not None else stored_missing(rt, node, window)
    if not before:
        return CoverageReport(str(node), window, (), (), led=False)
    partitions = partition_windows(rt.config, node, Range(before[0].start, before[-1].end))
    key = (str(node), partitions[0].start, partitions[-1].end)
    with rt.flights_lock:
        flight = rt.flights.get(key)
        led = flight is None or flight.future.done()
        if led and (flight is not None or rt.fills_ended.get(key, -1.0) >= seen_at):
            # a fill of these partitions ended, maybe after `before` was read: it may have
            # stored them all, so look again before leading another (check-then-act race)
            after = stored_missing(rt, node, window)
            if not after:
                return CoverageReport(str(node), window, tuple(before), (), led=False)
        if led:
            future = asyncio.run_coroutine_threadsafe(_fill(rt, node, partitions, key), rt.loop)
            flight = Flight(future)
            rt.flights[key] = flight
            future.add_done_callback(functools.partial(_forget, rt, key, flight))
        assert flight is not None
        flight.waiters += 1
    started = time.monotonic()
    try:
        outcome = flight.future.result(timeout=timeout_s)
    except FutureTimeout:
        waited_ms = (time.monotonic() - started) * 1000
        raise SeamlessSLAExceeded(
            phase, waited_ms, waited_ms, f"filling {node} {partitions[0]}..{partitions[-1]}"
        ) from None
    finally:
        with rt.flights_lock:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.future.done() and not rt.background_fills:
                # `backfill.mode: sync`: nobody waits for the fill any more, stop it. In
                # `background` mode it runs on (registered, so later reads of the window
                # join it) and the next read finds its bars stored.
                flight.future.cancel()
                if rt.flights.get(key) is flight:
                    del rt.flights[key]
    after = stored_missing(rt, node, window) if recheck else []
    fetched = tuple(outcome.fetched_ranges) if outcome is not None and led else ()
    flags = dict(outcome.flags) if outcome is not None else {}
    return CoverageReport(str(node), window, tuple(before), tuple(after), led, fetched, flags)


def stored_missing(rt: ReaderRuntime, node: NodeId, window: Range) -> list[Range]:
    """Closed bars of the window that the hot store neither holds nor knows are empty."""
    closed = closed_end_at(node, rt.exchange_now_estimate(node.exchange))
    target = window.intersect(Range(window.start, max(window.start, closed)))
    if target is None:
        return []
    covered = rt.hot.coverage(str(node), node.interval_s, target)
    known = [g.range for g in rt.hot.ledger_gaps(str(node), target)]
    return missing_ranges(covered, target, node.interval_s, known, origin_s=node.timeframe.origin_s)


async def server_now(rt: ReaderRuntime, node: NodeId) -> float:
    """The exchange's clock (one /time request)."""
    async with rt.exchange_client(node.exchange) as client:
        return await client.server_now_s()


def _forget(rt: ReaderRuntime, key: FlightKey, flight: Flight, _done: object = None) -> None:
    """Unregister a finished fill (it may finish after every waiter gave up). Called as the
    fill's done-callback, possibly by `cancel()` under `flights_lock`."""
    with rt.flights_lock:
        if rt.flights.get(key) is flight:
            del rt.flights[key]
        ended = rt.fills_ended
        if len(ended) >= FILLS_ENDED_MAX:  # only recent ends matter: forget the oldest half
            for old in sorted(ended, key=ended.__getitem__)[: FILLS_ENDED_MAX // 2]:
                del ended[old]
        ended[key] = time.monotonic()


async def _fill(
    rt: ReaderRuntime, node: NodeId, partitions: list[Range], key: FlightKey
) -> RunOutcome | None:
    lease_key = f"seamless:backfill:{key[0]}:{key[1]}-{key[2]}"
    token = uuid.uuid4().hex
    lease = rt.lease
    if lease is not None:
        try:
            acquired = await asyncio.to_thread(lease.acquire, lease_key, token)
        except Exception as exc:  # Redis down: this process's lock still holds
            log.warning("backfill lease unavailable (%s); single flight is per process", exc)
            lease = None
        else:
            if not acquired:  # another process fills this window: wait for it
                while await asyncio.to_thread(lease.held, lease_key):
                    await asyncio.sleep(LEASE_POLL_S)
                return None
    renew = asyncio.ensure_future(_renew_lease(lease, lease_key, token)) if lease else None
    try:
        return await backfill(
            node,
            partitions,
            hot=rt.hot,
            artifacts=rt.artifacts,
            client_factory=lambda: rt.exchange_client(node.exchange),
            settings=rt.pipeline,
        )
    finally:
        if renew is not None:
            renew.cancel()
        if lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(lease.release, lease_key, token)


async def _renew_lease(lease: Lease, key: str, token: str) -> None:
    while True:
        await asyncio.sleep(max(0.05, lease.ttl_ms / 3000))
        with contextlib.suppress(Exception):
            await asyncio.to_thread(lease.renew, key, token)
