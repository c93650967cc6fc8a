"""Governance checks of every node, evaluated on a schedule from the stores (not the run).

- `partition_coverage` (WARN): stable partitions from the node's history start (its first
  bar on the exchange, `history.py`) whose stored bars are below
  `observability.coverage_ratio_threshold` (confirmed-empty windows excluded), listed.
  History outside the materialized span (before its first or after its last partition) is
  counted in the metadata but does not fail the check: it is work not yet done (a
  backfill, a schedule or the gap-repair sensor fills it); holes inside the span and
  partitions short of bars do.
- `live_staleness` (WARN beyond `domains.live.max_lag_sec`, ERROR beyond twice it): how far
  the stored data trails the newest closed bar. Defined only for the nodes served live
  (`domains.live.nodes`, which the live-edge sensor keeps current).
- `as_of_stall` (WARN beyond `observability.as_of_stall_bars`, ERROR beyond twice it):
  published, stable partitions the newest snapshot lacks (or lists with another
  fingerprint), and how many bars the oldest of them has been waiting.
- `conformance_flag_spike` (WARN; ERROR for integrity flags): every published partition's
  flag counts (from its manifest) against the median of the partitions before it.

Every result names the node, the measured values and the thresholds in its metadata, so
Dagster alert policies can route on the check name and severity. The checks of a node are
one subsettable op: each can be executed on its own from the UI.
"""

import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

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
from .core.flags import (
    INVALID_TIMESTAMP,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    OHLC_INCONSISTENT,
    ZERO_BAR,
)
from .core.frame import Range, iso_utc
from .core.stabilization import closed_end, stable_end
from .history import history_start_s
from .runtime import ArtifactStoreResource, HotStoreResource

if TYPE_CHECKING:  # the stores (pandas, pyarrow, pandera) load when a check runs
    from resources.artifacts.base import ArtifactStore
    from resources.hot_store.base import HotStore

PARTITION_COVERAGE = "partition_coverage"
LIVE_STALENESS = "live_staleness"
AS_OF_STALL = "as_of_stall"
FLAG_SPIKE = "conformance_flag_spike"
CHECK_NAMES = (PARTITION_COVERAGE, LIVE_STALENESS, AS_OF_STALL, FLAG_SPIKE)

GOVERNANCE_JOB = "seamless_governance_checks_job"
GOVERNANCE_CRON = "*/5 * * * *"
LISTED_MAX = 50
MANIFEST_READERS = 8  # manifests are small: reads are latency-bound (S3), so in parallel

SPIKE_BASELINE = 30  # partitions before each one that form its median
SPIKE_MIN_BASELINE = 3
SPIKE_FACTOR = 3.0
SPIKE_MIN_EXCESS = 5
INTEGRITY_FLAGS = frozenset(
    {OHLC_INCONSISTENT, NON_FINITE, INVALID_TIMESTAMP, NON_POSITIVE_PRICE, ZERO_BAR}
)

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR

# When a partition was materialized (epoch s), by partition key; None if no record says.
MaterializedAt = Callable[[str], float | None]


@dataclass(frozen=True)
class GovernanceSettings:
    coverage_threshold: float
    stabilization_bars: int
    as_of_stall_bars: int
    live_max_lag_s: int | None
    conformance_version: str
    live_nodes: frozenset[str] = frozenset()

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
            live_nodes=frozenset(str(n) for n in config.live_nodes),
        )

    def served_live(self, node: WatchedNode) -> bool:
        return node.node_id in self.live_nodes


def _result(
    name: str,
    node: WatchedNode,
    passed: bool,
    severity: dg.AssetCheckSeverity,
    description: str | None = None,
    **meta: Any,
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=node.asset_key,
        check_name=name,
        passed=passed,
        severity=severity,
        description=description,
        metadata={"node_id": node.node_id, **meta},
    )


def coverage_result(
    node: WatchedNode,
    coverage: Sequence[PartitionCoverage],
    settings: GovernanceSettings,
    history_start: int | None,
) -> dg.AssetCheckResult:
    stable = [p for p in coverage if p.stable]
    bad = below_threshold(stable, settings.coverage_threshold)
    materialized = [p.key for p in stable if p.stored_bars or p.published]
    first, last = min(materialized, default=None), max(materialized, default=None)

    def not_backfilled(p: PartitionCoverage) -> bool:
        """Outside the materialized span (before its first or after its last partition):
        history not fetched yet, not a hole in what was."""
        empty = p.stored_bars == 0 and not p.published
        return empty and (first is None or last is None or not first <= p.key <= last)

    absent = [p for p in bad if not_backfilled(p)]
    thin = [p for p in bad if not not_backfilled(p)]  # holes and partitions short of bars
    since = (
        iso_utc(history_start)
        if history_start is not None
        else "the partitions' start (the node's first bar is not discovered yet: its first "
        "run or the gap-repair sensor records it)"
    )
    # History outside the materialized span is work not yet done (Dagster shows it as
    # missing; a backfill, a schedule or the gap-repair sensor fills it), not bad data: it
    # is reported, and the check fails for holes inside the span and partitions short of
    # bars.
    parts = []
    if thin:
        parts.append(
            f"{len(thin)} partition(s) inside the materialized span hold fewer bars than "
            f"the exchange has ({thin[0].key}..{thin[-1].key})"
        )
    if absent:
        parts.append(
            f"{len(absent)} partition(s) since {since} are not backfilled yet "
            f"({absent[0].key}..{absent[-1].key}; a backfill or the gap-repair sensor fills them)"
        )
    return _result(
        PARTITION_COVERAGE,
        node,
        passed=not thin,
        severity=WARN,
        description="; ".join(parts) or None,
        threshold=settings.coverage_threshold,
        history_start=iso_utc(history_start) if history_start is not None else None,
        partitions_checked=len(stable),
        bad_partition_count=len(thin),
        not_backfilled_count=len(absent),
        thin_partition_count=len(thin),
        worst_ratio=round(min((p.ratio for p in bad), default=1.0), 6),
        bad_partitions=[
            f"{p.key} {p.ratio:.4f} ({p.stored_bars}/{p.expected_bars})" for p in thin[:LISTED_MAX]
        ],
    )


def staleness_result(
    node: WatchedNode, hot: "HotStore", now_s: float, settings: GovernanceSettings
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
    description = None
    if not passed:
        trail = (
            "has no stored bars" if lag_s is None else f"trails the newest closed bar by {lag_s}s"
        )
        description = f"served live but {trail} (max {max_lag}s): is the live-edge sensor running?"
    return _result(
        LIVE_STALENESS,
        node,
        passed=passed,
        severity=severity,
        description=description,
        lag_s=lag_s,
        max_lag_s=max_lag,
        data_end=iso_utc(data_end) if data_end is not None else None,
        newest_closed_bar_end=iso_utc(newest_closed),
    )


def unsnapshotted(store: "ArtifactStore", node: WatchedNode, stable_end_s: int) -> list[Range]:
    """Published partitions ending by `stable_end_s` that the newest snapshot lacks or lists
    with another fingerprint, in time order."""
    return sorted(store.unsnapshotted(node.node, stable_end_s))


def stall_result(
    node: WatchedNode,
    store: "ArtifactStore",
    now_s: float,
    settings: GovernanceSettings,
    materialized_at: MaterializedAt = lambda _key: None,
) -> dg.AssetCheckResult:
    interval, origin = node.node.interval_s, node.node.timeframe.origin_s
    stabilization = settings.stabilization_bars
    snapshot = store.latest_snapshot(node.node)
    committed_s = snapshot.as_of_s if snapshot else None
    lacking = unsnapshotted(
        store, node, stable_end(int(now_s), interval, stabilization, origin_s=origin)
    )

    def waiting_since(window: Range) -> float:
        """Since when the as_of sensor could have snapshotted `window`: once its last bar was
        stable, it was published and the newest snapshot was committed (a partition
        published after that commit is only due from its publication on)."""
        since = float(window.end + stabilization * interval)
        if committed_s is not None:
            since = max(since, committed_s)
        key = node.partitions_def.get_partition_key_for_timestamp(window.start)
        published = materialized_at(key)
        if published is not None and published <= now_s:  # another clock: ignored
            since = max(since, published)
        return since

    stall_bars = 0
    if lacking:
        oldest = min(waiting_since(w) for w in lacking[:LISTED_MAX])
        stall_bars = max(0, int(now_s - oldest) // interval)
    limit = settings.as_of_stall_bars
    passed = stall_bars <= limit
    return _result(
        AS_OF_STALL,
        node,
        passed=passed,
        severity=ERROR if stall_bars > 2 * limit else WARN,
        description=None
        if passed
        else f"{len(lacking)} published partition(s) missing from the newest snapshot for "
        f"{stall_bars} bars: is the as_of sensor running?",
        as_of=iso_utc(committed_s) if committed_s is not None else None,
        stall_bars=stall_bars,
        stall_bars_threshold=limit,
        partitions_behind=len(lacking),
        unsnapshotted=[str(w) for w in lacking[:LISTED_MAX]],
        snapshot_fingerprint=snapshot.fingerprint if snapshot else None,
    )


def flag_spikes(counts: Sequence[Mapping[str, int]]) -> list[tuple[int, str, int, float, int]]:
    """Spikes as (index, flag, count, baseline median, baseline size): flag counts above
    SPIKE_FACTOR × the median of the (up to) SPIKE_BASELINE partitions before, by at least
    SPIKE_MIN_EXCESS. Every partition with enough history before it is judged."""
    out = []
    for index in range(SPIKE_MIN_BASELINE, len(counts)):
        baseline = counts[max(0, index - SPIKE_BASELINE) : index]
        for flag, count in sorted(counts[index].items()):
            if count < SPIKE_MIN_EXCESS:
                continue  # cannot be a spike whatever the median: skip the median
            median = statistics.median(b.get(flag, 0) for b in baseline)
            if count > SPIKE_FACTOR * median and count - median >= SPIKE_MIN_EXCESS:
                out.append((index, flag, count, float(median), len(baseline)))
    return out


def manifest_flags(store: "ArtifactStore", node: WatchedNode) -> list[tuple[Range, dict[str, int]]]:
    """Every published partition's conformance flag counts, in time order."""
    heads = sorted(store.heads(node.node).items())

    def flags_of(item: tuple[Range, str]) -> tuple[Range, dict[str, int]]:
        window, fingerprint = item
        manifest = store.read_manifest(node.node, fingerprint) or {}
        flags = (manifest.get("conformance") or {}).get("flags") or {}
        return window, {str(k): int(v) for k, v in flags.items() if v}

    with ThreadPoolExecutor(max_workers=MANIFEST_READERS) as pool:
        return list(pool.map(flags_of, heads))


def spike_result(
    node: WatchedNode, store: "ArtifactStore", settings: GovernanceSettings
) -> dg.AssetCheckResult:
    partitions = manifest_flags(store, node)
    spikes = flag_spikes([flags for _, flags in partitions])
    integrity = any(spike[1] in INTEGRITY_FLAGS for spike in spikes)
    flagged = sorted({i for i, *_ in spikes})
    return _result(
        FLAG_SPIKE,
        node,
        passed=not spikes,
        severity=ERROR if integrity else WARN,
        description=None
        if not spikes
        else f"{len(flagged)} partition(s) with conformance flags far above their usual "
        f"({'integrity flags: bad rows from the exchange' if integrity else 'gaps or casts'})",
        partitions_checked=len(partitions),
        spike_factor=SPIKE_FACTOR,
        spike_min_excess=SPIKE_MIN_EXCESS,
        spiking_partition_count=len(flagged),
        spikes=[
            f"{partitions[i][0]} {flag}={count} (median {median:g} of the {n} partitions before)"
            for i, flag, count, median, n in spikes[:LISTED_MAX]
        ],
    )


def evaluate_governance(
    node: WatchedNode,
    hot: "HotStore",
    store: "ArtifactStore",
    now_s: float,
    settings: GovernanceSettings,
    floor_s: float | None = None,
    *,
    names: Sequence[str] | None = None,
    materialized_at: MaterializedAt = lambda _key: None,
) -> list[dg.AssetCheckResult]:
    """The governance results of one node at `now_s` (plain Python; no Dagster run): the
    checks `names` (default: every check defined for the node).

    A check that cannot be evaluated (a store down, an unreadable manifest) fails with
    ERROR and the reason instead of failing the run it is part of.
    """
    wanted = set(check_names(node, settings) if names is None else names)

    def scan() -> dg.AssetCheckResult:
        start = history_start_s(store, node.node)
        floors = [f for f in (floor_s, start) if f is not None]
        span = closed_partitions(node.partitions_def, now_s, not_before_s=max(floors, default=None))
        published = published_partitions(store, node.node)
        stabilization = settings.stabilization_bars
        coverage = scan_coverage(
            node.node, span, hot, published, now_s, stabilization, history_start_s=start
        )
        return coverage_result(node, coverage, settings, start)

    evaluations: dict[str, Callable[[], dg.AssetCheckResult]] = {
        PARTITION_COVERAGE: scan,
        LIVE_STALENESS: lambda: staleness_result(node, hot, now_s, settings),
        AS_OF_STALL: lambda: stall_result(node, store, now_s, settings, materialized_at),
        FLAG_SPIKE: lambda: spike_result(node, store, settings),
    }
    results = []
    for name, evaluate in evaluations.items():
        if name not in wanted:
            continue
        try:
            results.append(evaluate())
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            results.append(
                _result(name, node, passed=False, severity=ERROR, description=error, error=error)
            )
    return results


def check_description(name: str, settings: GovernanceSettings) -> str:
    """What check `name` tests, with the configured values filled in (shown in the UI)."""
    lag = settings.live_max_lag_s
    return {
        PARTITION_COVERAGE: "Stable partitions since the node's first bar with stored bars below "
        f"{settings.coverage_threshold:.0%} of the grid (observability.coverage_ratio_threshold; "
        "confirmed-empty windows excluded).",
        LIVE_STALENESS: "Stored data trails the newest closed bar by more than "
        f"{f'{lag} s' if lag is not None else 'the configured lag'} (domains.live.max_lag_sec; "
        "WARN, ERROR beyond "
        "twice it; nodes served live only).",
        AS_OF_STALL: "Published partitions the newest snapshot lacks, waiting more than "
        f"{settings.as_of_stall_bars} bars (observability.as_of_stall_bars; WARN, ERROR beyond "
        "twice it).",
        FLAG_SPIKE: "Conformance flags of a published partition above "
        f"{SPIKE_FACTOR:g}× the median of the {SPIKE_BASELINE} partitions before it, by at "
        f"least {SPIKE_MIN_EXCESS} (ERROR for integrity flags).",
    }[name]


def check_names(node: WatchedNode, settings: GovernanceSettings) -> list[str]:
    """The governance checks defined for `node`: live staleness only if it is served live."""
    return [n for n in CHECK_NAMES if n != LIVE_STALENESS or settings.served_live(node)]


def governance_check_specs(
    node: WatchedNode, settings: GovernanceSettings
) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=node.asset_key, description=check_description(name, settings))
        for name in check_names(node, settings)
    ]


def materialization_times(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> MaterializedAt:
    """When Dagster last recorded a materialization of a partition of `asset_key`."""

    def materialized_at(partition_key: str) -> float | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]), limit=1
        ).records
        return records[0].timestamp if records else None

    return materialized_at


def governance_checks(
    node: WatchedNode, config: SeamlessConfig, *, clock: Callable[[], float] = wall_clock
) -> dg.AssetChecksDefinition:
    """The governance checks of one node, as one subsettable op reading the stores."""
    settings = GovernanceSettings.from_config(config)

    @dg.multi_asset_check(
        name=node.asset_key.to_python_identifier("governance"),
        specs=governance_check_specs(node, settings),
        description=f"Governance checks of {node.node_id}.",
        # Each check can run on its own (the UI's "Execute" on one check).
        can_subset=True,
    )
    def _governance(
        context: dg.AssetCheckExecutionContext,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
    ) -> Iterator[dg.AssetCheckResult]:
        names = [key.name for key in context.selected_asset_check_keys]
        hot = hot_store.open()
        try:
            now_s = clock()
            floor_s = history_floor_s(hot_store, now_s)
            yield from evaluate_governance(
                node,
                hot,
                artifacts.open(),
                now_s,
                settings,
                floor_s,
                names=names,
                materialized_at=materialization_times(context.instance, node.asset_key),
            )
        finally:
            hot.close()

    return _governance


def governance_check_keys(checks: Sequence[dg.AssetChecksDefinition]) -> list[dg.AssetCheckKey]:
    return [key for check in checks for key in check.check_keys]
