"""Trades -> bars: the sandbox's trades rebuild its 1m bars bit for bit, and coarser
grids and bad trades behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from sandbox import SandboxConfig, expected_bars
from sandbox.trades import expected_trades
from seamless_assets.core.frame import is_canonical
from seamless_assets.core.trades import bars_from_trades

T0 = 1_704_067_200  # 2024-01-01
DAY = 86_400


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/BTC", "SHIB/USDT"])
@pytest.mark.parametrize("seed", [0, 7])
def test_a_day_of_trades_is_the_exchange_s_1m_bars(symbol: str, seed: int) -> None:
    config = SandboxConfig(seed=seed, extra_symbols=["SHIB/USDT"])
    trades = expected_trades(symbol, T0, T0 + DAY, config)
    bars = bars_from_trades(trades["timestamp"], trades["price"], trades["amount"], 60)
    expected = expected_bars(symbol, 60, T0, T0 + DAY, config)
    assert is_canonical(bars) and len(bars) == 1440
    for column in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(bars[column].to_numpy(), expected[column])


def test_a_summed_volume_is_exact_where_floats_would_round() -> None:
    # 0.1 + 0.2 != 0.3 in floats; summed in units of 1e-8 it is 0.3
    bars = bars_from_trades([1000, 2000], [5.0, 5.0], [0.1, 0.2], 60)
    assert bars["volume"].tolist() == [0.3] and 0.1 + 0.2 != 0.3


def test_slots_without_trades_get_no_bar_and_grids_can_be_shifted() -> None:
    ts = np.array([0, 59_999, 180_000], dtype=np.int64)
    bars = bars_from_trades(ts, [1.0, 2.0, 3.0], [1, 1, 1], 60)
    assert bars["ts"].tolist() == [0, 180] and bars["close"].tolist() == [2.0, 3.0]
    week = bars_from_trades(
        [345_600_000, 345_599_999], [2.0, 1.0], [1, 1], 604_800, origin_s=345_600
    )
    assert week["ts"].tolist() == [345_600 - 604_800, 345_600]


def test_trades_of_one_instant_keep_the_exchange_s_order() -> None:
    bars = bars_from_trades([5, 5, 5], [3.0, 1.0, 2.0], [1, 1, 1], 60)
    assert (bars["open"][0], bars["close"][0], bars["high"][0], bars["low"][0]) == (3, 2, 3, 1)


@pytest.mark.parametrize(
    ("price", "amount", "message"),
    [
        ([float("nan")], [1.0], "positive price"),
        ([0.0], [1.0], "positive price"),
        ([1.0], [-1.0], "amount >= 0"),
        ([1.0], [1e-9], "at most 8 decimals"),
    ],
)
def test_bad_trades_are_refused_by_name(
    price: list[float], amount: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bars_from_trades([0], price, amount, 60)
