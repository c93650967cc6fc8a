"""What every seamless sensor shares: the nodes it watches, run tags, cursors, the clock."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from seamless_assets.nodes import NodeId
from seamless_assets.partitions import TimeframeClass

NODE_TAG = "seamless/node"
TRIGGER_TAG = "seamless/trigger"
NEED_TAG = "seamless/need"

# Runs that still hold (or will hold) a slot: a new request for the same node waits.
PENDING_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

Clock = Callable[[], float]


def wall_clock() -> float:
    return time.time()


@dataclass(frozen=True)
class WatchedNode:
    """A node as the sensors see it: its asset, partitions, job and inline checks."""

    node: NodeId
    tf_class: TimeframeClass
    asset_key: dg.AssetKey
    check_keys: tuple[dg.AssetCheckKey, ...]

    @property
    def node_id(self) -> str:
        return str(self.node)

    @property
    def partitions_def(self) -> dg.TimeWindowPartitionsDefinition:
        return self.tf_class.partitions_def


def watched_nodes(
    assets: Iterable[tuple[NodeId, TimeframeClass, dg.AssetsDefinition]],
) -> list[WatchedNode]:
    return [
        WatchedNode(node, tf_class, asset.key, tuple(spec.key for spec in asset.check_specs))
        for node, tf_class, asset in assets
    ]


def pending_nodes(instance: dg.DagsterInstance, trigger: str) -> set[str]:
    """Nodes with a queued or in-flight run launched by the sensor `trigger`."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={TRIGGER_TAG: trigger}, statuses=PENDING_STATUSES)
    )
    return {run.tags[NODE_TAG] for run in runs if NODE_TAG in run.tags}


def run_tags(node: WatchedNode, trigger: str, **extra: str) -> dict[str, str]:
    return {NODE_TAG: node.node_id, TRIGGER_TAG: trigger, **extra}


def load_cursor(cursor: str | None) -> dict[str, Any]:
    """A sensor cursor: a JSON object keyed by node id (an unreadable one starts afresh)."""
    if not cursor:
        return {}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def dump_cursor(state: Mapping[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))
