"""The reader's metrics, named after the blueprint's metrics catalog: what one finished
fetch adds to them (and the warning a downgraded or partial read logs).

Two views of the same reads: `rt.metrics`, the flat dict `reader.metrics()` returns, and
`ReadSeries`, the labelled series (`node_id`, `interval`, `world_id`, ...) with latency
histograms that `resources.metrics_export` serves to Prometheus. Plain Python: the read
path never imports prometheus_client."""

from __future__ import annotations

import bisect
import json
import logging
import threading
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seamless_assets.core.flags import conformance_warnings
from seamless_assets.core.read_context import ExecutionDomain, SeamlessFetchMetadata
from seamless_assets.metrics_catalog import READER_METRICS

if TYPE_CHECKING:
    from .read_runtime import ReaderRuntime

# The reader's own logger: a downgrade is the reader's warning.
log = logging.getLogger("resources.reader")

#: SLA phase -> the blueprint's metric of its duration (last value; `_sum` accumulates).
PHASE_METRICS = {
    "storage_wait": "seamless_storage_wait_ms",
    "backfill_wait": "seamless_backfill_wait_ms",
    "live_wait": "seamless_live_wait_ms",
    "total": "seamless_total_ms",
}


Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """Cumulative counts per bucket of `bounds` (+Inf last), sum and count."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.buckets = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # the first bucket whose upper bound holds the value, and every larger one
        for i in range(bisect.bisect_left(self.bounds, value), len(self.buckets)):
            self.buckets[i] += 1
        self.total += value
        self.count += 1


@dataclass
class ReadSeries:
    """The labelled series of one reader: name -> labels -> value (or histogram)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counters: defaultdict[str, defaultdict[Labels, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    gauges: defaultdict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))
    histograms: defaultdict[str, dict[Labels, Histogram]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    live_as_of: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, name: str, labels: Labels, value: float) -> None:
        """One observation of the histogram `name` (its catalog buckets); under `lock`."""
        hists = self.histograms[name]
        if labels not in hists:
            hists[labels] = Histogram(READER_METRICS[name].buckets)
        hists[labels].observe(value)


_SERIES: weakref.WeakKeyDictionary[ReaderRuntime, ReadSeries] = weakref.WeakKeyDictionary()
_SERIES_LOCK = threading.Lock()


def read_series(rt: ReaderRuntime) -> ReadSeries:
    with _SERIES_LOCK:
        series = _SERIES.get(rt)
        if series is None:
            series = _SERIES[rt] = ReadSeries()
        return series


def record_fetch(rt: ReaderRuntime, meta: SeamlessFetchMetadata) -> None:
    """Count one finished fetch (cache hits included) and remember its metadata."""
    deadline_ms = rt.budget(ExecutionDomain(meta.execution_domain)).total_ms
    _record_series(read_series(rt), meta, deadline_ms)
    with rt.state_lock:
        rt.last_metadata = meta
        m = rt.metrics
        m["seamless_fetch_total"] += 1
        for phase, metric in PHASE_METRICS.items():
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
        m["seamless_conformance_warning_total"] += conformance_warnings(meta.conformance_flags)
    if meta.downgrade or meta.partial:
        log.warning(
            "seamless downgrade %s", json.dumps(meta.to_json(), sort_keys=True, default=str)
        )


def _record_series(
    series: ReadSeries, meta: SeamlessFetchMetadata, deadline_ms: float | None
) -> None:
    labels: Labels = (
        ("node_id", meta.node_id), ("interval", str(meta.interval_s)), ("world_id", meta.world_id),
    )  # fmt: skip
    with series.lock:
        series.counters["seamless_fetch_total"][labels] += 1
        for phase, metric in PHASE_METRICS.items():
            key = f"{phase}_ms"
            if key in meta.sla:  # every read times every phase (0 ms: it did not wait)
                series.observe(metric, labels, meta.sla[key])
        if deadline_ms is not None:  # None: the domain sets no deadline
            series.observe("seamless_sla_deadline_seconds", labels, deadline_ms / 1000)
        for phase in meta.sla_exceeded:
            series.counters["seamless_sla_exceeded_total"][(*labels, ("phase", phase))] += 1
        series.gauges["coverage_ratio"][labels] = meta.coverage_ratio
        series.counters["domain_gate_holds"][labels] += meta.downgrade == "HOLD"
        series.counters["partial_fill_returns"][labels] += meta.partial
        for flag, count in meta.conformance_flags.items():
            if count:
                series.counters["seamless_conformance_flag_total"][
                    (*labels, ("flag_type", flag))
                ] += count
        series.counters["seamless_conformance_warning_total"][labels] += conformance_warnings(
            meta.conformance_flags
        )
        if meta.staleness_s is not None:
            series.gauges["live_staleness_seconds"][labels] = meta.staleness_s
        if meta.execution_domain == "live" and meta.as_of_s is not None:
            session = (meta.node_id, meta.world_id)
            previous = series.live_as_of.get(session)
            if previous is not None and meta.as_of_s > previous:
                series.counters["as_of_advancement_events"][
                    (("node_id", meta.node_id), ("world_id", meta.world_id))
                ] += 1
            series.live_as_of[session] = max(meta.as_of_s, previous or meta.as_of_s)
