"""The asset factory of event nodes (`funding:` and `trades:`): one day-partitioned asset
each, with its own inline checks, in the exchange's pool like the bar nodes.

Checks: `coverage_ratio` (the answered share of the run's settled days: events lie on no
grid, so coverage is the spans the exchange's answers are complete for) and, for funding,
`funding_interval` (no span without a funding where one was due, judged against the
interval the contract had then: 8h, 4h, 1h). Both fail only for what they name.
"""

import asyncio
from typing import TYPE_CHECKING, Any

import dagster as dg

from .config import SeamlessConfig
from .core.frame import iso_utc
from .event_nodes import EventNodeId
from .partitions import partition_range, partition_ranges
from .pools import pool_name
from .runtime import ArtifactStoreResource, HotStoreResource, RateLimiterResource

if TYPE_CHECKING:
    from .event_pipeline import EventPartitionOutcome, EventRunOutcome

COVERAGE = "coverage_ratio"
FUNDING_INTERVAL = "funding_interval"
LISTED_MAX = 20


class EventRunConfig(dg.Config):
    """Per-run options of an event materialization."""

    refetch: bool = False  # ask the exchange again for days already answered (restatements)


def _column_schema(node: EventNodeId) -> dg.TableSchema:
    words = {"ts": "event time, epoch milliseconds (UTC) as the exchange states it"}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, dtype, description=words.get(name))
            for name, dtype in node.spec.dtypes.items()
        ]
    )


def event_check_specs(key: dg.AssetKey, node: EventNodeId, threshold: float) -> list[Any]:
    specs = [
        dg.AssetCheckSpec(
            COVERAGE,
            asset=key,
            description=f"Answered share of the run's settled days ≥ {threshold:.0%} "
            "(observability.coverage_ratio_threshold): spans the exchange's answers are "
            "known complete for, over the days' length.",
        )
    ]
    if node.kind == "funding":
        specs.append(
            dg.AssetCheckSpec(
                FUNDING_INTERVAL,
                asset=key,
                description="No answered span without a funding where the contract's "
                "interval (8h, 4h, 1h, changing over its life) made one due.",
            )
        )
    return specs


def event_asset(
    node: EventNodeId,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    seamless_config: SeamlessConfig,
) -> dg.AssetsDefinition:
    """Define the asset of event node `node` (daily partitions)."""
    key = dg.AssetKey(node.asset_key_path())
    rate_config = seamless_config.rate_limit_for(node.exchange)
    threshold = seamless_config.seamless.observability.coverage_ratio_threshold
    conformance_version = seamless_config.seamless.conformance.version
    schema = _column_schema(node)

    @dg.asset(
        key=key,
        description=f"{node.spec.description} of {node.symbol} on {node.exchange}.",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=pool_name(node.exchange),
        group_name=f"{node.kind}_{node.exchange}",
        kinds={"python", "parquet"},
        check_specs=event_check_specs(key, node, threshold),
        metadata={
            "node_id": str(node),
            "kind": node.kind,
            "exchange": node.exchange,
            "symbol": node.symbol,
            "dagster/column_schema": schema,
        },
        tags={"exchange": node.exchange, "kind": node.kind},
    )
    def _events(
        context: dg.AssetExecutionContext,
        config: EventRunConfig,
        hot_store: HotStoreResource,
        artifacts: ArtifactStoreResource,
        rate_limiter: RateLimiterResource,
    ) -> dg.MaterializeResult:
        from resources.exchange import ExchangeClient, ExchangeSettings

        from .core.fingerprint import run_fingerprint
        from .event_pipeline import backfill_events

        key_range = context.partition_key_range
        partitions = partition_ranges(partitions_def, key_range.start, key_range.end)
        client = ExchangeClient(
            ExchangeSettings.from_config(seamless_config, node.exchange),
            rate_limiter.limiter(rate_config),
        )
        hot = hot_store.open_events()
        try:
            outcome = asyncio.run(
                backfill_events(
                    node,
                    partitions,
                    hot=hot,
                    artifacts=artifacts.open_events(),
                    client=client,
                    conformance_version=conformance_version,
                    refetch=config.refetch,
                    log=context.log.info,
                )
            )
        finally:
            hot.close()
        context.log.info(_summary(outcome))
        by_window = {p.window: p for p in outcome.partitions}
        for partition_key in context.partition_keys:
            part = by_window[partition_range(partitions_def, partition_key)]
            context.add_asset_metadata(_partition_metadata(part), partition_key=partition_key)
        return dg.MaterializeResult(
            metadata={"dagster/column_schema": schema},
            check_results=_check_results(node, outcome, threshold),
            data_version=dg.DataVersion(
                run_fingerprint((p.window.start, p.fingerprint) for p in outcome.partitions)
            ),
        )

    return _events


def _partition_metadata(part: "EventPartitionOutcome") -> dict[str, Any]:
    return {
        "dagster/row_count": part.rows,
        "fingerprint": dg.MetadataValue.text(part.fingerprint) if part.fingerprint else None,
        "segment_uri": dg.MetadataValue.url(part.uri) if part.uri else None,
        "state": "published" if part.published else "unsettled_or_unanswered",
        "coverage_ratio": dg.MetadataValue.float(round(part.coverage_ratio, 6)),
        "answered": dg.MetadataValue.json([r.to_json() for r in part.answered]),
        "conformance_flags": dg.MetadataValue.json({k: v for k, v in part.flags.items() if v}),
        "provenance": dg.MetadataValue.json({"rest": part.rows}),
    }


def _check_results(
    node: EventNodeId, outcome: "EventRunOutcome", threshold: float
) -> list[dg.AssetCheckResult]:
    short = [p for p in outcome.partitions if p.coverage_ratio < 1.0]
    ratio = outcome.coverage_ratio
    results = [
        dg.AssetCheckResult(
            check_name=COVERAGE,
            passed=ratio >= threshold,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if ratio >= threshold
            else f"{len(short)} day(s) not wholly answered (unsettled or failed fetches); "
            "a later run asks again",
            metadata={
                "coverage_ratio": dg.MetadataValue.float(round(ratio, 6)),
                "threshold": dg.MetadataValue.float(threshold),
                "short_days": dg.MetadataValue.json([str(p.window) for p in short[:LISTED_MAX]]),
            },
        )
    ]
    if node.kind == "funding":
        spots = [r for p in outcome.partitions for r in p.anomalies]
        results.append(
            dg.AssetCheckResult(
                check_name=FUNDING_INTERVAL,
                passed=not spots,
                severity=dg.AssetCheckSeverity.WARN,
                description=None
                if not spots
                else f"{len(spots)} span(s) without a funding where one was due",
                metadata={
                    "missing_funding": dg.MetadataValue.json(
                        [[iso_utc(r.start), iso_utc(r.end)] for r in spots[:LISTED_MAX]]
                    ),
                    "intervals": dg.MetadataValue.json(
                        [[iso_utc(r.start), s // 3600] for r, s in outcome.intervals]
                    ),
                },
            )
        )
    return results


def _summary(outcome: "EventRunOutcome") -> str:
    published = outcome.published
    rows = sum(p.rows for p in outcome.partitions)
    flags = ", ".join(f"{k}={v}" for k, v in sorted(outcome.flags.items()) if v) or "none"
    return (
        f"{outcome.node}: {rows} {outcome.node.spec.row_noun}(s) stored in "
        f"{len(outcome.partitions)} day(s) with {outcome.requests} request(s); "
        f"{len(published)} segment(s) published ({sum(p.written for p in published)} new); "
        f"conformance flags: {flags}"
    )
