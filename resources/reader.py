"""The read resource for strategies: one `fetch` that applies the domain policy, enforces
the SLA budgets and echoes the governance metadata.

    reader = SeamlessReader.from_config("seamless.yaml")
    ctx = ComputeContext(world_id="w1", execution_domain="backtest", as_of="2024-03-01T00:00:00Z")
    frame, meta = reader.fetch("ohlcv:binance:BTC/USDT:1m", "2024-02-01", "2024-03-01", ctx)

Domains (ARCHITECTURE decision 10, the blueprint's policy matrix):

* backtest / research: the snapshot resolved at `as_of` only (required); a range the
  snapshot does not cover fails naming the missing partitions. Segments are verified.
* dryrun: the snapshot at `as_of`, then fresh bars (hot store, backfill) for what it lacks,
  which are published as segments through the pipeline and read back from the artifact
  store (verified) before they are used. Nothing after `as_of` is delivered.
* live: hot store + backfill + the live edge (bars after the newest stored one, in the
  newest partition); the exchange clock comes from one /time request per read. `as_of`
  (the close of the newest delivered bar) never moves back within a reader session per
  (world_id, node). When `now - data_end > max_lag` for a window reaching the live edge,
  the read is downgraded to HOLD (PARTIAL_FILL when the strategy is PARTIAL_FILL and
  `domains.live.allow_partial`) with the reason; every fetch re-evaluates, so it
  recovers by itself when the exchange serves again.

SLA: every piece of work of a phase runs as a future with the time that phase has left
(capped by the total); when it runs out the caller stops waiting, the work is cancelled
(storage calls are abandoned to their thread, backfills are cancelled on the event loop
once nobody waits for them) and the read raises `SeamlessSLAExceeded(phase)` or returns
what it has, per the strategy and `seamless.sla.on_violation` (`core/sla.py`).

Strategies: FAIL_FAST reads stores only and raises on any gap or overrun; PARTIAL_FILL
reads stores only and returns what is there, flagged; AUTO_BACKFILL fills missing closed
bars synchronously (single flight) under `backfill_wait`; SEAMLESS does the same and
fills the live edge under `live_wait`. A caller never waits beyond its budget; a fill
nobody waits for any more runs on to completion with `backfill.mode: background` (the
blueprint's default: the next read finds its bars) and is cancelled with `sync`.

Cache: only immutable reads (served wholly from a snapshot) are cached; a world that
switches domain loses its entries. Metrics (`metrics()`) use the blueprint's names.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import PrivateAttr

from resources.artifacts.base import ArtifactStore
from resources.exchange import ExchangeClient, ExchangeSettings
from resources.hot_store.base import HotStore
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.conformance import FLAGS
from seamless_assets.core.coverage import LedgerGap, merge_ranges, missing_ranges, subtract_ranges
from seamless_assets.core.fetch_cache import CacheKey, CacheStats, FetchCache
from seamless_assets.core.fingerprint import ALGO, FingerprintIdentity, dataset_fingerprint
from seamless_assets.core.frame import CANONICAL_COLUMNS, TS, Range, empty_frame, iso_utc
from seamless_assets.core.read_context import (
    BACKFILLING,
    SNAPSHOT_ONLY,
    ComputeContext,
    CoverageReport,
    Downgrade,
    ExecutionDomain,
    Instant,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.core.sla import SLABudget, SLATracker, violation_outcome
from seamless_assets.core.snapshot import Snapshot, parse_as_of
from seamless_assets.core.stabilization import closed_end
from seamless_assets.errors import (
    AsOfRegression,
    AsOfRequired,
    ExchangeUnavailable,
    MissingPartitions,
    SeamlessError,
    SeamlessSLAExceeded,
    SnapshotNotFound,
)
from seamless_assets.nodes import NodeId
from seamless_assets.partitions import partition_keys_for, timeframe_class_name, timeframe_classes
from seamless_assets.pipeline import PipelineSettings, RunOutcome, backfill
from seamless_assets.runtime import resources_from_config

__all__ = [
    "CacheStats",
    "ComputeContext",
    "CoverageReport",
    "ExecutionDomain",
    "FetchCache",
    "SeamlessFetchMetadata",
    "SeamlessReader",
    "Strategy",
    "blend_fingerprint",
    "frame_bytes",
    "partition_keys",
    "partition_windows",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

IO_WORKERS = 8
#: SLA phase -> the blueprint's metric of its duration (last value; `_sum` accumulates).
_PHASE_METRICS = {
    "storage_wait": "seamless_storage_wait_ms",
    "backfill_wait": "seamless_backfill_wait_ms",
    "live_wait": "seamless_live_wait_ms",
    "total": "seamless_total_ms",
}
LEASE_POLL_S = 0.05
CLOSE_WAIT_S = 3.0
MARKETS_TTL_S = 3600.0


# -- single flight -------------------------------------------------------------------------


@dataclass
class _Flight:
    future: Future[RunOutcome | None]
    waiters: int = 0


class _Lease:
    """A Redis lease (SET NX PX) so one process of the cluster fills a window."""

    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
        "else return 0 end"
    )
    _RENEW = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
    )

    def __init__(self, dsn: str, ttl_ms: int) -> None:
        import redis

        self.ttl_ms = ttl_ms
        self.client = redis.Redis.from_url(dsn, socket_timeout=1.0, socket_connect_timeout=1.0)

    def acquire(self, key: str, token: str) -> bool:
        return bool(self.client.set(key, token, nx=True, px=self.ttl_ms))

    def held(self, key: str) -> bool:
        return bool(self.client.exists(key))

    def renew(self, key: str, token: str) -> None:
        self.client.eval(self._RENEW, 1, key, token, self.ttl_ms)

    def release(self, key: str, token: str) -> None:
        self.client.eval(self._RELEASE, 1, key, token)

    def close(self) -> None:
        self.client.close()


class _ReaderClient(ExchangeClient):
    """The exchange client of the reader's fills, closed without ccxt's exit pause, with
    markets shared between fills: every fill is a new client (the pipeline closes it), and
    reloading markets each time would cost an `exchangeInfo` request (weight 20 on
    Binance) and its parse inside the read's budget."""

    def __init__(
        self,
        settings: ExchangeSettings,
        limiter: Any,
        cache: dict[str, tuple[float, dict[str, Any]]],
    ) -> None:
        super().__init__(settings, limiter)
        self._cache = cache
        # ccxt sleeps `timeout_on_exit` (250 ms) in close() so transports finish before an
        # `asyncio.run` loop shuts down; the reader's loop lives on, so the pause would only
        # eat into the read's budget.
        self.exchange.timeout_on_exit = 0

    async def load_markets(self) -> dict[str, Any]:
        cached = self._cache.get(self.settings.exchange_id)
        if cached is not None and time.monotonic() - cached[0] < MARKETS_TTL_S:
            if not self._markets_loaded:
                self.exchange.set_markets(cached[1])
                self._markets_loaded = True
            return cached[1]
        markets = await super().load_markets()
        self._cache[self.settings.exchange_id] = (time.monotonic(), markets)
        return markets


async def _warm_ccxt(exchange_ids: Sequence[str]) -> None:
    """Build (and drop) one ccxt client per exchange: the first instance of a ccxt class
    costs ~0.2 s, which must not land inside a read's budget."""
    import ccxt.async_support as ccxt_async

    for exchange_id in exchange_ids:
        if exchange_id in ccxt_async.exchanges:
            await getattr(ccxt_async, exchange_id)().close()


# -- the runtime behind the resource -------------------------------------------------------


class _Runtime:
    """Stores, the event loop for backfills, the cache, and the session state."""

    def __init__(
        self,
        config: SeamlessConfig,
        hot: HotStore | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        import ccxt.async_support  # noqa: F401 - heavy (~2.5 s cold): pay it before any budget

        self.config = config
        resources: dict[str, Any] = resources_from_config(config)
        self.hot: HotStore = hot if hot is not None else resources["hot_store"].open()
        self.artifacts: ArtifactStore = (
            artifacts if artifacts is not None else resources["artifacts"].open()
        )
        self.rate_limiter = resources["rate_limiter"]
        section = config.seamless
        sla = section.sla
        self.budget = SLABudget(
            sla.max_wait_storage_ms, sla.max_wait_backfill_ms, sla.max_wait_live_ms,
            sla.total_deadline_ms,
        )  # fmt: skip
        self.pipeline = PipelineSettings(
            stabilization_bars=section.artifact.stabilization_bars,
            conformance_version=section.conformance.version,
        )
        self.cache = FetchCache(
            enabled=config.cache.enable,
            ttl_ms=config.cache.ttl_ms,
            max_entries=config.cache.max_shards,
        )
        # Fan-out inside a storage call (manifest reads of a snapshot's segments).
        self.io_pool = ThreadPoolExecutor(IO_WORKERS, thread_name_prefix="seamless-io")
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="seamless-backfill", daemon=True
        )
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(_warm_ccxt(list(config.exchanges)), self.loop).result()
        self.markets: dict[str, tuple[float, dict[str, Any]]] = {}
        self.lease: _Lease | None = None
        if config.redis_dsn:
            self.lease = _Lease(config.redis_dsn, section.backfill.distributed_lease_ttl_ms)
        self.flights: dict[tuple[str, int, int], _Flight] = {}
        self.flights_lock = threading.RLock()  # re-entered by forget_flight on cancel
        self.background_fills = section.backfill.mode == "background"
        self.state_lock = threading.Lock()
        self.session_as_of: dict[tuple[str, str], int] = {}
        self.world_domain: dict[str, ExecutionDomain] = {}
        self.clock_offset_s: dict[str, float] = {}  # exchange clock - local wall clock
        self.manifest_flags: dict[str, dict[str, int]] = {}  # fingerprint -> flags (immutable)
        self.metrics: defaultdict[str, float] = defaultdict(float)
        # (node, as_of_s) -> snapshot, only for as_of at or before a published snapshot:
        # history is append-only, so that resolution can never change.
        self.resolved: dict[tuple[str, int], Snapshot] = {}
        self.last_metadata: SeamlessFetchMetadata | None = None

    def forget_flight(
        self, key: tuple[str, int, int], flight: _Flight, _done: object = None
    ) -> None:
        """Unregister a finished fill (it may finish after every waiter gave up). Called
        as the fill's done-callback, possibly by `cancel()` under `flights_lock`."""
        with self.flights_lock:
            if self.flights.get(key) is flight:
                del self.flights[key]

    def close(self) -> None:
        with contextlib.suppress(Exception):  # cancel fills still running, let them unwind
            asyncio.run_coroutine_threadsafe(_cancel_pending(), self.loop).result(CLOSE_WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        if not self._loop_thread.is_alive():
            self.loop.close()
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        if self.lease is not None:
            self.lease.close()
        self.hot.close()


class SeamlessReader(dg.ConfigurableResource):
    """Reads nodes for strategies: domain policy, SLA budgets, cache, single-flight fills.

    As a Dagster resource it opens the stores of `config_path` (default: `SEAMLESS_CONFIG`
    or ./seamless.yaml) per run; in plain Python use `SeamlessReader.from_config(path)`
    and `close()` it (or use it as a context manager).
    """

    config_path: str = ""

    _rt: _Runtime | None = PrivateAttr(default=None)
    _rt_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> SeamlessReader:
        reader = cls(config_path=str(path) if path is not None else "")
        reader._runtime()
        return reader

    @classmethod
    def open(
        cls,
        config: SeamlessConfig,
        *,
        hot: HotStore | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> SeamlessReader:
        """A reader over an already loaded config, optionally with given stores."""
        reader = cls(config_path=config.source or "")
        reader._rt = _Runtime(config, hot=hot, artifacts=artifacts)
        return reader

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._runtime()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def __enter__(self) -> SeamlessReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._rt_lock:
            if self._rt is not None:
                self._rt.close()
                self._rt = None

    def _runtime(self) -> _Runtime:
        with self._rt_lock:
            if self._rt is None:
                self._rt = _Runtime(load_config(self.config_path or None))
            return self._rt

    # -- introspection ------------------------------------------------------------------

    @property
    def config(self) -> SeamlessConfig:
        return self._runtime().config

    @property
    def last_fetch_metadata(self) -> SeamlessFetchMetadata | None:
        return self._runtime().last_metadata

    def cache_stats(self) -> CacheStats:
        return self._runtime().cache.stats()

    def metrics(self) -> dict[str, float]:
        """Counters and last values, named after the blueprint's metrics catalog."""
        rt = self._runtime()
        with rt.state_lock:
            out = {k: float(v) for k, v in rt.metrics.items()}
        stats = rt.cache.stats()
        out.update(
            seamless_cache_hit_total=stats.hits,
            seamless_cache_miss_total=stats.misses,
            seamless_cache_resident=stats.resident,
        )
        return out

    # -- fetch --------------------------------------------------------------------------

    def fetch(
        self, node_id: str, start: Instant, end: Instant, context: ComputeContext
    ) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        """Bars of `node_id` with `ts` in `[start, end)` under `context`, and the echo."""
        rt = self._runtime()
        node = rt.config.node(node_id)
        window = Range(parse_as_of(start), parse_as_of(end))
        strategy = Strategy(context.strategy or rt.config.seamless.strategy)
        domain = context.domain
        self._note_domain(rt, context)
        if domain is not ExecutionDomain.LIVE and context.as_of_s is None:
            raise AsOfRequired(
                f"{domain.value} reads immutable snapshots and needs an as_of: pass "
                "ComputeContext(as_of=...) (ISO-8601, datetime or epoch seconds), e.g. "
                "the as_of of the node's latest snapshot"
            )
        key: CacheKey = (
            str(node), node.interval_s, window.start, window.end,
            rt.pipeline.conformance_version, context.world_id, context.as_of_s,
        )  # fmt: skip
        tracker = SLATracker(rt.budget, clock_ms=lambda: time.perf_counter() * 1000)
        cacheable = domain is not ExecutionDomain.LIVE
        if cacheable:
            hit = rt.cache.get(key)
            if hit is not None:
                frame, meta = hit
                meta = replace(
                    meta,
                    cache_hit=True,
                    sla=tracker.timings().as_dict(),
                    execution_domain=domain.value,
                    strategy=strategy.value,
                )
                self._finish(rt, meta)
                return frame, meta
        read = _Read(self, rt, node, window, context, strategy, tracker)
        if domain in SNAPSHOT_ONLY:
            frame, meta = read.snapshot_only()
        elif domain is ExecutionDomain.DRYRUN:
            frame, meta = read.dryrun()
        else:
            frame, meta = read.live()
        if cacheable and meta.source == "snapshot" and not meta.partial:
            rt.cache.put(key, frame, meta)
        self._finish(rt, meta)
        return frame, meta

    def _note_domain(self, rt: _Runtime, context: ComputeContext) -> None:
        """A world switching execution domain drops its cache entries (no cross-domain
        reuse)."""
        with rt.state_lock:
            previous = rt.world_domain.get(context.world_id)
            rt.world_domain[context.world_id] = context.domain
        if previous is not None and previous is not context.domain:
            purged = rt.cache.purge(context.world_id)
            log.info(
                "world %s switched %s -> %s: purged %d cache entries",
                context.world_id, previous.value, context.domain.value, purged,
            )  # fmt: skip

    def _finish(self, rt: _Runtime, meta: SeamlessFetchMetadata) -> None:
        with rt.state_lock:
            rt.last_metadata = meta
            m = rt.metrics
            m["seamless_fetch_total"] += 1
            for phase, metric in _PHASE_METRICS.items():
                m[f"{metric}_sum"] += meta.sla.get(f"{phase}_ms", 0.0)
                m[metric] = meta.sla.get(f"{phase}_ms", 0.0)
            m["coverage_ratio"] = meta.coverage_ratio
            if meta.downgrade == "HOLD":
                m["domain_gate_holds"] += 1
            if meta.partial:
                m["partial_fill_returns"] += 1
            for phase in meta.sla_exceeded:
                m[f"seamless_sla_exceeded_total.{phase}"] += 1
            if meta.staleness_s is not None:
                m["live_staleness_seconds"] = meta.staleness_s
            for flag, count in meta.conformance_flags.items():
                if count:
                    m[f"seamless_conformance_flag_total.{flag}"] += count
        if meta.downgrade or meta.partial:
            log.warning(
                "seamless downgrade %s", json.dumps(meta.to_json(), sort_keys=True, default=str)
            )

    # -- ensure_coverage ----------------------------------------------------------------

    def ensure_coverage(
        self, node_id: str, start: Instant, end: Instant, *, timeout_s: float | None = None
    ) -> CoverageReport:
        """Make the closed bars of `[start, end)` present in the hot store (and publish
        the stable partitions), synchronously. Concurrent calls for the same window share
        one fill (one exchange fetch): a lock per (node, window) in this process and a
        Redis lease across processes when Redis is configured. Waits at most `timeout_s`
        (default `backfill.single_flight_ttl_ms`), then raises
        `SeamlessSLAExceeded("backfill_wait")`."""
        rt = self._runtime()
        node = rt.config.node(node_id)
        window = Range(parse_as_of(start), parse_as_of(end))
        limit_s = timeout_s if timeout_s is not None else _ttl_s(rt)
        return self._ensure(rt, node, window, time.monotonic() + limit_s, "backfill_wait")

    def _ensure(
        self,
        rt: _Runtime,
        node: NodeId,
        window: Range,
        deadline: float,
        phase: str,
        *,
        missing: list[Range] | None = None,
        recheck: bool = True,
    ) -> CoverageReport:
        """`missing`: what the caller already knows is missing (saves the store a round);
        `recheck=False`: the caller re-reads the store itself (missing_after stays empty)."""
        before = missing if missing is not None else self._missing(rt, node, window)
        if not before:
            return CoverageReport(str(node), window, (), (), led=False)
        partitions = partition_windows(rt.config, node, Range(before[0].start, before[-1].end))
        key = (str(node), partitions[0].start, partitions[-1].end)
        with rt.flights_lock:
            flight = rt.flights.get(key)
            led = flight is None or flight.future.done()
            if led:
                future = asyncio.run_coroutine_threadsafe(
                    self._fill(rt, node, partitions, key), rt.loop
                )
                flight = _Flight(future)
                rt.flights[key] = flight
                future.add_done_callback(functools.partial(rt.forget_flight, key, flight))
            assert flight is not None
            flight.waiters += 1
        started = time.monotonic()
        try:
            outcome = flight.future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            waited_ms = (time.monotonic() - started) * 1000
            raise SeamlessSLAExceeded(
                phase, waited_ms, waited_ms, f"filling {node} {partitions[0]}..{partitions[-1]}"
            ) from None
        finally:
            with rt.flights_lock:
                flight.waiters -= 1
                if flight.waiters == 0 and not flight.future.done() and not rt.background_fills:
                    # `backfill.mode: sync`: nobody waits for the fill any more, stop it.
                    # In `background` mode it runs on (registered, so later reads of the
                    # window join it) and the next read finds its bars stored.
                    flight.future.cancel()
                    if rt.flights.get(key) is flight:
                        del rt.flights[key]
        after = self._missing(rt, node, window) if recheck else []
        fetched = tuple(outcome.fetched_ranges) if outcome is not None and led else ()
        flags = dict(outcome.flags) if outcome is not None else {}
        return CoverageReport(str(node), window, tuple(before), tuple(after), led, fetched, flags)

    async def _fill(
        self, rt: _Runtime, node: NodeId, partitions: list[Range], key: tuple[str, int, int]
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
        renew = None
        if lease is not None:
            renew = asyncio.ensure_future(_renew_lease(lease, lease_key, token))
        try:
            exchange = ExchangeSettings.from_config(rt.config, node.exchange)
            limiter = rt.rate_limiter.limiter(rt.config.rate_limit_for(node.exchange))
            return await backfill(
                node,
                partitions,
                hot=rt.hot,
                artifacts=rt.artifacts,
                client_factory=lambda: _ReaderClient(exchange, limiter, rt.markets),
                settings=rt.pipeline,
            )
        finally:
            if renew is not None:
                renew.cancel()
            if lease is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(lease.release, lease_key, token)

    def _missing(self, rt: _Runtime, node: NodeId, window: Range) -> list[Range]:
        """Closed bars of the window that are neither stored nor confirmed empty."""
        now_s = self._exchange_now_estimate(rt, node)
        target = window.intersect(Range(window.start, max(window.start, _closed(node, now_s))))
        if target is None:
            return []
        covered = rt.hot.coverage(str(node), node.interval_s, target)
        known = [g.range for g in rt.hot.ledger_gaps(str(node), target)]
        return missing_ranges(
            covered, target, node.interval_s, known, origin_s=node.timeframe.origin_s
        )

    # -- exchange clock -----------------------------------------------------------------

    def _exchange_now_estimate(self, rt: _Runtime, node: NodeId) -> float:
        with rt.state_lock:
            offset = rt.clock_offset_s.get(node.exchange, 0.0)
        return time.time() + offset

    async def _server_now(self, rt: _Runtime, node: NodeId) -> float:
        exchange = ExchangeSettings.from_config(rt.config, node.exchange)
        limiter = rt.rate_limiter.limiter(rt.config.rate_limit_for(node.exchange))
        async with _ReaderClient(exchange, limiter, rt.markets) as client:
            return await client.server_now_s()

    # -- running work under a budget ----------------------------------------------------

    def _storage(self, rt: _Runtime, tracker: SLATracker, fn: Callable[[], T]) -> T:
        """Run a storage call on a thread of its own; stop waiting (and abandon it) when the
        `storage_wait` budget (or the total) runs out."""
        return self._bounded(tracker, "storage_wait", _on_daemon_thread(fn))

    def _on_loop(
        self, rt: _Runtime, tracker: SLATracker, phase: str, coro: Any
    ) -> Any:  # coroutine result
        return self._bounded(tracker, phase, asyncio.run_coroutine_threadsafe(coro, rt.loop))

    def _bounded(self, tracker: SLATracker, phase: str, future: Future[T]) -> T:
        timeout = tracker.timeout_s(phase)
        started = time.perf_counter()
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()  # queued: never runs; running coroutine: cancelled; thread: abandoned
            limit = tracker.binding(phase)
            tracker.mark_exceeded(limit)
            elapsed = (time.perf_counter() - started) * 1000
            raise SeamlessSLAExceeded(
                limit, tracker.budget.of(limit), elapsed, f"{phase} work cancelled"
            ) from None
        finally:
            tracker.record(phase, (time.perf_counter() - started) * 1000)


def _on_daemon_thread(fn: Callable[[], T]) -> Future[T]:
    """Run `fn` on a thread of its own. A daemon thread, unlike a pool's worker, never
    holds up interpreter exit, so a storage call abandoned on a hung server stays
    abandoned (a thread costs ~0.1 ms against store calls of milliseconds)."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="seamless-storage", daemon=True).start()
    return future


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_WAIT_S - 0.5)


def _renew_lease_interval(lease: _Lease) -> float:
    return max(0.05, lease.ttl_ms / 3000)


async def _renew_lease(lease: _Lease, key: str, token: str) -> None:
    while True:
        await asyncio.sleep(_renew_lease_interval(lease))
        with contextlib.suppress(Exception):
            await asyncio.to_thread(lease.renew, key, token)


def _ttl_s(rt: _Runtime) -> float:
    return rt.config.seamless.backfill.single_flight_ttl_ms / 1000


def _closed(node: NodeId, now_s: float) -> int:
    return closed_end(int(now_s), node.interval_s, origin_s=node.timeframe.origin_s)


# -- one read ------------------------------------------------------------------------------


@dataclass
class _Assembled:
    """What a domain path gathered, before it becomes metadata."""

    frame: pd.DataFrame
    source: str
    missing: list[Range]
    reasons: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # segments behind the frame
    snapshot: Snapshot | None = None
    flags: Counter[str] = field(default_factory=Counter)
    as_of_s: int | None = None
    downgrade: Downgrade | None = None
    staleness_s: float | None = None
    partial: bool = False


class _Read:
    """One fetch: the domain path, its SLA account and the metadata it echoes."""

    def __init__(
        self,
        reader: SeamlessReader,
        rt: _Runtime,
        node: NodeId,
        window: Range,
        context: ComputeContext,
        strategy: Strategy,
        tracker: SLATracker,
    ) -> None:
        self.reader, self.rt, self.node, self.window = reader, rt, node, window
        self.context, self.strategy, self.tracker = context, strategy, tracker
        self.violation = violation_outcome(strategy.value, rt.config.seamless.sla.on_violation)

    # -- backtest / research ------------------------------------------------------------

    def snapshot_only(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        as_of_s = self.context.as_of_s
        assert as_of_s is not None
        try:
            snapshot = self.reader._storage(self.rt, self.tracker, lambda: self._resolve(as_of_s))
            uncovered = snapshot.uncovered(self.window)
            if uncovered:
                raise self._missing_error(uncovered, snapshot)
            frame = self._read_snapshot(snapshot, self.window)
        except SeamlessSLAExceeded as exc:
            return self._overrun(exc, "snapshot")
        fingerprints = [s.fingerprint for s in snapshot.segments_overlapping(self.window)]
        got = _Assembled(
            frame, "snapshot", [], fingerprints=fingerprints, snapshot=snapshot,
            flags=self._segment_flags(fingerprints), as_of_s=snapshot.as_of_s,
        )  # fmt: skip
        return self._result(got)

    def _resolve(self, as_of_s: int) -> Snapshot:
        memo, key = self.rt.resolved, (str(self.node), as_of_s)
        snapshot = memo.get(key)
        if snapshot is None:
            snapshot = self.rt.artifacts.resolve_snapshot(self.node, as_of_s)
            memo[key] = snapshot  # resolve_snapshot refuses as_of beyond the latest one
        return snapshot

    def _read_snapshot(self, snapshot: Snapshot, window: Range) -> pd.DataFrame:
        node, artifacts = self.node, self.rt.artifacts
        return self.reader._storage(
            self.rt,
            self.tracker,
            lambda: artifacts.read_snapshot_range(node, snapshot, window, verify=True),
        )

    def _segment_flags(self, fingerprints: Sequence[str]) -> Counter[str]:
        """Conformance flags of the segments behind a read (manifests are immutable, so
        each is read once per process)."""
        rt, node = self.rt, self.node
        todo = [fp for fp in fingerprints if fp not in rt.manifest_flags]
        if todo:

            def load() -> list[dict[str, Any] | None]:
                return list(rt.io_pool.map(lambda fp: rt.artifacts.read_manifest(node, fp), todo))

            manifests = self.reader._storage(rt, self.tracker, load)
            for fp, manifest in zip(todo, manifests, strict=True):
                flags = ((manifest or {}).get("conformance") or {}).get("flags") or {}
                rt.manifest_flags[fp] = {str(k): int(v) for k, v in flags.items()}
        total: Counter[str] = Counter(dict.fromkeys(FLAGS, 0))
        for fp in fingerprints:
            total.update(rt.manifest_flags.get(fp, {}))
        return total

    def _missing_error(self, uncovered: list[Range], snapshot: Snapshot | None) -> SeamlessError:
        keys = partition_keys(self.rt.config, self.node, uncovered)
        where = (
            f"snapshot as_of {snapshot.as_of_iso} ({snapshot.fingerprint})"
            if snapshot is not None
            else "the stores"
        )
        after = [r for r in uncovered if snapshot is not None and r.end > snapshot.as_of_s]
        hint = (
            f"; bars after {snapshot.as_of_iso} are not in this snapshot: pick a later as_of"
            if after and snapshot is not None
            else ""
        )
        shown = ", ".join(keys[:10]) + (f" … ({len(keys)} in all)" if len(keys) > 10 else "")
        return MissingPartitions(
            f"{self.node}: {where} does not cover {', '.join(str(r) for r in uncovered[:5])}; "
            f"missing partitions: {shown or 'none yet (in the future)'}{hint}. Materialize "
            f"them (`seamless backfill {self.node} --start … --end …`) and let the as_of "
            "sensor advance the snapshot",
            keys,
            list(uncovered),
        )

    # -- dryrun -------------------------------------------------------------------------

    def dryrun(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        rt, node = self.rt, self.node
        as_of_s = self.context.as_of_s
        assert as_of_s is not None
        # Only bars closed by as_of belong to the run.
        limit = Range(self.window.start, max(self.window.start, _closed(node, as_of_s)))
        frames: list[pd.DataFrame] = []
        fingerprints: list[str] = []
        reasons: list[str] = []
        fresh: list[Range] = []
        try:
            snapshot = self.reader._storage(rt, self.tracker, lambda: self._snapshot_at(as_of_s))
            uncovered = snapshot.uncovered(self.window) if snapshot else [self.window]
            if snapshot is not None:
                frames.append(self._read_snapshot(snapshot, self.window))
                fingerprints += [s.fingerprint for s in snapshot.segments_overlapping(self.window)]
            wanted = [c for r in uncovered if (c := r.intersect(limit))]
            if wanted:
                fresh_frames, fresh, fresh_fps, why = self._artifactize(wanted)
                frames += fresh_frames
                fingerprints += fresh_fps
                reasons += why
        except SeamlessSLAExceeded as exc:
            have = _concat(frames, self.window.intersect(limit) or Range(limit.start, limit.start))
            return self._overrun(exc, "snapshot+artifacts", have)
        frame = _concat(frames, self.window.intersect(limit) or Range(limit.start, limit.start))
        still = subtract_ranges(uncovered, fresh)
        if still and self.strategy is Strategy.FAIL_FAST:
            raise self._missing_error(still, snapshot)
        ends = [r.end for r in fresh] + ([snapshot.as_of_s] if snapshot else [])
        watermark = min(max(ends), limit.end) if ends else None
        got = _Assembled(
            frame, "snapshot+artifacts" if fresh else "snapshot", still, reasons,
            fingerprints, snapshot, self._segment_flags(fingerprints), as_of_s=watermark,
        )  # fmt: skip
        pending = [c for r in still if (c := r.intersect(limit))]
        if pending:
            got.partial = True
            got.reasons.append("not artifactized yet: " + ", ".join(str(r) for r in pending[:5]))
        if self.window.end > limit.end:
            got.partial = True
            got.reasons.append(
                f"bars after the run's as_of {iso_utc(as_of_s)} are not delivered "
                f"({Range(limit.end, self.window.end)})"
            )
        return self._result(got)

    def _snapshot_at(self, as_of_s: int) -> Snapshot | None:
        try:
            return self.rt.artifacts.resolve_snapshot(self.node, as_of_s)
        except SnapshotNotFound:
            latest = self.rt.artifacts.latest_snapshot(self.node)
            return latest if latest is not None and latest.as_of_s <= as_of_s else None

    def _artifactize(
        self, wanted: list[Range]
    ) -> tuple[list[pd.DataFrame], list[Range], list[str], list[str]]:
        """Publish the partitions of `wanted` from fresh bars (backfilled first when the
        strategy allows) and read them back from the artifact store: dry runs only use
        bars that exist as verified segments."""
        rt, node = self.rt, self.node
        reasons: list[str] = []
        if self.strategy in BACKFILLING:
            try:
                self._fill(wanted, "backfill_wait")
            except ExchangeUnavailable as exc:
                reasons.append(f"backfill failed: {exc}")
        span = Range(wanted[0].start, wanted[-1].end)
        partitions = partition_windows(rt.config, node, span)
        missing = self.reader._storage(
            rt, self.tracker, lambda: self.reader._missing(rt, node, span)
        )
        if missing:
            # Publishing would need an exchange fetch the strategy does not allow (or that
            # failed): publish only the partitions the hot store holds completely.
            partitions = [p for p in partitions if not any(p.intersect(m) for m in missing)]
        if not partitions:
            return [], [], [], reasons
        try:
            outcome: RunOutcome = self.reader._on_loop(
                rt, self.tracker, "backfill_wait",
                backfill(node, partitions, hot=rt.hot, artifacts=rt.artifacts,
                         client_factory=_no_client, settings=rt.pipeline),
            )  # fmt: skip
        except ExchangeUnavailable as exc:
            return [], [], [], [*reasons, _first_line(exc)]
        published = outcome.published
        if not published:
            return [], [], [], reasons
        fps = [p.fingerprint for p in published if p.fingerprint]
        windows = [p.window for p in published]

        def read_back() -> list[pd.DataFrame]:
            return [rt.artifacts.read_segment(node, fp, verify=True) for fp in fps]

        frames = self.reader._storage(rt, self.tracker, read_back)
        return frames, merge_ranges(windows), fps, reasons

    # -- live ---------------------------------------------------------------------------

    def live(self) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        rt, node, window = self.rt, self.node, self.window
        session = (self.context.world_id, str(node))
        with rt.state_lock:
            session_as_of = rt.session_as_of.get(session)
        if (
            self.context.as_of_s is not None
            and session_as_of is not None
            and self.context.as_of_s < session_as_of
        ):
            raise AsOfRegression(
                f"{node}: as_of {iso_utc(self.context.as_of_s)} is before "
                f"{iso_utc(session_as_of)}, which this live session already saw (world "
                f"{self.context.world_id}); live as_of only moves forward"
            )
        reasons: list[str] = []
        flags: Counter[str] = Counter(dict.fromkeys(FLAGS, 0))
        source = "hot_store"
        frame = empty_frame()
        now_s = self.reader._exchange_now_estimate(rt, node)
        try:
            # Storage first: a hung store costs no more than its own budget.
            frame = self._hot_frame()
            covered, gaps = self._hot_coverage()
            now_s, clock_reason = self._live_now()
            if clock_reason:
                reasons.append(clock_reason)
            closed = _closed(node, now_s)
            target = window.intersect(Range(window.start, max(window.start, closed)))
            missing = self._missing_in(target, covered, gaps)
            if missing and self.strategy in BACKFILLING:
                # The live edge: bars after the newest stored one, in the newest partition.
                # With nothing stored there yet, everything is history (backfill_wait).
                newest = partition_windows(rt.config, node, Range(closed - 1, closed))[0]
                stored_end = covered[-1].end if covered else None
                edge_start = (
                    stored_end if stored_end is not None and stored_end >= newest.start else closed
                )
                history = _clip(missing, missing[0].start, edge_start)
                edge = _clip(missing, edge_start, missing[-1].end)
                edge_phase = "live_wait" if self.strategy is Strategy.SEAMLESS else "backfill_wait"
                filled = False
                for ranges, phase in ((history, "backfill_wait"), (edge, edge_phase)):
                    if not ranges:
                        continue
                    try:
                        report = self._fill(ranges, phase, known_missing=True, recheck=False)
                        flags.update(report.flags)
                        filled = True
                    except ExchangeUnavailable as exc:
                        reasons.append(f"exchange unavailable: {_first_line(exc)}")
                    except SeamlessSLAExceeded as exc:
                        if self.violation == "raise":
                            raise
                        reasons.append(f"{exc.phase} budget ran out: backfill cancelled")
                if filled:
                    source = "hot_store+backfill"
                    frame = self._hot_frame()
                    covered, gaps = self._hot_coverage()
                    missing = self._missing_in(target, covered, gaps)
        except SeamlessSLAExceeded as exc:
            return self._overrun(exc, source, frame, now_s, reasons)
        if missing and self.strategy is Strategy.FAIL_FAST:
            raise self._missing_error(missing, None)
        got = _Assembled(frame, source, missing, reasons, flags=flags)
        if missing:
            got.partial = True
            got.reasons.append("missing closed bars: " + ", ".join(str(r) for r in missing[:5]))
        self._gate_lag(got, now_s)
        return self._result(got)

    def _live_now(self) -> tuple[float, str | None]:
        """The exchange's clock (one /time request under `live_wait`), else the last
        known offset from it."""
        rt, node = self.rt, self.node
        try:
            server_now = self.reader._on_loop(
                rt, self.tracker, "live_wait", self.reader._server_now(rt, node)
            )
        except (ExchangeUnavailable, SeamlessSLAExceeded) as exc:
            if isinstance(exc, SeamlessSLAExceeded) and self.violation == "raise":
                raise
            return self.reader._exchange_now_estimate(rt, node), (
                f"exchange clock unavailable ({_first_line(exc)}); lag measured on the last "
                "known clock offset"
            )
        with rt.state_lock:
            rt.clock_offset_s[node.exchange] = server_now - time.time()
        return float(server_now), None

    def _hot_frame(self) -> pd.DataFrame:
        rt, node, window = self.rt, self.node, self.window
        return self.reader._storage(rt, self.tracker, lambda: rt.hot.read_range(str(node), window))

    def _hot_coverage(self) -> tuple[list[Range], list[LedgerGap]]:
        rt, node, window = self.rt, self.node, self.window

        def coverage() -> tuple[list[Range], list[LedgerGap]]:
            covered = rt.hot.coverage(str(node), node.interval_s, window)
            return covered, rt.hot.ledger_gaps(str(node), window)

        return self.reader._storage(rt, self.tracker, coverage)

    def _missing_in(
        self, target: Range | None, covered: list[Range], gaps: list[LedgerGap]
    ) -> list[Range]:
        if target is None:
            return []
        node = self.node
        known = [g.range for g in gaps]
        return missing_ranges(
            covered, target, node.interval_s, known, origin_s=node.timeframe.origin_s
        )

    def _gate_lag(self, got: _Assembled, now_s: float) -> None:
        """`now - data_end <= max_lag` for reads that reach the live edge, else HOLD."""
        rt, node = self.rt, self.node
        live_cfg = rt.config.domains.get("live")
        max_lag = self.context.max_lag
        if max_lag is None:
            max_lag = float(live_cfg.max_lag_sec) if live_cfg and live_cfg.max_lag_sec else 120.0
        ts = got.frame[TS].to_numpy()
        data_end = int(ts[-1]) + node.interval_s if len(ts) else None
        with rt.state_lock:
            previous = rt.session_as_of.get((self.context.world_id, str(node)))
            watermark = max(
                x for x in (previous, data_end, self.context.as_of_s, -1) if x is not None
            )
            if watermark >= 0:
                rt.session_as_of[(self.context.world_id, str(node))] = watermark
            if previous is not None and watermark > previous:
                rt.metrics["as_of_advancement_events"] += 1
        got.as_of_s = watermark if watermark >= 0 else None
        if self.window.end <= now_s - max_lag:
            return  # a historical window: freshness is not in question
        lag = now_s - data_end if data_end is not None else float("inf")
        got.staleness_s = round(lag, 3) if data_end is not None else None
        if lag <= max_lag:
            return
        allow_partial = bool(live_cfg.allow_partial) if live_cfg else False
        got.downgrade = (
            "PARTIAL_FILL" if allow_partial and self.strategy is Strategy.PARTIAL_FILL else "HOLD"
        )
        ends = iso_utc(data_end) if data_end is not None else "nowhere (no bars)"
        got.reasons.insert(
            0, f"live data ends at {ends}, {lag:.0f} s behind the exchange clock > max_lag "
            f"{max_lag:.0f} s",
        )  # fmt: skip

    # -- shared -------------------------------------------------------------------------

    def _fill(
        self, ranges: list[Range], phase: str, *, known_missing: bool = False, recheck: bool = True
    ) -> CoverageReport:
        """Fill `ranges` through the single flight under `phase`'s budget. `known_missing`:
        the ranges are what the store lacks (just computed), so it is not asked again."""
        span = Range(ranges[0].start, ranges[-1].end)
        deadline = time.monotonic() + self.tracker.timeout_s(phase)
        started = time.perf_counter()
        try:
            return self.reader._ensure(
                self.rt,
                self.node,
                span,
                deadline,
                phase,
                missing=ranges if known_missing else None,
                recheck=recheck,
            )
        except SeamlessSLAExceeded:
            limit = self.tracker.binding(phase)
            self.tracker.mark_exceeded(limit)
            raise SeamlessSLAExceeded(
                limit,
                self.tracker.budget.of(limit),
                (time.perf_counter() - started) * 1000,
                f"{phase} work cancelled",
            ) from None
        finally:
            self.tracker.record(phase, (time.perf_counter() - started) * 1000)

    def _overrun(
        self,
        exc: SeamlessSLAExceeded,
        source: str,
        frame: pd.DataFrame | None = None,
        now_s: float | None = None,
        reasons: Sequence[str] = (),
    ) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        """Raise, or return what the read has so far, flagged partial with the reason."""
        if self.violation == "raise":
            raise exc
        have = frame if frame is not None else empty_frame()
        got = _Assembled(have, source, [], partial=True)
        delivered = "what it had" if len(have) else "nothing"
        got.reasons.append(
            f"{exc.phase} budget of {exc.budget_ms:.0f} ms ran out; the work was cancelled "
            f"and the read returns {delivered} ({len(have)} bars)"
        )
        got.reasons += reasons
        got.missing = subtract_ranges([self.window], _bars_span(have, self.node.interval_s))
        if self.context.domain is ExecutionDomain.LIVE and now_s is not None:
            self._gate_lag(got, now_s)
        return self._result(got)

    def _result(self, got: _Assembled) -> tuple[pd.DataFrame, SeamlessFetchMetadata]:
        node, window, ctx = self.node, self.window, self.context
        frame = got.frame
        ts = frame[TS].to_numpy()
        interval, origin = node.interval_s, node.timeframe.origin_s
        bounds = (int(ts[0]), int(ts[-1]) + interval) if len(ts) else None
        expected = window.bars(interval, origin_s=origin)
        ratio = round(len(ts) / expected, 6) if expected else 1.0
        reasons = list(got.reasons)
        partial = got.partial
        if ratio < ctx.min_coverage:
            message = f"coverage {ratio:.4f} is below min_coverage {ctx.min_coverage}"
            if self.strategy is Strategy.FAIL_FAST:
                keys = partition_keys(self.rt.config, node, got.missing)
                raise MissingPartitions(f"{node} {window}: {message}", keys, list(got.missing))
            partial = True
            reasons.append(message)
        downgrade = got.downgrade
        if partial and downgrade is None and ctx.domain is ExecutionDomain.LIVE:
            downgrade = "PARTIAL_FILL"
        if got.fingerprints:
            fingerprint = blend_fingerprint(
                str(node), interval, window, self.rt.pipeline.conformance_version, got.fingerprints
            )
        else:
            identity = FingerprintIdentity(
                str(node), interval, window, self.rt.pipeline.conformance_version
            )
            fingerprint = dataset_fingerprint(frame, identity)
        timings = self.tracker.timings()
        meta = SeamlessFetchMetadata(
            node_id=str(node),
            interval_s=interval,
            requested=window,
            world_id=ctx.world_id,
            execution_domain=ctx.domain.value,
            strategy=self.strategy.value,
            dataset_fingerprint=fingerprint,
            as_of=iso_utc(got.as_of_s) if got.as_of_s is not None else None,
            as_of_s=got.as_of_s,
            coverage_bounds=bounds,
            coverage_ratio=ratio,
            conformance_flags={k: int(got.flags.get(k, 0)) for k in FLAGS},
            sla=timings.as_dict(),
            sla_exceeded=timings.exceeded,
            source=got.source,
            snapshot_fingerprint=got.snapshot.fingerprint if got.snapshot else None,
            partial=partial,
            downgrade=downgrade,
            downgrade_reason="; ".join(reasons) if (reasons and (partial or downgrade)) else None,
            missing=tuple(got.missing),
            staleness_s=got.staleness_s,
            rows=len(frame),
        )
        return frame, meta


# -- helpers -------------------------------------------------------------------------------


def _clip(ranges: Sequence[Range], start: int, end: int) -> list[Range]:
    """The parts of `ranges` inside `[start, end)`."""
    if end <= start:
        return []
    bound = Range(start, end)
    return [c for r in ranges if (c := r.intersect(bound))]


def _bars_span(frame: pd.DataFrame, interval_s: int) -> list[Range]:
    ts = frame[TS].to_numpy()
    return [Range(int(ts[0]), int(ts[-1]) + interval_s)] if len(ts) else []


def _no_client() -> ExchangeClient:
    raise ExchangeUnavailable(
        "publishing fresh bars for a dry run needed an exchange fetch, which this "
        "strategy does not allow"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _concat(frames: Sequence[pd.DataFrame], window: Range) -> pd.DataFrame:
    """One canonical frame of `frames` clipped to `window`, one bar per ts."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame()
    if len(frames) == 1:
        frame = frames[0]
    else:
        frame = pd.concat(frames, ignore_index=True).sort_values(TS, kind="stable")
        frame = frame.drop_duplicates(TS, keep="last")
    ts = frame[TS].to_numpy()
    keep = (ts >= window.start) & (ts < window.end)
    if bool(keep.all()) and len(frames) == 1:
        return frame
    return pd.DataFrame({c: frame[c].to_numpy()[keep] for c in CANONICAL_COLUMNS})


def blend_fingerprint(
    node_id: str,
    interval_s: int,
    window: Range,
    conformance_version: str,
    segment_fingerprints: Sequence[str],
) -> str:
    """Fingerprint of a read served from segments: the window clipped out of the listed,
    verified (content-addressed) segments names exactly one frame, so hashing the
    identity with the ordered segment list is as strong as hashing the bars, and O(1)."""
    body = {
        "node_id": node_id,
        "interval_s": interval_s,
        "range": [window.start, window.end],
        "conformance_version": conformance_version,
        "segments": list(segment_fingerprints),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"{ALGO}:{hashlib.sha256(canonical).hexdigest()}"


def partition_windows(config: SeamlessConfig, node: NodeId, window: Range) -> list[Range]:
    """The partitions (their `[start, end)`) of the node overlapping `window`, including
    ones Dagster does not list yet (the partition forming now)."""
    if timeframe_class_name(node.timeframe) == "intraday":
        day = 86_400
        first = window.start // day * day
        return [Range(s, s + day) for s in range(first, max(window.end, first + 1), day)]
    out = []
    moment = datetime.fromtimestamp(window.start, tz=UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    while True:
        following = (
            moment.replace(year=moment.year + 1, month=1)
            if moment.month == 12
            else moment.replace(month=moment.month + 1)
        )
        out.append(Range(int(moment.timestamp()), int(following.timestamp())))
        if following.timestamp() >= window.end:
            return out
        moment = following


def partition_keys(config: SeamlessConfig, node: NodeId, ranges: Sequence[Range]) -> list[str]:
    """Dagster partition keys of the node's asset overlapping `ranges`, in time order."""
    partitions_def = timeframe_classes(config.seamless.partitions)[
        timeframe_class_name(node.timeframe)
    ].partitions_def
    keys: dict[str, None] = {}
    for r in ranges:
        start = datetime.fromtimestamp(r.start, tz=UTC)
        end = datetime.fromtimestamp(r.end, tz=UTC)
        keys.update(dict.fromkeys(partition_keys_for(partitions_def, start, end)))
    return list(keys)


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """Canonical bytes of a frame (for byte-identity checks in tests and audits)."""
    return b"".join(np.ascontiguousarray(frame[c].to_numpy()).tobytes() for c in CANONICAL_COLUMNS)


__all__ = [
    "ComputeContext",
    "CoverageReport",
    "ExecutionDomain",
    "FetchCache",
    "SeamlessFetchMetadata",
    "SeamlessReader",
    "Strategy",
    "blend_fingerprint",
    "frame_bytes",
    "partition_keys",
    "partition_windows",
]
