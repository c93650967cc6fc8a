"""The sandbox exchange, exercised through REAL ccxt (never mocked) and plain HTTP."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import numpy as np
import pytest

from sandbox import (
    CORRUPTION_KINDS,
    INTERVALS,
    SandboxAdmin,
    SandboxConfig,
    SandboxExchange,
    SandboxState,
    ccxt_config,
    expected_bars,
    spawn_sandbox_process,
)
from sandbox.bars import generate_bars, select_open_times
from sandbox.encode import encode_klines, encode_klines_reference

from .conftest import NOW, T0, FakeWall, http_get

MIN = 60_000


def _check_ohlc(rows: list[list[Any]]) -> None:
    for ts, o, h, lo, c, v in rows:
        assert h >= max(o, c) and lo <= min(o, c) and lo > 0 and v >= 0, (ts, o, h, lo, c, v)


def _klines_url(sx: SandboxExchange, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{sx.url}/api/v3/klines?{query}"


# --------------------------------------------------------------------------- ccxt basics
def test_async_ccxt_loads_markets_time_and_ohlcv(sandbox: SandboxExchange) -> None:
    async def scenario() -> tuple[dict[str, Any], int, list[list[Any]]]:
        ex = ccxt_async.binance(ccxt_config(sandbox.url))
        try:
            markets = await ex.load_markets()
            server_time = await ex.fetch_time()
            since = (T0 - 999 * 60) * 1000
            rows = await ex.fetch_ohlcv(
                "BTC/USDT", "1m", since=since, limit=1000, params={"until": int(NOW * 1000)}
            )
            return markets, server_time, rows
        finally:
            await ex.close()

    markets, server_time, rows = asyncio.run(scenario())
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"
    assert btc["precision"]["price"] == 0.01 and btc["limits"]["cost"]["min"] == 5.0
    assert server_time == int(NOW * 1000)
    assert len(rows) == 1000 and rows[-1][0] == T0 * 1000  # last one is the forming bar
    assert [r[0] for r in rows] == list(range((T0 - 999 * 60) * 1000, T0 * 1000 + 1, MIN))
    _check_ohlc(rows)
    log = sandbox.stats()["kline_log"][-1]
    assert log["endTime"] == int(NOW * 1000) and log["limit"] == 1000 and log["rows"] == 1000


def test_sync_ccxt_and_values_equal_expected_bars(exchange: ccxt.binance) -> None:
    start = T0 - 3 * 3600
    rows = exchange.fetch_ohlcv("ETH/USDT", "1m", since=start * 1000, limit=180)
    exp = expected_bars("ETH/USDT", 60, start, T0, SandboxConfig())
    assert len(rows) == 180 == len(exp["ts"])
    got = np.array(rows, dtype=np.float64)
    assert np.array_equal(got[:, 0], exp["ts"] * 1000.0)
    for i, col in enumerate(("open", "high", "low", "close", "volume"), start=1):
        assert np.array_equal(got[:, i], exp[col]), col  # bit-identical floats


def test_bars_are_window_independent(exchange: ccxt.binance) -> None:
    """The same bar is the same whatever window or page size fetched it."""
    a = exchange.fetch_ohlcv("SOL/USDT", "5m", since=(T0 - 86_400) * 1000, limit=300)
    b = exchange.fetch_ohlcv("SOL/USDT", "5m", since=(T0 - 80_000) * 1000, limit=7)
    c = exchange.fetch_ohlcv("SOL/USDT", "5m", params={"endTime": (T0 - 70_000) * 1000})
    by_ts = {r[0]: r for r in a}
    for row in b + c:
        if row[0] in by_ts:
            assert row == by_ts[row[0]]
    assert len({r[0] for r in b} & set(by_ts)) == 7
    _check_ohlc(a)
    # continuity: a bar's close is the next bar's open (and never below the tick)
    assert all(x[4] == y[1] for x, y in itertools.pairwise(a))


def test_every_binance_interval_aligned_and_consistent(exchange: ccxt.binance) -> None:
    for code, seconds in INTERVALS.items():
        rows = exchange.fetch_ohlcv("BTC/USDT", code, limit=5)
        assert len(rows) == 5, code
        origin = 4 * 86_400 if code == "1w" else 0  # Binance weeks open on Monday
        assert all((r[0] // 1000 - origin) % seconds == 0 for r in rows), code
        assert rows[-1][0] <= NOW * 1000 < rows[-1][0] + seconds * 1000  # forming bar last
        _check_ohlc(rows)
    with pytest.raises(ccxt.BadRequest):
        exchange.fetch_ohlcv("BTC/USDT", "1M", limit=5)


def test_coarse_bars_open_and_close_like_their_minutes(exchange: ccxt.binance) -> None:
    start = T0 - 10 * 3600 - T0 % 3600
    hours = exchange.fetch_ohlcv("BTC/USDT", "1h", since=start * 1000, limit=3)
    minutes = exchange.fetch_ohlcv("BTC/USDT", "1m", since=start * 1000, limit=180)
    assert [h[1] for h in hours] == [m[1] for m in minutes[::60]]
    assert [h[4] for h in hours] == [m[4] for m in minutes[59::60]]


# --------------------------------------------------------------------------- Binance semantics
def test_kline_window_semantics(sandbox: SandboxExchange) -> None:
    status, headers, latest = http_get(_klines_url(sandbox, symbol="BTCUSDT", interval="1m"))
    assert status == 200 and len(latest) == 500 and latest[-1][0] == T0 * 1000
    assert headers["X-MBX-USED-WEIGHT-1M"] == "2"
    row = latest[-1]
    assert len(row) == 12 and row[6] == T0 * 1000 + 59_999 and row[11] == "0"
    assert all(isinstance(row[i], str) and row[i].count(".") == 1 for i in (1, 2, 3, 4, 5, 7, 9))
    assert isinstance(row[8], int)
    # endTime only: the last `limit` bars at or before endTime
    end = (T0 - 600) * 1000 + 1
    _, _, tail = http_get(
        _klines_url(sandbox, symbol="BTCUSDT", interval="1m", endTime=end, limit=3)
    )
    assert [r[0] for r in tail] == [end - 1 - 2 * MIN, end - 1 - MIN, end - 1]
    # unaligned startTime starts at the next open; limit is capped at 1000
    _, _, page = http_get(
        _klines_url(
            sandbox,
            symbol="BTCUSDT",
            interval="1m",
            startTime=(T0 - 5000 * 60) * 1000 + 1,
            limit=5000,
        )
    )
    assert len(page) == 1000 and page[0][0] == (T0 - 4999 * 60) * 1000
    # bars never open after "now"
    _, _, future = http_get(
        _klines_url(sandbox, symbol="BTCUSDT", interval="1m", startTime=(T0 - 60) * 1000)
    )
    assert [r[0] for r in future] == [(T0 - 60) * 1000, T0 * 1000]


def test_binance_error_bodies(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    cases: list[tuple[dict[str, Any], int]] = [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1M"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 5, "endTime": 1}, -1023),
        ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "abc"}, -1100),
        ({"interval": "1m"}, -1102),
    ]
    for params, code in cases:
        status, headers, body = http_get(_klines_url(sandbox, **params))
        assert status == 400 and body["code"] == code, (params, body)
        assert "X-MBX-USED-WEIGHT-1M" in headers
    with pytest.raises(ccxt.BadSymbol):  # ccxt maps -1121 itself
        exchange.publicGetKlines({"symbol": "NOPEUSDT", "interval": "1m"})


def test_listing_time_bounds_history(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    sandbox.configure(listing_ts={"SOL/USDT": T0 - 3 * 3600 + 17})
    rows = exchange.fetch_ohlcv("SOL/USDT", "1h", since=0, limit=10)
    assert rows[0][0] == (T0 - 3 * 3600 + 17) // 3600 * 3600 * 1000  # the bar holding the listing
    assert len(rows) == 4  # 3 closed hours + the forming one
    daily = exchange.fetch_ohlcv("BTC/USDT", "1d", since=0, limit=2)
    assert daily[0][0] == 1_502_928_000_000  # 2017-08-17, like Binance


# --------------------------------------------------------------------------- forming bar
def test_forming_bar_with_frozen_clock(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    def last_bar() -> list[Any]:
        rows = exchange.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        assert rows[-1][0] == T0 * 1000
        return rows[-1]

    seen = []
    for now in (T0 + 0.5, T0 + 10, T0 + 30.5, T0 + 59.9):
        sandbox.set_clock(now=now)
        seen.append(last_bar())
    assert len({b[1] for b in seen}) == 1  # open fixed
    assert [b[2] for b in seen] == sorted(b[2] for b in seen)  # high only rises
    assert [b[3] for b in seen] == sorted((b[3] for b in seen), reverse=True)  # low only falls
    assert [b[5] for b in seen] == sorted(b[5] for b in seen)  # volume accumulates
    _check_ohlc(seen)
    sandbox.set_clock(now=T0 + 30.5)
    assert last_bar() == seen[2]  # deterministic for a given instant
    final = expected_bars("BTC/USDT", 60, T0, T0 + 60, sandbox.state.config)
    assert seen[-1][5] < final["volume"][0]
    assert seen[-1][3] >= final["low"][0] and seen[-1][2] <= final["high"][0]
    sandbox.set_clock(now=T0 + 60)  # the bar closed: now it is the canonical one
    rows = exchange.fetch_ohlcv("BTC/USDT", "1m", since=T0 * 1000, limit=5)
    assert rows[0][1:] == [float(final[c][0]) for c in ("open", "high", "low", "close", "volume")]
    assert rows[1][0] == (T0 + 60) * 1000 and len(rows) == 2  # and the next one is forming
    # expected_bars leaves forming bars out when given now_s
    assert len(expected_bars("BTC/USDT", 60, T0 - 120, T0 + 120, now_s=T0 + 60)["ts"]) == 3


# --------------------------------------------------------------------------- gaps, revisions
def test_maintenance_gaps_are_skipped(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    gap = (T0 - 3600 + 15, T0 - 1800)  # 1m bars fully inside: opens T0-3540 .. T0-1860
    sandbox.configure(gaps={"BTC/USDT": [list(gap)], "*": [[T0 - 7200, T0 - 7080]]})
    rows = exchange.fetch_ohlcv("BTC/USDT", "1m", since=(T0 - 3600) * 1000, limit=20)
    opens = [r[0] // 1000 for r in rows]
    assert opens == [T0 - 3600, *range(T0 - 1800, T0 - 660, 60)]  # a page fills across the gap
    exp = expected_bars("BTC/USDT", 60, T0 - 7500, T0, sandbox.state.config)
    assert not np.any((exp["ts"] >= gap[0]) & (exp["ts"] + 60 <= gap[1]))
    eth = exchange.fetch_ohlcv("ETH/USDT", "1m", since=(T0 - 7260) * 1000, limit=6)
    assert [r[0] // 1000 - T0 for r in eth] == [-7260, -7080, -7020, -6960, -6900, -6840]
    hourly = exchange.fetch_ohlcv("BTC/USDT", "1h", since=(T0 - 5 * 3600) * 1000, limit=5)
    assert len(hourly) == 5  # a partial-hour gap leaves the hour bar in place


def test_restatements_change_only_their_window(
    sandbox: SandboxExchange, exchange: ccxt.binance
) -> None:
    since = (T0 - 3600) * 1000
    before = exchange.fetch_ohlcv("ETH/USDT", "1m", since=since, limit=60)
    window = (T0 - 1800, T0 - 1200)
    sandbox.configure(
        restatements={"ETH/USDT": [{"start": window[0], "end": window[1], "version": 1}]}
    )
    after = exchange.fetch_ohlcv("ETH/USDT", "1m", since=since, limit=60)
    for old, new in zip(before, after, strict=True):
        inside = window[0] <= old[0] // 1000 < window[1]
        assert (old != new) == inside, old[0]
    exp = expected_bars("ETH/USDT", 60, T0 - 3600, T0, sandbox.state.config)
    assert exp["close"].tolist() == [r[4] for r in after]
    _check_ohlc(after)


# --------------------------------------------------------------------------- rate limits
def test_weight_budget_429_then_418_for_ignoring_clients(
    sandbox: SandboxExchange, exchange: ccxt.binance, wall: FakeWall
) -> None:
    sandbox.reset()
    sandbox.configure(weight_limit_per_minute=10, ban_seconds=3)
    url = _klines_url(sandbox, symbol="BTCUSDT", interval="1m", limit=2)
    for i in range(5):  # 5 x weight 2 = the whole budget
        status, headers, _ = http_get(url)
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == str(2 * (i + 1))
    status, headers, body = http_get(url)
    assert status == 429 and body["code"] == -1003
    assert headers["Retry-After"] == "55"  # the fake wall is 5 s into its minute
    wall.advance(0.25)  # past the in-flight grace (penalty_grace_ms, 200 ms by default)
    with pytest.raises(ccxt.DDoSProtection):  # a client ignoring Retry-After ...
        exchange.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    # ... is banned (418) until the penalty ends: the 429 window outlasts the 3 s ban
    assert exchange.last_response_headers["Retry-After"] == "55"
    status, headers, _ = http_get(f"{sandbox.url}/api/v3/time")
    assert status == 418 and headers["Retry-After"] == "55"
    stats = sandbox.stats()
    assert (stats["sent_429"], stats["sent_418"], stats["requests_in_penalty"]) == (1, 2, 2)
    assert stats["by_status"] == {"200": 5, "429": 1, "418": 2}
    assert stats["max_weight_per_minute"] == 10 and stats["by_endpoint"]["klines"]["weight"] == 10
    wall.advance(56)  # the minute is over: so is the penalty (the 418s ended before it)
    assert http_get(url)[0] == 200
    history = sandbox.stats()["weight_history"]
    assert [h["weight"] for h in history] == [10, 2]
    assert history[1]["minute_start"] - history[0]["minute_start"] == 60


def test_ban_extends_while_client_keeps_knocking(sandbox: SandboxExchange, wall: FakeWall) -> None:
    sandbox.configure(weight_limit_per_minute=2, ban_seconds=2)
    url = f"{sandbox.url}/api/v3/ping"
    assert [http_get(url)[0] for _ in range(3)] == [200, 200, 429]
    wall.advance(54)
    assert http_get(url)[0] == 418  # still inside the 429 penalty window (ends at :00)
    wall.advance(1.5)  # the minute ended, but the 418 extended the ban by 2 s
    status, headers, _ = http_get(url)
    assert status == 418 and headers["Retry-After"] == "2"
    wall.advance(2.1)
    assert http_get(url)[0] == 200
    assert sandbox.stats()["requests_in_penalty"] == 2


def test_force_429_is_one_shot(sandbox: SandboxExchange, wall: FakeWall) -> None:
    sandbox.configure(force_429=2, force_429_retry_after=4)
    url = _klines_url(sandbox, symbol="BTCUSDT", interval="1h", limit=1)
    assert http_get(f"{sandbox.url}/api/v3/time")[0] == 200  # only klines are forced
    status, headers, _ = http_get(url)
    assert status == 429 and headers["Retry-After"] == "4"
    wall.advance(4)  # a client honouring Retry-After
    assert http_get(url)[0] == 429
    wall.advance(4)
    assert http_get(url)[0] == 200
    assert sandbox.stats()["sent_429"] == 2 and sandbox.stats()["sent_418"] == 0


def test_in_flight_grace_after_a_429(sandbox: SandboxExchange, wall: FakeWall) -> None:
    """Requests already in flight when a 429 is issued get 429 too, without a ban; later
    ones inside the penalty window are violations (418). A 429 without Retry-After opens
    no window."""
    sandbox.configure(force_429=1, force_429_retry_after=5, penalty_grace_ms=200)
    url = _klines_url(sandbox, symbol="BTCUSDT", interval="1m", limit=1)
    assert http_get(url)[0] == 429
    wall.advance(0.15)  # sent before the client could have seen the 429
    status, headers, _ = http_get(url)
    assert status == 429 and headers["Retry-After"] == "5"
    wall.advance(0.1)  # 250 ms after the 429: a client ignoring Retry-After
    assert http_get(url)[0] == 418
    stats = sandbox.stats()
    assert (stats["sent_429"], stats["in_flight_after_429"], stats["sent_418"]) == (1, 1, 1)
    assert stats["requests_in_penalty"] == 1 and stats["by_status"] == {"429": 2, "418": 1}
    assert [e["reason"] for e in stats["kline_log"]] == ["forced", "in_flight", "banned"]
    sandbox.reset()
    sandbox.configure(force_429=1, force_429_retry_after=0)
    status, headers, _ = http_get(url)
    assert status == 429 and "Retry-After" not in headers
    assert http_get(url)[0] == 200 and sandbox.stats()["sent_429"] == 1


# --------------------------------------------------------------------------- fault injection
def test_5xx_injection_is_deterministic(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    sandbox.configure(error_rate_5xx=0.3, error_seed=7)
    url = f"{sandbox.url}/api/v3/ping"

    def statuses() -> list[int]:
        sandbox.reset()  # also re-seeds the fault RNG
        return [http_get(url)[0] for _ in range(60)]

    first = statuses()
    assert first == statuses()
    assert set(first) <= {200, 500, 502, 503} and 8 <= sum(s != 200 for s in first) <= 30
    assert sandbox.stats()["injected_5xx"] == sum(s != 200 for s in first)
    sandbox.configure(error_rate_5xx=1.0)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_ohlcv("BTC/USDT", "1m", limit=1)


def test_down_and_latency(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    admin = SandboxAdmin(sandbox.url)
    admin.configure(down=True)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_time()
    assert admin.stats()["by_status"]["503"] == 1  # admin endpoints keep working
    admin.configure(down=False, latency_ms=150)
    started = time.perf_counter()
    assert exchange.fetch_time() == int(NOW * 1000)
    assert time.perf_counter() - started >= 0.15


# --------------------------------------------------------------------------- admin API
def test_admin_api(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    admin = SandboxAdmin(sandbox.url)
    exchange.fetch_ohlcv("BTC/USDT", "1m", limit=3)
    stats = admin.stats()
    assert stats["kline_rows_served"] == 3 and stats["by_endpoint"]["exchangeInfo"]["weight"] == 20
    entry = stats["kline_log"][-1]
    assert entry["symbol"] == "BTCUSDT" and entry["interval"] == "1m" and entry["status"] == 200
    admin.reset()
    assert admin.stats()["requests_total"] == 0
    assert admin.set_clock(now=T0)["now_ms"] == T0 * 1000
    assert admin.set_clock(advance_s=90)["now"] == T0 + 90
    assert exchange.fetch_time() == (T0 + 90) * 1000
    clock = admin.set_clock(offset_s=-3600)
    assert not clock["frozen"] and abs(clock["now"] - (time.time() - 3600)) < 5
    clock = admin.set_clock(real=True)
    assert abs(clock["now"] - time.time()) < 5 and admin.clock()["offset_s"] == 0
    cfg = admin.configure(weight_limit_per_minute=100, gaps={"*": [[1, 2]]})
    assert cfg["weight_limit_per_minute"] == 100 and admin.config()["gaps"] == {"*": [[1, 2]]}
    weights = admin.configure(weights={"klines": 5}, latency_ms="0")["weights"]
    assert weights == {"ping": 1, "time": 1, "exchangeInfo": 20, "klines": 5}
    admin.reset()  # also forgets the weight used in this minute
    exchange.fetch_ohlcv("BTC/USDT", "1m", limit=1)
    assert exchange.last_response_headers["X-MBX-USED-WEIGHT-1M"] == "5"
    with pytest.raises(ValueError, match="unknown sandbox config knob"):
        admin.configure(no_such_knob=1)
    with pytest.raises(ValueError, match="error_rate_5xx"):
        admin.configure(error_rate_5xx=2)
    with pytest.raises(ValueError, match="clock body"):
        admin.set_clock()


def test_extra_symbols_are_listed(sandbox: SandboxExchange) -> None:
    sandbox.configure(extra_symbols=["DOGE/USDT"], listing_ts={"DOGE/USDT": T0 - 600})
    ex = ccxt.binance(sandbox.ccxt_config())
    ex.load_markets()
    assert ex.markets["DOGE/USDT"]["id"] == "DOGEUSDT"
    rows = ex.fetch_ohlcv("DOGE/USDT", "1m", since=0)
    assert len(rows) == 11 and rows[0][0] == (T0 - 600) * 1000
    _check_ohlc(rows)


# --------------------------------------------------------------------------- encoder, speed
def test_encoder_is_byte_identical_to_reference() -> None:
    cfg = SandboxConfig(extra_symbols=["PEPE/USDT", "XYZ/BTC"])
    for mid, market in cfg.markets().items():
        for interval in (1, 60, 3600, 604_800):
            ts = select_open_times(
                market, interval, cfg, lo_s=None, hi_s=int(NOW), limit=300, from_end=True
            )
            bars = generate_bars(market, interval, ts, cfg, int(NOW * 1000))
            assert encode_klines(bars) == encode_klines_reference(bars), (mid, interval)
    empty = generate_bars(cfg.markets()["BTCUSDT"], 60, np.empty(0, np.int64), cfg)
    assert encode_klines(empty) == b"[]"


def test_generation_and_encoding_is_fast() -> None:
    cfg = SandboxConfig()
    market = cfg.markets()["BTCUSDT"]
    timings = []
    for i in range(30):
        started = time.perf_counter()
        ts = select_open_times(
            market, 60, cfg, lo_s=T0 - 10**6 + i * 60, hi_s=T0, limit=1000, from_end=False
        )
        body = encode_klines(generate_bars(market, 60, ts, cfg, int(NOW * 1000)))
        timings.append(time.perf_counter() - started)
        assert body.count(b"],[") == 999
    assert min(timings) < 0.003, statistics.median(timings)


# --------------------------------------------------------------------------- subprocess
def test_subprocess_mode_prints_url_and_serves_ccxt() -> None:
    proc, url = spawn_sandbox_process({"frozen_now_s": NOW, "extra_symbols": ["ADA/USDT"]})
    try:
        assert url.startswith("http://127.0.0.1:")
        ex = ccxt.binance(ccxt_config(url))
        assert "ADA/USDT" in ex.load_markets()
        assert ex.fetch_time() == int(NOW * 1000)
        rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=(T0 - 60) * 1000)
        exp = expected_bars("BTC/USDT", 60, T0 - 60, T0)
        assert rows[0][4] == exp["close"][0]
        admin = SandboxAdmin(url)
        assert admin.stats()["by_endpoint"]["klines"]["requests"] == 1
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# --------------------------------------------------------------------------- corruptions
def _page(sx: SandboxExchange, start_s: int, limit: int, interval: str = "1m") -> list[Any]:
    status, _, body = http_get(
        _klines_url(sx, symbol="BTCUSDT", interval=interval, startTime=start_s * 1000, limit=limit)
    )
    assert status == 200, body
    return list(body)


def test_corruptions_are_served_as_raw_json(
    sandbox: SandboxExchange, exchange: ccxt.binance
) -> None:
    base = (T0 - 3600) // 3600 * 3600  # an hour boundary
    clean = _page(sandbox, base, 20)
    eth_url = _klines_url(sandbox, symbol="ETHUSDT", interval="1m", startTime=base * 1000)
    eth = http_get(eth_url)[2]
    kinds = [k for k in CORRUPTION_KINDS[: CORRUPTION_KINDS.index("duplicate_next_page")]]
    sandbox.configure(
        corruptions=[
            {"symbol": "BTC/USDT", "ts": base + 60 * i, "kind": kind, "interval": "1m"}
            for i, kind in enumerate(kinds)
        ]
    )
    rows = _page(sandbox, base, 20)
    by_kind = dict(zip(kinds, rows, strict=False))
    assert by_kind["string"][1] == "abc" and by_kind["nan"][1] == "NaN"
    assert by_kind["inf"][1] == "Infinity"
    assert by_kind["negative_volume"][5] == "-" + clean[3][5]
    assert by_kind["high_below_low"][2:4] == [clean[4][3], clean[4][2]]
    assert float(by_kind["high_below_low"][2]) < float(by_kind["high_below_low"][3])
    assert by_kind["us_ts"][0] == clean[5][0] * 1000
    assert by_kind["us_ts"][6] == clean[5][6] * 1000 + 999
    assert by_kind["misaligned"][0] == clean[6][0] + 30_000
    assert rows[7] == rows[8] == clean[7]  # "duplicate": the clean row twice
    assert rows[9:] == clean[8:] and len(rows) == 21
    for i, kind in enumerate(kinds[:-1]):  # only the targeted field changed
        changed = {j for j in range(12) if rows[i][j] != clean[i][j]}
        assert changed and changed <= {0, 1, 2, 3, 5, 6}, kind
    stats = sandbox.stats()
    assert stats["corrupted_rows_served"] == len(kinds)
    assert stats["kline_log"][-1]["corrupted"] == len(kinds)
    assert stats["kline_log"][-1]["rows"] == 21

    # what ccxt's binance parse_ohlcv makes of them (what a consumer's conformance sees)
    parsed = exchange.fetch_ohlcv("BTC/USDT", "1m", since=base * 1000, limit=1000)
    by_ts: dict[int, list[list[Any]]] = {}
    for row in parsed:
        by_ts.setdefault(row[0] // 1000, []).append(row)
    assert by_ts[base][0][1] is None  # safe_number("abc") -> None
    assert math.isnan(by_ts[base + 60][0][1]) and by_ts[base + 120][0][1] == math.inf
    assert by_ts[base + 180][0][5] < 0
    assert by_ts[base + 240][0][2] < by_ts[base + 240][0][3]
    assert any(r[0] == (base + 300) * 1_000_000 for r in parsed)  # µs kept, sorted last
    assert (base + 360) * 1000 + 30_000 in {r[0] for r in parsed}
    assert len(by_ts[base + 420]) == 2

    # other symbols, other intervals and pages without a corrupted bar are untouched
    assert http_get(eth_url)[2] == eth
    hours = _page(sandbox, base - 3 * 3600, 3, "1h")
    sandbox.configure(corruptions=[])
    assert _page(sandbox, base - 3 * 3600, 3, "1h") == hours
    sandbox.configure(corruptions=[{"symbol": "*", "ts": base, "kind": "nan"}])
    assert _page(sandbox, base, 1, "1h")[0][1] == "NaN"  # any interval with a bar at ts
    assert _page(sandbox, base + 60, 5) == clean[1:6]  # the bar is not in this page


def test_duplicate_next_page_repeats_the_row_at_the_following_page(
    sandbox: SandboxExchange, exchange: ccxt.binance
) -> None:
    base = T0 - 3600
    first = _page(sandbox, base, 10)
    second = _page(sandbox, base + 600, 10)
    sandbox.configure(
        corruptions=[{"symbol": "BTCUSDT", "ts": base + 540, "kind": "duplicate_next_page"}]
    )
    assert _page(sandbox, base, 10) == first  # the page holding the bar is clean
    assert _page(sandbox, base + 600, 10) == [first[-1], *second]
    assert _page(sandbox, base + 660, 5) == second[1:6]  # not the page after next
    # with a maintenance gap after the bar, "next" is the next bar that exists
    sandbox.configure(gaps={"BTC/USDT": [[base + 600, base + 720]]})
    assert _page(sandbox, base + 600, 2)[0] == first[-1]
    # ccxt drops the repeated row itself: it opens before the page's `since`
    rows = exchange.fetch_ohlcv("BTC/USDT", "1m", since=(base + 720) * 1000, limit=3)
    assert [r[0] // 1000 for r in rows] == [base + 720, base + 780, base + 840]


def test_corruptions_knob_is_validated(sandbox: SandboxExchange) -> None:
    admin = SandboxAdmin(sandbox.url)
    good = {"symbol": "BTC/USDT", "ts": str(T0), "kind": "nan", "interval": "1m"}
    assert admin.configure(corruptions=[good])["corruptions"] == [{**good, "ts": T0}]
    bad: list[tuple[Any, str]] = [
        ({"symbol": "BTC/USDT", "ts": T0}, "corruptions"),  # not a list
        ([{"symbol": "BTC/USDT", "ts": T0, "kind": "garbage"}], "kind"),
        ([{"symbol": "BTC/USDT", "ts": T0 * 1000, "kind": "nan"}], "SECONDS"),
        ([{"symbol": "BTC/USDT", "ts": 1.5, "kind": "nan"}], "ts"),
        ([{"symbol": "BTC/USDT", "ts": True, "kind": "nan"}], "ts"),
        ([{"symbol": "BTC/USDT", "kind": "nan"}], "missing key"),
        ([{"symbol": "BTC/USDT", "ts": T0, "kind": "nan", "when": 1}], "unknown key"),
        ([{"symbol": "BTC/USDT", "ts": T0, "kind": "nan", "interval": "7m"}], "interval"),
        ([{"symbol": 5, "ts": T0, "kind": "nan"}], "symbol"),
        (["nan"], "must be an object"),
    ]
    for value, says in bad:
        with pytest.raises(ValueError, match="400") as info:  # the admin API answers 400
            admin.configure(corruptions=value)
        assert says in str(info.value), (value, str(info.value))
    assert admin.config()["corruptions"] == [{**good, "ts": T0}]  # a refused update changes nothing
    with pytest.raises(ValueError, match="kind"):
        SandboxState(SandboxConfig(corruptions=[{"symbol": "*", "ts": 0, "kind": "x"}]))
    assert SandboxConfig.from_dict(SandboxConfig(corruptions=[good]).to_dict()).corruptions == [
        {**good, "ts": T0}
    ]


def test_impossible_times_and_bad_prices_are_served_as_raw_json(
    sandbox: SandboxExchange, exchange: ccxt.binance
) -> None:
    base = (T0 - 3600) // 3600 * 3600
    clean = _page(sandbox, base, 10)
    kinds = ["ts_zero", "ts_future", "zero_price", "negative_price", "zero_bar"]
    assert set(kinds) <= set(CORRUPTION_KINDS)
    sandbox.configure(
        corruptions=[
            {"symbol": "BTC/USDT", "ts": base + 60 * (2 * i + 1), "kind": kind}
            for i, kind in enumerate(kinds)
        ]
    )
    rows = _page(sandbox, base, 10)
    assert len(rows) == 10 and rows[0::2] == clean[0::2]  # only the targeted bars changed
    zero, future, zero_price, negative, zero_bar = rows[1::2]
    assert zero[0] == 0 and zero[6] == clean[1][6] - clean[1][0]
    assert future[0] == 32_503_680_000_000 and future[6] - future[0] == clean[3][6] - clean[3][0]
    assert zero[1:6] == clean[1][1:6] and future[1:6] == clean[3][1:6]
    assert zero_price[1:5] == ["0.00000000"] * 4 and zero_price[5] == clean[5][5]
    assert negative[3] == "-" + clean[7][3] and negative[1:3] + negative[4:6] == (
        clean[7][1:3] + clean[7][4:6]
    )
    assert zero_bar[1:6] == ["0.00000000"] * 5
    # Plain ccxt drops the row opening at 0 unseen (its since filter) and keeps the year
    # 3000: why the project's client turns that filter off and flags both itself.
    parsed = exchange.fetch_ohlcv("BTC/USDT", "1m", since=base * 1000, limit=10)
    opens = [r[0] for r in parsed]
    assert 0 not in opens and 32_503_680_000_000 in opens
    assert sandbox.stats()["corrupted_rows_served"] == len(kinds) * 2


@pytest.mark.parametrize("times", [1, 2, 3])
def test_corruption_times_limits_the_fault_to_the_first_responses(
    sandbox: SandboxExchange, times: int
) -> None:
    base = (T0 - 7200) // 3600 * 3600
    clean = _page(sandbox, base, 5)
    sandbox.configure(
        corruptions=[
            {"symbol": "BTC/USDT", "ts": base + 60, "kind": "zero_bar", "times": times},
            {"symbol": "BTC/USDT", "ts": base + 180, "kind": "ts_zero"},  # every response
        ]
    )
    sandbox.reset()  # counters only: the budget is not re-armed by a reset
    _page(sandbox, base + 600, 5)  # a page without the bar does not spend the budget
    served = [_page(sandbox, base, 5) for _ in range(times + 2)]
    assert all(page[1][1:6] == ["0.00000000"] * 5 for page in served[:times])
    assert all(page[1] == clean[1] for page in served[times:])
    assert all(page[3][0] == 0 for page in served)
    assert sandbox.stats()["corrupted_rows_served"] == times + (times + 2)
    sandbox.reset()
    assert _page(sandbox, base, 5)[1] == clean[1]
    sandbox.configure(corruptions=sandbox.state.config.corruptions)  # re-armed
    assert _page(sandbox, base, 5)[1][1:6] == ["0.00000000"] * 5


@pytest.mark.parametrize("delay_s", [1, 5, 45, 90])
def test_publish_delay_serves_the_newest_bars_late(sandbox: SandboxExchange, delay_s: int) -> None:
    """NOW is 30.5 s into the T0 bar: T0 - 60 closed 30.5 s ago, T0 - 120 90.5 s ago."""

    def newest() -> int:
        rows = _page(sandbox, T0 - 600, 20)
        return int(rows[-1][0]) // 1000

    assert newest() == T0  # Binance serves the forming bar
    sandbox.configure(publish_delay_s=delay_s)
    closed_for = {T0 - 60: 30.5, T0 - 120: 90.5, T0 - 180: 150.5}
    want = max(t for t, age in closed_for.items() if age >= delay_s)
    assert newest() == want
    sandbox.set_clock(advance_s=60)  # a minute later the late bar is there
    assert newest() == want + 60
    with pytest.raises(ValueError, match="publish_delay_s"):
        sandbox.configure(publish_delay_s=-1)


def test_new_fault_knobs_are_validated(sandbox: SandboxExchange) -> None:
    admin = SandboxAdmin(sandbox.url)
    entry = {"symbol": "BTC/USDT", "ts": T0, "kind": "ts_zero"}
    for times, says in [(0, "times"), (-1, "times"), (1.5, "times"), (True, "times")]:
        with pytest.raises(ValueError, match="400") as info:
            admin.configure(corruptions=[{**entry, "times": times}])
        assert says in str(info.value)
    assert admin.configure(corruptions=[{**entry, "times": 2}])["corruptions"][0]["times"] == 2
    for value in (-0.5, 86_400, "soon"):
        with pytest.raises(ValueError, match="400"):
            admin.configure(publish_delay_s=value)
    assert admin.configure(publish_delay_s=2.5)["publish_delay_s"] == 2.5
