"""The exchange client on contracts: USDⓈ-M perpetual and mark-price candles from the
sandbox's /fapi/v1, with their requests counted in the futures API's own weight."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from resources.exchange import ExchangeClient, cheapest_page, native_market_types
from resources.rate_budget import PublishedLimit
from sandbox import SandboxConfig, SandboxExchange, ccxt_config, expected_bars
from seamless_assets.core.frame import Range

from .test_exchange import KEY, M1, NOW, T0, assert_exact, fetch_with, limits, settings
from .test_rate_limit import GrantLog


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW)) as sx:
        yield sx


def _client(sx: SandboxExchange, limiter: GrantLog, **kw: object) -> ExchangeClient:
    base = settings(sx, **kw)  # type: ignore[arg-type]
    config = ccxt_config(sx.url, market_types=("spot", "linear"))
    del config["timeout"], config["options"]  # the markets loaded follow market_kinds
    return ExchangeClient(
        dataclasses.replace(
            base, ccxt_config=config, market_types=None, market_kinds=("spot", "linear")
        ),
        limiter,
    )


@pytest.mark.parametrize("price", [None, "mark"])
def test_perpetual_candles_exact_and_counted_in_futures_weight(
    sandbox: SandboxExchange, price: str | None
) -> None:
    limiter = GrantLog(limits())
    client = _client(sandbox, limiter)

    async def run() -> list[list[float]]:
        async with client:
            fetched = await client.fetch_bars(
                "BTC/USDT:USDT", M1, Range(T0 - 1000 * 60, T0), price=price
            )
            return fetched.rows

    rows = asyncio.run(run())
    assert client.market_types == ("spot", "linear")
    assert_exact(rows, expected_bars("BTC/USDT:USDT", 60, T0 - 1000 * 60, T0, price=price))
    endpoint = "fapi/markPriceKlines" if price else "fapi/klines"
    by_endpoint = sandbox.stats()["by_endpoint"]
    # Pages of 499 bars, weight 2 each (500 would weigh 5: ccxt's byLimit), in futures
    # weight; spot exchangeInfo 20 (ccxt cost 4 x 5), futures exchangeInfo 1.
    assert by_endpoint[endpoint]["requests"] == 3  # 499 + 499 + 2
    assert client.candles_per_call("BTC/USDT:USDT") == 499
    assert sorted(c for _, c in limiter.grants) == pytest.approx([1, 2, 2, 2, 20])
    assert by_endpoint[endpoint]["weight"] == 6


def test_spot_pages_still_cost_their_spot_weight(sandbox: SandboxExchange) -> None:
    limiter = GrantLog(limits())
    client = _client(sandbox, limiter)
    fetched = asyncio.run(fetch_with(client, "BTC/USDT", M1, T0 - 2000 * 60, T0))
    assert len(fetched.rows) == 2000
    assert sorted(c for _, c in limiter.grants) == pytest.approx([1, 2, 2, 20])


def test_the_tightest_published_limit_wins(sandbox: SandboxExchange) -> None:
    """Binance publishes 6000 weight a minute for spot, 2400 for USDⓈ-M: one key counts
    both APIs, so the limiter gets the tighter, whatever order the documents came in."""
    for order in ([6000, 2400], [2400, 6000]):
        limiter = GrantLog(limits())
        client = _client(sandbox, limiter)
        client._published = [PublishedLimit(n, 60_000) for n in order]
        client._publish_limit()
        assert limiter.budget(KEY).published == 2400


@pytest.mark.parametrize(
    ("most", "page"), [(50, 50), (99, 99), (100, 99), (499, 499), (500, 499), (1500, 499)]
)
def test_the_cheapest_page_per_bar_within_the_venue_cap(most: int, page: int) -> None:
    cost = {"cost": 1, "byLimit": [[99, 1], [499, 2], [1000, 5], [10000, 10]]}
    assert cheapest_page(cost, most) == page
    assert cheapest_page(0.4, most) == most  # a flat cost: as many bars as allowed


@pytest.mark.parametrize(
    ("kinds", "offered", "expected"),
    [
        (("spot", "linear"), ["spot", "linear", "inverse", "option"], ["spot", "linear"]),
        (("linear",), ["spot", "future", "swap", "option"], ["swap", "future"]),
        (("spot",), ["spot", "future", "swap", "option"], ["spot"]),
        (("linear", "inverse"), ["spot", "future", "swap"], ["swap", "future"]),
    ],
)
def test_market_kinds_in_each_exchange_s_own_names(
    kinds: tuple[str, ...], offered: list[str], expected: list[str]
) -> None:
    assert native_market_types(kinds, offered) == expected
