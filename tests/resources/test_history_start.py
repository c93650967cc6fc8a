"""History start: recorded write-once in the artifact store (both backends), discovered from
the exchange's oldest candles (the sandbox is real HTTP through ccxt)."""

from __future__ import annotations

import asyncio

import pytest

from resources.artifacts.base import ArtifactStore
from resources.exchange import ExchangeClient, ExchangeSettings
from resources.rate_limit import LocalRateLimiter
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import load_config_dict
from seamless_assets.history import (
    ensure_history_start,
    first_bar_s,
    history_start_key,
    history_start_s,
    record_history_start,
)
from seamless_assets.nodes import NodeId

BTC = NodeId.parse("ohlcv:binance:BTC/USDT:1m")
ETH_H = NodeId.parse("ohlcv:binance:ETH/USDT:1h")
LISTING = 1_700_000_000  # 2023-11-14 22:13:20, inside a 1m and a 1h bar
NOW = LISTING + 30 * 86_400


@pytest.mark.parametrize("node", [BTC, ETH_H])
def test_the_first_recorded_start_wins_and_an_unreadable_record_is_unknown(
    artifact_store: ArtifactStore, node: NodeId
) -> None:
    assert history_start_s(artifact_store, node) is None
    assert record_history_start(artifact_store, node, LISTING) == LISTING
    assert record_history_start(artifact_store, node, LISTING - 60) == LISTING  # write-once
    assert history_start_s(artifact_store, node) == LISTING
    other = BTC if node == ETH_H else ETH_H
    assert history_start_s(artifact_store, other) is None  # per node
    artifact_store.blobs.put(history_start_key(artifact_store, node), b"{not json")
    assert history_start_s(artifact_store, node) is None


def _client(sandbox: SandboxExchange) -> ExchangeClient:
    config = load_config_dict(
        {
            "seamless": {"backfill": {"retry_backoff_ms": 10, "max_attempts": 2}},
            "exchanges": {
                "binance": {"ccxt_config": {"urls": {"api": {"public": f"{sandbox.url}/api/v3"}}}}
            },
        }
    )
    settings = ExchangeSettings.from_config(config, "binance")
    return ExchangeClient(settings, LocalRateLimiter(config.rate_limit_for("binance")))


@pytest.mark.parametrize(
    ("node", "corrupt_first", "expected"),
    [
        (BTC, False, LISTING - LISTING % 60),  # the bar holding the first trade
        (ETH_H, False, LISTING - LISTING % 3600),
        (BTC, True, LISTING - LISTING % 60),  # sent 30 s late: still the bar it opens
        (ETH_H, True, LISTING - LISTING % 3600),
    ],
)
def test_the_first_bar_is_the_oldest_candle_the_exchange_serves(
    node: NodeId, corrupt_first: bool, expected: int
) -> None:
    listing = {node.symbol: LISTING}
    corruptions = (
        [{"symbol": node.symbol, "ts": expected, "kind": "misaligned"}] if corrupt_first else []
    )
    config = SandboxConfig(frozen_now_s=NOW, listing_ts=listing, corruptions=corruptions)
    with SandboxExchange(config) as sandbox:

        async def discover() -> int | None:
            async with _client(sandbox) as client:
                return await first_bar_s(client, node)

        assert asyncio.run(discover()) == expected


def test_discovery_asks_the_exchange_once_per_node(artifact_store: ArtifactStore) -> None:
    config = SandboxConfig(frozen_now_s=NOW, listing_ts={"BTC/USDT": LISTING})
    with SandboxExchange(config) as sandbox:
        start = ensure_history_start(artifact_store, BTC, lambda: _client(sandbox))
        assert start == LISTING - LISTING % 60
        klines = sandbox.stats()["by_endpoint"]["klines"]["requests"]
        assert klines == 1  # from 0: an answer from the listing, not today, is the first
        assert ensure_history_start(artifact_store, BTC, lambda: _client(sandbox)) == start
        assert sandbox.stats()["by_endpoint"]["klines"]["requests"] == klines  # recorded


@pytest.mark.parametrize(
    ("symbol", "listing"), [("BTC/USDT", LISTING), ("BTC/USDT:USDT", LISTING + 3 * 86_400 + 7)]
)
def test_a_venue_that_answers_with_its_newest_candles_is_bisected_to_its_first(
    symbol: str, listing: int
) -> None:
    """Bybit v5 answers `start=0` with the range's newest candles (today's), so the first
    answer is not the first candle: the discovery finds the listing's bar anyway."""
    node = NodeId.parse(f"ohlcv:bybit:{symbol}:1m")
    config = SandboxConfig(frozen_now_s=NOW, listing_ts={f"bybit:{symbol}": listing})
    with SandboxExchange(config) as sandbox:
        api = {"public": sandbox.url, "private": sandbox.url}
        bybit = {"symbols": [symbol], "timeframes": ["1m"], "ccxt_config": {"urls": {"api": api}}}
        project = load_config_dict({"exchanges": {"bybit": bybit}})
        settings = ExchangeSettings.from_config(project, "bybit")
        client = ExchangeClient(settings, LocalRateLimiter(project.rate_limit_for("bybit")))

        async def discover() -> int | None:
            async with client:
                return await first_bar_s(client, node)

        assert asyncio.run(discover()) == listing - listing % 60
        requests = sandbox.stats()["by_endpoint"]["bybit/kline"]["requests"]
        assert requests <= 40


def test_a_market_listed_minutes_ago_is_asked_once_more_and_kept() -> None:
    """An answer reaching up to now may be a newest-first one: the one request more finds
    nothing before it, so its first candle is the listing's."""
    listing = NOW - 150
    config = SandboxConfig(frozen_now_s=NOW, listing_ts={"BTC/USDT": listing})
    with SandboxExchange(config) as sandbox:

        async def discover() -> int | None:
            async with _client(sandbox) as client:
                return await first_bar_s(client, BTC)

        assert asyncio.run(discover()) == listing - listing % 60
        assert sandbox.stats()["by_endpoint"]["klines"]["requests"] == 2
