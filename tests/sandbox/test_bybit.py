"""Bybit v5 public market data under /v5/market, through REAL ccxt `bybit` and plain HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import numpy as np
import pytest

from sandbox import (
    BYBIT_LISTING_FLOOR_TS,
    INSTRUMENTS_PAGE_CAP,
    SandboxAdmin,
    SandboxConfig,
    SandboxExchange,
    SandboxState,
    bybit_ccxt_config,
    expected_bars,
    spawn_sandbox_process,
)
from sandbox.bybit_markets import bybit_decimal

from .conftest import NOW, T0, FakeWall, http_get

SPOT, LINEAR = "BTC/USDT", "BTC/USDT:USDT"
BOTH = ("spot", "linear")
MIN, H = 60, 3600
DAY = 1_699_920_000  # 2023-11-14 00:00 UTC, the day of T0 (22:13 UTC)
COLS = ("open", "high", "low", "close", "volume")
USDT_BASES = ("BNB", "BTC", "ETH", "SOL")
PINNED_LINEAR = [(T0 - 60) * 1000, 38354.27, 38358.33, 38334.23, 38349.46, 9.51319]


@pytest.fixture
def bybit(sandbox: SandboxExchange) -> ccxt.bybit:
    """Real (sync) ccxt bybit loading spot and linear markets from the sandbox."""
    ex = ccxt.bybit(sandbox.bybit_ccxt_config(market_types=BOTH))
    ex.load_markets()
    return ex


def _get(sx: SandboxExchange, name: str, **params: Any) -> tuple[int, dict[str, str], Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return http_get(f"{sx.url}/v5/market/{name}?{query}")


def _result(sx: SandboxExchange, name: str, **params: Any) -> Any:
    status, _, body = _get(sx, name, **params)
    assert status == 200 and body["retCode"] == 0, body
    assert (body["retMsg"], body["retExtInfo"], body["time"]) == ("OK", {}, int(NOW * 1000))
    return body["result"]


def _kline(sx: SandboxExchange, **params: Any) -> list[list[str]]:
    rows: list[list[str]] = _result(sx, "kline", **params)["list"]
    return rows


def _ohlcv(ex: ccxt.bybit, symbol: str, tf: str, start_s: int, end_s: int) -> list[list[Any]]:
    """Rows opening in [start_s, end_s], one request (the window must hold <= 1000 bars)."""
    rows: list[list[Any]] = ex.fetch_ohlcv(
        symbol, tf, since=start_s * 1000, limit=1000, params={"until": end_s * 1000}
    )
    return rows


def _assert_bars(rows: list[list[Any]], exp: dict[str, Any]) -> None:
    got = np.array(rows, dtype=np.float64).reshape(-1, 6)
    assert got[:, 0].tolist() == (exp["ts"] * 1000).tolist()
    for i, col in enumerate(COLS, start=1):
        assert np.array_equal(got[:, i], exp[col]), col  # bit-identical floats


def _opens(rows: list[list[Any]], origin: int) -> list[int]:
    return [int(r[0]) // 1000 - origin for r in rows]


# --------------------------------------------------------------------------- markets
def test_markets_parse_spot_and_linear_through_the_cursor(
    sandbox: SandboxExchange, bybit: ccxt.bybit
) -> None:
    swaps = {f"{b}/USDT:USDT" for b in USDT_BASES}
    spots = {f"{b}/USDT" for b in USDT_BASES} | {"ETH/BTC"}
    assert set(bybit.markets) == spots | swaps
    btc = bybit.markets[LINEAR]
    assert (btc["type"], btc["swap"], btc["linear"], btc["inverse"], btc["contract"]) == (
        "swap",
        True,
        True,
        False,
        True,
    )
    assert (btc["id"], btc["base"], btc["quote"], btc["settle"]) == (
        "BTCUSDT",
        "BTC",
        "USDT",
        "USDT",
    )
    assert btc["active"] and btc["expiry"] is None and btc["contractSize"] == 1.0
    assert btc["precision"] == {"amount": 1e-05, "price": 0.01}
    assert btc["limits"]["leverage"] == {"min": 1.0, "max": 100.0}
    assert btc["created"] == BYBIT_LISTING_FLOOR_TS["linear"] * 1000 == 1_585_526_400_000
    assert bybit.markets["SOL/USDT:USDT"]["created"] == 1_597_125_600_000  # SOL listed later
    spot = bybit.markets[SPOT]
    assert spot["spot"] and spot["active"] and not spot["contract"] and spot["created"] is None
    assert spot["precision"]["price"] == 0.01 and spot["precision"]["amount"] == 1e-05
    assert spot["limits"]["cost"]["min"] == 5.0
    assert bybit.markets["ETH/BTC"]["precision"]["price"] == 1e-05
    # no currencies (private: skipped without keys), no time: only instruments-info, 4 times:
    # spot, linear (page 1), linear status=PreLaunch, linear page 2 via nextPageCursor
    assert bybit.fetch_currencies() == {}
    assert sandbox.stats()["by_endpoint"] == {
        "bybit/instruments-info": {"requests": 4, "weight": 0}
    }
    # raw pages: 2 linear instruments a page whatever the limit, ordered by symbol
    assert INSTRUMENTS_PAGE_CAP == 2
    page1 = _result(sandbox, "instruments-info", category="linear", limit=1000)
    assert [i["symbol"] for i in page1["list"]] == ["BNBUSDT", "BTCUSDT"]
    assert page1["nextPageCursor"] == "after:BTCUSDT" and page1["category"] == "linear"
    page2 = _result(sandbox, "instruments-info", category="linear", cursor="after:BTCUSDT")
    assert [i["symbol"] for i in page2["list"]] == ["ETHUSDT", "SOLUSDT"]
    assert page2["nextPageCursor"] == ""
    row = page1["list"][1]
    assert (row["contractType"], row["status"], row["settleCoin"], row["launchTime"]) == (
        "LinearPerpetual",
        "Trading",
        "USDT",
        "1585526400000",
    )
    assert row["priceFilter"]["tickSize"] == "0.01" and row["lotSizeFilter"]["qtyStep"] == "0.00001"
    one = _result(sandbox, "instruments-info", category="linear", symbol="SOLUSDT", limit=1)
    assert [i["symbol"] for i in one["list"]] == ["SOLUSDT"] and one["nextPageCursor"] == ""
    pre = _result(sandbox, "instruments-info", category="linear", status="PreLaunch")
    assert pre == {"category": "linear", "list": [], "nextPageCursor": ""}
    spot_doc = _result(sandbox, "instruments-info", category="spot", limit=1)  # no pages
    assert len(spot_doc["list"]) == 5 and "nextPageCursor" not in spot_doc
    btc_doc = next(i for i in spot_doc["list"] if i["symbol"] == "BTCUSDT")
    assert btc_doc["lotSizeFilter"]["basePrecision"] == "0.00001"
    assert btc_doc["priceFilter"] == {"tickSize": "0.01"}
    # configured symbols are listed too (5 perpetuals: 3 pages); linear only
    sandbox.configure(extra_symbols=["DOGE/USDT", "XYZ/BTC"])
    sandbox.reset()
    ex = ccxt.bybit(sandbox.bybit_ccxt_config(market_types=("linear",)))
    assert set(ex.load_markets()) == swaps | {"DOGE/USDT:USDT"}
    assert sandbox.stats()["by_endpoint"]["bybit/instruments-info"]["requests"] == 4
    assert bybit_ccxt_config("http://x/") == {
        "enableRateLimit": False,
        "timeout": 10_000,
        "urls": {"api": {"public": "http://x", "private": "http://x"}},
        "options": {"fetchMarkets": {"types": ["spot"]}},
    }
    with pytest.raises(ValueError, match="market_types"):
        bybit_ccxt_config("http://x", market_types=("inverse",))
    # given keys, ccxt asks for currencies on the private URL: the sandbox, never Bybit
    keyed = ccxt.bybit(sandbox.bybit_ccxt_config(apiKey="key", secret="secret"))
    with pytest.raises(ccxt.ExchangeNotAvailable, match=f"{sandbox.url}/v5/asset/coin/query-info"):
        keyed.load_markets()


# --------------------------------------------------------------------------- klines
def test_ohlcv_equals_oracle_and_differs_from_binance(
    sandbox: SandboxExchange, bybit: ccxt.bybit
) -> None:
    start, end = T0 - 3 * H, T0 - MIN
    spot = _ohlcv(bybit, SPOT, "1m", start, end)
    _assert_bars(spot, expected_bars(SPOT, MIN, start, T0, venue="bybit"))
    assert spot[-2:] == [  # pinned
        [(T0 - 120) * 1000, 38401.6, 38413.53, 38368.15, 38377.11, 12.49491],
        [(T0 - 60) * 1000, 38377.11, 38386.52, 38310.16, 38382.2, 15.27374],
    ]
    linear = _ohlcv(bybit, LINEAR, "1m", start, end)
    _assert_bars(linear, expected_bars(LINEAR, MIN, start, T0, venue="bybit"))
    assert linear[-1] == PINNED_LINEAR
    assert len(spot) == len(linear) == 180
    # four different markets tracking one trend: Bybit spot/linear, Binance spot/perp
    others = [
        expected_bars(SPOT, MIN, start, T0),
        expected_bars(LINEAR, MIN, start, T0),
        expected_bars(LINEAR, MIN, start, T0, venue="bybit"),
    ]
    opens = np.array([r[1] for r in spot])
    for other in others:
        assert not np.any(opens == other["open"])
        assert np.all(np.abs(opens / other["open"] - 1) < 0.01)
    assert expected_bars(SPOT, MIN, T0 - 120, T0)["open"].tolist() == [38345.17, 38369.57]
    # coarser intervals (closed bars); weeks open on Monday 00:00 UTC
    monday = DAY - 86_400  # 2023-11-13
    for tf, secs in (("1h", H), ("4h", 4 * H), ("1d", 86_400), ("1w", 604_800)):
        last = monday - secs
        rows = _ohlcv(bybit, LINEAR, tf, last - 20 * secs, last)
        _assert_bars(rows, expected_bars(LINEAR, secs, last - 20 * secs, last + 1, venue="bybit"))
        assert len(rows) == 21 and rows[-1][0] == last * 1000, tf
    days = [time.gmtime(r[0] // 1000) for r in rows]
    assert {(d.tm_wday, d.tm_hour) for d in days} == {(0, 0)}  # Mondays 00:00 UTC
    week = _kline(sandbox, category="spot", symbol="BTCUSDT", interval="W", limit=1)
    assert int(week[0][0]) == monday * 1000  # the forming week
    with pytest.raises(ValueError, match="not a bybit interval"):
        expected_bars(SPOT, 1, T0 - 60, T0, venue="bybit")
    with pytest.raises(ValueError, match="venue"):
        expected_bars(SPOT, MIN, T0 - 60, T0, venue="okx")
    with pytest.raises(ValueError, match="mark"):
        expected_bars(LINEAR, MIN, T0 - 60, T0, price="mark", venue="bybit")
    with pytest.raises(KeyError):
        expected_bars("ETH/BTC:BTC", MIN, T0 - 60, T0, venue="bybit")
    bybit_key = expected_bars("bybit:BTC/USDT", MIN, start, T0)  # the prefix names the venue
    assert bybit_key["open"].tolist() == opens.tolist()


def test_raw_rows_descend_and_hold_the_newest_limit_of_the_range(
    sandbox: SandboxExchange, bybit: ccxt.bybit
) -> None:
    raw = _result(
        sandbox,
        "kline",
        category="spot",
        symbol="BTCUSDT",
        interval="1",
        start=(T0 - 600) * 1000,
        end=(T0 - 60) * 1000,
        limit=3,
    )
    assert (raw["symbol"], raw["category"]) == ("BTCUSDT", "spot")
    rows = raw["list"]
    assert [r[0] for r in rows] == [str((T0 - k * MIN) * 1000) for k in (1, 2, 3)]  # newest 3
    assert rows[0] == [
        "1699999920000",
        "38377.11",
        "38386.52",
        "38310.16",
        "38382.2",
        "15.27374",
        "585961.72317565",
    ]
    exp = expected_bars(SPOT, MIN, T0 - 180, T0, venue="bybit")
    for i, col in enumerate(COLS, start=1):
        assert [float(r[i]) for r in reversed(rows)] == exp[col].tolist()
    assert all(isinstance(x, str) for r in rows for x in r)
    assert not any("." in x and x.endswith("0") for r in rows for x in r[1:])  # Bybit's print
    assert [bybit_decimal(u) for u in (38_382_20_000_000, 50_000_000, 1_707_100_000_000, 0)] == [
        "38382.2",
        "0.5",
        "17071",
        "0",
    ]
    # start inside the range, end defaulting to now: the newest `limit`, the forming bar first
    latest = _kline(sandbox, category="spot", symbol="BTCUSDT", interval="1", start=0, limit=4)
    assert [int(r[0]) // 1000 - T0 for r in latest] == [0, -60, -120, -180]
    assert latest[0][1] == "38382.2" and latest[0][5] == "10.33239"  # 30.5 s of the T0 bar
    default = _kline(sandbox, symbol="BTCUSDT", interval="1")  # linear, 200 bars by default
    assert len(default) == 200 and int(default[0][0]) == T0 * 1000
    assert [int(r[0]) for r in default] == [(T0 - k * MIN) * 1000 for k in range(200)]
    assert default[1][1] == str(PINNED_LINEAR[1])
    capped = _kline(sandbox, category="linear", symbol="ETHUSDT", interval="1", limit=5000)
    assert len(capped) == 1000
    # ccxt sorts ascending; without `until` the quirk hands it the newest bars, not `since`'s
    asc = bybit.fetch_ohlcv(SPOT, "1m", since=(T0 - 600) * 1000, limit=3)
    assert _opens(asc, T0) == [-120, -60, 0]
    bounded = bybit.fetch_ohlcv(
        SPOT, "1m", since=(T0 - 600) * 1000, limit=3, params={"until": (T0 - 60) * 1000}
    )
    assert _opens(bounded, T0) == [-180, -120, -60]
    log = sandbox.stats()["kline_log"]
    assert [(e["category"], e["startTime"], e["endTime"], e["limit"], e["rows"]) for e in log] == [
        ("spot", (T0 - 600) * 1000, (T0 - 60) * 1000, 3, 3),
        ("spot", 0, None, 4, 4),
        ("linear", None, None, None, 200),
        ("linear", None, None, 5000, 1000),
        ("spot", (T0 - 600) * 1000, None, 3, 3),
        ("spot", (T0 - 600) * 1000, (T0 - 60) * 1000, 3, 3),
    ]
    assert {e["endpoint"] for e in log} == {"bybit/kline"}


def test_thousand_bar_windows_paginate_to_exact_data(
    sandbox: SandboxExchange, bybit: ccxt.bybit
) -> None:
    start = DAY - 2 * 86_400
    exact = _ohlcv(bybit, LINEAR, "1m", start, start + 999 * MIN)  # exactly 1000 bars
    _assert_bars(exact, expected_bars(LINEAR, MIN, start, start + 1000 * MIN, venue="bybit"))
    over = _ohlcv(bybit, LINEAR, "1m", start, start + 1000 * MIN)  # 1001 in range: newest 1000
    assert (
        len(over) == 1000
        and over[0][0] == (start + MIN) * 1000
        and over[1:]
        == [
            *exact[2:],
            over[-1],
        ]
    )
    # forward pages bounded by `until`, across a Bybit outage, equal the oracle
    gap = [start + 1500 * MIN, start + 1700 * MIN]
    sandbox.configure(gaps={"bybit:BTC/USDT:USDT": [gap]})
    cfg = sandbox.state.config
    rows: list[list[Any]] = []
    for since in range(start, start + 3000 * MIN, 1000 * MIN):
        rows += _ohlcv(bybit, LINEAR, "1m", since, since + 999 * MIN)
    exp = expected_bars(LINEAR, MIN, start, start + 3000 * MIN, cfg, venue="bybit")
    _assert_bars(rows, exp)
    assert len(rows) == 2800 and len({r[0] for r in rows}) == 2800
    assert sandbox.stats()["by_endpoint"]["bybit/kline"] == {"requests": 5, "weight": 0}


# --------------------------------------------------------------------------- data knobs
def test_bybit_keys_target_gaps_listing_restatements_and_delay(
    sandbox: SandboxExchange, bybit: ccxt.bybit
) -> None:
    base = DAY + 20 * H
    binance = ccxt.binance(sandbox.ccxt_config(market_types=BOTH))
    binance.load_markets()

    def fetch_all() -> dict[str, list[list[Any]]]:
        return {
            "bybit spot": _ohlcv(bybit, SPOT, "1m", base, base + 9 * MIN),
            "bybit linear": _ohlcv(bybit, LINEAR, "1m", base, base + 9 * MIN),
            "binance spot": binance.fetch_ohlcv(SPOT, "1m", since=base * 1000, limit=10),
            "binance perp": binance.fetch_ohlcv(LINEAR, "1m", since=base * 1000, limit=10),
        }

    clean = fetch_all()
    sandbox.configure(
        gaps={
            "bybit:BTC/USDT": [[base + 2 * MIN, base + 3 * MIN]],
            "BYBIT:BTCUSDT:USDT": [[base + 4 * MIN, base + 5 * MIN]],  # prefix: any case
            "BTC/USDT": [[base + 6 * MIN, base + 7 * MIN]],
            "*": [[base + 8 * MIN, base + 9 * MIN]],
        }
    )
    cfg = sandbox.state.config
    gapped = fetch_all()
    missing = {
        k: sorted(set(_opens(clean[k], base)) - set(_opens(v, base))) for k, v in gapped.items()
    }
    assert missing == {
        "bybit spot": [120, 480],
        "bybit linear": [240, 480],
        "binance spot": [360, 480],
        "binance perp": [480],
    }
    _assert_bars(
        gapped["bybit spot"], expected_bars(SPOT, MIN, base, base + 600, cfg, venue="bybit")
    )
    exp = expected_bars(LINEAR, MIN, base, base + 600, cfg, venue="bybit")
    _assert_bars(gapped["bybit linear"], exp)

    window = [{"start": base + MIN, "end": base + 3 * MIN, "version": 1}]
    sandbox.configure(gaps={}, restatements={"bybit:BTC/USDT:USDT": window})
    cfg = sandbox.state.config
    restated = fetch_all()
    changed = {
        k: [a != b for a, b in zip(v, clean[k], strict=True)].count(True)
        for k, v in restated.items()
    }
    assert changed == {"bybit spot": 0, "bybit linear": 2, "binance spot": 0, "binance perp": 0}
    exp = expected_bars(LINEAR, MIN, base, base + 600, cfg, venue="bybit")
    _assert_bars(restated["bybit linear"], exp)

    # listing: a `bybit:` key moves only that Bybit market; Binance keys never move Bybit's
    sandbox.configure(
        restatements={},
        listing_ts={"bybit:SOL/USDT": T0 - 600, "SOL/USDT:USDT": T0 - 1200, "ETH/USDT": T0},
    )
    ex = ccxt.bybit(sandbox.bybit_ccxt_config(market_types=BOTH))
    markets = ex.load_markets()
    assert markets["SOL/USDT:USDT"]["created"] == 1_597_125_600_000
    until = {"until": (T0 - 540) * 1000}
    assert _opens(ex.fetch_ohlcv("SOL/USDT", "1m", since=0, params=until), T0) == [-600, -540]
    floor_ms = BYBIT_LISTING_FLOOR_TS["spot"] * 1000  # 2021-07-01 00:00 UTC
    first = ex.fetch_ohlcv("ETH/USDT", "1d", since=0, params={"until": floor_ms + 86_400_000})
    assert [r[0] for r in first] == [floor_ms, floor_ms + 86_400_000]  # not Binance's T0
    raw = _kline(
        sandbox, category="linear", symbol="SOLUSDT", interval="D", start=0, end=1_597_200_000_000
    )
    assert [int(r[0]) // 1000 for r in raw] == [1_597_190_400, 1_597_104_000]  # from listing
    sandbox.configure(listing_ts={"bybit:SOL/USDT:USDT": T0 - 120})
    ex = ccxt.bybit(sandbox.bybit_ccxt_config(market_types=("linear",)))
    assert ex.load_markets()["SOL/USDT:USDT"]["created"] == (T0 - 120) * 1000
    assert _opens(ex.fetch_ohlcv("SOL/USDT:USDT", "1m", since=0), T0) == [-120, -60, 0]


@pytest.mark.parametrize(
    ("delay", "newest"),
    [
        (5, {"bybit ETHUSDT": -60, "bybit BTCUSDT": -60, "binance ETHUSDT": -60}),
        ({"bybit:ETH/USDT": 45}, {"bybit ETHUSDT": -120, "bybit BTCUSDT": 0, "binance ETHUSDT": 0}),
        (
            {"*": 45, "bybit:ETH/USDT": 0},
            {"bybit ETHUSDT": 0, "bybit BTCUSDT": -120, "binance ETHUSDT": -120},
        ),
    ],
)
def test_publish_delay_by_number_or_per_market(
    sandbox: SandboxExchange, delay: Any, newest: dict[str, int]
) -> None:
    sandbox.configure(publish_delay_s=delay)
    got = {}
    for symbol in ("ETHUSDT", "BTCUSDT"):
        rows = _kline(sandbox, category="spot", symbol=symbol, interval="1", limit=2)
        got[f"bybit {symbol}"] = int(rows[0][0]) // 1000 - T0
    spot = http_get(f"{sandbox.url}/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=2")[2]
    got["binance ETHUSDT"] = spot[-1][0] // 1000 - T0
    assert got == newest
    assert sandbox.state.config.publish_delay_for("bybit:BTCUSDT:USDT") == (
        5.0 if delay == 5 else delay.get("*", 0.0)
    )


# --------------------------------------------------------------------------- limits, faults
def test_ip_limit_403_then_ban_then_recovery(
    sandbox: SandboxExchange, bybit: ccxt.bybit, wall: FakeWall
) -> None:
    sandbox.configure(bybit_requests_per_5s=3, ban_seconds=7)
    sandbox.reset()
    assert wall() % 5 == 0  # at the start of a 5 s window
    for left in ("2", "1", "0"):
        status, headers, body = _get(sandbox, "time")
        assert status == 200 and body["result"]["timeSecond"] == str(int(NOW))
        assert (headers["X-Bapi-Limit"], headers["X-Bapi-Limit-Status"]) == ("3", left)
        assert headers["X-Bapi-Limit-Reset-Timestamp"] == str(int(wall() * 1000))
        wall.advance(1)
    status, headers, body = _get(sandbox, "kline", symbol="BTCUSDT", interval="1")
    assert (status, body) == (403, "access too frequent")
    assert "Retry-After" not in headers and "X-Bapi-Limit" not in headers
    with pytest.raises(ccxt.RateLimitExceeded):
        bybit.fetch_ohlcv(SPOT, "1m", limit=1)
    assert http_get(f"{sandbox.url}/api/v3/ping")[0] == 200  # Binance is another venue
    wall.advance(6.9)  # 6.9 s into the 7 s ban
    assert _get(sandbox, "time")[0] == 403
    wall.advance(0.2)
    status, headers, _ = _get(sandbox, "time")  # the ban is over: a fresh window
    assert status == 200 and headers["X-Bapi-Limit-Status"] == "2"
    stats = sandbox.stats()
    assert stats["bybit"] == {
        "sent_403": 3,
        "requests_in_ban": 2,
        "sent_429": 0,
        "window_requests": 1,
        "ban_remaining_s": 0.0,
    }
    assert stats["by_status"] == {"200": 5, "403": 3}
    assert (stats["sent_429"], stats["sent_418"], stats["current_weight"]) == (0, 0, 1)
    # windows roll every 5 s: 3 a window never trips the limit
    wall.advance(5 - wall() % 5)
    for _ in range(3):
        for _ in range(3):
            assert _get(sandbox, "time")[0] == 200
        wall.advance(5)
    sandbox.configure(bybit_requests_per_5s=None)  # unlimited: no rate headers
    status, headers, _ = _get(sandbox, "time")
    assert status == 200 and not any(h.startswith("X-Bapi") for h in headers)


def test_force_429_answers_10006_and_needs_no_penalty(
    sandbox: SandboxExchange, bybit: ccxt.bybit, wall: FakeWall
) -> None:
    sandbox.configure(force_429=2, force_429_retry_after=3, bybit_requests_per_5s=50)
    assert _get(sandbox, "time")[0] == 200  # only kline requests are forced
    status, headers, body = _get(sandbox, "kline", category="spot", symbol="BTCUSDT", interval="1")
    assert status == 429 and (body["retCode"], body["retMsg"]) == (10006, "Too many visits!")
    assert headers["X-Bapi-Limit-Status"] == "0" and headers["X-Bapi-Limit"] == "50"
    assert headers["X-Bapi-Limit-Reset-Timestamp"] == str(int((wall() + 3) * 1000))
    with pytest.raises(ccxt.RateLimitExceeded):
        bybit.fetch_ohlcv(SPOT, "1m", limit=1)
    assert len(bybit.fetch_ohlcv(SPOT, "1m", limit=1)) == 1  # at once: no penalty window
    stats = sandbox.stats()
    assert (stats["bybit"]["sent_429"], stats["force_429_remaining"], stats["sent_429"]) == (
        2,
        0,
        0,
    )
    assert [(e["status"], e["reason"]) for e in stats["kline_log"]] == [
        (429, "forced"),
        (429, "forced"),
        (200, ""),
    ]


def test_down_5xx_and_latency(sandbox: SandboxExchange, bybit: ccxt.bybit) -> None:
    sandbox.configure(error_rate_5xx=0.3, error_seed=7)

    def statuses(url: str) -> list[int]:
        sandbox.reset()  # also re-seeds the fault RNG
        return [http_get(url)[0] for _ in range(40)]

    got = statuses(f"{sandbox.url}/v5/market/time")
    assert got == statuses(f"{sandbox.url}/api/v3/ping")  # one fault stream for both venues
    assert set(got) == {200, 500, 503} and sum(s != 200 for s in got) == 15
    assert sandbox.stats()["injected_5xx"] == 15
    sandbox.configure(error_rate_5xx=1.0)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        bybit.fetch_ohlcv(LINEAR, "1m", limit=1)
    sandbox.configure(error_rate_5xx=0.0, down=True)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        bybit.fetch_time()
    status, headers, body = _get(sandbox, "instruments-info", category="spot")
    assert (status, body) == (503, "Service Unavailable") and "Date" in headers
    sandbox.configure(down=False, latency_ms=150)
    started = time.perf_counter()
    assert bybit.fetch_time() == int(NOW * 1000)
    assert time.perf_counter() - started >= 0.15


def test_error_codes_and_stats_names(sandbox: SandboxExchange, bybit: ccxt.bybit) -> None:
    sandbox.reset()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("kline", {"category": "spot", "interval": "1"}, "params error: symbol is required"),
        (
            "kline",
            {"category": "spot", "symbol": "NOPEUSDT", "interval": "1"},
            "Not supported symbols",
        ),
        (
            "kline",
            {"category": "linear", "symbol": "ETHBTC", "interval": "1"},
            "Not supported symbols",
        ),
        (
            "kline",
            {"category": "inverse", "symbol": "BTCUSD", "interval": "1"},
            "Not supported symbols",
        ),
        (
            "kline",
            {"category": "spot", "symbol": "btcusdt", "interval": "1"},
            "Not supported symbols",
        ),
        (
            "kline",
            {"category": "spot", "symbol": "BTCUSDT", "interval": "M"},
            "params error: invalid interval",
        ),
        (
            "kline",
            {"category": "spot", "symbol": "BTCUSDT", "interval": "1m"},
            "params error: invalid interval",
        ),
        (
            "kline",
            {"symbol": "BTCUSDT", "interval": "1", "start": 5, "end": 1},
            "params error: start must not be greater than end",
        ),
        (
            "kline",
            {"symbol": "BTCUSDT", "interval": "1", "limit": 0},
            "params error: limit is invalid",
        ),
        (
            "kline",
            {"symbol": "BTCUSDT", "interval": "1", "start": "x"},
            "params error: start is invalid",
        ),
        ("instruments-info", {}, "params error: category is invalid"),
        (
            "instruments-info",
            {"category": "linear", "cursor": "zzz"},
            "params error: cursor is invalid",
        ),
        (
            "instruments-info",
            {"category": "linear", "limit": 1001},
            "params error: limit must be in [1, 1000]",
        ),
        (
            "instruments-info",
            {"category": "spot", "status": "Open"},
            "params error: status is invalid",
        ),
    ]
    for name, params, msg in cases:
        status, _, body = _get(sandbox, name, **params)
        assert status == 200 and (body["retCode"], body["retMsg"]) == (10001, msg), (name, params)
        assert body["result"] == {} and body["time"] == int(NOW * 1000)
    assert _result(sandbox, "instruments-info", category="inverse")["list"] == []
    status, _, body = _get(sandbox, "tickers", category="spot")
    assert (status, body) == (404, "404 page not found")
    # through ccxt: 10001 is BadRequest, "Not supported symbols" BadSymbol
    with pytest.raises(ccxt.BadRequest):
        bybit.fetch_ohlcv(SPOT, "1M", limit=1)
    sandbox.configure(extra_symbols=["DOGE/USDT"])
    ex = ccxt.bybit(sandbox.bybit_ccxt_config(market_types=BOTH))
    ex.load_markets()
    sandbox.configure(extra_symbols=[])
    with pytest.raises(ccxt.BadSymbol):
        ex.fetch_ohlcv("DOGE/USDT:USDT", "1m", limit=1)
    stats = sandbox.stats()
    assert stats["by_endpoint"] == {
        "bybit/kline": {"requests": 12, "weight": 0},
        "bybit/instruments-info": {"requests": 10, "weight": 0},
        "bybit/other": {"requests": 1, "weight": 0},
    }
    assert stats["requests_total"] == 23 and stats["by_status"] == {"200": 22, "404": 1}
    assert stats["kline_rows_served"] == 0 and len(stats["kline_log"]) == 12
    assert stats["max_weight_per_minute"] == 0  # nothing charged to the Binance budget


def test_knobs_are_validated(sandbox: SandboxExchange) -> None:
    admin = SandboxAdmin(sandbox.url)
    assert admin.configure(bybit_requests_per_5s="600")["bybit_requests_per_5s"] == 600
    delay = {"*": 2, "bybit:BTC/USDT": 30.5}
    assert admin.configure(publish_delay_s=delay)["publish_delay_s"] == {
        "*": 2.0,
        "bybit:BTC/USDT": 30.5,
    }
    bad: list[tuple[str, Any, str]] = [
        ("bybit_requests_per_5s", 0, ">= 1 or null"),
        ("bybit_requests_per_5s", "lots", "must be a number"),
        ("bybit_requests_per_5s", True, "must be a number"),
        ("publish_delay_s", {"bybit:BTC/USDT": -1}, "publish_delay_s['bybit:BTC/USDT']"),
        ("publish_delay_s", {"*": "soon"}, "must be a number"),
        ("publish_delay_s", 86_400, "under a day"),
        (
            "corruptions",
            [{"symbol": "bybit:BTC/USDT", "ts": T0, "kind": "nan"}],
            "Binance markets only",
        ),
        ("funding_intervals", {"bybit:BTC/USDT:USDT": [[T0, 4]]}, "Binance perpetual"),
    ]
    for knob, value, says in bad:
        with pytest.raises(ValueError, match="400") as info:
            admin.configure(**{knob: value})
        assert says in str(info.value), (knob, value, str(info.value))
    config = admin.config()
    assert config["bybit_requests_per_5s"] == 600 and config["publish_delay_s"] == delay
    with pytest.raises(ValueError, match="bybit_requests_per_5s"):
        SandboxState(SandboxConfig(bybit_requests_per_5s=0))
    cfg = SandboxConfig(bybit_requests_per_5s=5, publish_delay_s={"bybit:ETH/USDT": 3.0})
    assert SandboxConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KeyError):
        cfg.market_for("bybit:ETH/BTC:BTC")
    with pytest.raises(ValueError, match="category"):
        cfg.bybit_markets("inverse")
    assert cfg.market_for("Bybit:eth/usdt").key == "bybit:ETHUSDT"
    assert cfg.market_for("bybit:ETH/USDT:USDT").kind == "bybit-linear"


# --------------------------------------------------------------------------- async, subprocess
def test_async_ccxt_loads_and_fetches_both_categories(sandbox: SandboxExchange) -> None:
    start, end = DAY - 86_400, DAY - H

    async def scenario() -> tuple[Any, ...]:
        ex = ccxt_async.bybit(bybit_ccxt_config(sandbox.url, market_types=BOTH))
        try:
            await ex.load_markets()
            until = {"until": end * 1000}
            return await asyncio.gather(
                ex.fetch_time(),
                ex.fetch_ohlcv("ETH/USDT", "5m", since=start * 1000, limit=1000, params=until),
                ex.fetch_ohlcv(
                    "SOL/USDT:USDT", "15m", since=start * 1000, limit=1000, params=until
                ),
                ex.fetch_ohlcv(LINEAR, "1h", since=start * 1000, limit=1000, params=until),
            )
        finally:
            await ex.close()

    now_ms, eth, sol, btc = asyncio.run(scenario())
    assert now_ms == int(NOW * 1000)
    _assert_bars(eth, expected_bars("ETH/USDT", 300, start, end + 1, venue="bybit"))
    _assert_bars(sol, expected_bars("SOL/USDT:USDT", 900, start, end + 1, venue="bybit"))
    _assert_bars(btc, expected_bars(LINEAR, H, start, end + 1, venue="bybit"))
    assert (len(eth), len(sol), len(btc)) == (277, 93, 24)


@pytest.fixture
def bybit_process() -> Iterator[str]:
    proc, url = spawn_sandbox_process(
        {"frozen_now_s": NOW, "gaps": {"bybit:BTC/USDT": [[T0 - 120, T0 - 60]]}}
    )
    try:
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_subprocess_mode_serves_bybit(bybit_process: str) -> None:
    ex = ccxt.bybit(bybit_ccxt_config(bybit_process, market_types=BOTH))
    assert ex.load_markets()[LINEAR]["linear"]
    rows = ex.fetch_ohlcv(SPOT, "1m", since=(T0 - 180) * 1000, params={"until": (T0 - 60) * 1000})
    assert _opens(rows, T0) == [-180, -60]
    cfg = SandboxConfig(gaps={"bybit:BTC/USDT": [[T0 - 120, T0 - 60]]})
    _assert_bars(rows, expected_bars(SPOT, MIN, T0 - 180, T0, cfg, venue="bybit"))
    by_endpoint = SandboxAdmin(bybit_process).stats()["by_endpoint"]
    assert by_endpoint == {
        "bybit/instruments-info": {"requests": 4, "weight": 0},
        "bybit/kline": {"requests": 1, "weight": 0},
    }
