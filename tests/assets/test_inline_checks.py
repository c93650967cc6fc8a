"""Inline checks judge the run: ohlc_sanity fails (ERROR) when the exchange sent bad rows,
although conformance kept them out of the store, and names the partitions and counts."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
DAY = 86_400
NODE = "ohlcv:binance:BTC/USDT:1m"


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
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
