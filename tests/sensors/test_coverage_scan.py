"""Per-partition coverage from islands and ledger: arithmetic against brute force, and the
scan over a real DuckDB hot store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resources.hot_store.duckdb import DuckDBHotStore
from seamless_assets.core.coverage import LedgerGap, merge_ranges
from seamless_assets.core.frame import CANONICAL_COLUMNS, Range
from seamless_assets.nodes import NodeId
from sensors.coverage_scan import bars_before, below_threshold, closed_partitions, scan_coverage

from .conftest import DAY, NOW, T0


@st.composite
def _ranges_and_points(draw: st.DrawFn) -> tuple[list[Range], list[int], int, int]:
    interval = draw(st.sampled_from([1, 60, 300, 604_800]))
    origin = draw(st.integers(0, interval - 1))
    pairs = draw(st.lists(st.tuples(st.integers(-50, 400), st.integers(1, 60)), max_size=8))
    ranges = merge_ranges(Range(s * 7, (s + n) * 7) for s, n in pairs)
    points = draw(st.lists(st.integers(-400, 3200), min_size=1, max_size=10))
    return ranges, points, interval, origin


@given(_ranges_and_points())
def test_bars_before_counts_grid_points_like_brute_force(
    case: tuple[list[Range], list[int], int, int],
) -> None:
    ranges, points, interval, origin = case
    got = bars_before(ranges, np.array(points), interval, origin)
    for t, count in zip(points, got, strict=True):
        expected = sum(
            1
            for r in ranges
            for ts in range(r.start, r.end)
            if ts < t and (ts - origin) % interval == 0
        )
        assert count == expected


def _bars(start: int, count: int) -> pd.DataFrame:
    ts = np.arange(start, start + 60 * count, 60, dtype=np.int64)
    values = {c: np.ones(len(ts)) for c in CANONICAL_COLUMNS if c != "ts"}
    return pd.DataFrame({"ts": ts, **values})


def test_scan_reads_two_queries_worth_of_ranges_into_per_partition_ratios(tmp_path: Path) -> None:
    node = NodeId.parse("ohlcv:binance:BTC/USDT:1m")
    hot = DuckDBHotStore(str(tmp_path / "hot.duckdb"))
    try:
        hot.upsert(str(node), _bars(T0, 1440))  # 01-01 complete
        hot.upsert(str(node), _bars(T0 + DAY, 1000))  # 01-02: 1000 of 1440
        hot.upsert(str(node), _bars(T0 + 2 * DAY, 720))  # 01-03: first half stored …
        hot.record_gaps(  # … the second half confirmed empty by the exchange
            str(node), [LedgerGap(Range(T0 + 2 * DAY + DAY // 2, T0 + 3 * DAY), "maintenance")]
        )
        span = closed_partitions(dg.DailyPartitionsDefinition(start_date="2024-01-01"), NOW)
        published = frozenset({Range(T0, T0 + DAY)})
        coverage = scan_coverage(node, span, hot, published, NOW, stabilization_bars=2)
    finally:
        hot.close()
    assert [p.key for p in coverage] == [f"2024-01-0{d}" for d in range(1, 8)]
    by_key = {p.key: p for p in coverage}
    assert by_key["2024-01-01"].ratio == 1.0 and by_key["2024-01-01"].published
    assert (by_key["2024-01-02"].stored_bars, by_key["2024-01-02"].expected_bars) == (1000, 1440)
    assert (by_key["2024-01-03"].expected_bars, by_key["2024-01-03"].empty_bars) == (720, 720)
    assert by_key["2024-01-03"].ratio == 1.0
    assert by_key["2024-01-04"].ratio == 0.0
    assert all(p.stable for p in coverage)
    thin = below_threshold(coverage, 0.98)
    assert [p.key for p in thin] == ["2024-01-02", *(f"2024-01-0{d}" for d in range(4, 8))]


@pytest.mark.parametrize(
    ("start_offset_bars", "first_key", "expected_first"),
    [
        (0, "2024-01-03", 1440),  # the start on a partition boundary
        (720, "2024-01-03", 720),  # at noon: only the afternoon is expected
        (1439, "2024-01-03", 1),  # the last bar of the day
        (-60, "2024-01-02", 60),  # 23:00 the day before
    ],
)
def test_bars_before_the_history_start_are_not_expected(
    tmp_path: Path, start_offset_bars: int, first_key: str, expected_first: int
) -> None:
    node = NodeId.parse("ohlcv:binance:BTC/USDT:1m")
    start = T0 + 2 * DAY + 60 * start_offset_bars
    hot = DuckDBHotStore(str(tmp_path / "hot.duckdb"))
    try:
        hot.upsert(str(node), _bars(start, (T0 + 7 * DAY - start) // 60))  # all it has
        partitions = dg.DailyPartitionsDefinition(start_date="2024-01-01")
        span = closed_partitions(partitions, NOW, not_before_s=start)
        coverage = scan_coverage(
            node, span, hot, frozenset(), NOW, stabilization_bars=2, history_start_s=start
        )
    finally:
        hot.close()
    assert coverage[0].key == first_key
    assert coverage[0].expected_bars == coverage[0].stored_bars == expected_first
    assert below_threshold(coverage, 0.98) == []  # complete from its first bar
