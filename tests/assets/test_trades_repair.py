"""Trades -> bars repair end to end: where the exchange's candles stay missing between
bars while its trades exist (the bundled exchange's `kline_gaps`), a Dagster backfill
rebuilds the bars from the trades exactly, stores them with provenance `trades`, and
manifests and the coverage calendar say so; a real outage (no trades) stays a gap."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sandbox import SandboxConfig, SandboxExchange, expected_bars
from seamless_assets.cli import run_backfill
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range
from seamless_assets.coverage_view import FROM_TRADES, state_of
from seamless_assets.nodes import NodeId
from seamless_assets.sources import trades_repair_applies
from sensors.coverage_scan import HistorySpan, scan_coverage

from .conftest import DAY, write_config
from .conftest import open_hot as _hot

T0 = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp())
SPOT = "ohlcv:binance:BTC/USDT:1m"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def _windows(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"start": T0 + a, "end": T0 + b} for a, b in pairs]


# candle outages (trades present), off the minute and across an hour and a day boundary
KLINE_GAPS = [
    _windows((3 * 3600 + 17, 3 * 3600 + 7 * 60 + 3)),
    _windows((DAY - 150, DAY + 11 * 60 + 40), (DAY + 9 * 3600, DAY + 9 * 3600 + 60)),
    # at the run's very start and end: the edges of what it asked are outages too
    _windows((-600, 7 * 60), (3 * DAY - 300, 3 * DAY)),
]


def _manifests(data_dir: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for path in (data_dir / "artifacts").rglob("manifest.json"):
        manifest = json.loads(path.read_text())
        if manifest["node_id"] == SPOT:
            out[int(manifest["range"]["start"])] = manifest
    return out


def _slots(windows: list[dict[str, int]]) -> set[int]:
    """1m bars inside the windows (entirely: what a gap removes)."""
    return {
        t
        for w in windows
        for t in range(-(-w["start"] // 60) * 60, w["end"], 60)
        if t + 60 <= w["end"]
    }


@pytest.mark.parametrize("kline_gaps", KLINE_GAPS)
def test_a_candle_outage_with_trades_is_rebuilt_from_them_and_labelled(
    tmp_path: Path, dagster_home: Path, kline_gaps: list[dict[str, int]]
) -> None:
    outage = _windows((2 * DAY + 5 * 3600, 2 * DAY + 5 * 3600 + 20 * 60))  # no trades there
    config = SandboxConfig.from_dict(
        {"kline_gaps": {"BTC/USDT": kline_gaps}, "gaps": {"BTC/USDT": outage}}
    )
    with SandboxExchange(config) as sandbox:
        source = write_config(tmp_path, sandbox.url)
        project = load_config(source)
        end = T0 + 3 * DAY
        assert run_backfill(
            project,
            [project.node(SPOT)],
            datetime.fromtimestamp(T0, tz=UTC),
            datetime.fromtimestamp(end, tz=UTC),
        ).success
        trade_requests = sandbox.stats()["by_endpoint"].get("aggTrades", {}).get("requests", 0)

    # the stored bars are the exchange's bars without the candle outage: exact
    stored = _hot(project).read_range(SPOT, Range(T0, end))
    everything = expected_bars("BTC/USDT", 60, T0, end)  # the bars as if no outage at all
    real_outage = _slots(outage)
    keep = ~np.isin(everything["ts"], list(real_outage))
    for column in COLUMNS:
        np.testing.assert_array_equal(stored[column].to_numpy(), everything[column][keep])
    assert trade_requests >= len(kline_gaps) + 1  # each hole asked; the outage probed too

    rebuilt = {t for t in _slots(kline_gaps) if T0 <= t < end}  # what the run asked
    manifests = _manifests(project.data_dir)
    assert sorted(manifests) == [T0, T0 + DAY, T0 + 2 * DAY]
    for day_start, manifest in manifests.items():
        bars = manifest["provenance"]["bars"]
        in_day = {t for t in rebuilt if day_start <= t < day_start + DAY}
        assert bars["trades"] == len(in_day), (day_start, bars)
        assert bars["rest"] == manifest["row_count"] - len(in_day)
    # the outage without trades stays what it is: a gap the exchange confirmed
    outage_day = manifests[T0 + 2 * DAY]
    assert outage_day["conformance"]["flags"]["gap"] == len(real_outage)

    # the coverage calendar draws the repaired days apart
    node = project.node(SPOT)
    days = tuple(Range(t, t + DAY) for t in range(T0, end, DAY))
    span = HistorySpan(tuple(str(d.start) for d in days), days)
    scanned = scan_coverage(node, span, _hot(project), frozenset(), end + 3600, 2)
    repaired_days = {p.window.start for p in scanned if state_of(p) == FROM_TRADES}
    assert repaired_days == {T0 + (t - T0) // DAY * DAY for t in rebuilt}


def test_repair_can_be_turned_off(tmp_path: Path, dagster_home: Path) -> None:
    config = SandboxConfig.from_dict({"kline_gaps": {"BTC/USDT": KLINE_GAPS[0]}})
    with SandboxExchange(config) as sandbox:
        source = write_config(tmp_path, sandbox.url)
        raw = yaml.safe_load(source.read_text())
        raw["exchanges"]["binance"]["trades_repair"] = False
        source.write_text(yaml.safe_dump(raw))
        project = load_config(source)
        assert run_backfill(
            project,
            [project.node(SPOT)],
            datetime.fromtimestamp(T0, tz=UTC),
            datetime.fromtimestamp(T0 + DAY, tz=UTC),
        ).success
        assert "aggTrades" not in sandbox.stats()["by_endpoint"]
    manifest = _manifests(project.data_dir)[T0]
    assert manifest["provenance"]["bars"]["trades"] == 0
    assert manifest["conformance"]["flags"]["gap"] == len(_slots(KLINE_GAPS[0]))


@pytest.mark.parametrize(
    ("node_id", "applies"),
    [
        ("ohlcv:binance:BTC/USDT:1m", True),
        ("ohlcv:binance:ETH/BTC:1h", True),
        ("ohlcv:binance:BTC/USDT:USDT:1m", False),  # no aggTrades paging assumed there
        ("mark:binance:BTC/USDT:USDT:1m", False),  # mark prices have no trades
        ("ohlcv:bybit:BTC/USDT:1m", False),  # recent trades only
    ],
)
def test_repair_applies_where_trades_reach_back(node_id: str, applies: bool) -> None:
    assert trades_repair_applies(NodeId.parse(node_id)) is applies
