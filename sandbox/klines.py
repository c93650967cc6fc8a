"""Kline requests with Binance semantics, shared by /api/v3/klines and the /fapi/v1 klines.

Why shared: spot klines, perpetual klines and mark-price klines differ only in the markets
they look symbols up in, the intervals and the page cap; parameters, errors, the publish
delay, corruptions and the page cache must behave identically on both APIs.
"""

from __future__ import annotations

import json
from typing import Any

from .bars import Bars, generate_bars, select_open_times
from .config import INTERVALS, MarketSpec, SandboxConfig, market_id
from .corrupt import corrupt_klines
from .encode import encode_klines
from .state import SandboxState

DEFAULT_LIMIT = 500


class BinanceError(Exception):
    """A request error answered with Binance's `{"code": ..., "msg": ...}` body."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status

    def body(self) -> bytes:
        return json.dumps({"code": self.code, "msg": self.msg}).encode()


def int_param(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(raw)


def require_symbol(query: Any) -> str:
    symbol = str(query.get("symbol", ""))
    if not symbol:
        raise BinanceError(
            -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    return symbol


def window_params(query: Any) -> tuple[int | None, int | None, int | None]:
    """`(startTime, endTime, limit)` as integers (-1100 when not digits)."""
    return int_param(query, "startTime"), int_param(query, "endTime"), int_param(query, "limit")


def check_window(
    start_ms: int | None, end_ms: int | None, limit: int | None, default: int, cap: int
) -> int:
    """Binance's checks of a time window (after the symbol's); the limit to use."""
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise BinanceError(-1023, "Start time is greater than end time.")
    if limit is not None and limit < 1:
        raise BinanceError(-1130, "Invalid data sent for a parameter.")
    return default if limit is None else min(limit, cap)


def kline_entry(query: Any, endpoint: str = "klines") -> dict[str, Any]:
    """The kline log record of a request (raw values where they are not integers)."""
    entry: dict[str, Any] = {"symbol": query.get("symbol"), "interval": query.get("interval")}
    for key in ("startTime", "endTime", "limit"):
        raw = query.get(key)
        entry[key] = int(raw) if raw is not None and raw.isdigit() else raw
    entry["endpoint"] = endpoint
    entry["rows"] = 0
    entry["corrupted"] = 0
    return entry


def serve_klines(
    state: SandboxState,
    query: Any,
    markets: dict[str, MarketSpec],
    *,
    max_limit: int,
    intervals: dict[str, int] = INTERVALS,
) -> tuple[bytes, int, int]:
    """Binance semantics: bars with startTime <= openTime <= min(endTime, now); the first
    `limit` of them, or the last `limit` when no startTime is given; bars inside `gaps`
    and `kline_gaps` simply absent.
    Returns the body, the rows served and how many of them `corruptions` touched (trade
    klines only: a mark market is never corrupted)."""
    cfg = state.config
    symbol = require_symbol(query)
    interval = query.get("interval", "")
    start_ms, end_ms, raw_limit = window_params(query)
    market = markets.get(symbol) if symbol == market_id(symbol) else None
    if market is None:
        raise BinanceError(-1121, "Invalid symbol.")
    if interval not in intervals:
        raise BinanceError(-1120, "Invalid interval.")
    limit = check_window(start_ms, end_ms, raw_limit, DEFAULT_LIMIT, max_limit)
    now_ms = state.clock.now_ms()
    hi_s = now_ms // 1000 if end_ms is None else min(end_ms // 1000, now_ms // 1000)
    delay_s = cfg.publish_delay_for(market.key)
    if delay_s > 0:  # late bars: served once closed for publish_delay_s
        published_ms = now_ms - int(delay_s * 1000) - INTERVALS[interval] * 1000
        hi_s = min(hi_s, published_ms // 1000)
    ts = select_open_times(
        market,
        INTERVALS[interval],
        cfg,
        lo_s=None if start_ms is None else -(-start_ms // 1000),
        hi_s=hi_s,
        limit=limit,
        from_end=start_ms is None,
    )
    if cfg.corruptions and market.kind != "mark":  # the fast path stays untouched without
        body = encode_klines(generate_bars(market, INTERVALS[interval], ts, cfg, now_ms))
        return corrupt_klines(
            body, market, interval, INTERVALS[interval], ts, cfg, now_ms, state.take_corruption
        )
    return _page(state, cfg, market, interval, ts, now_ms), len(ts), 0


def encode_market_klines(market: MarketSpec, bars: Bars) -> bytes:
    """Kline JSON of a market's bars; mark-price rows print their zero volumes as `"0"`
    (prices are never 0: the low is at least one tick)."""
    body = encode_klines(bars)
    return body.replace(b'"0.00000000"', b'"0"') if market.kind == "mark" else body


def _page(
    state: SandboxState, cfg: SandboxConfig, market: MarketSpec, interval: str, ts: Any, now_ms: int
) -> bytes:
    """The encoded page, from the page cache when every bar in it has closed."""
    interval_s = INTERVALS[interval]
    closed = len(ts) > 0 and (int(ts[-1]) + interval_s) * 1000 <= now_ms
    key = (market.seed_id, interval, int(ts[0]), int(ts[-1]), len(ts)) if closed else None
    if key is not None and (body := state.pages.get(cfg, key)) is not None:
        return body
    body = encode_market_klines(market, generate_bars(market, interval_s, ts, cfg, now_ms))
    if key is not None:
        state.pages.put(cfg, key, body)
    return body
