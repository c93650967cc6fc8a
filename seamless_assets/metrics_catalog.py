"""The metrics Seamless exports for Prometheus: the blueprint's catalog names, their labels
and who exports them (README "Metrics").

Pure data: `seamless_assets.metrics_push` (run workers -> Pushgateway) and
`resources.metrics_export` (read-resource processes -> `/metrics`) build their Prometheus
families from it; neither imports prometheus_client before it exports.

Labels are bounded: `node_id` (the catalog's nodes), `interval` (seconds), `world_id`
(the worlds that read), `flag_type` (the conformance taxonomy), `phase`, `stage`,
`limiter_key` (one per exchange key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]

#: Buckets (ms) of the SLA phase histograms: around the blueprint's warn levels (300 ms
#: storage, 800 ms live, 5000 ms backfill).
LATENCY_BUCKETS_MS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 300.0, 800.0, 2000.0, 5000.0, 15000.0)
#: Buckets (s) of `seamless_sla_deadline_seconds`: the total deadlines a domain may set.
DEADLINE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS_MS  # a histogram's upper bounds (+Inf implied)


READ = ("node_id", "interval", "world_id")

#: Served by a read-resource process on `/metrics` (`observability.metrics.port`).
READER_METRICS = {
    m.name: m
    for m in (
        MetricSpec("seamless_storage_wait_ms", "histogram", "Storage wait per read (ms)", READ),
        MetricSpec(
            "seamless_backfill_wait_ms", "histogram", "Backfill (fetch) wait per read (ms)", READ
        ),
        MetricSpec("seamless_live_wait_ms", "histogram", "Live feed wait per read (ms)", READ),
        MetricSpec("seamless_total_ms", "histogram", "Whole read, all SLA phases (ms)", READ),
        MetricSpec(
            "seamless_sla_deadline_seconds",
            "histogram",
            "Total deadline each read ran under (its domain's total_deadline_ms, s)",
            READ,
            DEADLINE_BUCKETS_S,
        ),
        MetricSpec("seamless_fetch_total", "counter", "Reads finished (cache hits too)", READ),
        MetricSpec(
            "seamless_sla_exceeded_total",
            "counter",
            "Reads over an SLA phase budget",
            (*READ, "phase"),
        ),
        MetricSpec("coverage_ratio", "gauge", "Delivered / requested bars, last read", READ),
        MetricSpec(
            "seamless_conformance_flag_total",
            "counter",
            "Conformance corrections in the bars delivered",
            (*READ, "flag_type"),
        ),
        MetricSpec(
            "seamless_conformance_warning_total",
            "counter",
            "Conformance warnings (every flag but gap) in the bars delivered",
            READ,
        ),
        MetricSpec("domain_gate_holds", "counter", "Reads downgraded to HOLD", READ),
        MetricSpec("partial_fill_returns", "counter", "Reads returned partial", READ),
        MetricSpec(
            "as_of_advancement_events",
            "counter",
            "Monotonic as_of promotions of live sessions",
            ("node_id", "world_id"),
        ),
        MetricSpec(
            "live_staleness_seconds", "gauge", "now - last delivered bar end, last live read", READ
        ),
        MetricSpec(
            "seamless_rl_tokens_available",
            "gauge",
            "Tokens in the shared Redis bucket now (exchange units)",
            ("limiter_key",),
        ),
        MetricSpec(
            "seamless_rl_tokens_capacity",
            "gauge",
            "Capacity of the shared Redis bucket (exchange units)",
            ("limiter_key",),
        ),
        MetricSpec("seamless_cache_hit_total", "counter", "Read cache hits"),
        MetricSpec("seamless_cache_miss_total", "counter", "Read cache misses"),
        MetricSpec("seamless_cache_resident", "gauge", "Read cache entries"),
    )
}

#: Pushed by a run worker at the end of each backfill, grouped by `job`, `node_id` and
#: `interval` (the grouping key becomes their labels; one group per node, its last run).
RUN_METRICS = {
    m.name: m
    for m in (
        MetricSpec("backfill_completion_ratio", "gauge", "Partitions published / scheduled"),
        MetricSpec("coverage_ratio", "gauge", "Stored / expected bars in the run's window"),
        MetricSpec(
            "artifact_publish_latency_ms", "gauge", "Settle + encode + publish of the run (ms)"
        ),
        MetricSpec(
            "artifact_bytes_written", "gauge", "Bytes of segments and manifests the run stored"
        ),
        MetricSpec(
            "fingerprint_collisions",
            "gauge",
            "Segments the run could not publish: their fingerprint's address holds other rows",
        ),
        MetricSpec(
            "gap_repair_latency_ms",
            "gauge",
            "Gap repair: the sensor's request (gap detected) to the repair run's success (ms)",
        ),
        MetricSpec(
            "seamless_conformance_flag_total",
            "counter",
            "Conformance corrections in the run's bars",
            ("flag_type",),
        ),
        MetricSpec(
            "seamless_rl_dropped_total",
            "counter",
            "Requests the exchange refused for rate (HTTP 429/418, rate-limit errors)",
        ),
        MetricSpec(
            "seamless_backfill_stage_seconds", "gauge", "Measured stage time of the run", ("stage",)
        ),
        MetricSpec("seamless_backfill_partitions", "gauge", "Partitions the run scheduled"),
        MetricSpec("seamless_backfill_bars", "gauge", "Bars stored in the run's window"),
        MetricSpec("seamless_backfill_requests", "gauge", "Exchange HTTP requests of the run"),
        MetricSpec("seamless_backfill_duration_seconds", "gauge", "Wall time of the run"),
        MetricSpec(
            "seamless_backfill_last_success_timestamp_seconds", "gauge", "End of the last success"
        ),
        MetricSpec(
            "seamless_backfill_last_failure_timestamp_seconds", "gauge", "End of the last failure"
        ),
    )
}
