"""as_of: commit each node's published set as a snapshot, and say so in Dagster.

Per tick and node the sensor looks (`ArtifactStore.advance_snapshot`, which commits only
when the published set differs from the newest snapshot's list) when any of these holds:

* the node was materialized since the last look: every Dagster run that publishes (a UI
  backfill, a gap-repair run, `seamless backfill --refetch`) records a materialization,
  so a repair or restatement is committed by the next tick;
* the set of stable partition windows changed (one listing of the heads' key names, no
  reads): a partition materialized before it was stable is committed once it is;
* the last look is `REFRESH_S` old (a head moved by a run that failed before recording
  its materialization, or by a writer outside Dagster).

The newest snapshot is recorded as an `AssetObservation` on the node's asset, once per
`as_of`: the cursor holds each node's last recorded `as_of`.
"""

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from seamless_assets.config import SeamlessConfig
from seamless_assets.core.coverage import merge_ranges
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.stabilization import stable_end
from seamless_assets.errors import SeamlessError
from seamless_assets.history import history_start_s
from seamless_assets.nodes import NodeId
from seamless_assets.partitions import partitions_start_s
from seamless_assets.runtime import ArtifactStoreResource, HotStoreResource

from .common import Clock, WatchedNode, dump_cursor, load_cursor, wall_clock
from .coverage_scan import bars_before

if TYPE_CHECKING:  # the stores (pandas, pyarrow, pandera) load on a tick
    from resources.artifacts.base import ArtifactStore
    from resources.hot_store.base import HotStore
    from seamless_assets.core.snapshot import Snapshot

SENSOR_NAME = "seamless_as_of_sensor"
REFRESH_S = 600
MAX_MISSING_SHOWN = 20


def snapshot_coverage(node: WatchedNode, snapshot: "Snapshot", hot: "HotStore") -> dict[str, Any]:
    """Rows in the snapshot over the bars it should hold from its first segment to as_of,
    not counting windows the gap ledger confirms empty (before listing, maintenance)."""
    import numpy as np

    interval, origin = node.node.interval_s, node.node.timeframe.origin_s
    rows = snapshot.row_count
    if not snapshot.segments:
        return {"rows": rows, "expected_bars": 0, "coverage": 1.0}
    span = Range(snapshot.segments[0].range.start, snapshot.watermark_s)
    empty = merge_ranges(g.range for g in hot.ledger_gaps(node.node_id, span))
    edges = np.array([span.start, span.end], dtype=np.int64)
    grid = span.bars(interval, origin_s=origin)
    empty_bars = int(np.diff(bars_before(empty, edges, interval, origin))[0])
    expected = max(0, grid - empty_bars)
    ratio = 1.0 if expected == 0 else min(1.0, rows / expected)
    return {"rows": rows, "expected_bars": expected, "coverage": round(ratio, 6)}


def as_of_observation(
    node: WatchedNode, snapshot: "Snapshot", hot: "HotStore", store: "ArtifactStore"
) -> dg.AssetObservation:
    coverage = snapshot_coverage(node, snapshot, hot)
    missing = [str(r) for r in snapshot.missing[:MAX_MISSING_SHOWN]]
    if len(snapshot.missing) > MAX_MISSING_SHOWN:
        missing.append(f"... {len(snapshot.missing) - MAX_MISSING_SHOWN} more")
    return dg.AssetObservation(
        asset_key=node.asset_key,
        description=f"snapshot of {node.node_id} as of {snapshot.as_of_iso} "
        f"(data to {snapshot.watermark_iso})",
        metadata={
            "node_id": node.node_id,
            "as_of": snapshot.as_of_iso,
            "as_of_s": snapshot.as_of_s,
            "watermark": snapshot.watermark_iso,
            "watermark_s": snapshot.watermark_s,
            "snapshot_fingerprint": snapshot.fingerprint,
            "segment_count": len(snapshot.segments),
            "missing_count": len(snapshot.missing),
            "missing": dg.MetadataValue.json(missing),
            "rows": coverage["rows"],
            "expected_bars": coverage["expected_bars"],
            "coverage": coverage["coverage"],
            "snapshot_uri": dg.MetadataValue.path(store.node_uri(node.node)),
        },
    )


def advance_to_now(
    store: "ArtifactStore", node: NodeId, config: SeamlessConfig, now_s: float
) -> "Snapshot | None":
    """Commit `node`'s published set as of what is stable at `now_s`
    (`stabilization_bars`) if it changed; its latest snapshot afterwards, None while
    nothing is published."""
    section = config.seamless
    stable_s = stable_at(node, config, now_s)
    # What the snapshot can lack starts at the node's first bar, but never before the
    # partitions begin (nothing could ever fill that); None until discovered: the first
    # segment.
    first_bar = history_start_s(store, node)
    floor = partitions_start_s(config.seamless.partitions, node.timeframe)
    start = None if first_bar is None else max(first_bar, floor)
    advanced = store.advance_snapshot(node, section.conformance.version, stable_s, now_s, start)
    return advanced or store.latest_snapshot(node)


def stable_at(node: NodeId, config: SeamlessConfig, now_s: float) -> int:
    bars = config.seamless.artifact.stabilization_bars
    return stable_end(int(now_s), node.interval_s, bars, origin_s=node.timeframe.origin_s)


def stable_windows_tag(store: "ArtifactStore", node: NodeId, stable_s: int) -> str:
    """A short digest of the node's stable partition windows (key names only, no reads)."""
    windows = [w for w in store.head_windows(node) if w.end <= stable_s]
    text = ",".join(f"{w.start}-{w.end}" for w in windows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _materialization_ids(
    instance: dg.DagsterInstance, nodes: Sequence[WatchedNode]
) -> dict[dg.AssetKey, int]:
    records = instance.get_asset_records([n.asset_key for n in nodes])
    out = {}
    for record in records:
        last = record.asset_entry.last_materialization_record
        if last is not None:
            out[record.asset_entry.asset_key] = last.storage_id
    return out


def as_of_sensor(
    config: SeamlessConfig,
    nodes: Sequence[WatchedNode],
    *,
    clock: Clock = wall_clock,
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Commit each node's published set as a new as_of snapshot when it "
        "changes (a new stable partition, a repair, a restatement) and record it (as_of, "
        "watermark, fingerprint, segments, missing partitions, coverage) on the asset.",
    )
    def _as_of(
        context: dg.SensorEvaluationContext,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
    ) -> dg.SensorResult:
        now_s = clock()
        state = load_cursor(context.cursor)
        materialized = _materialization_ids(context.instance, nodes)
        store = artifacts.open()
        hot = hot_store.open()
        events = []
        try:
            for node in nodes:
                seen = state.get(node.node_id) or {}
                mat_id = materialized.get(node.asset_key, 0)
                tag = stable_windows_tag(store, node.node, stable_at(node.node, config, now_s))
                fresh = mat_id > int(seen.get("materialization", 0))
                moved = tag != seen.get("stable_windows")
                stale = now_s - float(seen.get("checked_at", 0)) >= REFRESH_S
                if not (fresh or moved or stale):
                    continue
                try:
                    snapshot = advance_to_now(store, node.node, config, now_s)
                except SeamlessError as exc:  # one broken node must not hold back the others
                    context.log.error(f"{node.node_id}: snapshot not advanced: {exc}")
                    continue
                recorded = int(seen.get("as_of_s", 0))
                if snapshot is not None and snapshot.as_of_s > recorded:
                    context.log.info(f"{node.node_id}: as_of {snapshot.as_of_iso}")
                    events.append(as_of_observation(node, snapshot, hot, store))
                    recorded = snapshot.as_of_s
                state[node.node_id] = {
                    "as_of_s": recorded,
                    "as_of": iso_utc(recorded) if recorded else None,
                    "materialization": mat_id,
                    "stable_windows": tag,
                    "checked_at": now_s,
                }
        finally:
            hot.close()
        cursor = dump_cursor(state)
        if not events:
            return dg.SensorResult(skip_reason="no as_of advanced", cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return _as_of
