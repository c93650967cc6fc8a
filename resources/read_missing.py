"""Why a snapshot lacks partitions, and what truthfully adds them: a later snapshot that
already has them, the as_of sensor's next commit of partitions already published, a
materialization of partitions never published, or time (partitions not stable yet)."""

from __future__ import annotations

from collections.abc import Sequence

from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.snapshot import Snapshot
from seamless_assets.errors import MissingPartitions, SeamlessSLAExceeded

from .read_echo import ReadRequest
from .read_plan import ReadPlan
from .read_windows import closed_end_at, partition_keys, partition_windows

SHOWN = 10


def missing_partitions(
    plan: ReadPlan, request: ReadRequest, uncovered: Sequence[Range], snapshot: Snapshot | None
) -> MissingPartitions:
    """The error of a read that `snapshot` (None: the stores) does not cover."""
    node, config = request.node, plan.rt.config
    partitions = sorted(
        {p for r in uncovered for p in partition_windows(config, node, r) if p.intersect(r)}
    )
    interval = node.interval_s
    stable_end = closed_end_at(node, plan.exchange_now_estimate()) - (
        plan.rt.pipeline.stabilization_bars * interval
    )
    latest: Snapshot | None = None
    published: list[Range] = []
    looked_up = True
    if snapshot is not None:
        try:
            latest = plan.latest_snapshot()
            published = plan.unsnapshotted(stable_end)
        except SeamlessSLAExceeded:
            # The partitions are missing either way (a snapshot read fails on them); only
            # the advice is lost to the budget.
            looked_up = False
    newer = (
        latest
        if latest is not None and snapshot is not None and latest.as_of_s > snapshot.as_of_s
        else None
    )
    groups: dict[str, list[Range]] = {
        "later": [],
        "commit": [],
        "materialize": [],
        "wait": [],
        "unknown": [],
    }
    for part in partitions:
        if part.end > stable_end:
            groups["wait"].append(part)
        elif not looked_up:
            groups["unknown"].append(part)
        elif newer is not None and not newer.uncovered(part):
            groups["later"].append(part)
        elif any(part.intersect(p) for p in published):
            groups["commit"].append(part)
        else:
            groups["materialize"].append(part)

    where = (
        f"snapshot as_of {snapshot.as_of_iso} ({snapshot.fingerprint})"
        if snapshot is not None
        else "the stores"
    )
    keys = partition_keys(config, node, uncovered)
    advice = []
    if groups["later"] and newer is not None:
        advice.append(
            f"{_keys(plan, request, groups['later'])} are in the newer snapshot as_of "
            f"{newer.as_of_iso}: pin that as_of (or later) to read them"
        )
    if groups["commit"]:
        advice.append(
            f"{_keys(plan, request, groups['commit'])} are published but not yet in a "
            "snapshot: the as_of sensor's next tick (or `seamless snapshot "
            f"{node}`) commits them"
        )
    if groups["materialize"]:
        span = groups["materialize"]
        advice.append(
            f"{_keys(plan, request, span)} were never materialized: materialize them (a "
            f"partition backfill in the UI, or `seamless backfill {node} --start "
            f"{iso_utc(span[0].start)} --end {iso_utc(span[-1].end)}`), then the as_of "
            "sensor commits them"
        )
    if groups["wait"]:
        advice.append(
            f"{_keys(plan, request, groups['wait'])} are not stable yet (a partition is "
            f"published {plan.rt.pipeline.stabilization_bars} bars after it closes): read "
            "them later"
        )
    if groups["unknown"]:
        advice.append(
            f"{_keys(plan, request, groups['unknown'])}: the storage budget ran out before "
            f"newer snapshots and published partitions could be checked (`seamless "
            f"snapshots {node}` and `seamless coverage {node}` show them)"
        )
    ranges = ", ".join(str(r) for r in uncovered[:5])
    return MissingPartitions(
        f"{node}: {where} does not cover {ranges}; missing partitions: "
        f"{_shown(keys) or 'none'}. " + "; ".join(advice),
        keys,
        list(uncovered),
    )


def _keys(plan: ReadPlan, request: ReadRequest, parts: list[Range]) -> str:
    keys = partition_keys(plan.rt.config, request.node, parts)
    return _shown(keys) or ", ".join(str(p) for p in parts[:SHOWN])


def _shown(keys: list[str]) -> str:
    more = f" … ({len(keys)} in all)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more
