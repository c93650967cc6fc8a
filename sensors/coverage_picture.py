"""Coverage picture: each node's per-partition coverage, drawn where the UI shows it.

Each tick scans every node's closed partitions (`coverage_scan`: two hot-store queries and
one listing of head names per node, from the node's recorded history start) and records an
`AssetObservation` on the node's asset whose `coverage` metadata is a markdown calendar
(`seamless_assets.coverage_view`), plus the counts per state. A node gets a new observation
only when its picture changed (digest in the cursor), so the event log does not grow on
quiet ticks. A node whose history start is not recorded yet (the gap-repair sensor records
it) is left out, with a log line and in the skip reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from seamless_assets.config import SeamlessConfig
from seamless_assets.coverage_view import STATES, coverage_markdown, state_of
from seamless_assets.history import history_start_s
from seamless_assets.runtime import ArtifactStoreResource, HotStoreResource

from .common import Clock, WatchedNode, dump_cursor, load_cursor, wall_clock
from .coverage_scan import closed_partitions, published_partitions, scan_coverage
from .gap_repair import scan_floor_s

SENSOR_NAME = "seamless_coverage_picture_sensor"


def coverage_picture_sensor(
    config: SeamlessConfig,
    nodes: Sequence[WatchedNode],
    *,
    clock: Clock = wall_clock,
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    stabilization = config.seamless.artifact.stabilization_bars

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Draws each node's coverage (complete, partial, confirmed-empty, missing "
        "partitions) as a calendar in the `coverage` metadata of an observation on its asset, "
        "when it changed.",
    )
    def _coverage_picture(
        context: dg.SensorEvaluationContext,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
    ) -> dg.SensorResult:
        now_s = clock()
        scanned_at = datetime.fromtimestamp(now_s, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        digests = load_cursor(context.cursor)
        store, hot = artifacts.open(), hot_store.open()
        events, unknown = [], []
        try:
            for node in nodes:
                start = history_start_s(store, node.node)
                if start is None:
                    context.log.info(f"{node.node_id}: history start not recorded yet; no picture")
                    unknown.append(node.node_id)
                    continue
                floor_s = scan_floor_s(hot_store, now_s, start)  # a QuestDB TTL drops older bars
                span = closed_partitions(node.partitions_def, now_s, not_before_s=floor_s)
                coverage = scan_coverage(
                    node.node,
                    span,
                    hot,
                    published_partitions(store, node.node),
                    now_s,
                    stabilization,
                    history_start_s=start,
                )
                states = [state_of(p) for p in coverage]
                digest = hashlib.sha256(
                    "".join(f"{p.key}={s};" for p, s in zip(coverage, states, strict=True)).encode()
                ).hexdigest()[:16]
                if digests.get(node.node_id) == digest:
                    continue
                digests[node.node_id] = digest
                metadata: dict[str, dg.RawMetadataValue] = {
                    "node_id": node.node_id,
                    "coverage": dg.MetadataValue.md(
                        coverage_markdown(node.node.label, coverage, scanned_at)
                    ),
                    **{f"partitions_{s}": states.count(s) for s in STATES},
                }
                events.append(
                    dg.AssetObservation(
                        asset_key=node.asset_key,
                        description=f"Coverage of {node.node_id} per partition",
                        metadata=metadata,
                    )
                )
        finally:
            hot.close()
        cursor = dump_cursor(digests)
        if not events:
            reason = "no node's coverage changed"
            if unknown:
                reason += f"; history start not recorded yet: {', '.join(unknown)}"
            return dg.SensorResult(skip_reason=reason, cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return _coverage_picture
