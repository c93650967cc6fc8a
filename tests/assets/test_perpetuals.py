"""USDⓈ-M perpetual candles end to end: a catalog mixing `BTC/USDT` and `BTC/USDT:USDT`
backfills both through one Dagster run (real ccxt → the sandbox's /api/v3 and /fapi/v1),
stores and publishes them apart, snapshots them and serves backtest reads, exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxExchange, expected_bars
from seamless_assets.cli import main, root_cause, run_backfill
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range
from seamless_assets.errors import ConfigError

from .conftest import DAY, write_config
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
SPOT, PERP = "ohlcv:binance:BTC/USDT:1m", "ohlcv:binance:BTC/USDT:USDT:1m"
MARK = "mark:binance:BTC/USDT:USDT:1m"
COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def _mixed_config(tmp_path: Path, url: str, **exchange: object) -> Path:
    """The test config with a perpetual next to the spot pair, fapi pointed at the sandbox."""
    path = write_config(tmp_path, url, symbols=("BTC/USDT", "BTC/USDT:USDT"))
    config = yaml.safe_load(path.read_text())
    binance = config["exchanges"]["binance"]
    binance["ccxt_config"]["urls"]["api"]["fapiPublic"] = f"{url}/fapi/v1"
    binance.update(exchange)
    config["series"] = [MARK]
    path.write_text(yaml.safe_dump(config))
    return path


def _endpoint_requests(sandbox: SandboxExchange) -> dict[str, int]:
    return {k: v["requests"] for k, v in sandbox.stats()["by_endpoint"].items()}


def test_spot_and_perpetual_backfill_snapshot_and_read_exactly(
    tmp_path: Path,
    sandbox: SandboxExchange,
    dagster_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = _mixed_config(tmp_path, sandbox.url)
    project = load_config(source)
    assert project.market_kinds("binance") == ("spot", "linear")
    nodes = [project.node(SPOT), project.node(PERP), project.node(MARK)]
    end = datetime.fromtimestamp(T0 + 2 * DAY, tz=UTC)

    assert run_backfill(project, nodes, START, end).success
    requests = _endpoint_requests(sandbox)
    # Only the kinds the catalog trades are loaded: spot and USDⓈ-M (never COIN-M, which
    # the sandbox does not serve: a request there would fail the run), by every client.
    assert requests["exchangeInfo"] == requests["fapi/exchangeInfo"] >= 1
    assert requests.get("fapi/klines", 0) > 0 and requests.get("klines", 0) > 0
    assert requests.get("fapi/markPriceKlines", 0) > 0

    hot = _hot(project)
    window = Range(T0, T0 + 2 * DAY)
    spot = expected_bars("BTC/USDT", 60, T0, T0 + 2 * DAY)
    perp = expected_bars("BTC/USDT:USDT", 60, T0, T0 + 2 * DAY)
    mark = expected_bars("BTC/USDT:USDT", 60, T0, T0 + 2 * DAY, price="mark")
    assert not np.array_equal(spot["close"], perp["close"])  # two markets, two series
    assert not np.array_equal(perp["close"], mark["close"]) and not mark["volume"].any()
    for node_id, expected in ((SPOT, spot), (PERP, perp), (MARK, mark)):
        stored = hot.read_range(node_id, window)
        for column in COLUMNS:
            np.testing.assert_array_equal(stored[column].to_numpy(), expected[column])

    assert main(["--config", str(source), "snapshot"]) == 0
    capsys.readouterr()
    artifacts = _artifacts(project)
    assert artifacts.verify_all() == []
    manifests = sorted(
        p.as_posix() for p in (project.data_dir / "artifacts").rglob("manifest.json")
    )
    manifests = [m.split("/artifacts/", 1)[1] for m in manifests]
    # Segments of the perpetual live under its own (escaped) symbol, apart from the spot's,
    # and its mark prices under their kind.
    perp_prefix = "exchange=binance/symbol=BTC%2fUSDT%3aUSDT/"
    assert sum(m.startswith(perp_prefix) for m in manifests) == 2
    assert sum(m.startswith("exchange=binance/symbol=BTC%2fUSDT/") for m in manifests) == 2
    assert sum(m.startswith("kind=mark/" + perp_prefix) for m in manifests) == 2

    inside = (perp["ts"] >= T0 + 600) & (perp["ts"] < T0 + DAY + 600)
    for node_id, expected in ((PERP, perp), (MARK, mark)):
        committed = artifacts.latest_snapshot(project.node(node_id))
        assert committed is not None and committed.watermark_s == T0 + 2 * DAY
        with SeamlessReader.from_config(source) as reader:
            frame, _meta = reader.fetch(
                node_id,
                T0 + 600,
                T0 + DAY + 600,
                ComputeContext("w-perp", "backtest", as_of=committed.as_of_s),
            )
        for column in COLUMNS:
            np.testing.assert_array_equal(frame[column].to_numpy(), expected[column][inside])


def test_market_types_follow_the_catalog_unless_configured(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    spot_only = load_config(write_config(tmp_path, sandbox.url))
    assert spot_only.market_kinds("binance") == ("spot",)
    # An explicit list is ccxt's own and wins: a perpetual outside it is refused at the
    # first request, with the types that were loaded named.
    project = load_config(_mixed_config(tmp_path, sandbox.url, market_types=["spot"]))
    end = datetime.fromtimestamp(T0 + DAY, tz=UTC)
    result = run_backfill(project, [project.node(PERP)], START, end)
    assert not result.success
    event = next(e for e in result.all_events if e.is_step_failure)
    failure = root_cause(event.step_failure_data.error)
    assert "no market 'BTC/USDT:USDT'" in failure and "market types loaded: ['spot']" in failure
    assert "fapi/exchangeInfo" not in _endpoint_requests(sandbox)
    assert _hot(project).node_ids() == []


@pytest.mark.parametrize(
    ("symbol", "kind"),
    [
        ("BTC/USDT", "spot"),
        ("BTC/USDT:USDT", "linear"),
        ("BTC/USD:BTC", "inverse"),
        ("ETH/USDT:USDT-250328", "linear"),
    ],
)
def test_market_kind_of_a_symbol(symbol: str, kind: str) -> None:
    from seamless_assets.nodes import market_kind

    assert market_kind(symbol) == kind


def test_a_contract_settled_in_a_third_currency_is_refused_at_load(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    path = write_config(tmp_path, sandbox.url, symbols=("BTC/USDT:ETH",))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "exchanges.binance.symbols[0]" in str(info.value)
    assert "settles in 'ETH'" in str(info.value) and "'BTC/USDT:USDT'" in str(info.value)


def test_mark_nodes_have_their_own_id_key_and_artifact_prefix() -> None:
    from seamless_assets.errors import InvalidNodeId
    from seamless_assets.nodes import NodeId

    mark = NodeId.parse("mark:binance:BTC/USDT:USDT:1m")
    trades = NodeId.parse(PERP)
    assert (mark.kind, mark.symbol, mark.price, trades.price) == (
        "mark",
        "BTC/USDT:USDT",
        "mark",
        None,
    )
    assert str(mark) == "mark:binance:BTC/USDT:USDT:1m" and mark != trades
    assert mark.asset_key_path() == ["mark", "binance_BTC_USDT__USDT_1m"]
    assert NodeId.from_asset_key_path(mark.asset_key_path()) == mark
    assert NodeId.from_asset_key_path(trades.asset_key_path()) == trades
    template = "exchange={exchange}/symbol={symbol}/timeframe={timeframe}"
    assert (
        trades.partition_prefix(template)
        == "exchange=binance/symbol=BTC%2fUSDT%3aUSDT/timeframe=1m"
    )
    assert mark.partition_prefix(template) == "kind=mark/" + trades.partition_prefix(template)
    with pytest.raises(InvalidNodeId, match="spot market, which has no mark price"):
        NodeId.parse("mark:binance:BTC/USDT:1m")
    with pytest.raises(InvalidNodeId, match="kind ohlcv or mark"):
        NodeId.parse("index:binance:BTC/USDT:USDT:1m")


def test_a_catalog_mixing_venues_backfills_each_on_its_own_budget_and_pool(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    """Binance spot, perpetual and mark plus Bybit spot and linear candles: one run, each
    venue's requests on its own rate key and Dagster pool, every value exact."""
    import dagster as dg

    from seamless_assets.definitions import build_definitions
    from seamless_assets.pools import pool_name

    source = _mixed_config(tmp_path, sandbox.url)
    config = yaml.safe_load(source.read_text())
    config["exchanges"]["bybit"] = {
        "symbols": ["BTC/USDT", "BTC/USDT:USDT"],
        "timeframes": ["1m"],
        "ccxt_config": {"urls": {"api": {"public": sandbox.url, "private": sandbox.url}}},
    }
    source.write_text(yaml.safe_dump(config))
    project = load_config(source)
    assert project.market_kinds("bybit") == ("spot", "linear")
    bybit = ["ohlcv:bybit:BTC/USDT:1m", "ohlcv:bybit:BTC/USDT:USDT:1m"]
    nodes = [project.node(n) for n in (SPOT, PERP, MARK, *bybit)]
    end = datetime.fromtimestamp(T0 + DAY, tz=UTC)

    result = run_backfill(project, nodes, START, end)
    assert result.success
    requests = _endpoint_requests(sandbox)
    assert requests["bybit/kline"] >= 4 and requests["fapi/klines"] >= 3  # 1440 bars each
    hot = _hot(project)
    for node_id in bybit:
        symbol = project.node(node_id).symbol
        stored = hot.read_range(node_id, Range(T0, T0 + DAY))
        expected = expected_bars(symbol, 60, T0, T0 + DAY, venue="bybit")
        for column in COLUMNS:
            np.testing.assert_array_equal(stored[column].to_numpy(), expected[column])
        binance = expected_bars(symbol, 60, T0, T0 + DAY)
        assert not np.array_equal(expected["close"], binance["close"])

    defs = build_definitions(project)
    pools = {
        str(node): defs.resolve_assets_def(dg.AssetKey(node.asset_key_path())).op.pool
        for node in nodes
    }
    assert {pools[n] for n in bybit} == {pool_name("bybit")}
    assert {pools[n] for n in (SPOT, PERP, MARK)} == {pool_name("binance")}
