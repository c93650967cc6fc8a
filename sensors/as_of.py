"""as_of: advance each node's snapshot once its partitions are stable, and say so in Dagster.

Per tick and node: when the node was materialized since the last look (or the last look
is `REFRESH_BARS` bars old, which covers clock skew between this process and the
exchange), snapshot its current heads up to `stable_end` (`ArtifactStore.advance_snapshot`;
it publishes only when `as_of` moves forward). The newest snapshot pointer is then recorded
as an `AssetObservation` on the node's asset, once per `as_of`: the cursor holds each
node's last recorded `as_of`, so a tick never records the same pointer twice.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import numpy as np

from resources.artifacts.base import ArtifactStore
from resources.hot_store.base import HotStore
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.coverage import merge_ranges
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.snapshot import Snapshot
from seamless_assets.core.stabilization import stable_end
from seamless_assets.errors import SeamlessError
from seamless_assets.nodes import NodeId
from seamless_assets.runtime import ArtifactStoreResource, HotStoreResource

from .common import Clock, WatchedNode, dump_cursor, load_cursor, wall_clock
from .coverage_scan import bars_before

SENSOR_NAME = "seamless_as_of_sensor"
REFRESH_BARS = 60


def snapshot_coverage(node: WatchedNode, snapshot: Snapshot, hot: HotStore) -> dict[str, Any]:
    """Rows in the snapshot over the bars it should hold from its first segment to as_of,
    not counting windows the gap ledger confirms empty (before listing, maintenance)."""
    interval, origin = node.node.interval_s, node.node.timeframe.origin_s
    rows = snapshot.row_count
    if not snapshot.segments:
        return {"rows": rows, "expected_bars": 0, "coverage": 1.0}
    span = Range(snapshot.segments[0].range.start, snapshot.as_of_s)
    empty = merge_ranges(g.range for g in hot.ledger_gaps(node.node_id, span))
    edges = np.array([span.start, span.end], dtype=np.int64)
    grid = span.bars(interval, origin_s=origin)
    empty_bars = int(np.diff(bars_before(empty, edges, interval, origin))[0])
    expected = max(0, grid - empty_bars)
    ratio = 1.0 if expected == 0 else min(1.0, rows / expected)
    return {"rows": rows, "expected_bars": expected, "coverage": round(ratio, 6)}


def as_of_observation(
    node: WatchedNode, snapshot: Snapshot, hot: HotStore, store: ArtifactStore
) -> dg.AssetObservation:
    coverage = snapshot_coverage(node, snapshot, hot)
    return dg.AssetObservation(
        asset_key=node.asset_key,
        description=f"snapshot of {node.node_id} as of {snapshot.as_of_iso}",
        metadata={
            "node_id": node.node_id,
            "as_of": snapshot.as_of_iso,
            "as_of_s": snapshot.as_of_s,
            "snapshot_fingerprint": snapshot.fingerprint,
            "segment_count": len(snapshot.segments),
            "rows": coverage["rows"],
            "expected_bars": coverage["expected_bars"],
            "coverage": coverage["coverage"],
            "snapshot_uri": dg.MetadataValue.path(store.node_uri(node.node)),
        },
    )


def advance_to_now(
    store: ArtifactStore, node: NodeId, config: SeamlessConfig, now_s: float
) -> Snapshot | None:
    """Advance `node`'s snapshot to what is stable at `now_s` (`stabilization_bars`); its
    latest snapshot afterwards, None while nothing is stable."""
    section = config.seamless
    stable_s = stable_end(
        int(now_s),
        node.interval_s,
        section.artifact.stabilization_bars,
        origin_s=node.timeframe.origin_s,
    )
    advanced = store.advance_snapshot(node, section.conformance.version, stable_s, now_s)
    return advanced or store.latest_snapshot(node)


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
        description="Advance each node's as_of snapshot once its partitions are stable and "
        "record the pointer (as_of, fingerprint, segments, coverage) on the asset.",
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
                interval = node.node.interval_s
                mat_id = materialized.get(node.asset_key, 0)
                fresh = mat_id > int(seen.get("materialization", 0))
                stale = now_s - float(seen.get("checked_at", 0)) >= REFRESH_BARS * interval
                if not (fresh or stale):
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
                    "checked_at": now_s,
                }
        finally:
            hot.close()
        cursor = dump_cursor(state)
        if not events:
            return dg.SensorResult(skip_reason="no as_of advanced", cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return _as_of
