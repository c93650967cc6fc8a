"""What an OHLCV run records in Dagster: each partition's own facts, and the run's totals.

A single-run backfill is one step with one output, so Dagster writes one materialization
event per partition from it. Metadata given to the output would be copied onto every one
of them; each partition's facts are therefore added with
`context.add_asset_metadata(..., partition_key=...)` (Dagster's partition-scoped metadata)
and the run's totals, which describe the step rather than any partition, go to one
`AssetObservation` of the node without a partition: the run's event log shows it with its
metadata table, and so does the asset's Events tab.

Names are a contract with the browser test and the alerts (see the README's "Metadata").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from .core.coverage import bar_count
from .core.frame import iso_utc

if TYPE_CHECKING:  # the pipeline (pandas, ccxt) loads with the run, not with the definitions
    from .pipeline import PartitionOutcome, RunOutcome

COMPLETE = "complete"  # every bar stored or confirmed empty by the exchange, some stored
PARTIAL = "partial"  # some bars stored, some neither stored nor confirmed empty
CONFIRMED_EMPTY = "confirmed_empty"  # no bar, and the exchange confirmed the whole window
MISSING = "missing"  # no bar, not confirmed empty: a later run fetches it again
UNSTABLE = "unstable"  # still inside the stabilization window: stored, not published yet

STAGES = (
    "plan",
    "fetch",
    "conform",
    "hot_store_upsert",
    "read_back",
    "encode",
    "publish",
    "total",
)
LISTED_MAX = 20


def completeness(part: PartitionOutcome) -> str:
    """How complete the partition is, as one word (see the constants above)."""
    if not part.stable:
        return UNSTABLE
    if part.completeness_ratio >= 1.0:
        return COMPLETE if part.row_count else CONFIRMED_EMPTY
    return PARTIAL if part.row_count else MISSING


def partition_metadata(outcome: RunOutcome, part: PartitionOutcome) -> dict[str, Any]:
    """Metadata of one partition's materialization: its own bars, segment and coverage."""
    node = outcome.node
    interval, origin = node.interval_s, node.timeframe.origin_s
    return {
        "dagster/row_count": part.row_count,
        "fingerprint": dg.MetadataValue.text(part.fingerprint) if part.fingerprint else None,
        "manifest_uri": _uri(part.manifest_uri),
        "coverage_start": iso_utc(part.bounds[0]) if part.bounds else None,
        "coverage_end": iso_utc(part.bounds[1]) if part.bounds else None,
        "coverage_ratio": round(part.coverage_ratio, 6),
        "completeness": completeness(part),
        "completeness_ratio": round(part.completeness_ratio, 6),
        "missing_bars": bar_count(part.missing, interval, origin_s=origin),
        "known_gaps": [f"{g.range} {g.reason}" for g in part.gaps[:LISTED_MAX]],
        "conformance_flags": dg.MetadataValue.json(
            {flag: int(n) for flag, n in sorted(part.flags.items()) if n}
        ),
        # where its bars came from, as its manifest's `provenance.bars` states
        "bars_by_source": dg.MetadataValue.json({k: n for k, n in part.sources.items() if n}),
        "segment_written": part.written,
    }


def run_totals_metadata(outcome: RunOutcome) -> dict[str, Any]:
    """The run's totals for the node: exchange traffic, rate limits, stage timings."""
    requests = outcome.requests
    status = requests.http_status if requests else {}
    timings = outcome.timings_s
    return {
        "run_partitions": len(outcome.partitions),
        "run_window_start": iso_utc(outcome.window.start),
        "run_window_end": iso_utc(outcome.window.end),
        "bars_stored": outcome.stored.rows,
        "fetched_rows": outcome.fetched_rows,
        "forming_dropped": outcome.forming_dropped,
        # what conformance did to the rows this run fetched (a partition's own flags, from
        # its manifest's flag ledger, are on its materialization as `conformance_flags`)
        "fetched_rows_flags": dg.MetadataValue.json(dict(sorted(outcome.flags.items()))),
        "segments_published": len(outcome.published),
        "segments_written": sum(p.written for p in outcome.published),
        "partitions_unstable": sum(not p.stable for p in outcome.partitions),
        "exchange_requests": requests.total_requests if requests else 0,
        "exchange_requests_by_endpoint": dg.MetadataValue.json(
            dict(sorted(requests.http_requests.items())) if requests else {}
        ),
        "exchange_retries": requests.retries if requests else 0,
        "exchange_http_429": int(status.get(429, 0)),
        "exchange_http_418": int(status.get(418, 0)),
        "exchange_rate_limited": requests.rate_limited if requests else 0,
        "rate_limit_wait_s": round(requests.rate_limit_wait_s, 4) if requests else 0.0,
        # a stage the run did not need (nothing to fetch) took no time
        **{f"stage_{s}_s": round(timings.get(f"{s}_s", 0.0), 4) for s in STAGES},
    }


def run_totals_observation(asset_key: dg.AssetKey, outcome: RunOutcome) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=asset_key,
        description=f"Run totals of {outcome.node} over {outcome.window}: exchange requests, "
        "retries, rate limits and stage timings of this run (per partition facts are on "
        "each partition's materialization).",
        metadata=run_totals_metadata(outcome),
    )


def _uri(uri: str | None) -> dg.MetadataValue | None:
    """The store's URI as given (`file:///…/manifest.json` locally, `s3://…` on S3)."""
    return dg.MetadataValue.path(uri) if uri is not None else None
