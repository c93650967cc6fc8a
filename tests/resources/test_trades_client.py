"""Trades of a window through real ccxt from the sandbox's aggTrades, paged by id: every
trade once, and the bars they make are the exchange's 1m bars exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from resources.exchange import ExchangeClient
from resources.rate_limit import LocalRateLimiter
from resources.trades import TradeRows, fetch_trades
from sandbox import SandboxConfig, SandboxExchange, expected_bars
from sandbox.trades import expected_trades
from seamless_assets.core.frame import Range
from seamless_assets.core.trades import bars_from_trades

from .test_exchange import limits, settings

T0 = 1_704_067_200 + 3600 * 5 + 17  # not on a minute: the window starts inside a bar


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=T0 + 86_400)) as sx:
        yield sx


def _fetch(sx: SandboxExchange, symbol: str, window: Range, page: int = 1000) -> TradeRows:
    client = ExchangeClient(settings(sx), LocalRateLimiter(limits()))

    async def run() -> TradeRows:
        async with client:
            return await fetch_trades(client, symbol, window, page)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("symbol", "page"), [("BTC/USDT", 1000), ("ETH/BTC", 1000), ("BTC/USDT", 37)]
)
def test_every_trade_of_a_window_once_paged_by_id(
    sandbox: SandboxExchange, symbol: str, page: int
) -> None:
    window = Range(T0, T0 + 3 * 3600)
    rows = _fetch(sandbox, symbol, window, page)
    expected = expected_trades(symbol, window.start, window.end)
    assert rows.id.tolist() == expected["id"].tolist()
    assert rows.ts_ms.tolist() == expected["timestamp"].tolist()
    assert np.array_equal(rows.price, expected["price"])
    assert np.array_equal(rows.amount, expected["amount"])
    if page == 37:  # the first minute holds more than 37 trades: the span was halved
        assert rows.requests > len(rows) // 37


def test_the_trades_of_whole_minutes_are_the_exchange_s_1m_bars(sandbox: SandboxExchange) -> None:
    start = (T0 // 60 + 1) * 60
    window = Range(start, start + 2 * 3600)
    rows = _fetch(sandbox, "BTC/USDT", window)
    bars = bars_from_trades(rows.ts_ms, rows.price, rows.amount, 60)
    expected = expected_bars("BTC/USDT", 60, window.start, window.end)
    for column in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(bars[column].to_numpy(), expected[column])
