"""Inline checks judge the run: ohlc_sanity fails (ERROR) when the exchange sent bad rows,
although conformance kept them out of the store, and names the partitions and counts."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from sandbox import SandboxExchange
from seamless_assets.checks import check_results
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.coverage import LedgerGap
from seamless_assets.core.frame import CANONICAL_COLUMNS, Range
from seamless_assets.nodes import NodeId
from seamless_assets.pipeline import PartitionOutcome, RunOutcome
from seamless_assets.run_outcome import StoredBars

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
DAY = 86_400
NODE = "ohlcv:binance:BTC/USDT:1m"


def _checks(result: dg.JobExecutionResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


@pytest.mark.parametrize(
    ("kind", "flag"),
    [
        ("high_below_low", "ohlc_inconsistent"),
        ("nan", "non_finite"),
        ("inf", "non_finite"),
        ("zero_price", "non_positive_price"),
        ("negative_price", "non_positive_price"),
        ("zero_bar", "zero_bar"),
    ],
)
def test_bad_rows_fail_ohlc_sanity_naming_partition_and_count(
    project: SeamlessConfig, sandbox: SandboxExchange, kind: str, flag: str
) -> None:
    bad = [T0 + DAY + 3600 * i for i in range(3)]  # three rows of 2024-01-02
    sandbox.configure(corruptions=[{"symbol": "BTC/USDT", "ts": ts, "kind": kind} for ts in bad])
    end = datetime.fromtimestamp(T0 + 3 * DAY, tz=UTC)
    result = run_backfill(project, [project.node(NODE)], START, end)
    assert result.success
    sanity = _checks(result)["ohlc_sanity"]
    assert not sanity.passed and sanity.severity == dg.AssetCheckSeverity.ERROR
    assert sanity.metadata["flagged_rows"].value == {flag: 3}
    assert sanity.metadata["flagged_partitions"].value == [
        f"[2024-01-02T00:00:00Z, 2024-01-03T00:00:00Z) {flag}=3"
    ]
    assert sanity.metadata["bad_rows"].value == 0  # nothing bad was stored
    assert sanity.description and "3 bad row(s) in 1 partition(s)" in sanity.description


def test_clean_rows_pass_ohlc_sanity(project: SeamlessConfig) -> None:
    end = datetime.fromtimestamp(T0 + 2 * DAY, tz=UTC)
    result = run_backfill(project, [project.node(NODE)], START, end)
    sanity = _checks(result)["ohlc_sanity"]
    assert sanity.passed and sanity.metadata["flagged_partition_count"].value == 0


def _outcome(stored: list[Range], gaps: list[Range], missing: list[Range]) -> RunOutcome:
    """A run over 2024-01-01 (one 1m partition) whose store holds `stored`."""
    node = NodeId.parse(NODE)
    ts = np.concatenate([np.arange(r.start, r.end, 60, dtype=np.int64) for r in stored])
    frame = pd.DataFrame({"ts": ts, **{c: np.ones(len(ts)) for c in CANONICAL_COLUMNS[1:]}})
    window = Range(T0, T0 + DAY)
    part = PartitionOutcome(
        window=window,
        row_count=len(ts),
        coverage_ratio=len(ts) / 1440,
        completeness_ratio=0.0,  # not read by the check: it recomputes from the run
        missing=tuple(missing),
        gaps=tuple(LedgerGap(g, "exchange_returned_no_bars") for g in gaps),
        flags={},
        stable=True,
    )
    stored = StoredBars().add(frame, node.interval_s)
    return RunOutcome(node=node, window=window, partitions=[part], stored=stored)


@pytest.mark.parametrize(
    ("empty_bars", "confirmed", "passed"),
    [
        (0, False, True),
        (180, True, True),  # a 3-hour exchange outage, ledgered: known, not missing
        (1440 - 60, True, True),  # almost all of it confirmed empty
        (180, False, False),  # 3 hours neither stored nor confirmed: 87.5 % < 98 %
        (20, False, True),  # 98.6 %: within the threshold
        (30, False, False),  # 97.9 %
    ],
)
def test_coverage_judges_completeness_not_stored_bars(
    empty_bars: int, confirmed: bool, passed: bool
) -> None:
    hole = Range(T0 + DAY - 60 * empty_bars, T0 + DAY)
    stored = [Range(T0, hole.start)]
    outcome = _outcome(stored, [hole] if confirmed else [], [] if confirmed else [hole])
    coverage = {r.check_name: r for r in check_results(outcome, threshold=0.98)}["coverage_ratio"]
    assert coverage.passed is passed
    missing = 0 if confirmed else empty_bars
    assert coverage.metadata["missing_bars"].value == missing
    assert coverage.metadata["coverage_ratio"].value == pytest.approx(1 - missing / 1440, abs=1e-6)
    assert (coverage.description is None) is passed


def _gap_outcome(gaps: list[tuple[Range, str]], days: int = 1) -> RunOutcome:
    """A run over `days` 1m partitions from 2024-01-01 whose ledger holds `gaps`; every
    other bar is stored."""
    node = NodeId.parse(NODE)
    parts, stored = [], []
    for day in range(days):
        window = Range(T0 + day * DAY, T0 + (day + 1) * DAY)
        own = [LedgerGap(r, reason) for r, reason in gaps if window.start <= r.start < window.end]
        cursor = window.start
        for gap in sorted(own, key=lambda g: g.range.start):
            stored.append(np.arange(cursor, gap.range.start, 60, dtype=np.int64))
            cursor = gap.range.end
        stored.append(np.arange(cursor, window.end, 60, dtype=np.int64))
        parts.append(
            PartitionOutcome(
                window=window,
                row_count=0,
                coverage_ratio=1.0,
                completeness_ratio=1.0,
                missing=(),
                gaps=tuple(own),
                flags={},
                stable=True,
            )
        )
    ts = np.concatenate(stored)
    frame = pd.DataFrame({"ts": ts, **{c: np.ones(len(ts)) for c in CANONICAL_COLUMNS[1:]}})
    window, stored = Range(T0, T0 + days * DAY), StoredBars().add(frame, node.interval_s)
    return RunOutcome(node=node, window=window, partitions=parts, stored=stored)


def _span(start_min: int, minutes: int, day: int = 0) -> Range:
    start = T0 + day * DAY + start_min * 60
    return Range(start, start + minutes * 60)


@pytest.mark.parametrize(
    ("gaps", "days", "failing_gaps", "gap_bars"),
    [
        ([], 1, 0, 0),
        ([(_span(600, 9), "exchange_returned_no_bars")], 1, 0, 0),  # a quiet 9 minutes
        ([(_span(600, 10), "exchange_returned_no_bars")], 1, 1, 10),  # exactly the minimum
        ([(_span(1200, 120), "exchange_returned_no_bars")], 1, 1, 120),  # 2 h maintenance
        ([(_span(0, 300), "before_listing")], 1, 0, 0),  # before the listing: not a gap
        (
            [
                (_span(60, 45, day=0), "exchange_returned_no_bars"),
                (_span(100, 3, day=1), "exchange_returned_no_bars"),
                (_span(1300, 90, day=2), "exchange_returned_no_bars"),
            ],
            3,
            2,
            135,
        ),
    ],
)
def test_exchange_gaps_warn_on_confirmed_empty_windows_of_the_configured_length(
    gaps: list[tuple[Range, str]], days: int, failing_gaps: int, gap_bars: int
) -> None:
    outcome = _gap_outcome(gaps, days)
    results = {r.check_name: r for r in check_results(outcome, 0.98, gap_warn_s=600)}
    check = results["exchange_gaps"]
    assert check.passed is (failing_gaps == 0)
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["gap_count"].value == failing_gaps
    assert check.metadata["gap_bars"].value == gap_bars
    assert check.metadata["min_gap_s"].value == 600
    assert len(check.metadata["gap_partitions"].value) == len(
        {
            g[0].start // DAY
            for g in gaps
            if g[1] != "before_listing" and g[0].end - g[0].start >= 600
        }
    )
    assert results["coverage_ratio"].passed  # confirmed windows are known, not missing
    assert (check.description is None) is check.passed
