"""The asset factory: one time-partitioned asset per node of the catalog.

What a run needs (ccxt, the pipeline, pandas) is imported in the asset's body: defining
the assets stays cheap for every process that loads the definitions, and the resources
have imported it before a step claims its pool slot (see `runtime`)."""

import asyncio
from typing import TYPE_CHECKING

import dagster as dg

from .checks import check_specs
from .config import SeamlessConfig
from .core.frame import CANONICAL_COLUMNS, CANONICAL_DTYPES, iso_utc
from .errors import SeamlessError
from .nodes import NodeId
from .partitions import TimeframeClass, partition_range, partition_ranges
from .pools import pool_name
from .runtime import ArtifactStoreResource, HotStoreResource, RateLimiterResource

if TYPE_CHECKING:
    from resources.artifacts.base import ArtifactStore
    from resources.exchange import ExchangeClient

    from .pipeline import RunOutcome

COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(
            name, CANONICAL_DTYPES[name], description="bar open time, epoch seconds (UTC)"
        )
        if name == "ts"
        else dg.TableColumn(name, CANONICAL_DTYPES[name])
        for name in CANONICAL_COLUMNS
    ]
)


class OhlcvRunConfig(dg.Config):
    """Per-run options of an OHLCV materialization."""

    refetch_gaps: bool = False  # retry windows the gap ledger marks as confirmed empty
    refetch_stored: bool = False  # download stored bars again (exchange restatements)


def ohlcv_asset(
    node: NodeId, tf_class: TimeframeClass, seamless_config: SeamlessConfig
) -> dg.AssetsDefinition:
    """Define the asset of `node`: closed bars, hot-stored, published as segments."""
    key = dg.AssetKey(node.asset_key_path())
    rate_config = seamless_config.rate_limit_for(node.exchange)
    section = seamless_config.seamless
    threshold = section.observability.coverage_ratio_threshold
    gap_warn_s = section.observability.exchange_gap_warn_s
    partitions_def = tf_class.partitions_def

    @dg.asset(
        key=key,
        description=(
            f"Closed {node.timeframe} {'mark-price' if node.price else 'OHLCV'} bars of "
            f"{node.symbol} on {node.exchange}."
        ),
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=pool_name(node.exchange),
        group_name=f"ohlcv_{node.exchange}",
        kinds={"python", "parquet"},
        check_specs=check_specs(key, threshold, gap_warn_s),
        metadata={
            "node_id": str(node),
            "kind": node.kind,
            "exchange": node.exchange,
            "symbol": node.symbol,
            "timeframe": node.timeframe.code,
            "dagster/column_schema": COLUMN_SCHEMA,
        },
        tags={"exchange": node.exchange, "timeframe": node.timeframe.code},
    )
    def _ohlcv(
        context: dg.AssetExecutionContext,
        config: OhlcvRunConfig,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
        rate_limiter: RateLimiterResource,
    ) -> dg.MaterializeResult:
        from resources.exchange import ExchangeClient, ExchangeSettings

        from .backfill_events import GAP_DETECTED_AT_TAG, observe_backfill
        from .checks import check_results
        from .core.fingerprint import run_fingerprint
        from .history import history_start_s
        from .pipeline import backfill
        from .sources import pipeline_settings_for

        exchange_settings = ExchangeSettings.from_config(seamless_config, node.exchange)
        pipeline_settings = pipeline_settings_for(seamless_config, node)
        key_range = context.partition_key_range  # a single-run backfill: one contiguous range
        partitions = partition_ranges(partitions_def, key_range.start, key_range.end)
        limiter = rate_limiter.limiter(rate_config)
        clients: list[ExchangeClient] = []  # the run's one client, once it needs one

        def run_client() -> ExchangeClient:
            # The history start's request and the backfill share one client: one markets
            # load (`exchangeInfo`), one set of connections, one close (by the backfill).
            if not clients:
                clients.append(ExchangeClient(exchange_settings, limiter))
            return clients[0]

        store = artifacts.open()
        hot = hot_store.open()

        async def history_and_backfill() -> "RunOutcome":
            try:
                if history_start_s(store, node) is None:  # the node's first run
                    await _record_history_start(context, store, node, run_client())
                return await backfill(
                    node,
                    partitions,
                    hot=hot,
                    artifacts=store,
                    client_factory=run_client,
                    settings=pipeline_settings,
                    refetch_gaps=config.refetch_gaps,
                    refetch_stored=config.refetch_stored,
                    log=context.log.info,
                )
            finally:
                if clients:  # closed already unless the backfill had nothing to fetch
                    await clients[0].close()

        # JSON attempt/complete/fail events and the run's metrics pushed when it ends
        detected_at = context.run.tags.get(GAP_DETECTED_AT_TAG)
        with observe_backfill(
            seamless_config,
            node,
            partitions,
            run_id=context.run_id,
            gap_detected_at=float(detected_at) if detected_at else None,
        ) as run:
            try:
                outcome = asyncio.run(history_and_backfill())
            finally:
                hot.close()
            if clients:  # the history start's request too, not only the backfill's
                outcome.requests = clients[0].stats
            run.outcome = outcome
        context.log.info(_summary(outcome))
        _record(context, key, partitions_def, outcome)
        return dg.MaterializeResult(
            # the one output of the step stands for every partition of the run: only what
            # is true of each partition goes here, the rest is scoped by `_record`
            metadata={"dagster/column_schema": COLUMN_SCHEMA},
            check_results=check_results(outcome, threshold, gap_warn_s),
            # one data version per output (Dagster): the run's combined fingerprint; each
            # partition's own version is its `fingerprint` metadata
            data_version=dg.DataVersion(
                run_fingerprint((p.window.start, p.fingerprint) for p in outcome.partitions)
            ),
        )

    return _ohlcv


async def _record_history_start(
    context: dg.AssetExecutionContext,
    store: "ArtifactStore",
    node: NodeId,
    client: "ExchangeClient",
) -> None:
    """Discover and record the node's first bar (one candle request on its first run); an
    exchange that cannot tell yet does not fail the run: the next run asks again."""
    from .history import discover_history_start

    try:
        start = await discover_history_start(store, node, client)
    except SeamlessError as exc:
        context.log.warning(f"{node}: history start not discovered: {exc}")
        return
    if start is not None:
        context.log.info(f"{node}: history starts {iso_utc(start)}")


def _summary(outcome: "RunOutcome") -> str:
    published = outcome.published
    written = sum(p.written for p in published)
    held = [p for p in outcome.partitions if not p.stable]
    requests = outcome.requests.total_requests if outcome.requests else 0
    return (
        f"{outcome.node}: {outcome.stored.rows} bars in {outcome.window}, fetched "
        f"{outcome.fetched_rows} with {requests} request(s); {len(published)} segment(s) "
        f"published ({written} new), {len(held)} partition(s) held back until stable"
    )


def _record(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    outcome: "RunOutcome",
) -> None:
    """Each partition's own facts on its own materialization; the run's totals on one
    observation of the node (see `materialization`)."""
    from .materialization import partition_metadata, run_totals_observation

    by_window = {p.window: p for p in outcome.partitions}
    for partition_key in context.partition_keys:
        part = by_window[partition_range(partitions_def, partition_key)]
        context.add_asset_metadata(partition_metadata(outcome, part), partition_key=partition_key)
    context.log_event(run_totals_observation(key, outcome))
