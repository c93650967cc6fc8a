"""Funding-rate history of the USDⓈ-M perpetuals: GET /fapi/v1/fundingRate and its oracle.

Schedule: a perpetual funds on multiples of its funding interval in UTC (8 h by default:
00:00, 08:00, 16:00), from its listing on, never inside one of its gaps (an outage; its
`kline_gaps`, a candle-service outage, do not stop fundings), and
never after the sandbox clock's now. `funding_intervals` changes the interval from a time
on (e.g. 8 h, then 4 h, then 1 h). Rates are a pure function of (data seed, perpetual,
funding time): mostly the calm-market 0.01 %, otherwise spread around it with some
negatives, capped at ±0.3 %; `markPrice` is the mark price at the funding instant (the open
of the mark 1m bar opening then). Both are 8-decimal strings.

Request semantics (Binance's): `limit` defaults to 100, at most 1000; with `startTime` the
first `limit` fundings at or after it (up to `endTime` and now), otherwise the last `limit`
ones at or before `endTime` (or now). `symbol` is required here (-1102).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import numpy.typing as npt

from .bars import _irwin_hall, _uniforms, generate_bars, market_seed
from .config import UNITS_PER_ONE, MarketSpec, SandboxConfig, market_id
from .klines import BinanceError, check_window, require_symbol, window_params
from .state import SandboxState

I64 = npt.NDArray[np.int64]

DEFAULT_FUNDING_LIMIT = 100
MAX_FUNDING_LIMIT = 1000
_CALM_RATE_UNITS = 10_000  # 0.01 % per funding, Binance's rate in a calm market
_RATE_CAP_UNITS = 300_000  # ±0.3 %


def funding_times(perp: MarketSpec, config: SandboxConfig, lo_s: int, hi_s: int) -> I64:
    """Funding instants (s) of a perpetual with `lo_s <= t <= hi_s`, ascending."""
    lo = max(lo_s, perp.listing_ts)
    schedule = config.funding_schedule(perp.key)
    parts: list[I64] = []
    for i, (start, interval_s) in enumerate(schedule):
        end = schedule[i + 1][0] - 1 if i + 1 < len(schedule) else hi_s  # inclusive
        a, b = max(lo, start), min(hi_s, end)
        k0, k1 = -(-a // interval_s), b // interval_s
        if a <= b and k0 <= k1:
            parts.append(np.arange(k0, k1 + 1, dtype=np.int64) * np.int64(interval_s))
    ts = np.concatenate(parts) if parts else np.empty(0, np.int64)
    for gs, ge in config.gaps_for(perp.key):
        ts = ts[(ts < gs) | (ts >= ge)]
    return ts


def funding_values(perp: MarketSpec, ts: I64, config: SandboxConfig) -> tuple[I64, I64]:
    """`(rate, mark price)` of fundings at `ts` (s), int64 with 8 implied decimals."""
    if ts.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    seed = market_seed(f"{perp.id}|funding", config.seed)
    with np.errstate(over="ignore"):
        calm, *normal, spread = _uniforms(
            np.full(ts.size, seed, np.uint64), ts.astype(np.uint64), 6
        )
    rate = 1e-4 + 2.5e-4 * (0.5 + 2.0 * spread) * _irwin_hall(normal)
    units = np.clip(np.rint(rate * UNITS_PER_ONE), -_RATE_CAP_UNITS, _RATE_CAP_UNITS)
    rates = np.where(calm < 0.6, _CALM_RATE_UNITS, units).astype(np.int64)
    mark = dataclasses.replace(perp, kind="mark")
    return rates, generate_bars(mark, 60, ts, config).open


def _dec(units: int) -> str:
    sign, units = ("-", -units) if units < 0 else ("", units)
    return f"{sign}{units // UNITS_PER_ONE}.{units % UNITS_PER_ONE:08d}"


def serve_funding(state: SandboxState, query: Any) -> bytes:
    """The body of GET /fapi/v1/fundingRate."""
    cfg = state.config
    symbol = require_symbol(query)
    start_ms, end_ms, raw_limit = window_params(query)
    perp = cfg.perpetuals().get(symbol) if symbol == market_id(symbol) else None
    if perp is None:
        raise BinanceError(-1121, "Invalid symbol.")
    limit = check_window(start_ms, end_ms, raw_limit, DEFAULT_FUNDING_LIMIT, MAX_FUNDING_LIMIT)
    now_ms = state.clock.now_ms()
    hi_s = (now_ms if end_ms is None else min(end_ms, now_ms)) // 1000
    lo_s = perp.listing_ts if start_ms is None else -(-start_ms // 1000)
    ts = funding_times(perp, cfg, lo_s, hi_s)
    ts = ts[:limit] if start_ms is not None else ts[-limit:]
    rates, marks = funding_values(perp, ts, cfg)
    rows = [
        {"symbol": perp.id, "fundingTime": t * 1000, "fundingRate": _dec(r), "markPrice": _dec(m)}
        for t, r, m in zip(ts.tolist(), rates.tolist(), marks.tolist(), strict=True)
    ]
    return json.dumps(rows, separators=(",", ":")).encode()


def expected_funding(
    symbol: str,
    start_s: int,
    end_s: int,
    config: SandboxConfig | None = None,
    now_s: float | None = None,
) -> list[tuple[int, float, float]]:
    """Fundings of a perpetual (`BTC/USDT:USDT`) at `start_s <= t < end_s` (and `t <= now_s`):
    `(fundingTime ms, rate, mark price)` ascending, the floats equal to what ccxt parses
    (`fetch_funding_rate_history`: `timestamp`, `fundingRate`, float(`info["markPrice"]`))."""
    config = config or SandboxConfig()
    perp = config.market_for(symbol)
    if perp.kind != "perp":
        raise ValueError(f"{symbol!r} is not a perpetual; funding needs e.g. 'BTC/USDT:USDT'")
    hi = end_s - 1 if now_s is None else min(end_s - 1, int(now_s * 1000) // 1000)
    ts = funding_times(perp, config, start_s, hi)
    rates, marks = funding_values(perp, ts, config)
    return [
        (t * 1000, r / UNITS_PER_ONE, m / UNITS_PER_ONE)
        for t, r, m in zip(ts.tolist(), rates.tolist(), marks.tolist(), strict=True)
    ]
