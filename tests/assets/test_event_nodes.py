"""Funding and trades nodes end to end, in a catalog that mixes every kind: Binance spot,
perpetual and mark-price bars, Binance funding and trades, and Bybit candles. Each run
goes through Dagster with real ccxt against the sandbox; values stored, published,
snapshotted and read equal the exchange's exactly. Funding coverage stays right across
interval changes (8h -> 4h -> 1h), a missing funding is named, and a day that is not
settled yet is stored but not published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxConfig, SandboxExchange, expected_bars, expected_funding
from sandbox.trades import expected_trades
from seamless_assets.cli import main, run_backfill
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range
from seamless_assets.errors import AsOfRequired, MissingPartitions

from .conftest import DAY, write_config
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
PERP = "BTC/USDT:USDT"
FUNDING, TRADES = f"funding:binance:{PERP}", "trades:binance:ETH/USDT"
MARK, BYBIT = f"mark:binance:{PERP}:1m", f"ohlcv:bybit:{PERP}:1m"
BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
# 8h until noon of the first day, then 4h, then 1h from the second day's 08:00
SCHEDULE = [[T0 + DAY // 2, 4], [T0 + DAY + 8 * 3600, 1]]


def _catalog(tmp_path: Path, sandbox: SandboxExchange) -> SeamlessConfig:
    path = write_config(tmp_path, sandbox.url, symbols=("BTC/USDT", PERP))
    config = yaml.safe_load(path.read_text())
    config["exchanges"]["binance"]["timeframes"] = ["1m"]
    config["exchanges"]["binance"]["ccxt_config"]["urls"]["api"]["fapiPublic"] = (
        f"{sandbox.url}/fapi/v1"
    )
    api = {"public": sandbox.url, "private": sandbox.url}
    config["exchanges"]["bybit"] = {"ccxt_config": {"urls": {"api": api}}}
    config["series"] = [MARK, FUNDING, TRADES, BYBIT]
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


@pytest.fixture
def changing_funding() -> SandboxConfig:
    return SandboxConfig(funding_intervals={PERP: SCHEDULE})


def _events(frame_ts: np.ndarray, fundings: list[tuple[int, float, float]]) -> None:
    assert frame_ts.tolist() == [f[0] for f in fundings]


def test_a_catalog_of_every_kind_backfills_snapshots_and_reads_exactly(
    tmp_path: Path, dagster_home: Path, changing_funding: SandboxConfig
) -> None:
    with SandboxExchange(changing_funding) as sandbox:
        project = _catalog(tmp_path, sandbox)
        assert {str(n) for n in project.event_nodes} == {FUNDING, TRADES}
        end = datetime.fromtimestamp(T0 + 2 * DAY, tz=UTC)
        bars = [project.catalog_node(n) for n in (f"ohlcv:binance:BTC/USDT:1m", MARK, BYBIT)]
        events = [project.catalog_node(n) for n in (FUNDING, TRADES)]
        assert run_backfill(project, bars, START, end).success
        result = run_backfill(project, events, START, end)
        assert result.success
        checks = {(c.asset_key.path[0], c.check_name): c for c in result.get_asset_check_evaluations()}
        assert checks[("funding", "coverage_ratio")].passed
        assert checks[("trades", "coverage_ratio")].passed
        # 8h, 4h and 1h fundings: every one present, none flagged as missing
        assert checks[("funding", "funding_interval")].passed
        intervals = checks[("funding", "funding_interval")].metadata["intervals"].value
        assert [hours for _, hours in intervals] == [8, 4, 1]

    window = Range(T0, T0 + 2 * DAY)
    fundings = expected_funding(PERP, T0, T0 + 2 * DAY, changing_funding)
    assert len(fundings) == 2 + 3 + 2 + 16  # 00,08 | 12,16,20 | 00,04 | 08..23 hourly
    trades = expected_trades("ETH/USDT", T0, T0 + 2 * DAY, changing_funding)

    # the hot store holds the exchange's values exactly
    from seamless_assets.runtime import resources_from_config

    hot_events = resources_from_config(project)["hot_store"].open_events()  # type: ignore[attr-defined]
    stored = hot_events.read_events("funding", FUNDING, window)
    _events(stored["ts"].to_numpy(), fundings)
    np.testing.assert_array_equal(stored["funding_rate"], [f[1] for f in fundings])
    np.testing.assert_array_equal(stored["mark_price"], [f[2] for f in fundings])
    stored_trades = hot_events.read_events("trades", TRADES, window)
    _assert_trades(stored_trades, trades)
    assert hot_events.answered("funding", FUNDING, window) == [window]
    hot_events.close()
    hot = _hot(project)
    for node_id, expected in (
        ("ohlcv:binance:BTC/USDT:1m", expected_bars("BTC/USDT", 60, T0, T0 + 2 * DAY)),
        (MARK, expected_bars(PERP, 60, T0, T0 + 2 * DAY, price="mark")),
        (BYBIT, expected_bars(PERP, 60, T0, T0 + 2 * DAY, venue="bybit")),
    ):
        frame = hot.read_range(node_id, window)
        for column in BAR_COLUMNS:
            np.testing.assert_array_equal(frame[column].to_numpy(), expected[column])

    # bar snapshots by the CLI, event snapshots by their runs; the whole store verifies
    assert main(["--config", str(project.source), "snapshot"]) == 0
    artifacts = _artifacts(project)
    assert artifacts.verify_all() == []
    event_store = resources_from_config(project)["artifacts"].open_events()  # type: ignore[attr-defined]
    funding_node, trades_node = events
    for node in events:
        snapshot = event_store.latest_snapshot(node)
        assert snapshot is not None and snapshot.watermark_s == T0 + 2 * DAY
        assert [s.range for s in snapshot.segments] == [Range(T0, T0 + DAY), Range(T0 + DAY, T0 + 2 * DAY)]
        manifest = event_store.read_manifest(node, snapshot.segments[0].fingerprint)
        assert manifest is not None and manifest["provenance"]["rows_by_source"]["rest"] > 0

    # backtest reads of any window inside the snapshot: exactly the exchange's
    as_of = event_store.latest_snapshot(funding_node).as_of_s  # type: ignore[union-attr]
    inside = Range(T0 + 10 * 3600 + 7, T0 + DAY + 7 * 3600)
    with SeamlessReader.from_config(project.source) as reader:
        frame, meta = reader.fetch(FUNDING, inside.start, inside.end, ComputeContext("w", "backtest", as_of=as_of))
        _events(frame["ts"].to_numpy(), expected_funding(PERP, inside.start, inside.end, changing_funding))
        assert meta.source == "snapshot" and meta.coverage_ratio == 1.0
        assert meta.dataset_fingerprint and meta.snapshot_fingerprint
        trades_as_of = event_store.latest_snapshot(trades_node).as_of_s  # type: ignore[union-attr]
        frame, meta = reader.fetch(TRADES, inside.start, inside.end, ComputeContext("w", "research", as_of=trades_as_of))
        _assert_trades(frame, expected_trades("ETH/USDT", inside.start, inside.end, changing_funding))
        again, meta_again = reader.fetch(TRADES, inside.start, inside.end, ComputeContext("w2", "backtest", as_of=trades_as_of))
        assert again.equals(frame) and meta_again.dataset_fingerprint == meta.dataset_fingerprint
        with pytest.raises(AsOfRequired):
            reader.fetch(TRADES, inside.start, inside.end, ComputeContext("w", "backtest"))
        with pytest.raises(MissingPartitions, match="2024-01-03"):
            reader.fetch(FUNDING, T0, T0 + 3 * DAY, ComputeContext("w", "backtest", as_of=as_of))
        live, live_meta = reader.fetch(FUNDING, T0, T0 + 2 * DAY, ComputeContext("w3", "live"))
        _events(live["ts"].to_numpy(), fundings)
        assert live_meta.source == "hot_store" and not live_meta.partial


def _assert_trades(frame: object, expected: dict[str, np.ndarray]) -> None:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["id", "ts", "price", "amount", "side"]
    order = np.lexsort((expected["id"], expected["timestamp"]))
    np.testing.assert_array_equal(frame["id"].to_numpy(), expected["id"][order])
    np.testing.assert_array_equal(frame["ts"].to_numpy(), expected["timestamp"][order])
    np.testing.assert_array_equal(frame["price"].to_numpy(), expected["price"][order])
    np.testing.assert_array_equal(frame["amount"].to_numpy(), expected["amount"][order])
    sides = np.where(expected["side"][order] == "buy", 1, -1)
    np.testing.assert_array_equal(frame["side"].to_numpy(), sides)
