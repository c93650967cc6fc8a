"""The rate budget against the sandbox exchange: real ccxt, real Redis, nothing mocked.

The sandbox counts weight in fixed minutes of its rate-limit clock and sends that clock as
`Date`; tests that need a minute boundary shift the clock (`OffsetWall`) instead of
waiting for one. One test cannot: a backfill needing more than a minute of budget takes
more than a minute of real time (~65 s), since the bucket paces on real time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resources.exchange import ExchangeClient, ExchangeSettings, FetchedBars
from resources.rate_limit import LocalRateLimiter, RedisRateLimiter
from sandbox import SandboxConfig, SandboxExchange, ccxt_config, expected_bars
from seamless_assets.config import LOCAL_SEMAPHORE_MAX, SeamlessConfig, load_config_dict
from seamless_assets.core.frame import Range
from seamless_assets.errors import ConfigError
from seamless_assets.nodes import Timeframe
from tests.resources.budgets import assert_no_ban, minutes_over
from tests.services import reachable

from .test_rate_limit_redis import free_port, start_redis, stop

T0 = 1_699_999_980  # a minute boundary
NOW = T0 + 30.5  # the sandbox's exchange clock (bars), frozen
M1 = Timeframe.parse("1m")


class OffsetWall:
    """The sandbox's rate-limit clock (and its `Date`): real time plus a settable offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def seconds_before_minute_end(self, seconds: float) -> float:
        boundary = (math.floor(self() / 60) + 2) * 60.0
        self.offset += boundary - seconds - self()
        return boundary


@pytest.fixture
def wall() -> OffsetWall:
    return OffsetWall()


@pytest.fixture
def sandbox(wall: OffsetWall) -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW), wallclock=wall) as sx:
        yield sx


def project(sx: SandboxExchange, **rate_limit: Any) -> SeamlessConfig:
    """The default config (plus `rate_limit` keys) with binance pointing at the sandbox."""
    ccxt = ccxt_config(sx.url)
    del ccxt["enableRateLimit"]
    return load_config_dict(
        {
            "seamless": {
                "rate_limit": {"penalty_backoff_ms": 300, **rate_limit},
                "backfill": {"retry_backoff_ms": 20, "max_attempts": 4},
            },
            "exchanges": {"binance": {"ccxt_config": ccxt, "pool_limit": 3}},
        }
    )


def client_for(config: SeamlessConfig, limiter: Any, **backfill: Any) -> ExchangeClient:
    settings = ExchangeSettings.from_config(config, "binance")
    if backfill:
        settings = ExchangeSettings(
            **{
                **settings.__dict__,
                "backfill": settings.backfill.model_copy(update=backfill),
            }
        )
    return ExchangeClient(settings, limiter)


def fetch(client: ExchangeClient, start: int, end: int, symbol: str = "BTC/USDT") -> FetchedBars:
    async def run() -> FetchedBars:
        async with client:
            return await client.fetch_bars(symbol, M1, Range(start, end))

    return asyncio.run(run())


def assert_exact(fetched: FetchedBars, symbol: str, start: int, end: int) -> None:
    expected = expected_bars(symbol, 60, start, end)
    assert [int(r[0]) for r in fetched.rows] == [int(t) * 1000 for t in expected["ts"]]


def spend(sx: SandboxExchange, weight: int) -> None:
    """Another program on the same IP: raw exchangeInfo calls (20 weight each)."""
    for _ in range(weight // 20):
        with urllib.request.urlopen(f"{sx.url}/api/v3/exchangeInfo", timeout=10) as resp:
            assert resp.status == 200


# --------------------------------------------------------------------------- default config
def test_default_config_never_exceeds_a_300_weight_minute(sandbox: SandboxExchange) -> None:
    """~65 s (real minutes): the default budget, paced by the sliding-safe bucket (the rule
    of exchanges without fixed windows; Binance's own fixed-window rule is tested in
    test_rate_fixed_window.py), against a 300 weight/min exchange, for a backfill that
    needs more than a minute of it: no 429, no 418, no minute over 300."""
    sandbox.configure(weight_limit_per_minute=300)
    config = project(sandbox, window="sliding")
    limiter = LocalRateLimiter(config.rate_limit_for("binance"))
    client = client_for(config, limiter)
    start, end = T0 - 140_000 * 60, T0  # 140 kline requests: 21 + 280 weight
    started = time.monotonic()
    fetched = fetch(client, start, end)
    elapsed = time.monotonic() - started
    assert_exact(fetched, "BTC/USDT", start, end)
    stats = sandbox.stats()
    assert_no_ban(stats)
    assert minutes_over(stats, 300) == []
    budget = limiter.budget("ccxt:binance")
    assert budget.published == 300 and budget.limit == pytest.approx(294)
    # paced, not stalled: the bucket's rate after the first 20-weight exchangeInfo
    assert elapsed >= (301 - 20 - 20) / budget.rate_per_s
    assert elapsed <= 301 / budget.rate_per_s * 1.1 + 5


# --------------------------------------------------------------------------- the header
def test_weight_spent_by_another_consumer_holds_our_requests(
    sandbox: SandboxExchange, wall: OffsetWall, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program spends 260 of the minute's 300: the used-weight header shows it,
    and the client holds its requests to the next minute instead of getting a 429."""
    sandbox.configure(weight_limit_per_minute=300)
    boundary = wall.seconds_before_minute_end(12.0)
    config = project(sandbox)
    limiter = LocalRateLimiter(config.rate_limit_for("binance"))
    client = client_for(config, limiter)
    start, end = T0 - 20_000 * 60, T0  # 20 kline requests, 40 weight

    async def run() -> FetchedBars:
        async with client:
            await client.load_markets()
            await client.server_now_s()
            await asyncio.to_thread(spend, sandbox, 260)
            return await client.fetch_bars("BTC/USDT", M1, Range(start, end))

    with caplog.at_level(logging.WARNING, logger="resources.rate_limit"):
        fetched = asyncio.run(run())
    assert_exact(fetched, "BTC/USDT", start, end)
    stats = sandbox.stats()
    assert_no_ban(stats)
    assert minutes_over(stats, 300) == []
    assert limiter.stats.window_holds >= 1 and limiter.stats.held_windows == 1
    holds = [r for r in caplog.records if "window is used up" in r.getMessage()]
    assert len(holds) == 1  # logged once per window, not per request
    served_after = [e for e in stats["kline_log"] if e["admitted_at"] >= boundary]
    assert served_after, "the rest went in the next minute"


# --------------------------------------------------------------------------- in flight
def test_a_429_with_every_slot_in_flight_never_becomes_a_ban(sandbox: SandboxExchange) -> None:
    """local_semaphore at its maximum, up to 64 windows in flight, one forced 429: the key
    pauses at once, no request starts before Retry-After, zero 418s. The sandbox's grace
    (200 ms, from each request's arrival) covers requests sent before the 429 reached the
    client; a grace of 0 would ban requests no client can recall (sent while the 429 was
    on its way), so it is not a bar any client can meet."""
    sandbox.configure(force_429=1, latency_ms=150, weight_limit_per_minute=200_000)
    config = project(sandbox, local_semaphore=LOCAL_SEMAPHORE_MAX, min_interval_ms=0)
    limiter = LocalRateLimiter(config.rate_limit_for("binance"))
    client = client_for(config, limiter, max_concurrent_requests=LOCAL_SEMAPHORE_MAX)
    start, end = T0 - 150_000 * 60, T0
    fetched = fetch(client, start, end)
    assert_exact(fetched, "BTC/USDT", start, end)
    stats = sandbox.stats()
    assert_no_ban(stats, max_429=1)
    assert stats["sent_429"] == 1
    assert stats["max_in_flight"] >= 32  # many were in flight when the 429 went out
    assert stats["in_flight_after_429"] >= 1


def test_a_request_granted_before_a_penalty_waits_it_out_before_sending(
    sandbox: SandboxExchange,
) -> None:
    """The gap inside ccxt between throttle() (the grant) and the HTTP send: a penalty
    arriving there still holds the request, which then takes its budget again."""
    config = project(sandbox)
    limiter = LocalRateLimiter(config.rate_limit_for("binance"))
    client = client_for(config, limiter)

    async def run() -> tuple[float, int]:
        async with client:
            await client.load_markets()
            await client.exchange.throttle(0.2)  # granted: 1 weight
            granted = limiter.stats.acquisitions
            limiter.penalize_now("ccxt:binance", time.time() + 0.5, "HTTP 429")
            started = time.monotonic()
            await client.exchange.fetch(f"{sandbox.url}/api/v3/ping")
            return time.monotonic() - started, limiter.stats.acquisitions - granted

    waited, taken_again = asyncio.run(run())
    assert waited >= 0.45 and taken_again == 1
    assert sandbox.stats()["requests_in_penalty"] == 0


# --------------------------------------------------------------------------- Redis down
def wait_until_published(
    limiters: list[RedisRateLimiter], published: float, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if all(lim.budget("ccxt:binance").published == published for lim in limiters):
                return
        except ConfigError:  # no exchange client has registered the key yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"not every worker learned the published {published} in {timeout_s} s")


def test_redis_killed_mid_run_keeps_three_workers_inside_the_budget(
    sandbox: SandboxExchange, wall: OffsetWall, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """3 workers, each its own limiter, share 600 weight/min through a private Redis. Redis
    dies mid-minute: each falls back to a third of the budget from an empty bucket, counts
    the minute as spent, and returns to Redis when it is back. No minute over 600, no 429."""
    sandbox.configure(weight_limit_per_minute=600)
    port = free_port()
    dsn = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    wall.seconds_before_minute_end(15.0)
    # the sliding-safe bucket paces the workers through the outage (with Binance's fixed
    # windows they would finish before it: test_rate_fixed_window.py covers that rule)
    config = project(sandbox, redis_dsn=dsn, window="sliding")
    rate = config.rate_limit_for("binance")
    assert rate.workers == 3  # exchanges.binance.pool_limit
    limiters = [RedisRateLimiter(rate, dsn, retry_redis_after_s=0.5) for _ in range(3)]
    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    start, end = T0 - 30_000 * 60, T0  # 30 kline requests per worker
    results: dict[str, FetchedBars] = {}
    errors: list[BaseException] = []

    def worker(symbol: str, limiter: RedisRateLimiter) -> None:
        try:
            results[symbol] = fetch(client_for(config, limiter), start, end, symbol)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(s, lim), daemon=True)
        for s, lim in zip(symbols, limiters, strict=True)
    ]
    try:
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            for thread in threads:
                thread.start()
            # every worker has read exchangeInfo (its published 600) before Redis dies: one
            # still loading markets would pace from the table's 6000 until it has
            wait_until_published(limiters, 600, timeout_s=30)
            time.sleep(max(0.0, 5 - (time.monotonic() - started)))
            stop(server)  # killed mid-run, about 10 s before the sandbox minute ends
            time.sleep(3)
            # each worker paces a third of what the exchange publishes, not of a table default
            during = [lim.budget("ccxt:binance") for lim in limiters if not lim.using_redis]
            time.sleep(4)
            server = start_redis(port, tmp_path)  # back, empty
            for thread in threads:
                thread.join(120)
    finally:
        stop(server)
        for limiter in limiters:
            limiter.close()
    assert not errors, errors
    for symbol in symbols:
        assert_exact(results[symbol], symbol, start, end)
    stats = sandbox.stats()
    assert_no_ban(stats)
    assert minutes_over(stats, 600) == []
    assert all(lim.stats.fallbacks >= 1 and lim.stats.recoveries >= 1 for lim in limiters)
    assert all(lim.using_redis for lim in limiters)
    assert during and all(b.published == 600 and b.limit <= 600 / 3 for b in during), during
    assert all(lim.budget("ccxt:binance").limit == pytest.approx(588) for lim in limiters)
    text = caplog.text
    assert "1/3 of the budget" in text and "is back" in text
    assert not reachable(("127.0.0.1", port), 0.2)
