"""What the read resource runs on: the stores, the event loop of its fills, the bounded
storage workers, the cache and the session state (the bottom layer of the read path; it
calls nothing above it).

`ReaderRuntime` is passive: the layers above (`read_storage.py` runs calls under a budget,
`read_fill.py` fills windows, `read_plan.py` reads sources, `read_domains.py` applies the
domain policy) take what they need from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from resources.artifacts.base import ArtifactStore
from resources.exchange import ExchangeClient, ExchangeSettings
from resources.hot_store.base import HotStore
from seamless_assets.config import EffectiveSLA, SeamlessConfig
from seamless_assets.core.fetch_cache import FetchCache
from seamless_assets.core.read_context import ExecutionDomain, SeamlessFetchMetadata
from seamless_assets.core.sla import SLABudget
from seamless_assets.core.snapshot import Snapshot
from seamless_assets.nodes import NodeId
from seamless_assets.pipeline import PipelineSettings, RunOutcome
from seamless_assets.runtime import resources_from_config

from .live_feed import LiveFeed
from .read_segment_cache import SegmentCache
from .read_storage import StorageExecutor

log = logging.getLogger(__name__)

#: Fan-out inside one storage call (manifest reads of a snapshot's segments).
IO_WORKERS = 8
#: Storage calls of one reader run on at most this many (daemon) threads ...
STORAGE_WORKERS = 16
#: ... and none starts while this many calls abandoned at their budget still run (a hung
#: store): new work waits for them within its own budget, then breaches it.
MAX_ABANDONED = 4
CLOSE_WAIT_S = 3.0
MARKETS_TTL_S = 3600.0


@dataclass
class Flight:
    """One fill of a window in progress, and how many reads wait for it."""

    future: Future[RunOutcome | None]
    waiters: int = 0


class Lease:
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


class ReaderClient(ExchangeClient):
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


class ReaderRuntime:
    """Stores, the event loop for backfills, the storage workers, the cache, the state."""

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
        self.slas: dict[ExecutionDomain, EffectiveSLA] = {
            domain: config.sla_for(domain.value) for domain in ExecutionDomain
        }
        self.pipeline = PipelineSettings(
            stabilization_bars=section.artifact.stabilization_bars,
            conformance_version=section.conformance.version,
        )
        self.cache = FetchCache(
            enabled=config.cache.enable,
            ttl_ms=config.cache.ttl_ms,
            max_entries=config.cache.max_shards,
        )
        # Daemon threads too: a fan-out under an abandoned storage call never blocks exit.
        self.io_pool = StorageExecutor(IO_WORKERS, IO_WORKERS)
        self.storage = StorageExecutor(STORAGE_WORKERS, MAX_ABANDONED)
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="seamless-backfill", daemon=True
        )
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(_warm_ccxt(list(config.exchanges)), self.loop).result()
        self.markets: dict[str, tuple[float, dict[str, Any]]] = {}
        self.lease: Lease | None = None
        if config.redis_dsn:
            self.lease = Lease(config.redis_dsn, section.backfill.distributed_lease_ttl_ms)
        self.flights: dict[tuple[str, int, int], Flight] = {}
        self.flights_lock = threading.RLock()  # re-entered by a fill's done-callback on cancel
        # monotonic time each (node, partitions) fill last ended: a caller that read the
        # store before it ended reads it again instead of leading a second fill
        self.fills_ended: dict[tuple[str, int, int], float] = {}
        self.background_fills = section.backfill.mode == "background"
        self.single_flight_ttl_s = section.backfill.single_flight_ttl_ms / 1000
        self.state_lock = threading.Lock()
        self.session_as_of: dict[tuple[str, str], int] = {}
        self.world_domain: dict[str, ExecutionDomain] = {}
        self.clock_offset_s: dict[str, float] = {}  # exchange clock - local wall clock
        self.manifest_flags: dict[str, dict[str, int]] = {}  # fingerprint -> flags (immutable)
        segments = config.cache.segments
        self.segment_cache = (
            SegmentCache(
                config.data_dir / "cache" / "segments",
                segments.max_bytes,
                self.artifacts,
                self.io_pool,
                map_snapshot=segments.map_snapshot,
            )
            if segments.enable
            else None
        )
        self.metrics: defaultdict[str, float] = defaultdict(float)
        # (node, as_of_s) -> snapshot, only for as_of at or before a published snapshot:
        # history is append-only, so that resolution can never change.
        self.resolved: dict[tuple[str, int], Snapshot] = {}
        # snapshot fingerprint -> starts and ends of its segments (ReadPlan.overlapping)
        self.segment_spans: dict[str, tuple[Any, Any]] = {}
        # snapshot fingerprint -> running totals of its segments' flags (ReadPlan.window_flags)
        self.flag_totals: dict[str, Any] = {}
        self.last_metadata: SeamlessFetchMetadata | None = None
        self.feed: LiveFeed | None = None
        self.event_stores: Any = None  # `read_events.EventStores`, opened by the first read
        if section.live.ws.enabled and (live_nodes := config.live_nodes):
            self.feed = LiveFeed(config, live_nodes, self._feed_store, self.exchange_client)
            asyncio.run_coroutine_threadsafe(self.feed.run(), self.loop)
        self.nodes: dict[str, NodeId] = {}  # node id as asked -> the configured node

    def node(self, node_id: str) -> NodeId:
        """`config.node(node_id)`, remembered (the catalog of a runtime never changes)."""
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = self.config.node(node_id)
        return node

    def budget(self, domain: ExecutionDomain) -> SLABudget:
        sla = self.slas[domain]
        return SLABudget(
            sla.max_wait_storage_ms, sla.max_wait_backfill_ms, sla.max_wait_live_ms,
            sla.total_deadline_ms,
        )  # fmt: skip

    def note_domain(self, world_id: str, domain: ExecutionDomain) -> None:
        """A world switching execution domain drops its result-cache entries (no
        cross-domain reuse)."""
        with self.state_lock:
            previous = self.world_domain.get(world_id)
            self.world_domain[world_id] = domain
        if previous is not None and previous is not domain:
            purged = self.cache.purge(world_id)
            log.info(
                "world %s switched %s -> %s: purged %d cache entries",
                world_id, previous.value, domain.value, purged,
            )  # fmt: skip

    async def _feed_store(self, node_id: str, frame: Any) -> None:
        """The live feed's closed bars into the hot store, off the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.hot.upsert, node_id, frame)

    def exchange_client(self, exchange_id: str) -> ReaderClient:
        settings = ExchangeSettings.from_config(self.config, exchange_id)
        limiter = self.rate_limiter.limiter(self.config.rate_limit_for(exchange_id))
        return ReaderClient(settings, limiter, self.markets)

    def exchange_now_estimate(self, exchange_id: str) -> float:
        """The exchange's clock from the last measured offset (local clock if none)."""
        with self.state_lock:
            offset = self.clock_offset_s.get(exchange_id, 0.0)
        return time.time() + offset

    def close(self) -> None:
        if self.feed is not None:  # its sockets first: closed, not cut by the cancellation
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.feed.stop(), self.loop).result(CLOSE_WAIT_S)
        with contextlib.suppress(Exception):  # cancel fills still running, let them unwind
            asyncio.run_coroutine_threadsafe(_cancel_pending(), self.loop).result(CLOSE_WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        if not self._loop_thread.is_alive():
            self.loop.close()
        self.io_pool.shutdown()
        # A store closed under a call still running in it may crash the process (DuckDB
        # aborts): give abandoned calls a moment to return first.
        if not self.storage.shutdown(wait_s=CLOSE_WAIT_S):
            log.warning(
                "closing the stores with %d abandoned storage calls still running",
                self.storage.abandoned,
            )
        if self.lease is not None:
            self.lease.close()
        if self.event_stores is not None:
            self.event_stores.close()
        self.hot.close()


async def _warm_ccxt(exchange_ids: Sequence[str]) -> None:
    """Build (and drop) one ccxt client per exchange: the first instance of a ccxt class
    costs ~0.2 s, which must not land inside a read's budget."""
    import ccxt.async_support as ccxt_async

    for exchange_id in exchange_ids:
        if exchange_id in ccxt_async.exchanges:
            await getattr(ccxt_async, exchange_id)().close()


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_WAIT_S - 0.5)
