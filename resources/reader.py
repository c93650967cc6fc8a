"""The read resource for strategies: one `fetch` that applies the domain policy, enforces
the SLA budgets and echoes the governance metadata.

    reader = SeamlessReader.from_config("seamless.yaml")
    ctx = ComputeContext(world_id="w1", execution_domain="backtest", as_of="2024-03-01T00:00:00Z")
    frame, meta = reader.fetch("ohlcv:binance:BTC/USDT:1m", "2024-02-01", "2024-03-01", ctx)
    if meta.partial:
        raise RuntimeError(meta.downgrade_reason)

The read path is layered; each layer calls only the ones below it:

    reader.py        the resource: cache, domain switch purge, metrics, ensure_coverage
    read_domains.py  domain policy (backtest/research/dryrun; read_live.py: live) and the
                     one place an SLA breach becomes an error or a partial result
    read_missing.py  what a snapshot lacks and what truthfully adds it
    read_plan.py     the sources: snapshot resolution and reads, hot store, fills, clock
    read_fill.py     single-flight fills (process lock + Redis lease)
    read_storage.py  calls bounded by the SLA phase's budget, on a bounded thread pool
    read_runtime.py  stores, event loop, workers, session state, the segment cache
                     (read_segment_cache.py: verified, memory-mapped snapshot segments)
    read_echo.py, read_windows.py   pure helpers (metadata, partition math)

Domains (ARCHITECTURE decision 10, the blueprint's policy matrix):

* backtest / research: the snapshot resolved at `as_of` only (required); a range the
  snapshot does not cover fails naming the missing partitions and what adds them.
  Segments are verified; a tampered artifact raises its typed error.
* dryrun: the snapshot at `as_of`, then fresh bars (hot store, backfill) for what it lacks,
  published as segments through the pipeline and read back (verified) before they are
  used. Nothing after `as_of` is delivered.
* live: hot store + backfill + the live edge, monotonic `as_of`, `max_lag` gate (HOLD).

SLA (`core/sla.py`): budgets are per domain (`config.sla_for`): live and dryrun read under
`seamless.sla`'s budgets; backtest and research, judged by correctness, not latency, have
by default only a generous total deadline that fails loudly. A breach raises
`SeamlessSLAExceeded(phase)` or returns what the read has, flagged `partial` with the
reason, per the strategy and the domain's `on_violation`.

Strategies: FAIL_FAST reads stores only and raises on any gap or overrun; PARTIAL_FILL
reads stores only and returns what is there, flagged; AUTO_BACKFILL fills missing closed
bars synchronously (single flight) under `backfill_wait`; SEAMLESS does the same and
fills the live edge under `live_wait`.

Caches: immutable reads (wholly from a snapshot) enter the result cache, except ones of
more than `RESULT_CACHE_MAX_MAPPED_ROWS` bars the segment cache served (`cache.segments`,
`meta.segment_cache`: a put and a hit each copy the frame, which costs about as much as
slicing it out of the mapped segments again); a
world that switches domain loses its entries. Metrics (`metrics()`) use the blueprint's
names; `metrics_export` serves them labelled on `/metrics` (`observability.metrics.port`).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range
from seamless_assets.core.read_context import (
    ComputeContext,
    CoverageReport,
    ExecutionDomain,
    Instant,
    SeamlessFetchMetadata,
    Strategy,
)
from seamless_assets.core.sla import PhaseTimings
from seamless_assets.errors import AsOfRequired
from seamless_assets.event_nodes import EventNodeId

from .metrics_export import serve_configured
from .read_metrics import record_fetch
from .read_windows import partition_keys, partition_windows

# The read layers (pandas, pyarrow, ccxt, the stores) load when a reader opens its stores,
# not when the definitions that hold this resource load.
if TYPE_CHECKING:
    import pandas as pd

    from resources.artifacts.base import ArtifactStore
    from resources.hot_store.base import HotStore
    from seamless_assets.core.fetch_cache import CacheKey, CacheStats, FetchCache

    from .read_echo import blend_fingerprint, frame_bytes
    from .read_runtime import ReaderRuntime

_LAZY_EXPORTS = {
    "CacheStats": "seamless_assets.core.fetch_cache",
    "FetchCache": "seamless_assets.core.fetch_cache",
    "blend_fingerprint": "resources.read_echo",
    "frame_bytes": "resources.read_echo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

#: Reads the segment cache served with more rows skip the result cache (see Caches): the
#: copy a put makes costs about what a later hit saves (the read path's ~1 ms fixed cost)
#: once a frame passes ~10k bars (~0.5 MB), and random backtest windows never hit.
RESULT_CACHE_MAX_MAPPED_ROWS = 10_000


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
        reader._rt = _open_runtime(config, hot=hot, artifacts=artifacts)
        serve_configured(reader, config)
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
                self._rt = _open_runtime(load_config(self.config_path or None))
                serve_configured(self, self._rt.config)
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
        """Bars of `node_id` with `ts` in `[start, end)` under `context`, and the echo;
        for an event node (`funding:`, `trades:`) its events (`read_events`)."""
        from seamless_assets.core.snapshot import parse_as_of

        from .read_domains import DomainRead
        from .read_echo import ReadRequest
        from .read_events import fetch_events
        from .read_live import LiveRead

        rt = self._runtime()
        if EventNodeId.is_event_id(node_id):
            return fetch_events(rt, node_id, start, end, context)
        node = rt.node(node_id)
        window = Range(parse_as_of(start), parse_as_of(end))
        strategy = Strategy(context.strategy or rt.config.seamless.strategy)
        domain = context.domain
        rt.note_domain(context.world_id, context.domain)
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
        started = time.perf_counter()
        cacheable = domain is not ExecutionDomain.LIVE
        if cacheable:
            hit = rt.cache.get(key)
            if hit is not None:
                frame, meta = hit
                meta = replace(
                    meta,
                    cache_hit=True,
                    segment_cache=None,
                    sla=PhaseTimings(total_ms=(time.perf_counter() - started) * 1000).as_dict(),
                    sla_exceeded=(),
                    execution_domain=domain.value,
                    strategy=strategy.value,
                )
                record_fetch(rt, meta)
                return frame, meta
        request = ReadRequest(node, window, context, strategy, rt.pipeline.conformance_version)
        path = LiveRead if domain is ExecutionDomain.LIVE else DomainRead
        frame, meta = path(rt, request).run()
        mapped = meta.segment_cache is not None and meta.rows > RESULT_CACHE_MAX_MAPPED_ROWS
        if cacheable and meta.source == "snapshot" and not meta.partial and not mapped:
            rt.cache.put(key, frame, meta)
        record_fetch(rt, meta)
        return frame, meta

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
        from seamless_assets.core.snapshot import parse_as_of

        from .read_fill import ensure

        rt = self._runtime()
        node = rt.config.node(node_id)
        window = Range(parse_as_of(start), parse_as_of(end))
        limit_s = timeout_s if timeout_s is not None else rt.single_flight_ttl_s
        return ensure(rt, node, window, limit_s, "backfill_wait")


def _open_runtime(config: SeamlessConfig, **stores: Any) -> ReaderRuntime:
    """The stores and state of a reader; the read layers load now, not in a read's budget."""
    from . import read_domains, read_live  # noqa: F401
    from .read_runtime import ReaderRuntime

    return ReaderRuntime(config, **stores)
