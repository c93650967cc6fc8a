"""`kline_gaps`: a candle-service outage. Klines are missing exactly as `gaps` removes them
(REST spot and /fapi klines, mark-price klines, Bybit klines, archive zips, the WS kline
stream, `expected_bars`) while trading goes on: aggTrades (and fundings) are those of the
config without the kline gap, so rebuilding bars from a kline gap's trades gives exactly
the bars it hides. Exercised over real HTTP with real ccxt, against an identical sandbox
configured with the same windows as `gaps` (what "removed exactly as `gaps` would" means).
"""

from __future__ import annotations

import io
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import aiohttp
import ccxt
import numpy as np
import pytest

from sandbox import (
    SandboxAdmin,
    SandboxConfig,
    SandboxExchange,
    expected_bars,
    expected_funding,
)
from sandbox.archives import archive_url
from sandbox.trades import bars_from_trades, expected_trades

from .conftest import FakeWall, http_get
from .test_ws import assert_closed_equal, is_kline, klines, read_for, read_until, recv, run
from .test_ws import serve as serve_ws

H = 3600
DAY = 86_400
DAY0 = 1_699_920_000  # 2023-11-14 00:00 UTC
DATE0 = "2023-11-14"
NOW = DAY0 + 2 * DAY + 30.5  # frozen: the DAY0 archive files are published (1 h lag)
COLS = ("ts", "open", "high", "low", "close", "volume")

# windows aligned to nothing (seconds off every minute)
BTC_SHORT = (DAY0 + 4 * H - 213, DAY0 + 4 * H + 177)  # 03:56:27-04:02:57, across 04:00
BTC_LONG = (DAY0 + 10 * H - 7, DAY0 + 11 * H + 5)  # 09:59:53-11:00:05: the 10:00 hour too
ETH_WIN = (DAY0 + 15 * H + 1234, DAY0 + 15 * H + 1545)  # 15:20:34-15:25:45
PERP_WIN = (DAY0 + 8 * H - 100, DAY0 + 8 * H + 200)  # 07:58:20-08:03:20, the 08:00 funding
BYBIT_WIN = (DAY0 + 20 * H + 31, DAY0 + 20 * H + 281)  # 20:00:31-20:04:41
KLINE_GAPS: dict[str, list[Any]] = {
    "BTC/USDT": [list(BTC_SHORT), {"start": BTC_LONG[0], "end": BTC_LONG[1]}],
    "ETHUSDT": [list(ETH_WIN)],
    "BTC/USDT:USDT": [list(PERP_WIN)],
    "bybit:BTC/USDT": [list(BYBIT_WIN)],
}
KG = SandboxConfig(frozen_now_s=NOW, kline_gaps=KLINE_GAPS)  # the candle-service outage
AS_GAPS = SandboxConfig(frozen_now_s=NOW, gaps=KLINE_GAPS)  # the same windows as outages
PLAIN = SandboxConfig(frozen_now_s=NOW)


def _minutes(start: int, end: int) -> list[int]:
    """Open times of the 1m bars entirely inside [start, end)."""
    return list(range(-(-start // 60) * 60, (end - 60) // 60 * 60 + 1, 60))


# hand-derived: which bars each interval loses (a bar goes only if entirely inside)
BTC_1M_OUT = _minutes(*BTC_SHORT) + _minutes(*BTC_LONG)
BTC_3M_OUT = [DAY0 + 4 * H - 180, *range(DAY0 + 10 * H, DAY0 + 11 * H, 180)]
BTC_1H_OUT = [DAY0 + 10 * H]


def _assert_bars_equal(got: dict[str, Any], exp: dict[str, Any]) -> None:
    for col in COLS:
        assert np.array_equal(got[col], exp[col]), col  # bit for bit


def _rows_equal(rows: list[list[Any]], exp: dict[str, Any]) -> None:
    got = np.array(rows, dtype=np.float64).reshape(-1, 6)
    assert got[:, 0].tolist() == (exp["ts"] * 1000).tolist()
    for i, col in enumerate(COLS[1:], start=1):
        assert np.array_equal(got[:, i], exp[col]), col


@contextmanager
def serve(*configs: SandboxConfig) -> Iterator[list[SandboxExchange]]:
    with ExitStack() as stack:
        yield [stack.enter_context(SandboxExchange(c, wallclock=FakeWall())) for c in configs]


def _body(sx: SandboxExchange, path: str, **params: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, _, body = http_get(f"{sx.url}{path}?{query}")
    assert status == 200, (path, params, body)
    return body


def _csv(sx: SandboxExchange, market: str, symbol: str, interval: str) -> list[list[str]]:
    """Rows of the DAY0 daily archive zip (fetched over HTTP, the header line dropped)."""
    url = sx.url + archive_url("", market, "daily", symbol, interval, DATE0)
    with urllib.request.urlopen(url, timeout=20) as resp:
        body = resp.read()
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        text = z.read(z.namelist()[0]).decode()
    lines = [line.split(",") for line in text.splitlines()]
    return lines[1:] if market == "um" else lines  # futures files carry a header line


# --------------------------------------------------------------------------- oracle
def test_oracle_removes_kline_gaps_exactly_as_gaps() -> None:
    assert sorted(KG.kline_outages_for("BTCUSDT")) == sorted([BTC_SHORT, BTC_LONG])
    assert KG.gaps_for("BTCUSDT") == [] and KG.kline_outages_for("SOLUSDT") == []
    both = SandboxConfig(gaps={"*": [[1, 2]]}, kline_gaps={"BTC/USDT": [[3, 4]]})
    assert both.kline_outages_for("BTCUSDT") == [(1, 2), (3, 4)]
    assert both.kline_outages_for("bybit:ETHUSDT") == [(1, 2)]
    day = (DAY0, DAY0 + DAY)
    cases = [("BTC/USDT", None, "binance"), ("ETH/USDT", None, "binance")]
    cases += [("BTC/USDT:USDT", None, "binance"), ("BTC/USDT:USDT", "mark", "binance")]
    cases += [("BTC/USDT", None, "bybit"), ("SOL/USDT", None, "binance")]
    for symbol, price, venue in cases:
        for iv in (60, 180, 300, 900, 3600, 86_400):
            kw: dict[str, Any] = {"price": price, "venue": venue}
            got = expected_bars(symbol, iv, *day, KG, **kw)
            _assert_bars_equal(got, expected_bars(symbol, iv, *day, AS_GAPS, **kw))
            plain = expected_bars(symbol, iv, *day, PLAIN, **kw)
            kept = np.isin(plain["ts"], got["ts"])
            _assert_bars_equal(got, {c: plain[c][kept] for c in COLS})  # only removals
    out = {
        60: BTC_1M_OUT,
        180: BTC_3M_OUT,
        300: list(range(DAY0 + 10 * H, DAY0 + 11 * H, 300)),  # none of the short window
        3600: BTC_1H_OUT,
        86_400: [],
    }
    for iv, gone in out.items():
        plain_ts = expected_bars("BTC/USDT", iv, *day, PLAIN)["ts"]
        got_ts = expected_bars("BTC/USDT", iv, *day, KG)["ts"]
        assert sorted(set(plain_ts.tolist()) - set(got_ts.tolist())) == gone, iv
    assert len(BTC_1M_OUT) == 5 + 60 and len(BTC_3M_OUT) == 21
    eth = set(expected_bars("ETH/USDT", 60, *day, PLAIN)["ts"].tolist())
    eth -= set(expected_bars("ETH/USDT", 60, *day, KG)["ts"].tolist())
    assert sorted(eth) == _minutes(*ETH_WIN) and len(eth) == 4


# --------------------------------------------------------------------------- REST klines
def test_rest_klines_omit_the_kline_gap_bars_as_gaps_would() -> None:
    with serve(KG, AS_GAPS) as (sx, gx):
        ex = ccxt.binance(sx.ccxt_config(market_types=("spot", "linear")))
        ex.load_markets()
        for tf, iv, since, limit in (
            ("1m", 60, DAY0 + 4 * H - 600, 30),
            ("3m", 180, DAY0 + 4 * H - 1800, 30),
            ("1m", 60, DAY0 + 10 * H - 300, 200),
            ("1h", 3600, DAY0, 24),
        ):
            rows = ex.fetch_ohlcv("BTC/USDT", tf, since=since * 1000, limit=limit)
            exp = expected_bars("BTC/USDT", iv, since, since + 10 * DAY, KG)
            _rows_equal(rows, {c: exp[c][:limit] for c in COLS})  # the page fills past them
            opens = {r[0] // 1000 for r in rows}
            gone = {60: BTC_1M_OUT, 180: BTC_3M_OUT, 3600: BTC_1H_OUT}[iv]
            assert not opens & set(gone) and since + iv * limit > min(gone), tf
        hours = ex.fetch_ohlcv("BTC/USDT", "1h", since=DAY0 * 1000, limit=24)
        assert [r[0] // 1000 - DAY0 for r in hours if r[0] < (DAY0 + DAY) * 1000] == [
            h * H for h in range(24) if h != 10
        ]
        eth = ex.fetch_ohlcv("ETH/USDT", "1m", since=(DAY0 + 15 * H + 1200) * 1000, limit=10)
        assert [r[0] // 1000 - DAY0 - 15 * H for r in eth] == [1200, *range(1500, 2040, 60)]
        perp = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=(DAY0 + 8 * H - 180) * 1000, limit=6)
        assert [r[0] // 1000 - DAY0 - 8 * H for r in perp] == [-180, -120, 180, 240, 300, 360]
        # byte for byte what the same windows as `gaps` serve, on every kline endpoint
        requests: list[tuple[str, dict[str, Any]]] = []
        for iv in ("1m", "3m", "5m", "1h"):
            for sym, lo in (("BTCUSDT", 3 * H), ("BTCUSDT", 9 * H), ("ETHUSDT", 15 * H)):
                requests.append(
                    ("/api/v3/klines", {"symbol": sym, "interval": iv, "startTime": lo})
                )
            for name in ("klines", "markPriceKlines"):
                params = {"symbol": "BTCUSDT", "interval": iv, "startTime": 7 * H, "limit": 99}
                requests.append((f"/fapi/v1/{name}", params))
        for path, params in requests:
            params = {**params, "startTime": (DAY0 + params["startTime"]) * 1000}
            assert _body(sx, path, **params) == _body(gx, path, **params), (path, params)
        for interval in ("1", "3", "60"):
            params = {"category": "spot", "symbol": "BTCUSDT", "interval": interval}
            params |= {"start": (DAY0 + 19 * H) * 1000, "end": (DAY0 + 21 * H) * 1000}
            a, b = _body(sx, "/v5/market/kline", **params), _body(gx, "/v5/market/kline", **params)
            assert a["result"] == b["result"], interval
        one = _body(sx, "/v5/market/kline", **{**params, "interval": "1"})["result"]["list"]
        starts = {int(r[0]) // 1000 for r in one}
        assert not starts & set(_minutes(*BYBIT_WIN)) and len(_minutes(*BYBIT_WIN)) == 3


# --------------------------------------------------------------------------- trades
@pytest.mark.parametrize(
    ("symbol", "window"), [("BTC/USDT", BTC_SHORT), ("ETH/USDT", ETH_WIN)], ids=["btc", "eth"]
)
def test_agg_trades_go_on_and_rebuild_the_hidden_bars(symbol: str, window: tuple[int, int]) -> None:
    lo, hi = window[0] // 60 * 60, -(-window[1] // 60) * 60  # whole minutes around it
    with serve(KG) as (sx,):
        ex = ccxt.binance(sx.ccxt_config())
        ex.load_markets()
        got = ex.fetch_trades(symbol, since=lo * 1000, limit=1000, params={"until": hi * 1000 - 1})
        assert 0 < len(got) < 1000
        ts = np.array([t["timestamp"] for t in got])
        assert np.count_nonzero((ts >= window[0] * 1000) & (ts < window[1] * 1000)) > 20
        rebuilt = bars_from_trades(got)
        _assert_bars_equal(rebuilt, expected_bars(symbol, 60, lo, hi, PLAIN))
        hidden = expected_bars(symbol, 60, lo, hi, KG)["ts"]
        assert sorted(set(rebuilt["ts"].tolist()) - set(hidden.tolist())) == _minutes(*window)
        # the trades are those of the config without the kline gap (oracle and endpoint)
        exp = expected_trades(symbol, lo, hi, KG)
        plain = expected_trades(symbol, lo, hi, PLAIN)
        assert all(np.array_equal(exp[k], plain[k]) for k in plain)
        assert [int(t["id"]) for t in got] == exp["id"].tolist()
        assert [t["amount"] for t in got] == exp["amount"].tolist()
        # fromId paging walks through the kline gap as well
        inside = [t for t in got if t["timestamp"] >= window[0] * 1000]
        page = ex.fetch_trades(symbol, limit=50, params={"fromId": inside[0]["id"]})
        assert [t["id"] for t in page] == [t["id"] for t in inside[:50]]
    # whereas a maintenance gap on the same window has no trades there
    gap = expected_trades(symbol, lo, hi, AS_GAPS)["timestamp"]
    assert not np.any((gap >= window[0] * 1000) & (gap < window[1] * 1000))


def test_trades_of_an_hour_long_kline_gap_rebuild_its_bars() -> None:
    lo, hi = BTC_LONG[0] // 60 * 60, -(-BTC_LONG[1] // 60) * 60
    rebuilt = bars_from_trades(expected_trades("BTC/USDT", lo, hi, KG))
    _assert_bars_equal(rebuilt, expected_bars("BTC/USDT", 60, lo, hi, PLAIN))
    assert len(rebuilt["ts"]) == (hi - lo) // 60 == 62
    hourly = bars_from_trades(expected_trades("BTC/USDT", DAY0 + 10 * H, DAY0 + 11 * H, KG), 3600)
    plain_hour = expected_bars("BTC/USDT", 3600, DAY0 + 10 * H, DAY0 + 11 * H, PLAIN)
    assert hourly["ts"].tolist() == plain_hour["ts"].tolist() == [DAY0 + 10 * H]
    assert hourly["open"][0] == plain_hour["open"][0]  # coarse bars share open and close
    assert hourly["close"][0] == plain_hour["close"][0]


def test_fundings_go_on_in_a_perpetual_kline_gap() -> None:
    day = (DAY0, DAY0 + DAY)
    plain = expected_funding("BTC/USDT:USDT", *day, PLAIN)
    assert (DAY0 + 8 * H) * 1000 in [f[0] for f in plain]
    assert expected_funding("BTC/USDT:USDT", *day, KG) == plain
    assert len(expected_funding("BTC/USDT:USDT", *day, AS_GAPS)) == len(plain) - 1
    with serve(KG) as (sx,):
        ex = ccxt.binance(sx.ccxt_config(market_types=("linear",)))
        ex.load_markets()
        got = ex.fetch_funding_rate_history("BTC/USDT:USDT", since=DAY0 * 1000, limit=3)
        assert [(f["timestamp"], f["fundingRate"]) for f in got] == [(t, r) for t, r, _ in plain]


# --------------------------------------------------------------------------- archive
def test_archive_daily_zips_lack_the_kline_gap_rows() -> None:
    with serve(KG, AS_GAPS) as (sx, gx):
        rows = _csv(sx, "spot", "BTCUSDT", "1m")
        assert len(rows) == 1440 - len(BTC_1M_OUT)
        opens = [int(r[0]) // 1000 for r in rows]
        assert opens == expected_bars("BTC/USDT", 60, DAY0, DAY0 + DAY, KG)["ts"].tolist()
        assert not set(opens) & set(BTC_1M_OUT)
        assert DAY0 + 4 * H - 240 in opens and DAY0 + 4 * H + 120 in opens  # partial minutes
        for market, symbol, interval in (
            ("spot", "BTCUSDT", "1m"),
            ("spot", "BTCUSDT", "3m"),
            ("spot", "BTCUSDT", "1h"),
            ("spot", "ETHUSDT", "1m"),
            ("um", "BTCUSDT", "1m"),
            ("spot", "SOLUSDT", "1m"),
        ):
            assert _csv(sx, market, symbol, interval) == _csv(gx, market, symbol, interval)
        hours = [int(r[0]) // 1000 for r in _csv(sx, "spot", "BTCUSDT", "1h")]
        assert hours == [DAY0 + h * H for h in range(24) if h != 10]
        assert len(_csv(sx, "spot", "ETHUSDT", "1m")) == 1440 - 4
        assert len(_csv(sx, "um", "BTCUSDT", "1m")) == 1440 - len(_minutes(*PERP_WIN)) == 1436
        assert len(_csv(sx, "spot", "BTCUSDT", "1d")) == 1  # a partial day keeps its bar


# --------------------------------------------------------------------------- WS stream
def test_ws_kline_stream_skips_the_kline_gap_bars() -> None:
    start = DAY0 + 4 * H - 300  # 03:55, two minutes before the first bar of BTC_SHORT
    cfg = SandboxConfig(frozen_now_s=start + 30.5, kline_gaps=KLINE_GAPS)

    async def body() -> None:
        async with (
            serve_ws(cfg) as sx,
            aiohttp.ClientSession() as http,
            http.ws_connect(sx.ws + "/ws/btcusdt@kline_1m") as ws,
        ):
            msgs = [await recv(ws)]
            sx.state.clock.advance(480)  # 04:03:30: 03:55, 03:56 and 04:02 have closed
            sx.hub.poke()
            msgs += await read_until(ws, is_kline(start + 480, x=False))
            msgs += await read_for(ws, 0.1)
        closed = klines(msgs, closed=True)
        assert [k["t"] // 1000 - start for k in closed] == [0, 60, 420]
        assert_closed_equal(closed, "BTC/USDT", 60, start, start + 480, cfg)
        assert not any(k["t"] // 1000 in BTC_1M_OUT for k in klines(msgs))

    run(body)


# --------------------------------------------------------------------------- config
BAD = [
    ({"BTC/USDT": [[DAY0 + 10, DAY0]]}, "ends before it starts"),
    ({"BTC/USDT": [{"start": DAY0, "stop": DAY0 + 60}]}, "must be [start, end] or"),
    ({"BTC/USDT": [{"start": DAY0, "end": DAY0 + 60, "why": "x"}]}, "must be [start, end] or"),
    ({"BTC/USDT": [[DAY0, DAY0 + 60, DAY0 + 120]]}, "must be [start, end] or"),
    ({"BTC/USDT": [DAY0, DAY0 + 60]}, "must be [start, end] or"),
    ({"BTC/USDT": [["soon", DAY0 + 60]]}, "integer epoch seconds"),
    ({"BTC/USDT": [[True, DAY0 + 60]]}, "integer epoch seconds"),
    ({"BTC/USDT": DAY0}, "must be a list of [start, end] windows"),
    ({"": [[DAY0, DAY0 + 60]]}, "must be a symbol"),
    ([[DAY0, DAY0 + 60]], "must be an object keyed by symbol"),
]


@pytest.mark.parametrize(("value", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_kline_gaps_are_refused_like_bad_gaps(value: Any, message: str) -> None:
    for knob in ("kline_gaps", "gaps"):
        with pytest.raises(ValueError) as info:
            SandboxConfig.from_dict({knob: value})
        assert message in str(info.value) and knob in str(info.value), str(info.value)


def test_admin_config_route_sets_and_refuses_kline_gaps() -> None:
    with serve(PLAIN) as (sx,):
        admin = SandboxAdmin(sx.url)
        since = (DAY0 + 4 * H - 600) * 1000
        params = {"symbol": "BTCUSDT", "interval": "1m", "startTime": since, "limit": 20}
        before = _body(sx, "/api/v3/klines", **params)  # cached as a closed page
        archive_before = _csv(sx, "spot", "BTCUSDT", "1m")  # cached zip
        assert len(before) == 20 and len(archive_before) == 1440
        for value, message in BAD:
            with pytest.raises(ValueError, match="400") as info:
                admin.configure(kline_gaps=value)
            assert message in str(info.value) and "kline_gaps" in str(info.value)
        assert admin.config()["kline_gaps"] == {}
        cfg = admin.configure(kline_gaps={"BTC/USDT": [list(BTC_SHORT)]})
        assert cfg["kline_gaps"] == {"BTC/USDT": [list(BTC_SHORT)]} and cfg["gaps"] == {}
        after = _body(sx, "/api/v3/klines", **params)  # the page cache saw the change
        assert [r[0] // 1000 for r in after] == [
            t for t in range(since // 1000, since // 1000 + 1500, 60) if t not in BTC_1M_OUT
        ][:20]
        assert len(_csv(sx, "spot", "BTCUSDT", "1m")) == 1440 - 5  # so did the zip cache
        assert after == _body_of_config(
            params, SandboxConfig(frozen_now_s=NOW, gaps=cfg["kline_gaps"])
        )
        admin.configure(kline_gaps={})
        assert _body(sx, "/api/v3/klines", **params) == before


def _body_of_config(params: dict[str, Any], config: SandboxConfig) -> Any:
    with serve(config) as (sx,):
        return _body(sx, "/api/v3/klines", **params)


def test_an_empty_window_is_accepted_and_removes_nothing_like_gaps() -> None:
    for knob in ("kline_gaps", "gaps"):
        cfg = SandboxConfig.from_dict({"frozen_now_s": NOW, knob: {"*": [[DAY0, DAY0]]}})
        got = expected_bars("BTC/USDT", 60, DAY0 - 120, DAY0 + 120, cfg)
        assert len(got["ts"]) == 4


def test_star_key_hits_every_market_but_never_trades() -> None:
    win = (DAY0 + 12 * H + 45, DAY0 + 12 * H + 245)  # 12:00:45-12:04:05: 12:01..12:03
    cfg = SandboxConfig(frozen_now_s=NOW, kline_gaps={"*": [list(win)]})
    lo, hi = DAY0 + 12 * H, DAY0 + 12 * H + 300
    for symbol in ("SOL/USDT", "ETH/BTC", "BTC/USDT:USDT", "bybit:SOL/USDT"):
        ts = expected_bars(symbol, 60, lo, hi, cfg)["ts"]
        assert [t - lo for t in ts.tolist()] == [0, 240], symbol
    for symbol in ("SOL/USDT", "ETH/BTC"):
        rebuilt = bars_from_trades(expected_trades(symbol, lo, hi, cfg))
        _assert_bars_equal(rebuilt, expected_bars(symbol, 60, lo, hi, PLAIN))
