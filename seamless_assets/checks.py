"""Inline asset checks of an OHLCV node, evaluated on the run: the bars read back from the
store and what conformance did to the rows the run fetched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

from .core.coverage import (
    REASON_BEFORE_LISTING,
    LedgerGap,
    bar_count,
    completeness_ratio,
)
from .core.flags import NON_FINITE, NON_POSITIVE_PRICE, OHLC_INCONSISTENT, ZERO_BAR

if TYPE_CHECKING:  # the pipeline (pandas, ccxt) loads with the run, not with the specs
    from .pipeline import PartitionOutcome, RunOutcome

COVERAGE = "coverage_ratio"
NO_DUPLICATES = "no_duplicate_ts"
MONOTONIC = "monotonic_ts"
OHLC_SANITY = "ohlc_sanity"
EXCHANGE_GAPS = "exchange_gaps"
LISTED_MAX = 50

# Conformance flags of rows that were bad data: conformance drops (or flags) them before
# anything is stored, so the stored bars alone can never show them.
SANITY_FLAGS: tuple[str, ...] = (OHLC_INCONSISTENT, NON_FINITE, NON_POSITIVE_PRICE, ZERO_BAR)


def check_specs(
    asset_key: dg.AssetKey, threshold: float | None = None, gap_warn_s: int | None = None
) -> list[dg.AssetCheckSpec]:
    """The inline checks of an asset; `threshold` (observability.coverage_ratio_threshold)
    and `gap_warn_s` (observability.exchange_gap_warn_s) only word the descriptions (the
    CLI needs just the keys)."""
    at_least = f"{threshold:.0%}" if threshold is not None else "the threshold"
    longest = f"{gap_warn_s} s" if gap_warn_s is not None else "the configured length"
    return [
        dg.AssetCheckSpec(
            COVERAGE,
            asset=asset_key,
            description=f"Completeness of the materialized window ≥ {at_least} "
            "(observability.coverage_ratio_threshold): stored bars plus bars the exchange "
            "confirmed empty (gap ledger) over the bars on the grid.",
        ),
        dg.AssetCheckSpec(NO_DUPLICATES, asset=asset_key, description="One bar per ts."),
        dg.AssetCheckSpec(MONOTONIC, asset=asset_key, description="ts strictly increasing."),
        dg.AssetCheckSpec(
            OHLC_SANITY,
            asset=asset_key,
            description="No row the run fetched was inconsistent (high < low, …), non-finite, "
            "non-positive or all zero (conformance flags), and every stored bar has "
            "high ≥ max(open, close, low), low ≤ min(open, close), volume ≥ 0, finite values.",
        ),
        dg.AssetCheckSpec(
            EXCHANGE_GAPS,
            asset=asset_key,
            description=f"No window of {longest} or more that the exchange confirmed empty "
            "after the listing (maintenance, trading halt) in the materialized partitions "
            "(observability.exchange_gap_warn_s). Such bars can never be fetched: coverage "
            "counts them as known, this check makes them visible.",
        ),
    ]


def exchange_gaps(outcome: RunOutcome, gap_warn_s: int) -> list[tuple[str, LedgerGap]]:
    """(partition window, gap) of every confirmed-empty window of at least `gap_warn_s`
    after the listing, in the run's partitions."""
    return [
        (str(p.window), g)
        for p in outcome.partitions
        for g in p.gaps
        if g.reason != REASON_BEFORE_LISTING and g.range.end - g.range.start >= gap_warn_s
    ]


def run_completeness(outcome: RunOutcome) -> tuple[float, int]:
    """(completeness, bars missing) of the run's window: bars the gap ledger confirms empty
    count as known, not missing."""
    node = outcome.node
    interval, origin = node.interval_s, node.timeframe.origin_s
    known = [g.range for p in outcome.partitions for g in p.gaps]
    ratio = completeness_ratio(
        outcome.stored.covered, known, outcome.window, interval, origin_s=origin
    )
    missing = bar_count(
        [m for p in outcome.partitions for m in p.missing], interval, origin_s=origin
    )
    return ratio, missing


def flagged_rows(
    partitions: Sequence[PartitionOutcome],
) -> list[tuple[PartitionOutcome, dict[str, int]]]:
    """Partitions whose fetched rows carried a sanity flag, with those flags' counts."""
    out = []
    for part in partitions:
        counts = {f: int(part.flags.get(f, 0)) for f in SANITY_FLAGS if part.flags.get(f, 0)}
        if counts:
            out.append((part, counts))
    return out


def check_results(
    outcome: RunOutcome, threshold: float, gap_warn_s: int = 600
) -> list[dg.AssetCheckResult]:
    stored = outcome.stored
    duplicates, out_of_order, stored_bad = stored.duplicates, stored.out_of_order, stored.bad_rows
    flagged = flagged_rows(outcome.partitions)
    flag_totals = {f: sum(counts.get(f, 0) for _, counts in flagged) for f in SANITY_FLAGS}
    gaps = [g for p in outcome.partitions for g in p.gaps]
    missing = [m for p in outcome.partitions for m in p.missing]
    ratio, missing_bars = run_completeness(outcome)
    long_gaps = exchange_gaps(outcome, gap_warn_s)
    interval, origin = outcome.node.interval_s, outcome.node.timeframe.origin_s
    gap_bars = bar_count([g.range for _, g in long_gaps], interval, origin_s=origin)
    return [
        dg.AssetCheckResult(
            check_name=COVERAGE,
            passed=ratio >= threshold,
            severity=dg.AssetCheckSeverity.WARN,
            description=None
            if ratio >= threshold
            else f"{missing_bars} bar(s) neither stored nor confirmed empty by the exchange; "
            "a later run fetches them again",
            metadata={
                # judged: (stored + confirmed-empty) / grid; stored_ratio: stored / grid
                "coverage_ratio": round(ratio, 6),
                "stored_ratio": round(outcome.coverage_ratio, 6),
                "threshold": threshold,
                "missing_bars": missing_bars,
                "known_gaps": [f"{g.range} {g.reason}" for g in gaps[:LISTED_MAX]],
                "missing_ranges": [str(m) for m in missing[:LISTED_MAX]],
            },
        ),
        dg.AssetCheckResult(
            check_name=NO_DUPLICATES,
            passed=duplicates == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"duplicate_ts": duplicates, "max_duplicate_ts": 0},
        ),
        dg.AssetCheckResult(
            check_name=MONOTONIC,
            passed=out_of_order == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"out_of_order": out_of_order, "max_out_of_order": 0},
        ),
        dg.AssetCheckResult(
            check_name=OHLC_SANITY,
            passed=not flagged and stored_bad == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if not flagged and stored_bad == 0
            else f"the exchange sent {sum(flag_totals.values())} bad row(s) in "
            f"{len(flagged)} partition(s) (conformance flagged them); {stored_bad} stored "
            "bar(s) violate the OHLC invariants",
            metadata={
                "bad_rows": stored_bad,
                "max_bad_rows": 0,  # stored bars violating the invariants
                "max_flagged_rows": 0,  # fetched rows conformance flagged as bad data
                "flagged_rows": {f: n for f, n in flag_totals.items() if n},
                "flagged_partition_count": len(flagged),
                "flagged_partitions": [
                    f"{part.window} " + " ".join(f"{f}={n}" for f, n in counts.items())
                    for part, counts in flagged[:LISTED_MAX]
                ],
            },
        ),
        dg.AssetCheckResult(
            check_name=EXCHANGE_GAPS,
            passed=not long_gaps,
            severity=dg.AssetCheckSeverity.WARN,
            description=None
            if not long_gaps
            else f"the exchange confirmed {len(long_gaps)} window(s) of {gap_warn_s} s or "
            f"more empty ({gap_bars} bar(s)): no bars exist there, e.g. maintenance",
            metadata={
                "gap_count": len(long_gaps),
                "gap_bars": gap_bars,
                "longest_gap_s": max(
                    (g.range.end - g.range.start for _, g in long_gaps), default=0
                ),
                "min_gap_s": gap_warn_s,  # windows shorter than this are not counted
                "max_gap_count": 0,
                "gaps": [f"{g.range} {g.reason}" for _, g in long_gaps[:LISTED_MAX]],
                "gap_partitions": sorted({w for w, _ in long_gaps})[:LISTED_MAX],
            },
        ),
    ]
