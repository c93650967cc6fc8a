"""Weekly bars end to end: Binance opens `1w` bars on Monday 00:00 UTC, not on the epoch grid.

The epoch (1970-01-01) was a Thursday, so `ts % 604800 == 0` falls on Thursdays; the sandbox
models Binance (`week_origin_s`), and every weekly bar must be kept, counted and published on
the Monday grid (`Timeframe.origin_s`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from sandbox import SandboxExchange, expected_bars
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range

from .conftest import DAY, write_config
from .conftest import kline_requests as _klines
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

WEEK, MONDAY = 604_800, 345_600
START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
END = datetime(2024, 4, 1, tzinfo=UTC)  # a Monday too: three monthly partitions
T0, T1 = int(START.timestamp()), int(END.timestamp())
NODE = "ohlcv:binance:BTC/USDT:1w"
# Bars opening in each monthly partition (Mondays): Jan 1-29, Feb 5-26, Mar 4-25.
MONTHS = {
    Range(T0, T0 + 31 * DAY): 5,
    Range(T0 + 31 * DAY, T0 + 60 * DAY): 4,
    Range(T0 + 60 * DAY, T1): 4,
}


def weekly_config(tmp_path: Path, sandbox_url: str) -> SeamlessConfig:
    """The test config of `write_config` with `1w` added to the sandboxed exchange."""
    path = write_config(tmp_path, sandbox_url)
    raw = yaml.safe_load(path.read_text())
    raw["exchanges"]["binance"]["timeframes"] = ["1m", "1h", "1w"]
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture
def weekly(tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path) -> SeamlessConfig:
    return weekly_config(tmp_path, sandbox.url)


def test_weekly_backfill_keeps_monday_bars_with_full_coverage(
    weekly: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = weekly.node(NODE)
    assert node.timeframe.origin_s == MONDAY

    result = run_backfill(weekly, [node], START, END)
    assert result.success
    materialized = {e.partition for e in result.get_asset_materialization_events() if e.partition}
    assert materialized == {"2024-01-01", "2024-02-01", "2024-03-01"}

    stored = _hot(weekly).read_range(str(node), Range(T0, T1))
    expected = expected_bars("BTC/USDT", WEEK, T0, T1)
    assert len(stored) == sum(MONTHS.values()) == 13
    assert (stored["ts"] % WEEK == MONDAY).all()  # Monday 00:00 UTC
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected["ts"])
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(stored[column].to_numpy(), expected[column])

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    coverage = checks["coverage_ratio"]
    assert coverage.passed and coverage.metadata["coverage_ratio"].value == 1.0
    assert _hot(weekly).ledger_gaps(str(node)) == []  # no bar was mistaken for a gap
    assert _hot(weekly).coverage(str(node), WEEK, Range(T0, T1)) == [Range(T0, T1)]

    artifacts = _artifacts(weekly)
    heads = artifacts.heads(node)
    assert set(heads) == set(MONTHS)  # one segment per month, all published
    for month, bars in MONTHS.items():
        manifest = artifacts.read_manifest(node, heads[month])
        assert manifest is not None
        assert manifest["row_count"] == bars
        assert manifest["coverage"]["expected_bars"] == bars
        assert manifest["coverage"]["ratio"] == 1.0
        assert manifest["coverage"]["completeness"] == 1.0
        assert manifest["coverage"]["missing"] == []
        assert manifest["conformance"]["flags"]["invalid_timestamp"] == 0
        assert manifest["conformance"]["flags"]["gap"] == 0
    assert artifacts.verify_all() == []

    sandbox.reset()
    assert run_backfill(weekly, [node], START, END).success
    assert _klines(sandbox) == 0  # complete on the Monday grid: nothing left to fetch


def test_forming_weekly_bar_is_not_stored_or_published(
    weekly: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = weekly.node(NODE)
    # Thursday 2024-03-21 00:00 UTC: a week boundary on the epoch grid, but on Binance's
    # Monday grid the bar that opened on Monday 2024-03-18 is still forming.
    now = T0 + 80 * DAY
    assert now % WEEK == 0 and datetime.fromtimestamp(now, tz=UTC).weekday() == 3
    sandbox.set_clock(now=now)

    assert run_backfill(weekly, [node], START, END).success
    stored = _hot(weekly).read_range(str(node), Range(T0, T1))
    expected = expected_bars("BTC/USDT", WEEK, T0, T1, now_s=now)
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected["ts"])
    assert int(stored["ts"].max()) == now - 3 * DAY - WEEK  # Monday 2024-03-11: last closed
    assert _hot(weekly).ledger_gaps(str(node)) == []  # the forming week is not a gap

    heads = _artifacts(weekly).heads(node)
    # January and February closed long before now (with 2 bars of stabilization); March
    # holds the forming bar and is held back.
    assert set(heads) == set(list(MONTHS)[:2])
