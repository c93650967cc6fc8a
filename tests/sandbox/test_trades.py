"""Trades consistent with the sandbox's 1m bars (`sandbox/trades.py`) and GET
/api/v3/aggTrades, exercised through REAL ccxt `binance.fetch_trades` and plain HTTP.

Each HTTP test serves its own aiohttp app: the aggTrades route (admitted with its weight,
as `_serve_api` does) registered before the generic `/api/v3/{name}` route, which serves
exchangeInfo for ccxt's `load_markets`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ccxt
import numpy as np
import pytest

from sandbox import SandboxConfig, SandboxExchange, SandboxState, ccxt_config, expected_bars
from sandbox.bars import generate_bars, select_open_times
from sandbox.config import UNITS_PER_ONE, MarketSpec
from sandbox.server import API_PREFIX
from sandbox.trades import (
    AGG_TRADES_WEIGHT,
    TRADE_ID_SLOTS,
    Trades,
    aggregate_trades,
    bars_from_trades,
    expected_trades,
    generate_trades,
)

from .conftest import FakeWall, http_get

DAY0 = 1_699_920_000  # 2023-11-14 00:00 UTC
NOW = DAY0 + 86_400 + 30.5  # frozen clock: 30.5 s into the first minute of the next day
HOUR_MS = 3_600_000
COLS = ("ts", "open", "high", "low", "close", "volume")
FIELDS = ("id", "ts_ms", "price_units", "qty_units", "is_buyer_maker")
EXTRAS = ["SHIB/USDT", "DOGE/USDT"]  # derived markets: SHIB/USDT trades near 0.57 USDT


def _cfg(**knobs: Any) -> SandboxConfig:
    return SandboxConfig(frozen_now_s=NOW, extra_symbols=EXTRAS, **knobs)


def _same(a: Trades, b: Trades) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def _assert_bars_equal(got: dict[str, Any], exp: dict[str, Any]) -> None:
    for col in COLS:
        assert got[col].dtype == exp[col].dtype, col
        assert np.array_equal(got[col], exp[col]), col  # bit for bit (no NaN here)


# --------------------------------------------------------------------------- harness
@dataclass
class Served:
    url: str
    state: SandboxState

    def ccxt(self) -> ccxt.binance:
        ex = ccxt.binance(ccxt_config(self.url))
        ex.load_markets()
        return ex

    def get(self, **params: Any) -> tuple[int, dict[str, str], Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return http_get(f"{self.url}{API_PREFIX}/aggTrades?{query}")


@contextmanager
def serve(config: SandboxConfig | None = None) -> Iterator[Served]:
    """The sandbox itself (its /api/v3 routes aggTrades), on a fake rate-limit clock."""
    with SandboxExchange(config or _cfg(), wallclock=FakeWall()) as sx:
        yield Served(sx.url, sx.state)


def _parsed(trades: list[dict[str, Any]]) -> list[tuple[int, int, float, float, str]]:
    return [(int(t["id"]), t["timestamp"], t["price"], t["amount"], t["side"]) for t in trades]


def _oracle(exp: dict[str, Any], index: Any = slice(None)) -> list[tuple[Any, ...]]:
    cols = [exp[k][index].tolist() for k in ("id", "timestamp", "price", "amount", "side")]
    return list(zip(*cols, strict=True))


# --------------------------------------------------------------------------- generator
@pytest.mark.parametrize("seed", [0, 3, 11])
@pytest.mark.parametrize(
    "symbol", ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC", "SHIB/USDT", "DOGE/USDT"]
)
def test_a_day_of_trades_aggregates_to_the_1m_bars_exactly(symbol: str, seed: int) -> None:
    cfg = _cfg(seed=seed)
    market = cfg.market_for(symbol)
    trades = generate_trades(market, DAY0, DAY0 + 86_400, cfg)
    _assert_bars_equal(
        bars_from_trades(trades), expected_bars(symbol, 60, DAY0, DAY0 + 86_400, cfg)
    )
    # count and taker buy volume too, against the kline columns
    ts = select_open_times(market, 60, cfg, lo_s=DAY0, hi_s=DAY0 + 86_399, limit=None)
    bars = generate_bars(market, 60, ts, cfg)
    agg = aggregate_trades(trades)
    assert np.array_equal(agg["trades"], bars.trades)
    assert np.array_equal(agg["taker_base"], bars.taker_base)
    # units: ticks and lot steps, every quantity positive
    assert np.all(trades.price_units % market.tick_units == 0)
    assert np.all(trades.qty_units % market.step_units == 0) and np.all(trades.qty_units > 0)
    # times inside their minute, strictly increasing; ids strictly increasing, name the minute
    minute = trades.ts_ms // 60_000
    assert np.array_equal(trades.id // TRADE_ID_SLOTS, minute)
    assert np.all(np.diff(trades.ts_ms) > 0) and np.all(np.diff(trades.id) > 0)
    first = np.r_[True, minute[1:] != minute[:-1]]
    assert np.all(trades.id[first] % TRADE_ID_SLOTS == 0)  # positions count from 0
    # the float oracle and the float aggregation agree with the units
    exp = expected_trades(symbol, DAY0, DAY0 + 86_400, cfg)
    assert np.array_equal(exp["price"], trades.price_units / UNITS_PER_ONE)
    _assert_bars_equal(bars_from_trades(exp), expected_bars(symbol, 60, DAY0, DAY0 + 86_400, cfg))


def test_low_priced_extra_symbol_is_really_low_priced() -> None:
    market = _cfg().market_for("SHIB/USDT")
    assert market.base_price < 1.0 and market.tick_units < 10_000


def test_coarse_bars_share_only_open_and_close() -> None:
    cfg = _cfg()
    trades = generate_trades(cfg.market_for("BTC/USDT"), DAY0, DAY0 + 86_400, cfg)
    for interval_s in (300, 3600, 86_400):
        got = bars_from_trades(trades, interval_s)
        exp = expected_bars("BTC/USDT", interval_s, DAY0, DAY0 + 86_400, cfg)
        assert np.array_equal(got["ts"], exp["ts"])
        assert np.array_equal(got["open"], exp["open"])
        assert np.array_equal(got["close"], exp["close"])
        # wicks and volume of a coarse bar are drawn per interval: not the trades' ones
        assert not np.array_equal(got["volume"], exp["volume"])


def test_trades_are_window_independent_with_stable_ids() -> None:
    cfg = _cfg()
    market = cfg.market_for("ETH/USDT")
    day = generate_trades(market, DAY0, DAY0 + 86_400, cfg)
    for start, end in (
        (DAY0 + 3617, DAY0 + 7205),
        (DAY0 + 59, DAY0 + 61),
        (DAY0 + 43_200, DAY0 + 86_400),
    ):
        part = generate_trades(market, start, end, cfg)
        inside = (day.ts_ms >= start * 1000) & (day.ts_ms < end * 1000)
        assert len(part) and _same(part, day.take(inside))
    assert len(generate_trades(market, DAY0 + 10, DAY0 + 10, cfg)) == 0


def test_generation_is_deterministic_and_seeded() -> None:
    market = _cfg().market_for("BTC/USDT")
    a = generate_trades(market, DAY0, DAY0 + 3600, _cfg())
    b = generate_trades(market, DAY0, DAY0 + 3600, _cfg())
    c = generate_trades(market, DAY0, DAY0 + 3600, _cfg(seed=1))
    assert _same(a, b) and not np.array_equal(a.price_units[:50], c.price_units[:50])


def test_generating_a_day_is_fast() -> None:
    cfg = SandboxConfig()
    market = cfg.market_for("BTC/USDT")
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        trades = generate_trades(market, DAY0, DAY0 + 86_400, cfg)
        timings.append(time.perf_counter() - started)
    assert len(trades) > 40_000
    assert min(timings) < 0.3, timings  # measured ~0.03-0.05 s


def test_gaps_and_listing_have_no_trades() -> None:
    gap = (DAY0 + 3600 + 25, DAY0 + 5400 + 40)  # partial minutes at both ends
    inner = (DAY0 + 7200 + 10, DAY0 + 7200 + 50)  # inside one minute: the bar stays
    listing = DAY0 + 600 + 17  # the listing minute trades from its 17th second
    cfg = _cfg(
        gaps={"ETH/BTC": [list(gap), list(inner)]},
        listing_ts={"SHIB/USDT": listing},
    )
    eth = generate_trades(cfg.market_for("ETH/BTC"), DAY0, DAY0 + 86_400, cfg)
    for gs, ge in (gap, inner):
        assert not np.any((eth.ts_ms >= gs * 1000) & (eth.ts_ms < ge * 1000))
    assert np.any(eth.ts_ms // 1000 // 60 == gap[0] // 60)  # the partial minutes trade
    assert np.any(eth.ts_ms // 1000 // 60 == inner[0] // 60)
    _assert_bars_equal(
        bars_from_trades(eth), expected_bars("ETH/BTC", 60, DAY0, DAY0 + 86_400, cfg)
    )
    shib = generate_trades(cfg.market_for("SHIB/USDT"), DAY0 - 86_400, DAY0 + 3600, cfg)
    assert int(shib.ts_ms.min()) >= listing * 1000
    assert int(shib.ts_ms.min()) < (listing // 60 + 1) * 60_000  # the listing minute trades
    _assert_bars_equal(
        bars_from_trades(shib), expected_bars("SHIB/USDT", 60, DAY0 - 86_400, DAY0 + 3600, cfg)
    )
    before = generate_trades(cfg.market_for("SHIB/USDT"), DAY0 - 86_400, listing, cfg)
    assert len(before) == 0


def test_restated_window_trades_follow_the_restated_bars() -> None:
    window = (DAY0 + 1800, DAY0 + 2400)
    plain = _cfg()
    restated = _cfg(
        restatements={"BTC/USDT": [{"start": window[0], "end": window[1], "version": 2}]}
    )
    market = plain.market_for("BTC/USDT")
    a = generate_trades(market, DAY0, DAY0 + 3600, plain)
    b = generate_trades(market, DAY0, DAY0 + 3600, restated)
    _assert_bars_equal(
        bars_from_trades(b), expected_bars("BTC/USDT", 60, DAY0, DAY0 + 3600, restated)
    )
    for lo, hi, same in ((DAY0, window[0], True), (*window, False), (window[1], DAY0 + 3600, True)):
        ka = (a.ts_ms >= lo * 1000) & (a.ts_ms < hi * 1000)
        kb = (b.ts_ms >= lo * 1000) & (b.ts_ms < hi * 1000)
        assert (_same(a.take(ka), b.take(kb))) == same, (lo, hi)


def test_a_bar_without_volume_has_no_trades() -> None:
    # a thin made-up market: a lot step of 1000 coins against ~1 coin a minute
    market = MarketSpec("THIN", "USDT", 2.0, 1_000_000, 1000 * UNITS_PER_ONE, 400.0, DAY0)
    cfg = SandboxConfig()
    trades = generate_trades(market, DAY0, DAY0 + 86_400, cfg)
    ts = select_open_times(market, 60, cfg, lo_s=DAY0, hi_s=DAY0 + 86_399, limit=None)
    bars = generate_bars(market, 60, ts, cfg)
    empty = ts[bars.volume == 0]
    assert len(empty) > 10 and np.any(bars.volume > 0)
    assert not np.isin(trades.ts_ms // 60_000, empty // 60).any()
    agg = aggregate_trades(trades)
    traded = np.isin(ts, agg["ts"])
    assert np.array_equal(traded, bars.volume > 0)
    assert np.array_equal(agg["volume"], bars.volume[traded])  # every lot accounted for
    assert np.all(agg["trades"] <= bars.volume[traded] // market.step_units)  # count capped


def test_mark_markets_have_no_trades() -> None:
    cfg = _cfg()
    with pytest.raises(ValueError):
        generate_trades(cfg.market_for("BTC/USDT:USDT", "mark"), DAY0, DAY0 + 60, cfg)
    with pytest.raises(ValueError):
        expected_trades("BTC/USDT:USDT", DAY0, DAY0 + 60, cfg)


# --------------------------------------------------------------------------- endpoint
def test_ccxt_fetch_trades_equals_the_oracle() -> None:
    cfg = _cfg()
    with serve(cfg) as sx:
        ex = sx.ccxt()
        for symbol in ("BTC/USDT", "ETH/BTC", "SHIB/USDT"):
            since = (DAY0 + 7 * 3600 + 13) * 1000
            got = ex.fetch_trades(symbol, since=since, limit=200)
            # startTime + endTime (ccxt adds an hour): the LAST 200 trades of the window
            exp = expected_trades(symbol, since // 1000, since // 1000 + 3601, cfg)
            window = exp["timestamp"] <= since + HOUR_MS
            assert _parsed(got) == _oracle(exp, np.flatnonzero(window)[-200:])
            assert all(t["info"]["a"] == t["info"]["f"] == t["info"]["l"] for t in got)
            assert all(t["info"]["M"] is True for t in got)
            assert [t["side"] == "sell" for t in got] == [t["info"]["m"] for t in got]
            # no parameters: the 500 most recent, up to the frozen now (into a forming minute)
            recent = ex.fetch_trades(symbol)
            exp = expected_trades(symbol, DAY0 + 80_000, int(NOW) + 60, cfg, now_s=NOW)
            assert _parsed(recent) == _oracle(exp, slice(-500, None))
            assert recent[-1]["timestamp"] > (DAY0 + 86_400) * 1000  # the forming minute
            assert recent[-1]["timestamp"] <= NOW * 1000


def test_a_day_fetched_with_fromid_paging_rebuilds_the_bars() -> None:
    cfg = _cfg(seed=5)
    with serve(cfg) as sx:
        ex = sx.ccxt()
        first = ex.fetch_trades(
            "ETH/BTC", since=DAY0 * 1000, params={"until": DAY0 * 1000 + 60_000}
        )
        ids = [int(first[0]["id"])]
        assert ids[0] == DAY0 // 60 * TRADE_ID_SLOTS
        trades: list[dict[str, Any]] = []
        from_id = ids[0]
        while True:
            page = ex.fetch_trades("ETH/BTC", limit=1000, params={"fromId": from_id})
            page = [t for t in page if t["timestamp"] < (DAY0 + 86_400) * 1000]
            if not page:
                break
            trades.extend(page)
            from_id = int(page[-1]["id"]) + 1
        got_ids = [int(t["id"]) for t in trades]
        assert got_ids == sorted(set(got_ids))  # strictly increasing, no duplicates
        _assert_bars_equal(
            bars_from_trades(trades), expected_bars("ETH/BTC", 60, DAY0, DAY0 + 86_400, cfg)
        )
        exp = expected_trades("ETH/BTC", DAY0, DAY0 + 86_400, cfg)
        assert _parsed(trades) == _oracle(exp)
        weight = sx.state.stats()["by_endpoint"]["aggTrades"]
        assert weight["weight"] == AGG_TRADES_WEIGHT * weight["requests"]


def test_ids_are_stable_across_request_windows() -> None:
    with serve() as sx:
        ex = sx.ccxt()
        since = (DAY0 + 5 * 3600) * 1000
        a = ex.fetch_trades("BTC/USDT", since=since, params={"until": since + 20 * 60_000})
        b = ex.fetch_trades(
            "BTC/USDT", since=since + 7 * 60_000, params={"until": since + 30 * 60_000}
        )
        c = ex.fetch_trades("BTC/USDT", limit=300, params={"fromId": int(a[100]["id"])})
        by_id = {t["id"]: _parsed([t])[0] for t in a}
        overlap = [t for t in b if t["id"] in by_id]
        assert len(overlap) > 100 and all(by_id[t["id"]] == _parsed([t])[0] for t in overlap)
        assert len(c) == 300 and _parsed(c) == _parsed(a[100:400])


def test_the_one_hour_rule() -> None:
    with serve() as sx:
        start = (DAY0 + 3600) * 1000
        status, _, body = sx.get(symbol="BTCUSDT", startTime=start, endTime=start + HOUR_MS + 1)
        assert status == 400 and body == {
            "code": -1127,
            "msg": "More than 1 hours between startTime and endTime.",
        }
        status, _, rows = sx.get(symbol="BTCUSDT", startTime=start, endTime=start + HOUR_MS)
        assert status == 200 and len(rows) == 1000
        ex = sx.ccxt()
        with pytest.raises(ccxt.BaseError, match="-1127"):
            ex.fetch_trades("BTC/USDT", since=start, params={"until": start + 2 * HOUR_MS})


def test_parameter_errors() -> None:
    with serve() as sx:
        cases = [
            ({}, -1102),
            ({"symbol": "NOPEUSDT"}, -1121),
            ({"symbol": "BTC/USDT"}, -1121),
            ({"symbol": "BTCUSDT", "fromId": "x1"}, -1100),
            ({"symbol": "BTCUSDT", "limit": 0}, -1130),
            ({"symbol": "BTCUSDT", "fromId": 5, "startTime": DAY0 * 1000}, -1128),
            ({"symbol": "BTCUSDT", "fromId": 5, "endTime": DAY0 * 1000}, -1128),
            ({"symbol": "BTCUSDT", "startTime": DAY0 * 1000 + 1, "endTime": DAY0 * 1000}, -1023),
        ]
        for params, code in cases:
            status, headers, body = sx.get(**params)
            assert status == 400 and body["code"] == code, (params, body)
            assert headers["X-MBX-USED-WEIGHT-1M"]


def test_limit_handling() -> None:
    cfg = _cfg()
    with serve(cfg) as sx:
        start = (DAY0 + 2 * 3600) * 1000
        exp = expected_trades("BTCUSDT", DAY0, int(NOW) + 1, cfg, now_s=NOW)
        ids = exp["id"]
        status, _, rows = sx.get(symbol="BTCUSDT")
        assert status == 200 and [r["a"] for r in rows] == ids[-500:].tolist()  # default 500
        _, _, rows = sx.get(symbol="BTCUSDT", limit=5000)
        assert [r["a"] for r in rows] == ids[-1000:].tolist()  # capped at 1000
        _, _, rows = sx.get(symbol="BTCUSDT", limit=7, startTime=start)
        after = ids[exp["timestamp"] >= start]
        assert [r["a"] for r in rows] == after[:7].tolist()  # startTime only: the first ones
        _, _, rows = sx.get(symbol="BTCUSDT", startTime=start)
        assert [r["a"] for r in rows] == after[:1000].tolist()  # bounded: up to 1000
        _, _, rows = sx.get(symbol="BTCUSDT", limit=7, endTime=start)
        upto = ids[exp["timestamp"] <= start]
        assert [r["a"] for r in rows] == upto[-7:].tolist()  # endTime only: the last ones
        _, _, rows = sx.get(symbol="BTCUSDT", limit=3, fromId=int(after[10]))
        assert [r["a"] for r in rows] == after[10:13].tolist()
        _, _, rows = sx.get(symbol="BTCUSDT", fromId=int(ids[-5]) + 1)
        assert [r["a"] for r in rows] == ids[-4:].tolist()  # up to now, no further
        _, _, rows = sx.get(symbol="BTCUSDT", fromId=int(ids[-1]) + 1)
        assert rows == []
        # rows are Binance's shape and decimals
        _, _, rows = sx.get(symbol="BTCUSDT", limit=1, fromId=int(after[0]))
        (row,) = rows
        assert set(row) == {"a", "p", "q", "f", "l", "T", "m", "M"}
        assert row["p"].count(".") == 1 and len(row["p"].split(".")[1]) == 8


def test_gaps_listing_and_restatement_over_http() -> None:
    gap = (DAY0 + 3600 + 25, DAY0 + 5400 + 40)
    listing = DAY0 + 600 + 17
    cfg = _cfg(
        gaps={"BTC/USDT": [list(gap)]},
        listing_ts={"DOGE/USDT": listing},
        restatements={"BTC/USDT": [{"start": DAY0 + 7200, "end": DAY0 + 7800, "version": 1}]},
    )
    with serve(cfg) as sx:
        ex = sx.ccxt()
        since = (gap[0] - 600) * 1000
        got = ex.fetch_trades(
            "BTC/USDT", since=since, limit=1000, params={"until": since + HOUR_MS}
        )
        ts = np.array([t["timestamp"] for t in got])
        assert not np.any((ts >= gap[0] * 1000) & (ts < gap[1] * 1000))
        exp = expected_trades("BTC/USDT", since // 1000, since // 1000 + 3601, cfg)
        keep = np.flatnonzero(exp["timestamp"] <= since + HOUR_MS)[-1000:]
        assert _parsed(got) == _oracle(exp, keep)
        # fromId 0: the first trades ever, from the listing instant on
        first = ex.fetch_trades("DOGE/USDT", limit=5, params={"fromId": 0})
        assert first[0]["timestamp"] >= listing * 1000
        assert int(first[0]["id"]) == listing // 60 * TRADE_ID_SLOTS
        # restated minutes: the trades rebuild the restated bars
        since = (DAY0 + 7200) * 1000
        got = ex.fetch_trades("BTC/USDT", since=since, params={"until": since + 600_000 - 1})
        _assert_bars_equal(
            bars_from_trades(got), expected_bars("BTC/USDT", 60, DAY0 + 7200, DAY0 + 7800, cfg)
        )
        plain = expected_trades("BTC/USDT", DAY0 + 7200, DAY0 + 7800, _cfg())
        assert _parsed(got) != _oracle(plain)
