"""The sensors that govern the lake: as_of snapshots, gap repair, the live edge, alerts."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from seamless_assets.config import SeamlessConfig

from .alerts import alert_sensor
from .as_of import as_of_sensor
from .common import Clock, WatchedNode, wall_clock, watched_nodes
from .coverage_picture import coverage_picture_sensor
from .gap_repair import gap_repair_sensor
from .live_edge import live_edge_job, live_edge_sensor

__all__ = ["WatchedNode", "build_sensors", "watched_nodes"]


def build_sensors(
    config: SeamlessConfig,
    nodes: Sequence[WatchedNode],
    asset_jobs: Sequence[UnresolvedAssetJobDefinition],
    *,
    clock: Clock = wall_clock,
) -> tuple[list[dg.SensorDefinition], list[dg.JobDefinition]]:
    """The four sensors and the live-edge jobs (one per exchange) they launch. The live
    edge serves only the nodes `domains.live.nodes` lists."""
    exchanges = sorted({n.node.exchange for n in nodes})
    live_jobs = [live_edge_job(exchange, config, clock=clock) for exchange in exchanges]
    served_live = set(config.live_nodes)
    sensors = [
        as_of_sensor(config, nodes, clock=clock),
        gap_repair_sensor(config, nodes, asset_jobs, clock=clock),
        live_edge_sensor([n for n in nodes if n.node in served_live], live_jobs, clock=clock),
        alert_sensor(config, nodes),
        coverage_picture_sensor(config, nodes, clock=clock),
    ]
    return sensors, live_jobs
