"""Governance checks of every node, evaluated on a schedule from the stores (not the run).

- `partition_coverage` (WARN): stable partitions whose stored bars are below
  `observability.coverage_ratio_threshold` (confirmed-empty windows excluded), listed.
- `live_staleness` (WARN beyond `domains.live.max_lag_sec`, ERROR beyond twice it): how far
  the stored data trails the newest closed bar.
- `as_of_stall` (WARN beyond `observability.as_of_stall_bars`, ERROR beyond twice it): bars
  since a stable, published-or-publishable partition could have entered the snapshot.
- `conformance_flag_spike` (WARN; ERROR for integrity flags): per-partition flag counts
  from the manifests of the newest partitions against the median of the ones before.

Every result names the node, the measured values and the thresholds in its metadata, so
Dagster alert policies can route on the check name and severity.
"""

import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from resources.artifacts.base import ArtifactStore
from resources.hot_store.base import HotStore
from sensors.common import WatchedNode, wall_clock
from sensors.coverage_scan import (
    PartitionCoverage,
    below_threshold,
    closed_partitions,
    published_partitions,
    scan_coverage,
)
from sensors.gap_repair import history_floor_s

from .config import SeamlessConfig
from .core.frame import iso_utc
from .core.stabilization import closed_end
from .runtime import ArtifactStoreResource, HotStoreResource

PARTITION_COVERAGE = "partition_coverage"
LIVE_STALENESS = "live_staleness"
AS_OF_STALL = "as_of_stall"
FLAG_SPIKE = "conformance_flag_spike"
CHECK_NAMES = (PARTITION_COVERAGE, LIVE_STALENESS, AS_OF_STALL, FLAG_SPIKE)

GOVERNANCE_JOB = "seamless_governance_checks_job"
GOVERNANCE_CRON = "*/5 * * * *"
LISTED_MAX = 50

SPIKE_RECENT = 7  # newest partitions judged
SPIKE_BASELINE = 30  # partitions before each one that form its median
SPIKE_MIN_BASELINE = 3
SPIKE_FACTOR = 3.0
SPIKE_MIN_EXCESS = 5
INTEGRITY_FLAGS = frozenset({"ohlc_inconsistent", "non_finite", "invalid_timestamp"})

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


@dataclass(frozen=True)
class GovernanceSettings:
    coverage_threshold: float
    stabilization_bars: int
    as_of_stall_bars: int
    live_max_lag_s: int | None
    conformance_version: str

    @classmethod
    def from_config(cls, config: SeamlessConfig) -> "GovernanceSettings":
        live = config.domains.get("live")
        section = config.seamless
        return cls(
            coverage_threshold=section.observability.coverage_ratio_threshold,
            stabilization_bars=section.artifact.stabilization_bars,
            as_of_stall_bars=section.observability.as_of_stall_bars,
            live_max_lag_s=live.max_lag_sec if live else None,
            conformance_version=section.conformance.version,
        )


def _result(
    name: str, node: WatchedNode, passed: bool, severity: dg.AssetCheckSeverity, **meta: Any
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=node.asset_key,
        check_name=name,
        passed=passed,
        severity=severity,
        metadata={"node_id": node.node_id, **meta},
    )


def coverage_result(
    node: WatchedNode, coverage: Sequence[PartitionCoverage], settings: GovernanceSettings
) -> dg.AssetCheckResult:
    stable = [p for p in coverage if p.stable]
    bad = below_threshold(stable, settings.coverage_threshold)
    return _result(
        PARTITION_COVERAGE,
        node,
        passed=not bad,
        severity=WARN,
        threshold=settings.coverage_threshold,
        partitions_checked=len(stable),
        bad_partition_count=len(bad),
        worst_ratio=round(min((p.ratio for p in bad), default=1.0), 6),
        bad_partitions=[
            f"{p.key} {p.ratio:.4f} ({p.stored_bars}/{p.expected_bars})" for p in bad[:LISTED_MAX]
        ],
    )


def staleness_result(
    node: WatchedNode, hot: HotStore, now_s: float, settings: GovernanceSettings
) -> dg.AssetCheckResult:
    max_lag = settings.live_max_lag_s
    interval, origin = node.node.interval_s, node.node.timeframe.origin_s
    newest_closed = closed_end(int(now_s), interval, origin_s=origin)
    bounds = hot.bounds(node.node_id)
    data_end = bounds[1] + interval if bounds else None
    # Lag behind the newest bar that could be stored: a forming bar never is.
    lag_s = newest_closed - data_end if data_end is not None else None
    if max_lag is None:
        passed, severity = True, WARN
    elif lag_s is None:
        passed, severity = False, ERROR
    else:
        passed = lag_s <= max_lag
        severity = ERROR if lag_s > 2 * max_lag else WARN
    return _result(
        LIVE_STALENESS,
        node,
        passed=passed,
        severity=severity,
        lag_s=lag_s,
        max_lag_s=max_lag,
        data_end=iso_utc(data_end) if data_end is not None else None,
        newest_closed_bar_end=iso_utc(newest_closed),
    )


def stall_result(
    node: WatchedNode,
    coverage: Sequence[PartitionCoverage],
    store: ArtifactStore,
    now_s: float,
    settings: GovernanceSettings,
) -> dg.AssetCheckResult:
    snapshot = store.latest_snapshot(node.node)
    as_of_s = snapshot.as_of_s if snapshot else None
    interval = node.node.interval_s
    overdue = [p for p in coverage if p.stable and (as_of_s is None or p.window.end > as_of_s)]
    reachable = overdue[-1].window.end if overdue else as_of_s
    stall_bars = 0
    if overdue:
        # The first partition the snapshot lacks became stable this many bars ago.
        stable_since = overdue[0].window.end + settings.stabilization_bars * interval
        stall_bars = max(0, int(now_s - stable_since) // interval)
    limit = settings.as_of_stall_bars
    return _result(
        AS_OF_STALL,
        node,
        passed=stall_bars <= limit,
        severity=ERROR if stall_bars > 2 * limit else WARN,
        as_of=iso_utc(as_of_s) if as_of_s is not None else None,
        reachable_as_of=iso_utc(reachable) if reachable is not None else None,
        stall_bars=stall_bars,
        stall_bars_threshold=limit,
        partitions_behind=len(overdue),
        snapshot_fingerprint=snapshot.fingerprint if snapshot else None,
    )


def flag_spikes(
    counts: Sequence[dict[str, int]], recent: int = SPIKE_RECENT
) -> list[tuple[int, str, int, float, int]]:
    """Spikes as (index, flag, count, baseline median, baseline size): among the last
    `recent` partitions, flag counts above SPIKE_FACTOR × the median of the (up to)
    SPIKE_BASELINE partitions before, by at least SPIKE_MIN_EXCESS."""
    out = []
    for index in range(max(0, len(counts) - recent), len(counts)):
        baseline = counts[max(0, index - SPIKE_BASELINE) : index]
        if len(baseline) < SPIKE_MIN_BASELINE:
            continue
        for flag, count in sorted(counts[index].items()):
            median = statistics.median(b.get(flag, 0) for b in baseline)
            if count > SPIKE_FACTOR * median and count - median >= SPIKE_MIN_EXCESS:
                out.append((index, flag, count, float(median), len(baseline)))
    return out


def spike_result(
    node: WatchedNode, store: ArtifactStore, settings: GovernanceSettings
) -> dg.AssetCheckResult:
    # Only the newest partitions' manifests are read: bounded work per evaluation.
    windows = sorted(published_partitions(store, node.node))[-(SPIKE_RECENT + SPIKE_BASELINE) :]
    counts, names = [], []
    for window in windows:
        fingerprint = store.head(node.node, window)
        manifest = store.read_manifest(node.node, fingerprint) if fingerprint else None
        flags = ((manifest or {}).get("conformance") or {}).get("flags") or {}
        counts.append({str(k): int(v) for k, v in flags.items()})
        names.append(str(window))
    spikes = flag_spikes(counts)
    integrity = any(spike[1] in INTEGRITY_FLAGS for spike in spikes)
    return _result(
        FLAG_SPIKE,
        node,
        passed=not spikes,
        severity=ERROR if integrity else WARN,
        partitions_checked=min(SPIKE_RECENT, len(counts)),
        spike_factor=SPIKE_FACTOR,
        spike_min_excess=SPIKE_MIN_EXCESS,
        spikes=[
            f"{names[i]} {flag}={count} (median {median:g} of the {n} partitions before)"
            for i, flag, count, median, n in spikes[:LISTED_MAX]
        ],
    )


def evaluate_governance(
    node: WatchedNode,
    hot: HotStore,
    store: ArtifactStore,
    now_s: float,
    settings: GovernanceSettings,
    floor_s: float | None = None,
) -> list[dg.AssetCheckResult]:
    """The four governance results of one node at `now_s` (plain Python; no Dagster run).

    A check that cannot be evaluated (a store down, an unreadable manifest) fails with
    ERROR and the reason instead of failing the run it is part of.
    """
    coverage: list[PartitionCoverage] = []

    def scan() -> dg.AssetCheckResult:
        span = closed_partitions(node.partitions_def, now_s, not_before_s=floor_s)
        published = published_partitions(store, node.node)
        stabilization = settings.stabilization_bars
        coverage.extend(scan_coverage(node.node, span, hot, published, now_s, stabilization))
        return coverage_result(node, coverage, settings)

    evaluations: list[tuple[str, Callable[[], dg.AssetCheckResult]]] = [
        (PARTITION_COVERAGE, scan),
        (LIVE_STALENESS, lambda: staleness_result(node, hot, now_s, settings)),
        (AS_OF_STALL, lambda: stall_result(node, coverage, store, now_s, settings)),
        (FLAG_SPIKE, lambda: spike_result(node, store, settings)),
    ]
    results = []
    for name, evaluate in evaluations:
        try:
            results.append(evaluate())
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            results.append(_result(name, node, passed=False, severity=ERROR, error=error))
    return results


def governance_check_specs(node: WatchedNode) -> list[dg.AssetCheckSpec]:
    descriptions = {
        PARTITION_COVERAGE: "Stable partitions with stored bars below the coverage threshold.",
        LIVE_STALENESS: "Stored data trails the newest closed bar by more than live max_lag.",
        AS_OF_STALL: "as_of has not reached stable partitions for more than N bars.",
        FLAG_SPIKE: "Conformance flags of recent partitions far above their usual median.",
    }
    return [
        dg.AssetCheckSpec(name, asset=node.asset_key, description=text)
        for name, text in descriptions.items()
    ]


def governance_checks(
    node: WatchedNode, config: SeamlessConfig, *, clock: Callable[[], float] = wall_clock
) -> dg.AssetChecksDefinition:
    """The governance checks of one node, as one op reading the stores."""
    settings = GovernanceSettings.from_config(config)

    @dg.multi_asset_check(
        name=node.asset_key.to_python_identifier("governance"),
        specs=governance_check_specs(node),
        description=f"Governance checks of {node.node_id}.",
    )
    def _governance(
        hot_store: HotStoreResource, artifacts: ArtifactStoreResource
    ) -> Iterator[dg.AssetCheckResult]:
        hot = hot_store.open()
        try:
            now_s = clock()
            floor_s = history_floor_s(hot_store, now_s)
            yield from evaluate_governance(node, hot, artifacts.open(), now_s, settings, floor_s)
        finally:
            hot.close()

    return _governance


def governance_check_keys(checks: Sequence[dg.AssetChecksDefinition]) -> list[dg.AssetCheckKey]:
    return [key for check in checks for key in check.check_keys]
