"""The exchange client on a second venue: real ccxt `bybit` against the sandbox's Bybit v5,
whose pages hold a range's NEWEST bars (at most 1000), and its own budget key."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterator

import pytest

from resources.exchange import ExchangeClient
from resources.rate_limit import LocalRateLimiter
from sandbox import SandboxConfig, SandboxExchange, bybit_ccxt_config, expected_bars

from .test_exchange import M1, NOW, T0, assert_exact, fetch_with, limits, settings
from .test_rate_limit import GrantLog

BYBIT_KEY = "ccxt:bybit"


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW)) as sx:
        yield sx


def _bybit(
    sx: SandboxExchange, limiter: LocalRateLimiter, kinds: tuple[str, ...] = ("spot",), **kw: object
) -> ExchangeClient:
    config = bybit_ccxt_config(sx.url)
    del config["timeout"], config["options"]  # the markets loaded follow market_kinds
    base = settings(sx, **kw)  # type: ignore[arg-type]
    return ExchangeClient(
        dataclasses.replace(
            base,
            exchange_id="bybit",
            ccxt_config=config,
            rate_key=BYBIT_KEY,
            market_types=None,
            market_kinds=kinds,
        ),
        limiter,
    )


def _klines(sx: SandboxExchange) -> int:
    return int(sx.stats()["by_endpoint"].get("bybit/kline", {}).get("requests", 0))


@pytest.mark.parametrize(
    ("symbol", "kinds"), [("BTC/USDT", ("spot",)), ("BTC/USDT:USDT", ("linear",))]
)
def test_bybit_candles_exact_in_full_pages(
    sandbox: SandboxExchange, symbol: str, kinds: tuple[str, ...]
) -> None:
    client = _bybit(sandbox, LocalRateLimiter(limits()), kinds)
    start = T0 - 2500 * 60
    fetched = asyncio.run(fetch_with(client, symbol, M1, start, T0))
    assert_exact(fetched.rows, expected_bars(symbol, 60, start, T0, venue="bybit"))
    assert not fetched.rows or fetched.rows[0][1] != expected_bars(symbol, 60, start, T0)["open"][0]
    assert _klines(sandbox) == 3  # ccxt features: 1000 bars a page
    assert client.market_types == kinds  # bybit names contract kinds as we do


def test_pages_above_the_venue_cap_lose_nothing(sandbox: SandboxExchange) -> None:
    """Asked for 1500 bars a page, Bybit serves the newest 1000 of the range: the bars
    before them are asked for again, so the window is whole and nothing is mistaken for
    an exchange gap."""
    client = _bybit(sandbox, LocalRateLimiter(limits()), max_candles_per_call=1500)
    start = T0 - 3000 * 60
    fetched = asyncio.run(fetch_with(client, "BTC/USDT", M1, start, T0))
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, T0, venue="bybit"))
    spans = sorted((a.start, a.end) for a in fetched.answers)  # disjoint, whole window
    assert spans[0][0] == start and spans[-1][1] == T0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    # two windows of 1500: each a page of its newest 1000, then its first 500
    assert _klines(sandbox) == 4


def test_a_window_of_several_capped_pages_lose_nothing(sandbox: SandboxExchange) -> None:
    """3000 bars a request: the newest 1000, then the newest 1000 of the 2000 before, …"""
    client = _bybit(sandbox, LocalRateLimiter(limits()), max_candles_per_call=3000)
    start = T0 - 3000 * 60
    fetched = asyncio.run(fetch_with(client, "BTC/USDT", M1, start, T0))
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, T0, venue="bybit"))
    assert _klines(sandbox) == 3


def test_a_gap_at_a_window_head_is_confirmed_not_skipped(sandbox: SandboxExchange) -> None:
    sandbox.configure(gaps={"bybit:BTC/USDT": [[T0 - 1000 * 60, T0 - 900 * 60]]})
    client = _bybit(sandbox, LocalRateLimiter(limits()))
    start = T0 - 1000 * 60
    fetched = asyncio.run(fetch_with(client, "BTC/USDT", M1, start, T0))
    exp = expected_bars("BTC/USDT", 60, start, T0, sandbox.state.config, venue="bybit")
    assert len(exp["ts"]) == 900
    assert_exact(fetched.rows, exp)
    assert _klines(sandbox) == 2  # the page of 900, then the head: empty


def test_each_venue_spends_its_own_budget(sandbox: SandboxExchange) -> None:
    limiter = GrantLog(limits())
    client = _bybit(sandbox, limiter)
    asyncio.run(fetch_with(client, "BTC/USDT", M1, T0 - 2000 * 60, T0))
    budget = limiter.budget(BYBIT_KEY)
    # ccxt's own pacing of bybit (one cost unit per 20 ms: 3000 a minute), in ccxt costs
    assert (budget.unit, budget.published) == ("ccxt cost", 3000)
    assert "ccxt:binance" not in limiter._buckets
    assert sandbox.stats()["by_endpoint"].get("klines") is None  # no Binance request
