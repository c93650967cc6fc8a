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

The domain paths themselves live in `resources/read_domains.py` (`DomainRead`, one per
fetch); this module owns the runtime they run on.

Cache: only immutable reads (served wholly from a snapshot) are cached; a world that
switches domain loses its entries. Metrics (`metrics()`) use the blueprint's names.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from resources.artifacts.base import ArtifactStore
from resources.exchange import ExchangeClient, ExchangeSettings
from resources.hot_store.base import HotStore
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.coverage import missing_ranges
from seamless_assets.core.fetch_cache import CacheKey, CacheStats, FetchCache
from seamless_assets.core.frame import Range
from seamless_assets.core.read_context import (
    SNAPSHOT_ONLY,
    ComputeContext,
    CoverageReport,
    ExecutionDomain,
    Instant,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.core.sla import SLABudget, SLATracker
from seamless_assets.core.snapshot import Snapshot, parse_as_of
from seamless_assets.errors import (
    AsOfRequired,
    SeamlessSLAExceeded,
)
from seamless_assets.nodes import NodeId
from seamless_assets.pipeline import PipelineSettings, RunOutcome, backfill
from seamless_assets.runtime import resources_from_config

from .read_domains import (
    DomainRead,
    blend_fingerprint,
    closed_end_at,
    frame_bytes,
    partition_keys,
    partition_windows,
)

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


class ReaderRuntime:
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

    _rt: ReaderRuntime | None = PrivateAttr(default=None)
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
        reader._rt = ReaderRuntime(config, hot=hot, artifacts=artifacts)
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

    def _runtime(self) -> ReaderRuntime:
        with self._rt_lock:
            if self._rt is None:
                self._rt = ReaderRuntime(load_config(self.config_path or None))
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
        read = DomainRead(self, rt, node, window, context, strategy, tracker)
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

    def _note_domain(self, rt: ReaderRuntime, context: ComputeContext) -> None:
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

    def _finish(self, rt: ReaderRuntime, meta: SeamlessFetchMetadata) -> None:
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
        rt: ReaderRuntime,
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
        self, rt: ReaderRuntime, node: NodeId, partitions: list[Range], key: tuple[str, int, int]
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

    def _missing(self, rt: ReaderRuntime, node: NodeId, window: Range) -> list[Range]:
        """Closed bars of the window that are neither stored nor confirmed empty."""
        now_s = self._exchange_now_estimate(rt, node)
        closed = closed_end_at(node, now_s)
        target = window.intersect(Range(window.start, max(window.start, closed)))
        if target is None:
            return []
        covered = rt.hot.coverage(str(node), node.interval_s, target)
        known = [g.range for g in rt.hot.ledger_gaps(str(node), target)]
        return missing_ranges(
            covered, target, node.interval_s, known, origin_s=node.timeframe.origin_s
        )

    # -- exchange clock -----------------------------------------------------------------

    def _exchange_now_estimate(self, rt: ReaderRuntime, node: NodeId) -> float:
        with rt.state_lock:
            offset = rt.clock_offset_s.get(node.exchange, 0.0)
        return time.time() + offset

    async def _server_now(self, rt: ReaderRuntime, node: NodeId) -> float:
        exchange = ExchangeSettings.from_config(rt.config, node.exchange)
        limiter = rt.rate_limiter.limiter(rt.config.rate_limit_for(node.exchange))
        async with _ReaderClient(exchange, limiter, rt.markets) as client:
            return await client.server_now_s()

    # -- running work under a budget ----------------------------------------------------

    def _storage(self, rt: ReaderRuntime, tracker: SLATracker, fn: Callable[[], T]) -> T:
        """Run a storage call on a thread of its own; stop waiting (and abandon it) when the
        `storage_wait` budget (or the total) runs out."""
        return self._bounded(tracker, "storage_wait", _on_daemon_thread(fn))

    def _on_loop(
        self, rt: ReaderRuntime, tracker: SLATracker, phase: str, coro: Any
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


def _ttl_s(rt: ReaderRuntime) -> float:
    return rt.config.seamless.backfill.single_flight_ttl_ms / 1000
