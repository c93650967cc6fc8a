"""Bybit v5 public market data under /v5/market: `time`, `instruments-info`
(`bybit_markets.py`) and `kline`, for real ccxt `bybit` (`bybit_ccxt_config(url)`).

Every answer is Bybit's envelope `{"retCode":0,"retMsg":"OK","result":{...},
"retExtInfo":{},"time":<ms>}`; request errors keep HTTP 200 with retCode 10001 (ccxt:
BadRequest; an unknown kline symbol says `Not supported symbols`: BadSymbol).

GET /v5/market/kline semantics (as implemented, following Bybit's docs and behaviour):

* `category`: `spot` or `linear` (default `linear`, as Bybit's); `inverse`/`option`
  markets do not exist here (`Not supported symbols`). `symbol` is required.
* `interval`: 1 3 5 15 30 60 120 240 360 720 D W (`BYBIT_INTERVALS`; weeks open on
  Monday 00:00 UTC); `M` (months, no fixed length) is refused like an unknown interval.
* `start`, `end` (ms): the bars with `start <= startTime <= end` (`end` defaults to the
  sandbox clock's now, and is capped by it and by the market's `publish_delay_s`); the
  forming bar is served like Binance's. `start > end`: 10001.
* `limit`: 1..1000, default 200 (above 1000: 1000). When more bars than `limit` fall in
  the range, Bybit answers the NEWEST `limit` of them (those closest to `end`), not the
  first: a client paging forward from `since` must bound each page with `end`
  (ccxt: `params={"until": ...}`), or it gets the latest bars.
* Rows `[startTime, open, high, low, close, volume, turnover]`, all strings, decimals
  without trailing zeros (`bybit_decimal`), in DESCENDING startTime. ccxt sorts them
  ascending; volume is in base coin for spot and linear, turnover in quote coin.
* Listing, `gaps`, `kline_gaps`, `restatements` and `publish_delay_s` apply per Bybit
  market (config keys `bybit:BTC/USDT`, `bybit:BTC/USDT:USDT`, or `"*"`); corruptions
  never do.

Faults and limits: `down` (503), `latency_ms`, `error_rate_5xx` (text bodies) and
`force_429` apply as on Binance, the last as Bybit's API rate-limit answer: HTTP 429 with
retCode 10006 `Too many visits!` (ccxt: RateLimitExceeded), `X-Bapi-Limit-Status: 0` and
`X-Bapi-Limit-Reset-Timestamp` `force_429_retry_after` seconds ahead; no penalty follows.
The IP limit is `bybit_requests_per_5s` (see `bybit_limit.py`: 403 `access too frequent`
and a `ban_seconds` ban). Stats count `bybit/time`, `bybit/instruments-info`,
`bybit/kline` (and `bybit/other`) in `by_endpoint` with weight 0; the kline log records
kline requests with `endpoint: "bybit/kline"` (start/end logged as startTime/endTime).
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Any

from aiohttp import web

from .bars import Bars, generate_bars, select_open_times
from .bybit_limit import ACCESS_TOO_FREQUENT, rate_headers
from .bybit_markets import BybitError, bybit_decimal, envelope, instruments_info
from .config import BYBIT_INTERVALS, BYBIT_LISTING_FLOOR_TS, MarketSpec, SandboxConfig
from .state import Admission, SandboxState

BYBIT_PREFIX = "/v5/market"
BYBIT_ENDPOINTS = ("time", "instruments-info", "kline")
DEFAULT_KLINE_LIMIT = 200
MAX_KLINE_LIMIT = 1000
_JSON = "application/json"
_5XX_BODIES = {500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable"}


async def serve_bybit(request: web.Request, state: SandboxState) -> web.Response:
    """Answer one GET /v5/market/{name} request."""
    arrived_at = state.enter()
    try:
        name = request.match_info["name"]
        endpoint = f"bybit/{name}" if name in BYBIT_ENDPOINTS else "bybit/other"
        cfg = state.config
        if cfg.latency_ms > 0:
            await asyncio.sleep(cfg.latency_ms / 1000.0)
        adm = state.admit_bybit(endpoint, kline=name == "kline", arrived_at=arrived_at)
        entry = _kline_entry(request.query) if name == "kline" else None
        if adm.status:
            resp = _rejection(adm, cfg, state.clock.now_ms())
        else:
            resp = _answer(name, state, request, adm, entry)
        resp.headers["Date"] = formatdate(state.wall_now(), usegmt=True)
        if entry is not None:
            entry.update(status=resp.status, reason=adm.reason, admitted_at=adm.at)
            entry["t"] = round(time.time(), 3)
        state.finish(resp.status, entry)
        return resp
    finally:
        state.leave()


def _rejection(adm: Admission, cfg: SandboxConfig, now_ms: int) -> web.Response:
    if adm.status == 403:
        return web.Response(status=403, body=ACCESS_TOO_FREQUENT, content_type="text/plain")
    if adm.status == 429:
        headers = rate_headers(adm.used_weight, cfg.bybit_requests_per_5s, adm.at)
        headers["X-Bapi-Limit-Status"] = "0"
        reset_s = adm.at + (adm.retry_after or 0)
        headers["X-Bapi-Limit-Reset-Timestamp"] = str(int(reset_s * 1000))
        body = envelope({}, now_ms, 10006, "Too many visits!")
        return web.Response(status=429, body=body, headers=headers, content_type=_JSON)
    return web.Response(status=adm.status, body=_5XX_BODIES.get(adm.status, b"error"))


def _answer(
    name: str,
    state: SandboxState,
    request: web.Request,
    adm: Admission,
    entry: dict[str, Any] | None,
) -> web.Response:
    cfg = state.config
    headers = rate_headers(adm.used_weight, cfg.bybit_requests_per_5s, adm.at)
    now_ms = state.clock.now_ms()
    try:
        if name == "time":
            seconds = {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 10**6)}
            body = envelope(seconds, now_ms)
        elif name == "instruments-info":
            body = envelope(instruments_info(cfg, request.query), now_ms)
        elif name == "kline" and entry is not None:
            result, entry["rows"] = serve_kline(state, request.query, now_ms)
            body = envelope(result, now_ms)
        else:
            return web.Response(status=404, body=b"404 page not found", headers=headers)
    except BybitError as exc:
        body = envelope({}, now_ms, exc.ret_code, exc.msg)
    return web.Response(body=body, headers=headers, content_type=_JSON)


def _kline_entry(query: Any) -> dict[str, Any]:
    """The kline log record of a request (raw values where they are not integers)."""
    entry: dict[str, Any] = {"symbol": query.get("symbol"), "interval": query.get("interval")}
    for key, param in (("startTime", "start"), ("endTime", "end"), ("limit", "limit")):
        raw = query.get(param)
        entry[key] = int(raw) if raw is not None and raw.isdigit() else raw
    entry.update(category=query.get("category") or "linear", endpoint="bybit/kline")
    entry.update(rows=0, corrupted=0)
    return entry


def _int(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise BybitError(10001, f"params error: {name} is invalid")
    return int(raw)


def serve_kline(state: SandboxState, query: Any, now_ms: int) -> tuple[bytes, int]:
    """`(result JSON, rows)` of GET /v5/market/kline (semantics: module docstring)."""
    cfg = state.config
    category = query.get("category") or "linear"
    symbol = query.get("symbol") or ""
    if not symbol:
        raise BybitError(10001, "params error: symbol is required")
    start_ms, end_ms, limit = _int(query, "start"), _int(query, "end"), _int(query, "limit")
    markets = cfg.bybit_markets(category) if category in BYBIT_LISTING_FLOOR_TS else {}
    market = markets.get(symbol)
    if market is None:
        raise BybitError(10001, "Not supported symbols")
    interval = query.get("interval") or ""
    if interval not in BYBIT_INTERVALS:
        raise BybitError(10001, "params error: invalid interval")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise BybitError(10001, "params error: start must not be greater than end")
    if limit is not None and limit < 1:
        raise BybitError(10001, "params error: limit is invalid")
    interval_s = BYBIT_INTERVALS[interval]
    hi_ms = now_ms if end_ms is None else min(end_ms, now_ms)
    delay_s = cfg.publish_delay_for(market.key)
    if delay_s > 0:  # late bars: served once closed for publish_delay_s
        hi_ms = min(hi_ms, now_ms - int(delay_s * 1000) - interval_s * 1000)
    ts = select_open_times(
        market,
        interval_s,
        cfg,
        lo_s=None if start_ms is None else -(-start_ms // 1000),
        hi_s=hi_ms // 1000,
        limit=min(limit or DEFAULT_KLINE_LIMIT, MAX_KLINE_LIMIT),
        from_end=True,  # the newest `limit` bars of the range
    )
    rows = _rows(state, cfg, market, interval, ts, now_ms)
    head = b'{"symbol":"%s","category":"%s","list":' % (market.id.encode(), category.encode())
    return head + rows + b"}", len(ts)


def encode_bybit_klines(bars: Bars) -> bytes:
    """Bybit's kline `list`: string rows, newest first, decimals without trailing zeros."""
    cols = (bars.open, bars.high, bars.low, bars.close, bars.volume, bars.quote_volume)
    text = [[bybit_decimal(u) for u in col.tolist()] for col in cols]
    rows = [
        f'["{t}","{o}","{h}","{lo}","{c}","{v}","{q}"]'
        for t, o, h, lo, c, v, q in zip(bars.open_ms.tolist(), *text, strict=True)
    ]
    return ("[" + ",".join(reversed(rows)) + "]").encode()


def _rows(
    state: SandboxState,
    cfg: SandboxConfig,
    market: MarketSpec,
    interval: str,
    ts: Any,
    now_ms: int,
) -> bytes:
    """The encoded rows, from the page cache when every bar in them has closed."""
    interval_s = BYBIT_INTERVALS[interval]
    closed = len(ts) > 0 and (int(ts[-1]) + interval_s) * 1000 <= now_ms
    key = (market.seed_id, interval, int(ts[0]), int(ts[-1]), len(ts)) if closed else None
    if key is not None and (body := state.pages.get(cfg, key)) is not None:
        return body
    body = encode_bybit_klines(generate_bars(market, interval_s, ts, cfg, now_ms))
    if key is not None:
        state.pages.put(cfg, key, body)
    return body
