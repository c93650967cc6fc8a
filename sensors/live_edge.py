"""Live edge: keep each node's forming partition current in the hot store, bar by bar.

Dagster's time partitions end at the last *closed* one, so the partition that is still
forming has no key to materialize. The live edge therefore runs a small job per exchange
(`ohlcv_live_<exchange>_job`, one op in the exchange's pool) that calls the same
pipeline over the forming partition's window: it fetches only the bars after the stored
maximum and upserts them; nothing is published, because the window is not stable (the
gap-repair sensor and the schedules publish it once it is).

The sensor ticks at the smallest timeframe of the catalog and asks, per node, at most
once per bar boundary (`run_key` = node + boundary) and never while a live run of that
node is queued or running, so a slow exchange cannot flood the run queue.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context

from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.stabilization import closed_end
from seamless_assets.nodes import NodeId
from seamless_assets.ohlcv import pool_name
from seamless_assets.partitions import timeframe_class_name, timeframe_classes
from seamless_assets.runtime import (
    ArtifactStoreResource,
    HotStoreResource,
    RateLimiterResource,
)

from .common import (
    Clock,
    WatchedNode,
    dump_cursor,
    load_cursor,
    pending_nodes,
    run_tags,
    wall_clock,
)

TRIGGER = "live_edge"
SENSOR_NAME = "seamless_live_edge_sensor"
BOUNDARY_TAG = "seamless/bar_boundary"


def live_job_name(exchange_id: str) -> str:
    return f"ohlcv_live_{exchange_id}_job"


def live_op_name(exchange_id: str) -> str:
    return f"ohlcv_live_{exchange_id}"


def forming_partition(partitions_def: dg.TimeWindowPartitionsDefinition, now_s: float) -> Range:
    """The window of the partition that contains `now_s` (after the last closed one)."""
    now = datetime.fromtimestamp(now_s, tz=UTC)
    with partition_loading_context(effective_dt=now):
        last = partitions_def.get_last_partition_window()
    start = last.end if last is not None else partitions_def.start
    window = partitions_def.get_next_partition_window(start, respect_bounds=False)
    if window is None or window.start != start:  # the first partition itself is forming
        key = partitions_def.get_partition_key_for_timestamp(start.timestamp())
        window = partitions_def.time_window_for_partition_key(key)
    return Range(int(window.start.timestamp()), int(window.end.timestamp()))


class LiveEdgeConfig(dg.Config):
    """Which node of the exchange to bring up to its newest closed bar."""

    node_id: str


def live_edge_job(
    exchange_id: str, config: SeamlessConfig, *, clock: Clock = wall_clock
) -> dg.JobDefinition:
    """One op in the exchange's pool: fetch a node's bars after its stored maximum."""
    seamless_config = config  # the op's own `config` is its run config
    rate_config = config.rate_limit_for(exchange_id)
    classes = timeframe_classes(config.seamless.partitions)

    @dg.op(name=live_op_name(exchange_id), pool=pool_name(exchange_id))
    def _live(
        context: dg.OpExecutionContext,
        config: LiveEdgeConfig,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
        rate_limiter: RateLimiterResource,
    ) -> None:
        from resources.exchange import ExchangeClient, ExchangeSettings  # ccxt: at run time
        from seamless_assets.pipeline import PipelineSettings, backfill

        settings = PipelineSettings(
            stabilization_bars=seamless_config.seamless.artifact.stabilization_bars,
            conformance_version=seamless_config.seamless.conformance.version,
        )
        exchange_settings = ExchangeSettings.from_config(seamless_config, exchange_id)
        node = NodeId.parse(config.node_id)
        if node.exchange != exchange_id:
            raise dg.Failure(f"{node} is not on {exchange_id}; use {live_job_name(node.exchange)}")
        window = forming_partition(
            classes[timeframe_class_name(node.timeframe)].partitions_def, clock()
        )
        limiter = rate_limiter.limiter(rate_config)
        hot = hot_store.open()
        try:
            outcome = asyncio.run(
                backfill(
                    node,
                    [window],
                    hot=hot,
                    artifacts=artifacts.open(),
                    client_factory=lambda: ExchangeClient(exchange_settings, limiter),
                    settings=settings,
                    log=context.log.info,
                )
            )
            bounds = hot.bounds(str(node))
        finally:
            hot.close()
        data_end = bounds[1] + node.interval_s if bounds else None
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey(node.asset_key_path()),
                metadata={
                    "live_window": str(window),
                    "fetched_rows": outcome.fetched_rows,
                    "data_end": iso_utc(data_end) if data_end else None,
                    "exchange_requests": outcome.requests.total_requests if outcome.requests else 0,
                },
            )
        )

    return dg.GraphDefinition(name=live_job_name(exchange_id), node_defs=[_live]).to_job(
        description=f"Bring one {exchange_id} node up to its newest closed bar (hot store only).",
        tags={"exchange": exchange_id},
    )


def live_edge_sensor(
    nodes: Sequence[WatchedNode],
    jobs: Sequence[dg.JobDefinition],
    *,
    clock: Clock = wall_clock,
) -> dg.SensorDefinition:
    smallest_s = min((n.node.interval_s for n in nodes), default=60)

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=max(1, smallest_s),
        description="Fetch each node's newest closed bars on bar boundaries; one live run "
        "per node at a time.",
    )
    def _live_edge(
        context: dg.SensorEvaluationContext, hot_store: HotStoreResource
    ) -> dg.SensorResult:
        now_s = clock()
        asked = load_cursor(context.cursor)
        busy = pending_nodes(context.instance, TRIGGER)
        requests = []
        hot = hot_store.open()
        try:
            for node in nodes:
                interval, origin = node.node.interval_s, node.node.timeframe.origin_s
                boundary = closed_end(int(now_s), interval, origin_s=origin)
                if int(asked.get(node.node_id, 0)) >= boundary or node.node_id in busy:
                    continue
                bounds = hot.bounds(node.node_id)
                if bounds is not None and bounds[1] + interval >= boundary:
                    asked[node.node_id] = boundary  # already current
                    continue
                requests.append(
                    dg.RunRequest(
                        run_key=f"{TRIGGER}:{node.node_id}:{boundary}",
                        job_name=live_job_name(node.node.exchange),
                        run_config={
                            "ops": {
                                live_op_name(node.node.exchange): {
                                    "config": {"node_id": node.node_id}
                                }
                            }
                        },
                        tags=run_tags(node, TRIGGER, **{BOUNDARY_TAG: iso_utc(boundary)}),
                    )
                )
                asked[node.node_id] = boundary
        finally:
            hot.close()
        cursor = dump_cursor(asked)
        if not requests:
            return dg.SensorResult(
                skip_reason="every node is at its newest closed bar", cursor=cursor
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _live_edge
