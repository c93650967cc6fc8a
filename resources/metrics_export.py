"""The read resource's metrics on a Prometheus `/metrics` endpoint.

A long-lived process holding a reader (`observability.metrics.port` set, or
`serve_metrics(reader, port)`) serves one endpoint per port; every live reader of the
process contributes its series (`read_metrics.ReadSeries`, named and labelled after the
catalog in `seamless_assets.metrics_catalog`). prometheus_client is imported here only,
when an endpoint starts: definitions that hold the resource never load it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from seamless_assets.metrics_catalog import READ, READER_METRICS

from .read_metrics import Labels, ReadSeries, read_series

if TYPE_CHECKING:
    from seamless_assets.config import SeamlessConfig
    from seamless_assets.core.fetch_cache import CacheStats

    from .read_runtime import ReaderRuntime
    from .reader import SeamlessReader

log = logging.getLogger(__name__)

_lock = threading.Lock()
_servers: dict[tuple[str, int], tuple[Any, weakref.WeakSet[SeamlessReader]]] = {}


def serve_metrics(reader: SeamlessReader, port: int, bind: str = "127.0.0.1") -> int:
    """Serve `reader`'s metrics on http://bind:port/metrics (0: a free port) and return
    the port. A second reader of the process on the same port joins the same endpoint."""
    from prometheus_client import CollectorRegistry, start_http_server

    with _lock:
        for (addr, bound), (_, members) in _servers.items():
            if addr == bind and (bound == port or (port == 0 and reader in members)):
                members.add(reader)
                return bound
        readers: weakref.WeakSet[SeamlessReader] = weakref.WeakSet([reader])
        registry = CollectorRegistry()
        registry.register(ReaderCollector(readers))
        server, _thread = start_http_server(port, addr=bind, registry=registry)
        bound = int(server.server_port)
        _servers[(bind, bound)] = (server, readers)
    log.info("read metrics served on http://%s:%d/metrics", bind, bound)
    return bound


def serve_configured(reader: SeamlessReader, config: SeamlessConfig) -> None:
    """`observability.metrics.port` set: serve it (a port another process holds is
    logged; the reader still reads)."""
    metrics = config.seamless.observability.metrics
    if metrics.port is None:
        return
    try:
        serve_metrics(reader, metrics.port, metrics.bind)
    except OSError as exc:
        log.warning(
            "read metrics not served on %s:%d: %s (another process holds the port?)",
            metrics.bind, metrics.port, exc,
        )  # fmt: skip


def stop_serving(port: int, bind: str = "127.0.0.1") -> None:
    with _lock:
        entry = _servers.pop((bind, port), None)
    if entry is not None:
        entry[0].shutdown()
        entry[0].server_close()


class ReaderCollector:
    """The series of the live readers as Prometheus families (summed across readers)."""

    def __init__(self, readers: weakref.WeakSet[SeamlessReader]) -> None:
        self.readers = readers

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            UnknownMetricFamily,
        )

        merged = _Merged()
        for reader in list(self.readers):
            rt = reader._rt  # the reader's open runtime (None once closed)
            if rt is not None:
                merged.add(read_series(rt), rt.cache.stats())
                merged.tokens.update(shared_tokens(rt))

        for name, values in merged.counters.items():
            spec = READER_METRICS[name]
            # a catalog counter named without `_total` keeps its exact name (untyped)
            kind = CounterMetricFamily if name.endswith("_total") else UnknownMetricFamily
            family = kind(name, spec.help, labels=list(spec.labels))
            for labels, value in sorted(values.items()):
                family.add_metric([v for _, v in labels], value)
            yield family
        for name, last in merged.gauges.items():
            gauge = GaugeMetricFamily(name, READER_METRICS[name].help, labels=list(READ))
            for labels, value in sorted(last.items()):
                gauge.add_metric([v for _, v in labels], value)
            yield gauge
        for name, hists in merged.histograms.items():
            bounds = [*(f"{b:g}" for b in READER_METRICS[name].buckets), "+Inf"]
            hist = HistogramMetricFamily(name, READER_METRICS[name].help, labels=list(READ))
            for labels, (buckets, total) in sorted(hists.items()):
                cumulative = list(zip(bounds, buckets, strict=True))
                hist.add_metric([v for _, v in labels], cumulative, total)
            yield hist
        if merged.tokens:
            available = GaugeMetricFamily(
                "seamless_rl_tokens_available",
                READER_METRICS["seamless_rl_tokens_available"].help,
                labels=["limiter_key"],
            )
            capacity = GaugeMetricFamily(
                "seamless_rl_tokens_capacity",
                READER_METRICS["seamless_rl_tokens_capacity"].help,
                labels=["limiter_key"],
            )
            for key, (tokens, cap) in sorted(merged.tokens.items()):
                available.add_metric([key], tokens)
                capacity.add_metric([key], cap)
            yield available
            yield capacity
        for name, value in merged.cache.items():
            if name == "seamless_cache_resident":
                yield GaugeMetricFamily(name, READER_METRICS[name].help, value=value)
            else:
                yield CounterMetricFamily(name, READER_METRICS[name].help, value=value)


class _Merged:
    """Series of several readers of one process added together (last gauge wins)."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {}
        self.gauges: dict[str, dict[Labels, float]] = {}
        self.histograms: dict[str, dict[Labels, tuple[list[int], float]]] = {}
        self.cache = dict.fromkeys(
            ("seamless_cache_hit_total", "seamless_cache_miss_total", "seamless_cache_resident"),
            0.0,
        )
        self.tokens: dict[str, tuple[float, float]] = {}

    def add(self, series: ReadSeries, stats: CacheStats) -> None:
        with series.lock:
            for name, values in series.counters.items():
                into = self.counters.setdefault(name, {})
                for labels, value in values.items():
                    into[labels] = into.get(labels, 0.0) + value
            for name, last in series.gauges.items():
                self.gauges.setdefault(name, {}).update(last)
            for name, hists in series.histograms.items():
                hinto = self.histograms.setdefault(name, {})
                for labels, h in hists.items():
                    buckets, total = hinto.get(labels, ([0] * len(h.buckets), 0.0))
                    added = [a + b for a, b in zip(buckets, h.buckets, strict=True)]
                    hinto[labels] = (added, total + h.total)
        self.cache["seamless_cache_hit_total"] += stats.hits
        self.cache["seamless_cache_miss_total"] += stats.misses
        self.cache["seamless_cache_resident"] += stats.resident


def shared_tokens(rt: ReaderRuntime) -> dict[str, tuple[float, float]]:
    """(tokens, capacity) of the shared Redis bucket of each exchange key the reader uses,
    refilled to Redis' clock as the limiter's script would. Only keys with a bucket: a key
    nobody used within the bucket's lifetime is idle, not empty. An in-process limiter
    (no Redis DSN, or Redis down) has no shared bucket to report."""
    from .exchange import ExchangeSettings
    from .rate_limit_redis import RedisRateLimiter

    out: dict[str, tuple[float, float]] = {}
    for exchange_id in rt.config.exchanges:
        limiter = rt.rate_limiter.limiter(rt.config.rate_limit_for(exchange_id))
        if not isinstance(limiter, RedisRateLimiter) or not limiter.using_redis:
            continue
        key = ExchangeSettings.from_config(rt.config, exchange_id).rate_key
        budget = limiter.budget(key)
        try:
            tokens, ts = limiter.client.hmget(limiter.bucket_key(key), "tokens", "ts")
            seconds, micros = limiter.client.time()
        except Exception as exc:  # a scrape during a Redis outage: no sample, a log line
            log.warning("rate-limit tokens of %s not read from Redis: %s", key, exc)
            continue
        if tokens is None or ts is None:
            continue
        now_ms = seconds * 1000 + micros / 1000
        elapsed_s = max(0.0, now_ms - float(ts)) / 1000
        out[key] = (
            min(budget.capacity, float(tokens) + elapsed_s * budget.rate_per_s),
            budget.capacity,
        )
    return out
