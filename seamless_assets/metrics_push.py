"""A run's metrics to the Prometheus Pushgateway, the way Prometheus recommends for batch
jobs: pushed once when the run ends (success or failure), under a grouping key per job and
node so concurrent runs of other nodes never overwrite each other and a node's group holds
its last run. Alerts look at `time() - seamless_backfill_last_success_timestamp_seconds`.

Nothing here fails a run: no `observability.metrics.pushgateway_url` means no push (said
once per process), and a push that fails is logged. prometheus_client is imported only
when pushing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .metrics_catalog import RUN_METRICS

if TYPE_CHECKING:
    from .config import MetricsConfig
    from .core.frame import Range
    from .nodes import NodeId
    from .pipeline import RunOutcome

log = logging.getLogger(__name__)
_said_no_gateway = False


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def run_samples(
    partitions: Sequence[Range],
    outcome: RunOutcome | None,
    *,
    duration_s: float,
    ended_at: float,
    collision: bool = False,
    gap_detected_at: float | None = None,
) -> list[Sample]:
    """What a run pushes: its facts after a success (`outcome`), or after a failure
    (None: nothing completed; `collision` when it failed on a `FingerprintCollision`). The
    last-success/-failure timestamps are pushed only by a run that ended that way, so each
    keeps the last one of its kind (`pushadd`); a gap repair run (`gap_detected_at`, when
    the repair sensor asked for it) pushes its latency when it succeeds."""
    scheduled = len(partitions)
    out = [
        Sample("seamless_backfill_partitions", scheduled),
        Sample("seamless_backfill_duration_seconds", duration_s),
        Sample("fingerprint_collisions", 1.0 if collision else 0.0),
    ]
    if outcome is None:
        out += [
            Sample("backfill_completion_ratio", 0.0),
            Sample("seamless_backfill_last_failure_timestamp_seconds", ended_at),
        ]
        return out
    if gap_detected_at is not None:
        out.append(Sample("gap_repair_latency_ms", max(0.0, ended_at - gap_detected_at) * 1000))
    requests = outcome.requests
    completed = len(outcome.published)
    out += [
        Sample("backfill_completion_ratio", completed / scheduled if scheduled else 1.0),
        Sample("coverage_ratio", outcome.coverage_ratio),
        Sample("artifact_publish_latency_ms", outcome.timings_s.get("publish_s", 0.0) * 1000),
        Sample("artifact_bytes_written", sum(p.bytes_written for p in outcome.partitions)),
        Sample("seamless_rl_dropped_total", requests.rate_limited if requests else 0),
        Sample("seamless_backfill_bars", outcome.stored.rows),
        Sample("seamless_backfill_requests", requests.total_requests if requests else 0),
        Sample("seamless_backfill_last_success_timestamp_seconds", ended_at),
    ]
    out += [
        Sample("seamless_conformance_flag_total", count, {"flag_type": flag})
        for flag, count in sorted(outcome.flags.items())
    ]
    out += [
        Sample("seamless_backfill_stage_seconds", seconds, {"stage": stage.removesuffix("_s")})
        for stage, seconds in sorted(outcome.timings_s.items())
    ]
    return out


def grouping_key(node: NodeId) -> dict[str, str]:
    return {"node_id": str(node), "interval": str(node.interval_s)}


def push_run_metrics(
    metrics: MetricsConfig,
    node: NodeId,
    partitions: Sequence[Range],
    outcome: RunOutcome | None,
    *,
    duration_s: float,
    collision: bool = False,
    gap_detected_at: float | None = None,
) -> bool:
    """Push the run's samples to the Pushgateway (POST: replaces only the names pushed,
    so a failure keeps the last success's coverage). True when pushed."""
    global _said_no_gateway
    if not metrics.pushgateway_url:
        if not _said_no_gateway:
            log.info(
                "run metrics not pushed: seamless.observability.metrics.pushgateway_url is not set"
            )
            _said_no_gateway = True
        return False
    samples = run_samples(
        partitions,
        outcome,
        duration_s=duration_s,
        ended_at=time.time(),
        collision=collision,
        gap_detected_at=gap_detected_at,
    )
    try:
        from prometheus_client import CollectorRegistry, pushadd_to_gateway

        registry = CollectorRegistry()
        registry.register(_SamplesCollector(samples))
        pushadd_to_gateway(
            metrics.pushgateway_url,
            job=metrics.job,
            registry=registry,
            grouping_key=grouping_key(node),
            timeout=metrics.push_timeout_s,
        )
    except Exception as exc:  # a metrics outage never fails the run it describes
        log.warning(
            "run metrics of %s not pushed to %s: %s: %s",
            node, metrics.pushgateway_url, type(exc).__name__, exc,
        )  # fmt: skip
        return False
    return True


class _SamplesCollector:
    """The samples as Prometheus families (names, types and help from the catalog)."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        by_name: dict[str, list[Sample]] = {}
        for s in self.samples:
            by_name.setdefault(s.name, []).append(s)
        for name, samples in by_name.items():
            spec = RUN_METRICS[name]
            kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = kind(name, spec.help, labels=list(spec.labels))
            for s in samples:
                family.add_metric([s.labels[k] for k in spec.labels], s.value)
            yield family
