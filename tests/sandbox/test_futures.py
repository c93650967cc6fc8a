"""USDⓈ-M perpetuals under /fapi/v1, exercised through REAL ccxt (never mocked) and plain HTTP."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import numpy as np
import pytest

from sandbox import (
    PERP_LISTING_FLOOR_TS,
    SandboxAdmin,
    SandboxConfig,
    SandboxExchange,
    SandboxState,
    ccxt_config,
    expected_bars,
    expected_funding,
    spawn_sandbox_process,
)

from .conftest import NOW, T0, FakeWall, http_get

BTC = "BTC/USDT:USDT"
BOTH = ("spot", "linear")
H = 3600
DAY = 1_699_920_000  # 2023-11-14 00:00 UTC, the day of T0 (22:13 UTC)
COLS = ("open", "high", "low", "close", "volume")


@pytest.fixture
def perp(sandbox: SandboxExchange) -> ccxt.binance:
    """Real (sync) ccxt binance loading spot and USDⓈ-M perpetual markets."""
    ex = ccxt.binance(sandbox.ccxt_config(market_types=BOTH))
    ex.load_markets()
    return ex


def _url(sx: SandboxExchange, endpoint: str, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{sx.url}/fapi/v1/{endpoint}?{query}"


def _get(sx: SandboxExchange, endpoint: str, **params: Any) -> Any:
    status, _, body = http_get(_url(sx, endpoint, **params))
    assert status == 200, body
    return body


def _assert_bars(rows: list[list[Any]], exp: dict[str, Any]) -> None:
    got = np.array(rows, dtype=np.float64).reshape(-1, 6)
    assert got[:, 0].tolist() == (exp["ts"] * 1000).tolist()
    for i, col in enumerate(COLS, start=1):
        assert np.array_equal(got[:, i], exp[col]), col  # bit-identical floats


def _funding(rows: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    return [(r["timestamp"], r["fundingRate"], float(r["info"]["markPrice"])) for r in rows]


# --------------------------------------------------------------------------- markets
def test_perpetual_markets_parse_as_linear_swaps(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    swaps = {s for s, m in perp.markets.items() if m["swap"]}
    assert swaps == {"BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "BNB/USDT:USDT"}
    assert "ETH/BTC" in perp.markets and "BTC/USDT" in perp.markets  # spot still there
    btc = perp.markets[BTC]
    assert (btc["type"], btc["linear"], btc["inverse"], btc["contract"]) == (
        "swap",
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
    assert btc["precision"]["price"] == 0.01 and btc["precision"]["amount"] == 1e-05
    assert btc["limits"]["cost"]["min"] == 5.0
    assert btc["created"] == PERP_LISTING_FLOOR_TS * 1000 == 1_567_900_800_000  # 2019-09-08
    assert perp.markets["SOL/USDT:USDT"]["created"] == 1_597_125_600_000  # spot listed later
    info = _get(sandbox, "exchangeInfo")
    assert info["futuresType"] == "U_MARGINED"
    row = info["symbols"][0]
    assert row["contractType"] == "PERPETUAL" and row["deliveryDate"] == 4_133_404_800_000
    assert (row["pricePrecision"], row["quantityPrecision"], row["marginAsset"]) == (2, 5, "USDT")
    # one budget for both APIs: both documents publish the same REQUEST_WEIGHT limit
    sandbox.configure(weight_limit_per_minute=1234)
    spot = http_get(f"{sandbox.url}/api/v3/exchangeInfo")[2]
    for doc in (spot, _get(sandbox, "exchangeInfo")):
        weight = [r for r in doc["rateLimits"] if r["rateLimitType"] == "REQUEST_WEIGHT"]
        assert weight == [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 1234,
            }
        ]
    # configured spot symbols quoted in USDT get a perpetual; listing_ts keys it separately
    sandbox.configure(
        extra_symbols=["DOGE/USDT", "XYZ/BTC"], listing_ts={"DOGE/USDT:USDT": T0 - 600}
    )
    ex = ccxt.binance(sandbox.ccxt_config(market_types=("linear",)))
    markets = ex.load_markets()
    assert set(markets) == swaps | {"DOGE/USDT:USDT"}
    assert markets["DOGE/USDT:USDT"]["created"] == (T0 - 600) * 1000
    assert ex.fetch_ohlcv("DOGE/USDT:USDT", "1m", since=0)[0][0] == (T0 - 600) * 1000
    with pytest.raises(ValueError, match="market_types"):
        ccxt_config(sandbox.url, market_types=("inverse",))
    with pytest.raises(ValueError, match="extra_symbols"):
        sandbox.configure(extra_symbols=["DOGE/USDT:USDT"])


def test_spot_is_unchanged(sandbox: SandboxExchange, exchange: ccxt.binance) -> None:
    assert ccxt_config("http://x") == {
        "enableRateLimit": False,
        "timeout": 10_000,
        "urls": {"api": {"public": "http://x/api/v3"}},
        "options": {"fetchMarkets": {"types": ["spot"]}},
    }
    assert not any(m["swap"] for m in exchange.markets.values())
    rows = exchange.fetch_ohlcv("BTC/USDT", "1m", since=(T0 - 120) * 1000, limit=2)
    assert rows == [  # pinned: the spot data every other test relies on
        [(T0 - 120) * 1000, 38345.17, 38369.64, 38336.95, 38369.57, 9.46214],
        [(T0 - 60) * 1000, 38369.57, 38412.75, 38366.16, 38395.46, 6.52579],
    ]
    assert sandbox.stats()["kline_log"][-1]["endpoint"] == "klines"


# --------------------------------------------------------------------------- klines
def test_perpetual_ohlcv_equals_oracle_and_differs_from_spot(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    start = T0 - 3 * H
    rows = perp.fetch_ohlcv(BTC, "1m", since=start * 1000, limit=180)
    _assert_bars(rows, expected_bars(BTC, 60, start, T0))
    assert rows[-2:] == [  # pinned
        [(T0 - 120) * 1000, 38389.33, 38398.08, 38357.4, 38371.92, 18.52111],
        [(T0 - 60) * 1000, 38371.92, 38380.68, 38323.77, 38339.09, 7.13456],
    ]
    spot = perp.fetch_ohlcv("BTC/USDT", "1m", since=start * 1000, limit=180)
    _assert_bars(spot, expected_bars("BTC/USDT", 60, start, T0))
    assert all(a[1] != b[1] for a, b in zip(rows, spot, strict=True))
    assert all(abs(a[4] / b[4] - 1) < 0.01 for a, b in zip(rows, spot, strict=True))  # tracks
    hours = perp.fetch_ohlcv(BTC, "1h", since=(DAY - 24 * H) * 1000, limit=24)
    _assert_bars(hours, expected_bars(BTC, H, DAY - 24 * H, DAY))
    latest = _get(sandbox, "klines", symbol="BTCUSDT", interval="1m")
    assert len(latest) == 500 and latest[-1][0] == T0 * 1000  # the forming bar last
    page = _get(
        sandbox, "klines", symbol="BTCUSDT", interval="1m", startTime=0, limit=5000
    )  # fapi pages hold up to 1500 bars
    assert len(page) == 1500 and page[0][0] == PERP_LISTING_FLOOR_TS * 1000
    with pytest.raises(ccxt.BadRequest):  # no 1s klines on fapi
        perp.fetch_ohlcv(BTC, "1s", limit=5)
    log = [(e["endpoint"], e["status"]) for e in sandbox.stats()["kline_log"]]
    assert log == [("fapi/klines", 200), ("klines", 200)] + [("fapi/klines", 200)] * 3 + [
        ("fapi/klines", 400)
    ]


def test_mark_klines_equal_oracle_with_zero_volume(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    start = T0 - 2 * H
    rows = perp.fetch_mark_ohlcv(BTC, "1m", since=start * 1000, limit=120)
    exp = expected_bars(BTC, 60, start, T0, price="mark")
    _assert_bars(rows, exp)
    assert all(r[5] == 0.0 for r in rows) and not exp["volume"].any()
    assert rows[-1] == [(T0 - 60) * 1000, 38411.68, 38475.39, 38289.05, 38316.15, 0.0]  # pinned
    trade = expected_bars(BTC, 60, start, T0)
    assert not np.array_equal(trade["open"], exp["open"])
    assert np.all(np.abs(trade["open"] / exp["open"] - 1) < 0.01)
    raw = _get(sandbox, "markPriceKlines", symbol="BTCUSDT", interval="1m", limit=2)
    closed, forming = raw
    assert closed[5:] == ["0", T0 * 1000 - 1, "0", 60, "0", "0", "0"]
    assert forming[0] == T0 * 1000 and forming[8] == 31  # 1 s samples so far (NOW = T0 + 30.5)
    assert isinstance(closed[1], str) and closed[1].count(".") == 1
    assert sandbox.stats()["kline_log"][-1]["endpoint"] == "fapi/markPriceKlines"
    with pytest.raises(ValueError, match="perpetual"):
        expected_bars("BTC/USDT", 60, start, T0, price="mark")
    with pytest.raises(KeyError):
        expected_bars("ETH/BTC:BTC", 60, start, T0)


# --------------------------------------------------------------------------- funding
def test_funding_history_equals_oracle_and_paginates(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    since = (DAY - 10 * 86_400) * 1000
    got = _funding(perp.fetch_funding_rate_history(BTC, since=since, limit=1000))
    exp = expected_funding(BTC, since // 1000, T0 + 86_400, now_s=NOW)
    assert got == exp and len(got) == 33  # 10 days of 3, then 00:00, 08:00, 16:00 today
    assert [t for t, _, _ in got] == [since + i * 8 * H * 1000 for i in range(33)]
    assert got[-3:] == [  # pinned
        (DAY * 1000, 0.0001, 39025.22),
        ((DAY + 8 * H) * 1000, 0.00022726, 38577.11),
        ((DAY + 16 * H) * 1000, 0.0001, 38244.8),
    ]
    # the mark price is the mark 1m bar's open at the funding instant
    mark = expected_bars(BTC, 60, DAY + 16 * H, DAY + 16 * H + 60, price="mark")
    assert got[-1][2] == mark["open"][0]
    # pages of 5 with startTime: the same list, in order, none twice
    pages: list[tuple[int, float, float]] = []
    cursor = since
    while True:
        page = _funding(perp.fetch_funding_rate_history(BTC, since=cursor, limit=5))
        pages += page
        if len(page) < 5:
            break
        cursor = page[-1][0] + 1
    assert pages == got
    # raw rows: Binance's shape; the default is the most recent 100; endTime alone the
    # last `limit` at or before it
    raw = _get(sandbox, "fundingRate", symbol="BTCUSDT")
    assert len(raw) == 100 and raw[-1]["fundingTime"] == (DAY + 16 * H) * 1000
    assert raw[-1] == {
        "symbol": "BTCUSDT",
        "fundingTime": (DAY + 16 * H) * 1000,
        "fundingRate": "0.00010000",
        "markPrice": "38244.80000000",
    }
    tail = _get(sandbox, "fundingRate", symbol="BTCUSDT", endTime=DAY * 1000, limit=2)
    assert [r["fundingTime"] for r in tail] == [(DAY - 8 * H) * 1000, DAY * 1000]
    future = _get(sandbox, "fundingRate", symbol="BTCUSDT", startTime=DAY * 1000, endTime=10**13)
    assert [r["fundingTime"] for r in future] == [(DAY + h * H) * 1000 for h in (0, 8, 16)]
    history = expected_funding(BTC, 0, T0, now_s=NOW)
    assert history[0][0] == PERP_LISTING_FLOOR_TS * 1000 and len(history) == 4587
    rates = [r for _, r, _ in history]
    assert sum(r < 0 for r in rates) == 652 and sum(r == 0.0001 for r in rates) == 2819
    assert [float(r["fundingRate"]) for r in raw] == rates[-100:]
    assert any(r["fundingRate"].startswith("-") for r in raw)
    # weight 1 each: the first fetch, 7 pages, the latest 100, the endTime tail, the future
    assert sandbox.stats()["by_endpoint"]["fapi/fundingRate"] == {"requests": 11, "weight": 11}


def test_funding_respects_listing_gaps_and_now(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    listing = T0 - 2 * 86_400 + 1  # 2023-11-12 22:13:01
    sandbox.configure(
        listing_ts={BTC: listing},
        gaps={
            BTC: [[DAY + 16 * H - 1800, DAY + 16 * H + 1800]],  # an outage of the perpetual
            "BTC/USDT": [[DAY + 8 * H - 60, DAY + 8 * H + 60]],  # spot only
            "*": [[DAY, DAY + 1]],  # every market
        },
    )
    cfg = sandbox.state.config
    got = _funding(perp.fetch_funding_rate_history(BTC, since=0))
    # from the first 8 h slot after listing; 00:00 ("*") and 16:00 (the perp's) gapped
    assert [t // 1000 - DAY for t, _, _ in got] == [-24 * H, -16 * H, -8 * H, 8 * H]
    assert got == expected_funding(BTC, 0, T0 + 86_400, cfg, now_s=NOW)
    assert perp.fetch_ohlcv(BTC, "1h", since=0, limit=2)[0][0] == (listing // H * H) * 1000
    assert perp.fetch_ohlcv("BTC/USDT", "1d", since=0, limit=1)[0][0] == 1_502_928_000_000
    # the perpetual's gap removes its trade and mark bars; the spot gap does not
    for fetch in (perp.fetch_ohlcv, perp.fetch_mark_ohlcv):
        rows = fetch(BTC, "1m", since=(DAY + 16 * H - 1860) * 1000, limit=3)
        opens = [r[0] // 1000 - DAY - 16 * H for r in rows]
        assert opens == [-1860, 1800, 1860]
        rows = fetch(BTC, "1m", since=(DAY + 8 * H - 60) * 1000, limit=2)
        assert [r[0] // 1000 - DAY - 8 * H for r in rows] == [-60, 0]
    spot = perp.fetch_ohlcv("BTC/USDT", "1m", since=(DAY + 8 * H - 120) * 1000, limit=2)
    assert [r[0] // 1000 - DAY - 8 * H for r in spot] == [-120, 60]
    # a funding appears once the clock reaches it
    sandbox.set_clock(now=DAY + 24 * H - 0.001)
    assert _get(sandbox, "fundingRate", symbol="BTCUSDT")[-1]["fundingTime"] == (DAY + 8 * H) * 1000
    sandbox.set_clock(now=DAY + 24 * H)
    assert (
        _get(sandbox, "fundingRate", symbol="BTCUSDT")[-1]["fundingTime"] == (DAY + 24 * H) * 1000
    )


def test_funding_interval_changes_from_a_time_on(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    four, one = DAY + 5 * H + 17, DAY + 17 * H + 5  # 8 h, then 4 h from 05:00:17, 1 h from 17:00:05
    sandbox.configure(funding_intervals={BTC: [[four, 4], [one, 1]]})
    cfg = sandbox.state.config
    since = (DAY - 8 * H) * 1000
    got = _funding(perp.fetch_funding_rate_history(BTC, since=since))
    hours = [8, 12, 16, 18, 19, 20, 21, 22]  # 16:00 UTC on the day before is -8 h
    assert [t // 1000 for t, _, _ in got] == [DAY - 8 * H, DAY] + [DAY + h * H for h in hours]
    assert got == expected_funding(BTC, since // 1000, T0 + H, cfg, now_s=NOW)
    eth = perp.fetch_funding_rate_history("ETH/USDT:USDT", since=since)
    assert [r["timestamp"] // 1000 - DAY for r in eth] == [-8 * H, 0, 8 * H, 16 * H]
    # "*" sets every perpetual without its own entry; a change at a funding time of both
    # intervals funds once there
    sandbox.configure(funding_intervals={"*": [[DAY + 16 * H, 1]], BTC: [[DAY, 8]]})
    eth = perp.fetch_funding_rate_history("ETH/USDT:USDT", since=(DAY + 8 * H) * 1000)
    assert [r["timestamp"] // 1000 - DAY for r in eth] == [h * H for h in (8, *range(16, 23))]
    btc = perp.fetch_funding_rate_history(BTC, since=(DAY + 16 * H) * 1000)
    assert [r["timestamp"] // 1000 - DAY for r in btc] == [16 * H]


def test_funding_intervals_knob_is_validated(sandbox: SandboxExchange) -> None:
    admin = SandboxAdmin(sandbox.url)
    good = {BTC: [[T0, 4], [T0 + 86_400, 1]]}
    assert admin.configure(funding_intervals=good)["funding_intervals"] == good
    bad: list[tuple[Any, str]] = [
        ([[T0, 4]], "must be an object"),
        ({"BTC/USDT": [[T0, 4]]}, "perpetual"),
        ({BTC: []}, "non-empty"),
        ({BTC: [[T0, 5]]}, "5 h is not one of"),
        ({BTC: [[T0, 8], [T0, 4]]}, "strictly increasing"),
        ({BTC: [[T0 * 1000, 8]]}, "SECONDS"),
        ({BTC: [[T0]]}, "two integers"),
        ({BTC: [["soon", 8]]}, "two integers"),
        ({BTC: [[T0, True]]}, "two integers"),
        ({BTC: {"from": T0}}, "non-empty list"),
    ]
    for value, says in bad:
        with pytest.raises(ValueError, match="400") as info:
            admin.configure(funding_intervals=value)
        assert "funding_intervals" in str(info.value) and says in str(info.value), value
    assert admin.config()["funding_intervals"] == good  # a refused update changes nothing
    with pytest.raises(ValueError, match=r"funding_intervals\['\*'\]"):
        SandboxState(SandboxConfig(funding_intervals={"*": [[0, 7]]}))
    cfg = SandboxConfig(funding_intervals=good)
    assert SandboxConfig.from_dict(cfg.to_dict()).funding_intervals == good
    with pytest.raises(ValueError, match="perpetual"):
        expected_funding("BTC/USDT", 0, T0)


# --------------------------------------------------------------------------- data knobs
def test_restatements_and_corruptions_target_the_perpetual_separately(
    sandbox: SandboxExchange, perp: ccxt.binance
) -> None:
    base = DAY + 20 * H
    clean = {
        name: _get(sandbox, name, symbol="BTCUSDT", interval="1m", startTime=base * 1000, limit=5)
        for name in ("klines", "markPriceKlines")
    }
    spot_url = f"{sandbox.url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={base * 1000}"
    spot_clean = http_get(spot_url + "&limit=5")[2]
    sandbox.configure(
        corruptions=[
            {"symbol": BTC, "ts": base + 60, "kind": "nan", "interval": "1m"},
            {"symbol": "BTC/USDT", "ts": base + 120, "kind": "zero_bar"},
        ]
    )
    page = _get(sandbox, "klines", symbol="BTCUSDT", interval="1m", startTime=base * 1000, limit=5)
    assert page[1][1] == "NaN" and page[:1] + page[2:] == clean["klines"][:1] + clean["klines"][2:]
    spot = http_get(spot_url + "&limit=5")[2]
    assert spot[2][1:6] == ["0.00000000"] * 5 and spot[1] == spot_clean[1]
    mark = _get(
        sandbox, "markPriceKlines", symbol="BTCUSDT", interval="1m", startTime=base * 1000, limit=5
    )
    assert mark == clean["markPriceKlines"]  # corruptions touch trade klines only
    rows = perp.fetch_ohlcv(BTC, "1m", since=base * 1000, limit=3)
    assert math.isnan(rows[1][1])
    stats = sandbox.stats()
    assert stats["kline_log"][-1]["corrupted"] == 1 and stats["corrupted_rows_served"] == 3
    sandbox.configure(corruptions=[{"symbol": "*", "ts": base, "kind": "inf"}])
    assert http_get(spot_url + "&limit=1")[2][0][1] == "Infinity"
    assert perp.fetch_ohlcv(BTC, "1m", since=base * 1000, limit=1)[0][1] == math.inf
    sandbox.configure(corruptions=[])

    window = [{"start": base + 60, "end": base + 180, "version": 1}]
    sandbox.configure(restatements={BTC: window})
    for name in ("klines", "markPriceKlines"):
        now = _get(sandbox, name, symbol="BTCUSDT", interval="1m", startTime=base * 1000, limit=5)
        assert [a != b for a, b in zip(now, clean[name], strict=True)] == [0, 1, 1, 0, 0], name
    assert http_get(spot_url + "&limit=5")[2] == spot_clean
    cfg = sandbox.state.config
    _assert_bars(
        perp.fetch_ohlcv(BTC, "1m", since=base * 1000, limit=5),
        expected_bars(BTC, 60, base, base + 300, cfg),
    )
    _assert_bars(
        perp.fetch_mark_ohlcv(BTC, "1m", since=base * 1000, limit=5),
        expected_bars(BTC, 60, base, base + 300, cfg, price="mark"),
    )
    sandbox.configure(restatements={"BTC/USDT": window})  # spot only: the perp is as before
    page = _get(sandbox, "klines", symbol="BTCUSDT", interval="1m", startTime=base * 1000, limit=5)
    assert page == clean["klines"]


@pytest.mark.parametrize("delay_s", [5, 45])
def test_publish_delay_applies_to_fapi_klines(sandbox: SandboxExchange, delay_s: int) -> None:
    sandbox.configure(publish_delay_s=delay_s)
    want = T0 - 60 if delay_s <= 30.5 else T0 - 120  # T0 - 60 closed 30.5 s before NOW
    for name in ("klines", "markPriceKlines"):
        rows = _get(sandbox, name, symbol="ETHUSDT", interval="1m", limit=3)
        assert rows[-1][0] == want * 1000, name


# --------------------------------------------------------------------------- rate limits, faults
def test_fapi_weights_by_limit(sandbox: SandboxExchange) -> None:
    sandbox.reset()
    cases = [(None, 5), (1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10)]
    cases += [(1500, 10), (5000, 10)]
    used = 0
    for limit, weight in cases:
        for name in ("klines", "markPriceKlines"):
            params = {"symbol": "SOLUSDT", "interval": "1h"}
            if limit is not None:
                params["limit"] = str(limit)
            status, headers, _ = http_get(_url(sandbox, name, **params))
            used += weight
            assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == str(used), (name, limit)
            assert "Date" in headers
    for name in ("fundingRate", "exchangeInfo", "ping", "time"):
        status, headers, _ = http_get(_url(sandbox, name, symbol="SOLUSDT"))
        used += 1
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == str(used), name
    stats = sandbox.stats()
    kline_weight = sum(w for _, w in cases)
    assert stats["by_endpoint"] == {
        "fapi/klines": {"requests": len(cases), "weight": kline_weight},
        "fapi/markPriceKlines": {"requests": len(cases), "weight": kline_weight},
        "fapi/fundingRate": {"requests": 1, "weight": 1},
        "fapi/exchangeInfo": {"requests": 1, "weight": 1},
        "fapi/ping": {"requests": 1, "weight": 1},
        "fapi/time": {"requests": 1, "weight": 1},
    }
    assert stats["max_weight_per_minute"] == used
    assert len(stats["kline_log"]) == 2 * len(cases)  # funding is not a kline request
    sandbox.configure(weights={"fapi/klines": 3})  # a flat override, by stats name
    _, headers, _ = http_get(_url(sandbox, "klines", symbol="SOLUSDT", interval="1h", limit=1))
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(used + 3)


def test_one_budget_for_both_apis_429_then_418(
    sandbox: SandboxExchange, perp: ccxt.binance, wall: FakeWall
) -> None:
    sandbox.reset()
    sandbox.configure(weight_limit_per_minute=10, ban_seconds=3)
    spot = f"{sandbox.url}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=2"
    steps = [
        (spot, 2),
        (_url(sandbox, "klines", symbol="BTCUSDT", interval="1m", limit=500), 5),
        (_url(sandbox, "markPriceKlines", symbol="BTCUSDT", interval="1m", limit=99), 1),
        (_url(sandbox, "fundingRate", symbol="BTCUSDT"), 1),
    ]
    used = 0
    for url, weight in steps:
        status, headers, _ = http_get(url)
        used += weight
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == str(used)
    status, headers, body = http_get(_url(sandbox, "klines", symbol="BTCUSDT", interval="1m"))
    assert status == 429 and body["code"] == -1003 and headers["Retry-After"] == "55"
    assert headers["X-MBX-USED-WEIGHT-1M"] == "9"
    wall.advance(0.25)  # past the in-flight grace: a client ignoring Retry-After is banned
    with pytest.raises(ccxt.DDoSProtection):
        perp.fetch_funding_rate_history(BTC, limit=1)
    status, headers, _ = http_get(f"{sandbox.url}/api/v3/time")  # the ban covers both APIs
    assert status == 418 and headers["Retry-After"] == "55"
    stats = sandbox.stats()
    assert (stats["sent_429"], stats["sent_418"], stats["requests_in_penalty"]) == (1, 2, 2)
    assert stats["by_status"] == {"200": 4, "429": 1, "418": 2}
    assert stats["by_endpoint"]["fapi/klines"] == {"requests": 2, "weight": 5}
    wall.advance(56)
    assert http_get(_url(sandbox, "ping"))[0] == 200


def test_force_429_applies_to_fapi_data_requests(sandbox: SandboxExchange, wall: FakeWall) -> None:
    sandbox.configure(force_429=3, force_429_retry_after=2)
    assert http_get(_url(sandbox, "time"))[0] == 200  # only data requests are forced
    for name in ("klines", "markPriceKlines", "fundingRate"):
        status, headers, _ = http_get(_url(sandbox, name, symbol="BTCUSDT", interval="1h"))
        assert status == 429 and headers["Retry-After"] == "2", name
        wall.advance(2)  # a client honouring Retry-After
    assert http_get(_url(sandbox, "klines", symbol="BTCUSDT", interval="1h"))[0] == 200
    stats = sandbox.stats()
    assert (stats["sent_429"], stats["sent_418"], stats["force_429_remaining"]) == (3, 0, 0)
    log = [(e["endpoint"], e["reason"], e["status"]) for e in stats["kline_log"]]
    assert log == [
        ("fapi/klines", "forced", 429),
        ("fapi/markPriceKlines", "forced", 429),
        ("fapi/klines", "", 200),
    ]


def test_5xx_down_and_latency_on_fapi(sandbox: SandboxExchange, perp: ccxt.binance) -> None:
    sandbox.configure(error_rate_5xx=0.3, error_seed=7)

    def statuses(url: str) -> list[int]:
        sandbox.reset()  # also re-seeds the fault RNG
        return [http_get(url)[0] for _ in range(40)]

    fapi = statuses(_url(sandbox, "ping"))
    assert fapi == statuses(f"{sandbox.url}/api/v3/ping")  # one fault stream for both APIs
    assert set(fapi) <= {200, 500, 502, 503} and 4 <= sum(s != 200 for s in fapi) <= 24
    assert sandbox.stats()["injected_5xx"] == sum(s != 200 for s in fapi)
    sandbox.configure(error_rate_5xx=1.0)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        perp.fetch_ohlcv(BTC, "1m", limit=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        perp.fetch_funding_rate_history(BTC, limit=1)
    sandbox.configure(error_rate_5xx=0.0, down=True)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        perp.fetch_mark_ohlcv(BTC, "1m", limit=1)
    status, headers, _ = http_get(_url(sandbox, "time"))
    assert status == 503 and "Date" in headers
    sandbox.configure(down=False, latency_ms=150)
    started = time.perf_counter()
    assert _get(sandbox, "time") == {"serverTime": int(NOW * 1000)}
    assert time.perf_counter() - started >= 0.15


def test_fapi_error_bodies(sandbox: SandboxExchange) -> None:
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("klines", {"symbol": "ETHBTC", "interval": "1m"}, -1121),  # no perpetual
        ("klines", {"symbol": "BTCUSDT", "interval": "1s"}, -1120),
        ("markPriceKlines", {"symbol": "BTCUSDT", "interval": "7m"}, -1120),
        ("klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": 5, "endTime": 1}, -1023),
        ("markPriceKlines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "x"}, -1100),
        ("klines", {"interval": "1m"}, -1102),
        ("fundingRate", {"symbol": "NOPEUSDT"}, -1121),
        ("fundingRate", {}, -1102),
        ("fundingRate", {"symbol": "BTCUSDT", "startTime": 5, "endTime": 1}, -1023),
        ("fundingRate", {"symbol": "BTCUSDT", "limit": 0}, -1130),
    ]
    for name, params, code in cases:
        status, headers, body = http_get(_url(sandbox, name, **params))
        assert status == 400 and body["code"] == code, (name, params, body)
        assert "X-MBX-USED-WEIGHT-1M" in headers
    status, _, body = http_get(_url(sandbox, "premiumIndexKlines"))
    assert status == 404 and body["code"] == -1000
    assert sandbox.stats()["by_endpoint"]["fapi/other"]["requests"] == 1
    assert len(_get(sandbox, "fundingRate", symbol="BTCUSDT", limit=5000)) == 1000  # capped


# --------------------------------------------------------------------------- async, subprocess
def test_async_ccxt_fetches_perpetual_mark_and_funding(sandbox: SandboxExchange) -> None:
    since = (DAY - 86_400) * 1000

    async def scenario() -> tuple[Any, ...]:
        ex = ccxt_async.binance(ccxt_config(sandbox.url, market_types=BOTH))
        try:
            await ex.load_markets()
            return await asyncio.gather(
                ex.fetch_ohlcv(BTC, "5m", since=since, limit=300),
                ex.fetch_mark_ohlcv("ETH/USDT:USDT", "15m", since=since, limit=100),
                ex.fetch_funding_rate_history("SOL/USDT:USDT", since=since, limit=50),
                ex.fetch_ohlcv("SOL/USDT", "1h", since=since, limit=24),
            )
        finally:
            await ex.close()

    trade, mark, funding, spot = asyncio.run(scenario())
    _assert_bars(trade, expected_bars(BTC, 300, since // 1000, since // 1000 + 300 * 300))
    exp_mark = expected_bars("ETH/USDT:USDT", 900, since // 1000, DAY + H, price="mark")
    _assert_bars(mark, exp_mark)
    assert _funding(funding) == expected_funding("SOL/USDT:USDT", since // 1000, T0, now_s=NOW)
    assert len(funding) == 6
    _assert_bars(spot, expected_bars("SOL/USDT", H, since // 1000, DAY))


@pytest.fixture
def fapi_process() -> Iterator[str]:
    proc, url = spawn_sandbox_process(
        {"frozen_now_s": NOW, "funding_intervals": {BTC: [[DAY + 20 * H, 1]]}}
    )
    try:
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_subprocess_mode_serves_fapi(fapi_process: str) -> None:
    ex = ccxt.binance(ccxt_config(fapi_process, market_types=BOTH))
    assert ex.load_markets()[BTC]["linear"]
    cfg = SandboxConfig(funding_intervals={BTC: [[DAY + 20 * H, 1]]})
    got = _funding(ex.fetch_funding_rate_history(BTC, since=DAY * 1000))
    assert got == expected_funding(BTC, DAY, T0, cfg, now_s=NOW) and len(got) == 6
    rows = ex.fetch_mark_ohlcv(BTC, "1m", since=(T0 - 60) * 1000)
    assert rows[0][4] == expected_bars(BTC, 60, T0 - 60, T0, price="mark")["close"][0]
    by_endpoint = SandboxAdmin(fapi_process).stats()["by_endpoint"]
    assert by_endpoint["fapi/exchangeInfo"]["requests"] == 1
    assert by_endpoint["fapi/markPriceKlines"] == {"requests": 1, "weight": 5}
