"""The real ccxt client (`ExchangeClient`) against the sandbox exchange: never mocked.

Timing is asserted only as lower bounds (waits that must have happened) or with generous
upper bounds; everything else is asserted on the sandbox's counters and request log.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resources.exchange import (
    ExchangeClient,
    ExchangeSettings,
    FetchedBars,
    retry_after_seconds,
    split_windows,
)
from resources.rate_limit import LocalRateLimiter
from sandbox import SandboxConfig, SandboxExchange, ccxt_config, expected_bars
from seamless_assets.config import BackfillConfig, RateLimitConfig, load_config_dict
from seamless_assets.core.frame import Range
from seamless_assets.errors import (
    ExchangeUnavailable,
    RateLimitTimeout,
    UnknownExchange,
    UnknownSymbol,
)
from seamless_assets.nodes import Timeframe
from tests.resources.budgets import unbounded_budget

from .test_rate_limit import GrantLog

T0 = 1_699_999_980  # a minute boundary (2023-11-14 22:13:00 UTC)
NOW = T0 + 30.5  # frozen exchange clock: 30.5 s into the T0 bar, which is still forming
M1 = Timeframe.parse("1m")
H1 = Timeframe.parse("1h")
VALUES = ("open", "high", "low", "close", "volume")
KEY = "ccxt:binance"


# --------------------------------------------------------------------------- helpers
class BlindLimiter(LocalRateLimiter):
    """A limiter that ignores what the exchange publishes (its limit and its count)."""

    def register(self, *args: Any, **kwargs: Any) -> None:
        pass

    def publish(self, *args: Any) -> None:
        pass

    def report_used(self, *args: Any) -> None:
        pass


class OffsetWall:
    """The sandbox's rate-limit clock: real time plus a settable offset, so a test can
    stand just before a minute boundary without waiting for one."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def seconds_before_minute_end(self, seconds: float) -> float:
        """Jump to `seconds` before a minute boundary at least a minute ahead; return it."""
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


def limits(**overrides: Any) -> RateLimitConfig:
    """A budget that never binds unless a test says so."""
    return unbounded_budget(**{"penalty_backoff_ms": 300, **overrides})


def settings(
    sx: SandboxExchange,
    *,
    exchange_id: str = "binance",
    max_candles_per_call: int | None = None,
    penalty_backoff_s: float = 0.3,
    acquire_deadline_s: float = 30.0,
    **backfill: Any,
) -> ExchangeSettings:
    config = ccxt_config(sx.url)  # also says enableRateLimit: False (the client overrides it)
    del config["timeout"]  # BackfillConfig.request_timeout_ms applies
    backfill_config = BackfillConfig(
        **{
            "max_attempts": 4,
            "retry_backoff_ms": 20,
            "jitter_ratio": 0.25,
            "request_timeout_ms": 5000,
            **backfill,
        }
    )
    return ExchangeSettings(
        exchange_id=exchange_id,
        ccxt_config=config,
        market_types=("spot",),
        max_candles_per_call=max_candles_per_call,
        backfill=backfill_config,
        rate_key=KEY,
        penalty_backoff_s=penalty_backoff_s,
        acquire_deadline_s=acquire_deadline_s,
    )


async def fetch_with(
    client: ExchangeClient, symbol: str, timeframe: Timeframe, start: int, end: int
) -> FetchedBars:
    async with client:
        return await client.fetch_bars(symbol, timeframe, Range(start, end))


def fetch(
    sx: SandboxExchange,
    start: int,
    end: int,
    *,
    symbol: str = "BTC/USDT",
    timeframe: Timeframe = M1,
    limiter: LocalRateLimiter | None = None,
    **kw: Any,
) -> tuple[FetchedBars, ExchangeClient]:
    client = ExchangeClient(settings(sx, **kw), limiter or LocalRateLimiter(limits()))
    return asyncio.run(fetch_with(client, symbol, timeframe, start, end)), client


def assert_exact(rows: list[list[Any]], exp: dict[str, Any]) -> None:
    """Rows equal the sandbox oracle: same open times in order (so none lost or duplicated)
    and bit-identical values."""
    got = np.array(rows, dtype=np.float64).reshape(-1, 6)
    assert got[:, 0].tolist() == (exp["ts"] * 1000).tolist()
    for i, col in enumerate(VALUES, start=1):
        assert np.array_equal(got[:, i], exp[col]), col


def klines(sx: SandboxExchange) -> list[dict[str, Any]]:
    return list(sx.stats()["kline_log"])


def http_status(url: str) -> tuple[int, dict[str, str]]:
    """A raw GET that ignores everything the exchange says (no ccxt, no limiter)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


# --------------------------------------------------------------------------- pagination
@pytest.mark.parametrize(
    ("timeframe", "bars"), [(M1, 1), (M1, 999), (M1, 1000), (M1, 1001), (M1, 3500), (H1, 2400)]
)
def test_range_is_fetched_in_contiguous_full_windows(
    sandbox: SandboxExchange, timeframe: Timeframe, bars: int
) -> None:
    start = T0 - T0 % timeframe.seconds - bars * timeframe.seconds
    end = start + bars * timeframe.seconds
    fetched, client = fetch(sandbox, start, end, timeframe=timeframe)

    exp = expected_bars("BTC/USDT", timeframe.seconds, start, end, now_s=NOW)
    assert len(exp["ts"]) == bars
    assert_exact(fetched.rows, exp)
    stats = sandbox.stats()
    calls = math.ceil(bars / 1000)
    assert stats["by_endpoint"]["klines"]["requests"] == calls
    assert stats["requests_total"] - stats["by_endpoint"]["exchangeInfo"]["requests"] <= calls + 1
    assert stats["by_endpoint"]["exchangeInfo"]["requests"] == 1
    # each request asked for one contiguous window of at most 1000 bars, back to back
    log = klines(sandbox)
    windows = sorted((e["startTime"], e["endTime"] + 1) for e in log)
    assert windows[0][0] == start * 1000 and windows[-1][1] == end * 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    assert all(e["limit"] == 1000 and e["rows"] <= 1000 for e in log)
    # the client's own bookkeeping agrees with the server's, and every request was budgeted
    assert client.stats.http_requests["/api/v3/klines"] == calls
    assert client.stats.http_status == {200: stats["requests_total"]}
    assert client.exchange.enableRateLimit is True


def test_markets_and_clock_load_once_per_client(sandbox: SandboxExchange) -> None:
    limiter = LocalRateLimiter(limits())
    client = ExchangeClient(settings(sandbox), limiter)
    ranges = [Range(T0 - (k + 1) * 60_000, T0 - k * 60_000) for k in range(3)]

    async def scenario() -> list[FetchedBars]:
        async with client:
            return list(
                await asyncio.gather(*(client.fetch_bars("ETH/USDT", M1, r) for r in ranges))
            )

    pages = asyncio.run(scenario())
    by_endpoint = sandbox.stats()["by_endpoint"]
    # the clock came with the markets (exchangeInfo's serverTime): no /time request
    assert by_endpoint["exchangeInfo"]["requests"] == 1 and "time" not in by_endpoint
    assert by_endpoint["klines"]["requests"] == 3
    assert limiter.stats.acquisitions == 4  # every request went through the budget
    for page, r in zip(pages, ranges, strict=True):
        assert_exact(page.rows, expected_bars("ETH/USDT", 60, r.start, r.end))


def test_clock_without_server_time_in_markets_asks_time_once(
    sandbox: SandboxExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exchangeInfo without `serverTime`: the clock costs one /time request per client,
    and bars are still only taken as closed by the exchange's own clock."""
    from sandbox import server

    with_time = server.exchange_info
    monkeypatch.setattr(
        server,
        "exchange_info",
        lambda *a: {k: v for k, v in with_time(*a).items() if k != "serverTime"},
    )
    start, end = T0 - 600, T0 + 600
    fetched, client = fetch(sandbox, start, end)
    assert fetched.closed_end == T0 and int(NOW) <= fetched.server_now_s <= int(NOW) + 5
    assert client.stats.http_requests["/api/v3/time"] == 1
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end, now_s=NOW))


def test_packed_fetch_unpacks_to_the_same_answer(sandbox: SandboxExchange) -> None:
    """`fetch_bars(pack=True)`: the rows held as arrays until `unpack`, which gives the
    very answer of an unpacked fetch (rows, types, row windows, answers)."""
    start, end = T0 - 2500 * 60, T0

    async def both() -> tuple[FetchedBars, FetchedBars]:
        async with ExchangeClient(settings(sandbox), LocalRateLimiter(limits())) as client:
            window = Range(start, end)
            plain = await client.fetch_bars("BTC/USDT", M1, window)
            return plain, await client.fetch_bars("BTC/USDT", M1, window, pack=True)

    plain, packed = asyncio.run(both())
    assert packed.rows == [] and packed.packed is not None and plain.packed is None
    unpacked = packed.unpack()
    assert unpacked.rows == plain.rows and unpacked.packed is None
    pairs = zip(unpacked.rows, plain.rows, strict=True)
    assert all(type(a) is type(b) for r, p in pairs for a, b in zip(r, p, strict=True))
    assert np.array_equal(unpacked.row_windows, plain.row_windows)
    assert unpacked.answers == plain.answers and unpacked.closed_end == plain.closed_end
    assert_exact(unpacked.rows, expected_bars("BTC/USDT", 60, start, end))


def test_closing_starts_in_the_background_and_happens_once(sandbox: SandboxExchange) -> None:
    """`start_closing` returns at once (ccxt's close then pauses 250 ms for transports);
    `close`, also the context manager's, waits for that same close and no second one."""

    async def scenario() -> tuple[float, float, int]:
        client = ExchangeClient(settings(sandbox), LocalRateLimiter(limits()))
        calls = 0
        ccxt_close = client.exchange.close

        async def counted_close() -> None:
            nonlocal calls
            calls += 1
            await ccxt_close()

        client.exchange.close = counted_close  # type: ignore[method-assign]
        async with client:
            await client.fetch_bars("BTC/USDT", M1, Range(T0 - 600, T0))
            started = time.perf_counter()
            client.start_closing()
            client.start_closing()
            returned = time.perf_counter() - started
        closed = time.perf_counter() - started
        await client.close()
        return returned, closed, calls

    returned, closed, calls = asyncio.run(scenario())
    assert returned < 0.05 and closed >= 0.2  # the pause ran, after start_closing returned
    assert calls == 1


def test_max_candles_per_call_setting(sandbox: SandboxExchange) -> None:
    start, end = T0 - 1000 * 60, T0
    _, _ = fetch(sandbox, start, end, max_candles_per_call=300)
    assert sandbox.stats()["by_endpoint"]["klines"]["requests"] == 4  # ceil(1000 / 300)
    sandbox.reset()
    # more than the exchange serves per call: short pages are continued, nothing is lost
    fetched, _ = fetch(sandbox, T0 - 3000 * 60, T0, max_candles_per_call=1500)
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, T0 - 3000 * 60, T0))
    assert sandbox.stats()["by_endpoint"]["klines"]["requests"] == 4  # 2 windows x 2 pages


def test_gaps_and_history_before_listing_are_simply_absent(sandbox: SandboxExchange) -> None:
    sandbox.configure(
        listing_ts={"SOL/USDT": T0 - 1500 * 60},
        gaps={"SOL/USDT": [[T0 - 700 * 60, T0 - 600 * 60]]},
    )
    start, end = T0 - 2600 * 60, T0
    fetched, _ = fetch(sandbox, start, end, symbol="SOL/USDT")
    exp = expected_bars("SOL/USDT", 60, start, end, sandbox.state.config)
    assert len(exp["ts"]) == 1400
    assert_exact(fetched.rows, exp)
    # 3 windows; the one ending in the gap costs one more request, which confirms that a
    # short page means "no more bars" rather than a smaller page size than asked for
    assert sandbox.stats()["by_endpoint"]["klines"]["requests"] == 3 + 1


def test_forming_bar_is_left_to_closed_end(sandbox: SandboxExchange) -> None:
    """Exchange clock frozen 30.5 s into the T0 bar: that bar and later ones are not
    requested, and `closed_end` tells callers where closed bars end."""
    start, end = T0 - 600, T0 + 600
    fetched, _ = fetch(sandbox, start, end)
    assert fetched.closed_end == T0 and fetched.window == Range(start, end)
    assert int(NOW) <= fetched.server_now_s <= int(NOW) + 5  # from exchangeInfo's serverTime
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end, now_s=NOW))
    assert fetched.rows[-1][0] == (T0 - 60) * 1000
    # a caller's filter drops nothing more: the forming bar was never even asked for
    assert [r for r in fetched.rows if r[0] < fetched.closed_end * 1000] == fetched.rows
    assert max(e["endTime"] for e in klines(sandbox)) < T0 * 1000
    # a window that has not closed yet costs no kline request at all
    sandbox.reset()
    future, _ = fetch(sandbox, T0, T0 + 600)
    assert future.rows == [] and future.closed_end == T0
    assert "klines" not in sandbox.stats()["by_endpoint"]
    # once the exchange clock moves past the bar, it is fetched (final values)
    sandbox.set_clock(now=T0 + 60)
    closed, _ = fetch(sandbox, T0, T0 + 600)
    assert closed.closed_end == T0 + 60
    assert_exact(closed.rows, expected_bars("BTC/USDT", 60, T0, T0 + 60))


def _answers_cover(fetched: FetchedBars, window: Range) -> None:
    answers = list(fetched.answers)
    assert answers[0].start == window.start and answers[-1].end == window.end
    assert all(a.end == b.start for a, b in itertools.pairwise(answers))


def test_rows_come_with_the_window_they_answer(sandbox: SandboxExchange) -> None:
    start, end = T0 - 2500 * 60, T0
    fetched, _ = fetch(sandbox, start, end)
    assert fetched.row_windows.shape == (2500, 2) and fetched.row_windows.dtype == np.int64
    ts = np.array([r[0] // 1000 for r in fetched.rows])
    assert ((fetched.row_windows[:, 0] <= ts) & (ts < fetched.row_windows[:, 1])).all()
    # one response per 1000-bar window: the answers are those windows
    assert list(fetched.answers) == split_windows(Range(start, end), 60, 1000)
    # a window that ends in a gap needs a second response: it answers for the rest
    sandbox.configure(gaps={"BTC/USDT": [[T0 - 700 * 60, T0 - 600 * 60]]})
    sandbox.reset()
    fetched, _ = fetch(sandbox, T0 - 1000 * 60, T0, max_candles_per_call=500)
    _answers_cover(fetched, Range(T0 - 1000 * 60, T0))
    assert Range(T0 - 700 * 60, T0 - 500 * 60) not in fetched.answers  # split at the gap
    assert len(fetched.answers) == sandbox.stats()["by_endpoint"]["klines"]["requests"]


@pytest.mark.parametrize(
    ("kind", "sent_ms"),
    [("ts_zero", 0), ("ts_future", 32_503_680_000_000)],
)
@pytest.mark.parametrize("position", [0, 499, 500, 999])
def test_rows_with_impossible_open_times_reach_the_caller(
    sandbox: SandboxExchange, kind: str, sent_ms: int, position: int
) -> None:
    """ccxt's since filter would drop a row opening at 0 unseen; the client hands it on
    with the window it was requested for, so conformance flags it there."""
    start, end = T0 - 1000 * 60, T0
    bad = start + position * 60
    sandbox.configure(corruptions=[{"symbol": "BTC/USDT", "ts": bad, "kind": kind}])
    fetched, _ = fetch(sandbox, start, end, max_candles_per_call=500)
    odd = [i for i, r in enumerate(fetched.rows) if r[0] == sent_ms]
    assert len(odd) >= 1
    page = Range(start, start + 500 * 60) if position < 500 else Range(start + 500 * 60, end)
    for i in odd:
        lo, hi = fetched.row_windows[i].tolist()
        assert page.start <= lo < hi <= page.end  # the request it answered
    good = [r for r in fetched.rows if r[0] != sent_ms]
    assert bad * 1000 not in {r[0] for r in good}  # the exchange never sent the real bar
    assert len(good) == 999
    _answers_cover(fetched, Range(start, end))


def test_split_windows_cover_the_range_exactly() -> None:
    assert split_windows(Range(0, 250), 10, 10) == [Range(0, 100), Range(100, 200), Range(200, 250)]
    assert split_windows(Range(5, 5), 10, 10) == []


# --------------------------------------------------------------------------- typed errors
def test_unknown_symbol_says_what_was_meant(sandbox: SandboxExchange) -> None:
    with pytest.raises(UnknownSymbol, match=r"binance has no market 'BTC/USDX'.*'BTC/USDT'"):
        fetch(sandbox, T0 - 600, T0, symbol="BTC/USDX")
    with pytest.raises(UnknownSymbol, match=r"no timeframe '7m'"):
        fetch(sandbox, T0 - 600, T0, timeframe=Timeframe.parse("7m"))
    assert "klines" not in sandbox.stats()["by_endpoint"]


def test_unknown_exchange(sandbox: SandboxExchange) -> None:
    with pytest.raises(UnknownExchange, match=r"no exchange 'binanse'.*'binance'"):
        ExchangeClient(settings(sandbox, exchange_id="binanse"), LocalRateLimiter(limits()))
    assert sandbox.stats()["requests_total"] == 0


# --------------------------------------------------------------------------- retries
def _retry_delays(caplog: pytest.LogCaptureFixture) -> list[tuple[int, float, str]]:
    """(attempt, delay_s, error class) of every retry the client logged."""
    return [
        (int(r.args[2]), float(r.args[3]), type(r.args[1]).__name__)  # type: ignore[index]
        for r in caplog.records
        if r.name == "resources.exchange" and "retry" in r.msg
    ]


def _first_failing_seed(rate: float) -> int:
    """An error seed whose first draw injects a 5xx, so the run surely sees one."""
    return next(s for s in range(1000) if random.Random(s).random() < rate)


def test_5xx_are_retried_with_backoff_then_succeed(
    sandbox: SandboxExchange, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.configure(error_rate_5xx=0.3, error_seed=_first_failing_seed(0.3))
    caplog.set_level(logging.WARNING, "resources.exchange")
    start, end = T0 - 5000 * 60, T0
    fetched, client = fetch(sandbox, start, end, max_attempts=10, retry_backoff_ms=5)
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end))
    stats = sandbox.stats()
    assert stats["injected_5xx"] >= 1
    assert client.stats.retries == stats["injected_5xx"] == len(_retry_delays(caplog))
    assert stats["by_status"]["200"] == 1 + 5  # exchangeInfo (with the clock), 5 windows
    for attempt, delay, error in _retry_delays(caplog):
        assert error == "ExchangeNotAvailable"
        assert 0.005 * 2 ** (attempt - 1) <= delay <= 0.005 * 2 ** (attempt - 1) * 1.25


def test_exchange_down_fails_after_max_attempts_quickly(
    sandbox: SandboxExchange, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.configure(down=True)
    caplog.set_level(logging.WARNING, "resources.exchange")
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match=r"failed load_markets 4 times"):
        fetch(sandbox, T0 - 600, T0, max_attempts=4, retry_backoff_ms=50, jitter_ratio=0.5)
    elapsed = time.monotonic() - started
    assert sandbox.stats()["by_status"] == {"503": 4}
    delays = _retry_delays(caplog)
    assert [a for a, _, _ in delays] == [1, 2, 3]  # exponential backoff with jitter:
    for attempt, delay, _ in delays:  # base * 2^(n-1) * (1 + U[0, jitter))
        assert 0.05 * 2 ** (attempt - 1) <= delay <= 0.05 * 2 ** (attempt - 1) * 1.5
    assert sum(d for _, d, _ in delays) <= elapsed < 10


def test_timeouts_are_retried_then_succeed(
    sandbox: SandboxExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "resources.exchange")
    client = ExchangeClient(
        settings(sandbox, request_timeout_ms=150, max_attempts=10, retry_backoff_ms=10),
        LocalRateLimiter(limits()),
    )

    async def scenario() -> FetchedBars:
        async with client:
            await client.load_markets()
            sandbox.configure(latency_ms=3000)  # every request now outlives the timeout

            async def heal() -> None:  # the exchange recovers after two timed-out tries
                while client.stats.retries < 2:
                    await asyncio.sleep(0.005)
                sandbox.configure(latency_ms=0)

            healer = asyncio.create_task(heal())
            page = await client.fetch_bars("BTC/USDT", M1, Range(T0 - 1200, T0))
            await healer
            return page

    fetched = asyncio.run(scenario())
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, T0 - 1200, T0))
    errors = [e for _, _, e in _retry_delays(caplog)]
    assert len(errors) >= 2 and set(errors) == {"RequestTimeout"}


def test_timeouts_exhaust_attempts(sandbox: SandboxExchange) -> None:
    sandbox.configure(latency_ms=2000)
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match=r"3 times \(RequestTimeout"):
        fetch(sandbox, T0 - 600, T0, request_timeout_ms=100, max_attempts=3)
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- 429 / 418
def _penalty_respected(
    log: list[dict[str, Any]], issued_at: float, until: float, grace_s: float
) -> None:
    """No kline request reached the sandbox inside the penalty window, except requests
    already in flight (answered 429 `in_flight` within the grace)."""
    for entry in log:
        at = entry["admitted_at"]
        if issued_at < at < until:
            assert entry["reason"] == "in_flight" and at - issued_at <= grace_s, entry


def test_429_mid_fetch_waits_retry_after_and_loses_nothing(sandbox: SandboxExchange) -> None:
    sandbox.configure(force_429=1, force_429_retry_after=1)
    start, end = T0 - 8000 * 60, T0
    started = time.monotonic()
    fetched, client = fetch(
        sandbox, start, end, limiter=LocalRateLimiter(limits(local_semaphore=4))
    )
    assert time.monotonic() - started >= 1.0
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end))

    stats = sandbox.stats()
    assert stats["sent_429"] == 1 and stats["sent_418"] == 0 and stats["requests_in_penalty"] == 0
    in_flight = stats["in_flight_after_429"]
    assert in_flight <= 3  # at most the other requests of the 4 concurrent slots
    assert client.stats.rate_limited == 1 + in_flight == client.stats.http_status[429]
    log = klines(sandbox)
    forced = next(e for e in log if e["reason"] == "forced")
    _penalty_respected(log, forced["admitted_at"], forced["admitted_at"] + 1, 0.2)
    assert stats["by_endpoint"]["klines"]["requests"] == 8 + 1 + in_flight


def test_429_pauses_every_client_on_the_key(sandbox: SandboxExchange) -> None:
    """Two clients (two workers) share one limiter key: a Retry-After seen by either
    pauses both."""
    sandbox.configure(force_429=1, force_429_retry_after=1)
    limiter = LocalRateLimiter(limits(local_semaphore=2))
    clients = [ExchangeClient(settings(sandbox), limiter) for _ in range(2)]

    async def scenario() -> list[FetchedBars]:
        return list(
            await asyncio.gather(
                fetch_with(clients[0], "BTC/USDT", M1, T0 - 4000 * 60, T0),
                fetch_with(clients[1], "ETH/USDT", M1, T0 - 4000 * 60, T0),
            )
        )

    btc, eth = asyncio.run(scenario())
    assert_exact(btc.rows, expected_bars("BTC/USDT", 60, T0 - 4000 * 60, T0))
    assert_exact(eth.rows, expected_bars("ETH/USDT", 60, T0 - 4000 * 60, T0))
    stats = sandbox.stats()
    assert stats["sent_429"] == 1 and stats["sent_418"] == 0 and stats["requests_in_penalty"] == 0
    log = klines(sandbox)
    forced = next(e for e in log if e["reason"] == "forced")
    _penalty_respected(log, forced["admitted_at"], forced["admitted_at"] + 1, 0.2)
    assert {e["symbol"] for e in log if e["admitted_at"] > forced["admitted_at"] + 1} == {
        "BTCUSDT",
        "ETHUSDT",
    }
    assert limiter.stats.penalties >= 1


def test_weight_budget_429_waits_for_the_next_minute(
    sandbox: SandboxExchange, wall: OffsetWall
) -> None:
    """A real per-minute weight budget: 5 kline windows fit in a minute, the 6th gets 429
    with Retry-After up to the minute's end; the rest is fetched in the next minute. (The
    limiter here ignores the exchange's published limit and count, as a wrong budget
    would: the client's answer to the 429 is what is tested.)"""
    sandbox.configure(weights={"klines": 10}, weight_limit_per_minute=51)
    client = ExchangeClient(settings(sandbox), BlindLimiter(limits(local_semaphore=4)))
    start, end = T0 - 8000 * 60, T0

    async def scenario() -> tuple[FetchedBars, float]:
        async with client:
            await client.load_markets()  # exchangeInfo and /time cost 21 of this minute
            await client.server_now_s()
            boundary = wall.seconds_before_minute_end(4.0)  # a fresh minute, 4 s left
            return await client.fetch_bars("BTC/USDT", M1, Range(start, end)), boundary

    fetched, boundary = asyncio.run(scenario())
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end))
    stats = sandbox.stats()
    assert stats["sent_429"] == 1 and stats["sent_418"] == 0 and stats["requests_in_penalty"] == 0
    assert stats["by_endpoint"]["klines"]["weight"] == 80  # 8 windows served once each
    assert stats["max_weight_per_minute"] <= 51
    log = klines(sandbox)
    limited = next(e for e in log if e["reason"] == "weight")
    _penalty_respected(log, limited["admitted_at"], boundary, 0.2)
    served = [e for e in log if e["status"] == 200]
    assert sum(e["admitted_at"] < boundary for e in served) == 5
    assert sum(e["admitted_at"] >= boundary for e in served) == 3


def test_client_ignoring_retry_after_is_banned(sandbox: SandboxExchange) -> None:
    """The counters catch a client that keeps sending after a 429: in-flight grace first,
    then 418s that extend the ban."""
    sandbox.configure(force_429=1, force_429_retry_after=3, penalty_grace_ms=100, ban_seconds=1)
    url = f"{sandbox.url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5"
    statuses = [http_status(url)[0]]
    deadline = time.monotonic() + 5
    while statuses[-1] != 418 and time.monotonic() < deadline:
        time.sleep(0.03)
        statuses.append(http_status(url)[0])
    status, headers = http_status(url)
    statuses.append(status)
    assert statuses[0] == 429 and statuses[-2:] == [418, 418]
    assert int(headers["Retry-After"]) >= 1
    stats = sandbox.stats()
    assert stats["sent_429"] == 1
    assert stats["in_flight_after_429"] == statuses.count(429) - 1
    assert stats["sent_418"] == stats["requests_in_penalty"] == 2
    assert stats["by_status"] == {"429": statuses.count(429), "418": 2}


def test_418_ban_pauses_the_client_until_retry_after(sandbox: SandboxExchange) -> None:
    sandbox.configure(force_429=1, force_429_retry_after=1, penalty_grace_ms=100, ban_seconds=2)
    url = f"{sandbox.url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5"
    assert http_status(url)[0] == 429
    time.sleep(0.15)  # past the grace: someone else on this IP keeps knocking ...
    status, headers = http_status(f"{sandbox.url}/api/v3/ping")
    assert status == 418 and headers["Retry-After"] == "2"  # ... and gets the IP banned
    banned_at = time.time()

    start, end = T0 - 3000 * 60, T0
    fetched, client = fetch(sandbox, start, end)
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end))
    assert time.time() - banned_at >= 2.0
    assert client.stats.http_status[418] == 1 == client.stats.rate_limited
    stats = sandbox.stats()
    # the ping and the client's first request (exchangeInfo) hit the ban; nothing else did
    assert stats["sent_418"] == stats["requests_in_penalty"] == 2
    assert stats["by_endpoint"]["exchangeInfo"]["requests"] == 2
    assert all(e["admitted_at"] >= banned_at + 2.0 for e in klines(sandbox)[1:])


def test_429_without_retry_after_uses_penalty_backoff(sandbox: SandboxExchange) -> None:
    """Settings built from the config: `rate_limit.penalty_backoff_ms` is the pause when a
    429 carries no Retry-After, and the limiter key is rendered from the template."""
    config = load_config_dict(
        {
            "seamless": {"rate_limit": {"penalty_backoff_ms": 400, "min_interval_ms": 0}},
            "exchanges": {
                "binance": {
                    "symbols": ["BTC/USDT"],
                    "account": "acct1",
                    "ccxt_config": {"urls": {"api": {"public": f"{sandbox.url}/api/v3"}}},
                }
            },
        }
    )
    exchange_settings = ExchangeSettings.from_config(config, "binance")
    assert exchange_settings.rate_key == "ccxt:binance:acct1"
    assert exchange_settings.penalty_backoff_s == 0.4
    sandbox.configure(force_429=1, force_429_retry_after=0)
    limiter = LocalRateLimiter(config.rate_limit_for("binance"))
    client = ExchangeClient(exchange_settings, limiter)
    fetched = asyncio.run(fetch_with(client, "BTC/USDT", M1, T0 - 600, T0))
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, T0 - 600, T0))
    limited, retried = klines(sandbox)
    assert limited["status"] == 429 and retried["status"] == 200
    assert retried["admitted_at"] - limited["admitted_at"] >= 0.4
    assert limiter.stats.penalties == 1 and limiter.penalty_until("ccxt:binance:acct1") > 0


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 1445412480) == 10
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"X-Other": "1"}) is None and retry_after_seconds(None) is None


# --------------------------------------------------------------------------- the budget
def test_local_semaphore_caps_requests_in_flight(sandbox: SandboxExchange) -> None:
    sandbox.configure(latency_ms=150)
    start, end = T0 - 9000 * 60, T0
    fetched, _ = fetch(sandbox, start, end, limiter=LocalRateLimiter(limits(local_semaphore=3)))
    assert_exact(fetched.rows, expected_bars("BTC/USDT", 60, start, end))
    assert 2 <= sandbox.stats()["max_in_flight"] <= 3


def test_min_interval_spaces_request_starts(sandbox: SandboxExchange) -> None:
    limiter = GrantLog(limits(min_interval_ms=60, local_semaphore=8))
    fetched, client = fetch(sandbox, T0 - 6000 * 60, T0, limiter=limiter)
    assert len(fetched.rows) == 6000
    starts = [t for t, _ in limiter.grants]
    assert len(starts) == client.stats.total_requests == 7  # exchangeInfo, 6 windows
    assert all(b - a >= 0.06 - 1e-9 for a, b in itertools.pairwise(starts))


def test_token_bucket_paces_exchange_weight(sandbox: SandboxExchange) -> None:
    """The limiter is asked in Binance request weight (ccxt's costs x 5): exchangeInfo 20
    (the clock comes with it), klines 2. 40 weight/s is 2400 a minute (below the 6000
    published): bucket 47.04, refill 38.4/s, starting empty, so the 32 weight take 32/38.4 s."""
    limiter = GrantLog(limits(tokens_per_interval=40, interval_ms=1000, burst_tokens=None))
    started = time.monotonic()
    fetched, _ = fetch(sandbox, T0 - 6000 * 60, T0, limiter=limiter)
    assert len(fetched.rows) == 6000
    costs = [c for _, c in limiter.grants]
    assert costs == pytest.approx([20] + [2] * 6)
    budget = limiter.budget(KEY)
    assert (budget.published, budget.interval_s) == (6000, 60)
    assert budget.capacity == pytest.approx(0.02 * 2352) and budget.rate_per_s == pytest.approx(
        (2352 - 0.02 * 2352) / 60
    )
    assert limiter.grants[-1][0] - started >= 32 / budget.rate_per_s - 1e-3


def test_acquire_deadline_raises_rate_limit_timeout(sandbox: SandboxExchange) -> None:
    limiter = LocalRateLimiter(limits())
    asyncio.run(limiter.penalize(KEY, time.time() + 60, "test: exchange asked for a minute"))
    started = time.monotonic()
    with pytest.raises(RateLimitTimeout, match="ccxt:binance"):
        fetch(sandbox, T0 - 600, T0, limiter=limiter, acquire_deadline_s=0.5)
    assert time.monotonic() - started < 10
    assert sandbox.stats()["requests_total"] == 0  # nothing was sent during the penalty


def test_sandbox_stats_are_json(sandbox: SandboxExchange) -> None:
    fetch(sandbox, T0 - 600, T0)
    stats = json.loads(json.dumps(sandbox.stats()))
    assert stats["in_flight"] == 0 and stats["max_in_flight"] >= 1


def test_fast_kline_row_parse_equals_ccxt_parse() -> None:
    import math

    import ccxt.async_support as ccxt_async

    from resources.kline_pages import fast_row_parser

    exchange = ccxt_async.binance()
    ccxt_parse = exchange.parse_ohlcv
    fast = fast_row_parser(ccxt_parse)
    good = [1704067200000, "42000.12345678", "42010.5", "41990.0", "42005.00000001", "12.345678"]
    rows = [
        [*good, 1704067259999, "1.0", 10, "1", "1", "0"],
        good,
        [1704067200000, "abc", "1", "1", "1", "1"],
        [1704067200000, "NaN", "Infinity", "-Infinity", "1", "1"],
        [1704067200000123, "1", "2", "0.5", "1.5", "0"],
        [None, "1", "2", "0.5", "1.5", "0"],
        ["1704067200000", 1, 2.5, "0.5", 1.5, "0"],
    ]

    def same(a: object, b: object) -> bool:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
            return math.isnan(b)
        return a == b and type(a) is type(b)

    for row in rows:
        expected = ccxt_parse(list(row))
        got = fast(list(row))
        assert len(got) == len(expected) and all(map(same, got, expected)), (row, got, expected)


def test_a_backfill_closes_its_client_while_its_last_chunk_settles(tmp_path: Path) -> None:
    """Once every request of the run is answered the client starts closing (ccxt's 250 ms
    pause) before the last chunk is stored, not after the whole run settled."""
    from seamless_assets.pipeline import PipelineSettings, backfill
    from tests.assets.conftest import open_artifacts, open_hot
    from tests.resources.test_reader_support import DAY, NODE, T0, day, project

    days = 60  # two chunks: 50 days, then 10
    upserts: list[int] = []
    closing_after: list[int] = []  # upserts done when the client started closing

    class RecordingClient(ExchangeClient):
        def start_closing(self) -> None:
            if self._closing is None:
                closing_after.append(len(upserts))
            super().start_closing()

    with SandboxExchange(SandboxConfig(frozen_now_s=T0 + (days + 2) * DAY)) as sandbox:
        config = project(tmp_path, sandbox)
        hot = open_hot(config)
        upsert = hot.upsert

        def counted_upsert(node_id: str, frame: Any) -> int:
            upserts.append(len(frame))
            return upsert(node_id, frame)

        hot.upsert = counted_upsert  # type: ignore[method-assign]
        exchange = ExchangeSettings.from_config(config, NODE.exchange)
        try:
            outcome = asyncio.run(
                backfill(
                    NODE,
                    [day(i) for i in range(days)],
                    hot=hot,
                    artifacts=open_artifacts(config),
                    client_factory=lambda: RecordingClient(exchange, LocalRateLimiter(limits())),
                    settings=PipelineSettings(stabilization_bars=2),
                )
            )
        finally:
            hot.close()
    assert outcome.stored.rows == days * 1440 and len(upserts) == 2
    assert len(closing_after) == 1 and closing_after[0] < len(upserts)  # before the last
