"""Deterministic synthetic candles: bar(symbol, interval, open time) is a pure function.

Why pure: a replay exchange must answer the same bar identically whatever window a client
asks for, so tests can compare any two fetches (or a fetch and `expected_bars`) exactly.

Model, per market and data seed:
* a smooth trend `P(t)` (sum of sinusoids of epoch seconds, phases from the market seed);
* a boundary price `B(t) = P(t) * exp(noise(seed, t))` shared by every interval, so a bar's
  close equals the next bar's open, and a 1h bar opens/closes exactly like its 1m bars;
* interval-specific wicks, volume, trade count and taker volume from a splitmix64 hash of
  `(seed, interval, t)`.
Restated windows swap the seed for one derived from the restatement version.

Kinds (`MarketSpec.kind`): a perpetual and its mark price, and Bybit's spot and linear
markets, share their Binance spot market's trend but draw their noise from their own seed
(`seed_id`), so they track it closely without being equal; Binance spot seeds are
unchanged. Mark bars have zero volumes and count one sample per elapsed second (Binance's
markPriceKlines).

All decimals are produced as int64 fixed-point with 8 decimals (`UNITS_PER_ONE`), which the
encoder prints exactly and `expected_bars` turns into the same floats ccxt parses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from .config import (
    BYBIT,
    BYBIT_INTERVALS,
    INTERVALS,
    UNITS_PER_ONE,
    WEEK_S,
    MarketSpec,
    SandboxConfig,
)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 2.0 * np.pi
_INV_2_32 = 1.0 / 4294967296.0
# trend components: (period seconds, log amplitude)
_TREND = (
    (86_400.0, 0.006),
    (7 * 86_400.0, 0.02),
    (29.5 * 86_400.0, 0.06),
    (365.25 * 86_400.0, 0.2),
)
_BOUNDARY_SIGMA = 0.0007  # noise of the price at a bar boundary (shared by all intervals)
_WICK_SIGMA_1M = 0.0005  # typical wick of a 1m bar; scales with sqrt(interval)


def _mix(x: U64) -> U64:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps, as intended)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _uniforms(seed: U64, key: U64, count: int) -> list[F64]:
    """`count` uniforms in [0, 1) per element, a pure function of (seed, key): one keyed
    hash starts a splitmix64 stream, and each 64-bit output gives two 32-bit draws."""
    state = _mix(seed ^ _mix(key))
    out: list[F64] = []
    for i in range((count + 1) // 2):
        h = _mix(state + np.uint64(i + 1) * _GOLDEN)
        out.append((h >> np.uint64(32)).astype(np.float64) * _INV_2_32)
        out.append((h & np.uint64(0xFFFFFFFF)).astype(np.float64) * _INV_2_32)
    return out[:count]


def _irwin_hall(draws: list[F64]) -> F64:
    """Approximately standard normal from a sum of uniforms: cheap, bounded, and plenty for
    synthetic noise."""
    return (sum(draws[1:], draws[0]) - len(draws) / 2.0) * np.sqrt(12.0 / len(draws))


@lru_cache(maxsize=4096)
def market_seed(mid: str, data_seed: int) -> int:
    """Stable 64-bit seed of a market (Python's hash() is salted per process: not usable)."""
    digest = hashlib.blake2b(f"{mid}|{data_seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def version_seed(seed: int, version: int) -> int:
    """Seed of a restated revision; version 0 is the original data."""
    if version == 0:
        return seed
    return int(_mix(np.array([seed ^ (version * 0x9E3779B97F4A7C15 & (2**64 - 1))], np.uint64))[0])


def interval_origin(interval_s: int, config: SandboxConfig) -> int:
    """Alignment origin of bar open times: Binance weeks start on Monday, the rest at epoch."""
    return config.week_origin_s % WEEK_S if interval_s == WEEK_S else 0


def _trend(t: F64, seed: int) -> F64:
    """log P(t) minus log(base price): smooth, a pure function of t."""
    out = np.zeros_like(t)
    for i, (period, amp) in enumerate(_TREND):
        phase = ((seed >> (8 * i)) & 0xFF) / 256.0 * _TWO_PI
        out += amp * np.sin(t * (_TWO_PI / period) + phase)
    return out


@dataclass(frozen=True)
class Bars:
    """Kline columns; decimals are int64 with 8 implied decimals."""

    open_ms: I64
    close_ms: I64
    open: I64
    high: I64
    low: I64
    close: I64
    volume: I64
    quote_volume: I64
    trades: I64
    taker_base: I64
    taker_quote: I64

    def __len__(self) -> int:
        return len(self.open_ms)


# --------------------------------------------------------------------------- selection
def merge_windows(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(w for w in windows if w[1] > w[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def select_open_times(
    market: MarketSpec,
    interval_s: int,
    config: SandboxConfig,
    *,
    lo_s: int | None,
    hi_s: int | None,
    limit: int | None,
    from_end: bool = False,
    outages: list[tuple[int, int]] | None = None,
) -> I64:
    """Open times (s) of existing bars with `lo_s <= t <= hi_s`, at most `limit` of them.

    A bar exists when its interval ends after listing and it is not entirely inside one
    of the `outages` windows: by default `config.kline_outages_for(market.key)` (its
    `gaps` and `kline_gaps`: what every kline server and oracle uses); trades pass
    `config.gaps_for(market.key)` (a kline gap still trades). `from_end` keeps the last
    `limit` bars instead of the first (Binance semantics when no startTime is given).
    Cost is O(gaps + rows).
    """
    origin = interval_origin(interval_s, config)

    def idx_up(t: int) -> int:  # first bar index whose open time >= t
        return -((origin - t) // interval_s)

    def idx_down(t: int) -> int:  # last bar index whose open time <= t
        return (t - origin) // interval_s

    first = idx_down(market.listing_ts)  # the bar containing the first trade
    k_lo = first if lo_s is None else max(first, idx_up(lo_s))
    if hi_s is None:
        raise ValueError("hi_s is required (the sandbox clock bounds every request)")
    k_hi = idx_down(hi_s)
    if k_hi < k_lo or (limit is not None and limit <= 0):
        return np.empty(0, np.int64)
    if outages is None:
        outages = config.kline_outages_for(market.key)
    # bar k is inside gap [gs, ge) iff gs <= t_k and t_k + interval <= ge
    excluded = [
        (idx_up(gs), idx_down(ge - interval_s))
        for gs, ge in merge_windows(outages)
        if idx_up(gs) <= idx_down(ge - interval_s)
    ]
    segments: list[tuple[int, int]] = []  # inclusive index ranges still allowed
    cursor = k_lo
    for a, b in excluded:
        if b < cursor:
            continue
        if a > k_hi:
            break
        if a > cursor:
            segments.append((cursor, a - 1))
        cursor = b + 1
    if cursor <= k_hi:
        segments.append((cursor, k_hi))
    remaining = limit if limit is not None else None
    chosen: list[I64] = []
    for a, b in reversed(segments) if from_end else segments:
        n = b - a + 1
        if remaining is not None:
            n = min(n, remaining)
            remaining -= n
        part = np.arange(b - n + 1, b + 1) if from_end else np.arange(a, a + n)
        chosen.append(part.astype(np.int64))
        if remaining == 0:
            break
    if not chosen:
        return np.empty(0, np.int64)
    if from_end:
        chosen.reverse()
    return np.concatenate(chosen) * np.int64(interval_s) + np.int64(origin)


# --------------------------------------------------------------------------- generation
def _bar_seeds(market: MarketSpec, ts: I64, interval_s: int, config: SandboxConfig) -> U64:
    """Per-bar seed: the market seed, or a restated version's seed where bars overlap one."""
    base = market_seed(market.seed_id, config.seed)
    seeds = np.full(len(ts), base, dtype=np.uint64)
    windows = config.restatements_for(market.key)
    if not windows:
        return seeds
    versions = np.zeros(len(ts), dtype=np.int64)
    for start, end, version in windows:
        overlap = (ts < end) & (ts + interval_s > start)
        versions[overlap] = np.maximum(versions[overlap], version)
    for v in np.unique(versions[versions > 0]):
        seeds[versions == v] = np.uint64(version_seed(base, int(v)))
    return seeds


def _boundary_prices(
    market: MarketSpec, t: I64, seeds: U64 | np.uint64, config: SandboxConfig
) -> F64:
    """Price at bar boundaries `t`: trend times noise keyed by (seed, t) only, so every
    interval sees the same open/close at the same instant (the trend is the spot id's, for
    every kind)."""
    noise = _irwin_hall(_uniforms(np.asarray(seeds, dtype=np.uint64), t.astype(np.uint64), 4))
    trend = _trend(t.astype(np.float64), market_seed(market.id, config.seed))
    return np.exp(np.log(market.base_price) + trend + _BOUNDARY_SIGMA * noise)


def _to_units(x: F64, step_units: int) -> I64:
    return np.rint(x * (UNITS_PER_ONE / step_units)).astype(np.int64) * np.int64(step_units)


def generate_bars(
    market: MarketSpec,
    interval_s: int,
    ts: I64,
    config: SandboxConfig,
    now_ms: int | None = None,
) -> Bars:
    """Values of the bars opening at `ts` (seconds). With `now_ms`, a bar still open at
    `now_ms` is returned as Binance's forming bar: only the elapsed fraction `f` counts
    (close moves linearly from open, wicks grow with sqrt(f), volume with f)."""
    with np.errstate(over="ignore"):
        return _generate(market, interval_s, ts, config, now_ms)


def _generate(
    market: MarketSpec, interval_s: int, ts: I64, config: SandboxConfig, now_ms: int | None
) -> Bars:
    seeds = _bar_seeds(market, ts, interval_s, config)
    n = len(ts)
    if n > 1 and bool(np.all(np.diff(ts) == interval_s)) and bool(np.all(seeds == seeds[0])):
        # contiguous, one revision: bar i closes where bar i+1 opens, price n+1 boundaries
        edges = _boundary_prices(market, np.append(ts, ts[-1] + interval_s), seeds[0], config)
        open_, close = edges[:-1], edges[1:]
    else:
        open_ = _boundary_prices(market, ts, seeds, config)
        close = _boundary_prices(market, ts + interval_s, seeds, config)
    t0 = ts.astype(np.float64)
    kiv = ts.astype(np.uint64) ^ (np.uint64(interval_s) * _M2)  # interval-specific key
    u_up, u_down, u_taker, u_size, *u_vol = _uniforms(seeds, kiv, 8)
    wick = _WICK_SIGMA_1M * np.sqrt(interval_s / 60.0)
    high = np.maximum(open_, close) * np.exp(-np.log1p(-u_up) * wick)
    low = np.minimum(open_, close) * np.exp(np.log1p(-u_down) * wick)
    daily = 1.0 + 0.35 * np.sin((t0 + 0.5 * interval_s) * (_TWO_PI / 86_400.0))
    volume = (
        market.volume_per_min
        * (interval_s / 60.0)
        * daily
        * np.exp(0.45 * _irwin_hall(u_vol) - 0.1)
    )
    taker_share = 0.3 + 0.4 * u_taker
    trade_size = market.volume_per_min / 40.0 * (0.6 + 0.8 * u_size)

    if now_ms is not None and len(ts):
        frac = (now_ms - ts * 1000) / (interval_s * 1000.0)
        forming = frac < 1.0
        if forming.any():
            f = np.clip(frac, 0.0, 1.0)
            g = np.sqrt(f)
            close = np.where(forming, open_ + (close - open_) * f, close)
            high = np.where(forming, open_ + (high - open_) * g, high)
            low = np.where(forming, open_ - (open_ - low) * g, low)
            volume = np.where(forming, volume * f, volume)

    o = _to_units(open_, market.tick_units)
    c = _to_units(close, market.tick_units)
    h = np.maximum(_to_units(high, market.tick_units), np.maximum(o, c))
    lo = np.maximum(
        np.minimum(_to_units(low, market.tick_units), np.minimum(o, c)), market.tick_units
    )
    vol = np.maximum(_to_units(volume, market.step_units), 0)
    vol_f = vol.astype(np.float64) / UNITS_PER_ONE
    vwap = (o + h + lo + c).astype(np.float64) / (4 * UNITS_PER_ONE)
    taker_base = np.minimum(_to_units(vol_f * taker_share, market.step_units), vol)
    trades = np.where(vol > 0, np.maximum(1, np.rint(vol_f / trade_size)), 0).astype(np.int64)
    open_ms = ts * 1000
    if market.kind == "mark":  # markPriceKlines: no volume; 1 s price samples as the count
        trades = np.full(n, interval_s, np.int64)
        if now_ms is not None:
            trades = np.clip((now_ms - open_ms) // 1000 + 1, 0, interval_s).astype(np.int64)
        vol = taker_base = np.zeros(n, np.int64)
        vol_f = np.zeros(n, np.float64)
    return Bars(
        open_ms=open_ms,
        close_ms=open_ms + (interval_s * 1000 - 1),
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=vol,
        quote_volume=_to_units(vol_f * vwap, 1),
        trades=trades,
        taker_base=taker_base,
        taker_quote=_to_units(taker_base.astype(np.float64) / UNITS_PER_ONE * vwap, 1),
    )


# --------------------------------------------------------------------------- test oracle
def expected_bars(
    symbol: str,
    interval_s: int,
    start_s: int,
    end_s: int,
    config: SandboxConfig | None = None,
    *,
    now_s: float | None = None,
    price: str | None = None,
    venue: str = "binance",
) -> dict[str, npt.NDArray[np.float64] | I64]:
    """Canonical bars opening in `[start_s, end_s)`: `ts` (int64 seconds) and float64
    `open, high, low, close, volume`, equal to what ccxt parses from the kline strings.

    `symbol` is a spot market (`BTC/USDT`) or a perpetual (`BTC/USDT:USDT`, what ccxt's
    `fetch_ohlcv` gets from /fapi/v1/klines); `price="mark"` gives a perpetual's mark-price
    bars (`fetch_mark_ohlcv`, volume 0). `venue="bybit"` gives Bybit's bars (ccxt `bybit`'s
    `fetch_ohlcv`: spot, or category linear for `BTC/USDT:USDT`; Bybit intervals only).
    Listing time, gaps, kline gaps and restatements of `config` apply (a kline gap
    removes bars exactly as a gap does; see `SandboxConfig`). With `now_s`, bars not yet
    closed at `now_s` are left out (a canonical store holds closed bars only).
    """
    config = config or SandboxConfig()
    if venue not in ("binance", BYBIT):
        raise ValueError(f"venue must be 'binance' or 'bybit', got {venue!r}")
    if symbol.lower().startswith(f"{BYBIT}:"):  # a `bybit:` config key names the venue too
        venue, symbol = BYBIT, symbol.split(":", 1)[1]
    intervals = BYBIT_INTERVALS if venue == BYBIT else INTERVALS
    if interval_s not in intervals.values():
        raise ValueError(f"interval_s {interval_s} is not a {venue} interval")
    if venue == BYBIT:
        symbol = f"{BYBIT}:{symbol}"
    market = config.market_for(symbol, price)
    hi = end_s - 1
    if now_s is not None:
        hi = min(hi, int(now_s) - interval_s)  # last bar with ts + interval <= now
    ts = select_open_times(
        market, interval_s, config, lo_s=start_s, hi_s=hi, limit=None, from_end=False
    )
    bars = generate_bars(market, interval_s, ts, config)
    # an int64 below 2**53 converts exactly, and IEEE division is correctly rounded, so
    # units / 1e8 is bit-identical to float("<the printed decimal string>"), with or
    # without trailing zeros (Binance prints 8 decimals, Bybit strips them)
    return {
        "ts": ts,
        "open": bars.open / UNITS_PER_ONE,
        "high": bars.high / UNITS_PER_ONE,
        "low": bars.low / UNITS_PER_ONE,
        "close": bars.close / UNITS_PER_ONE,
        "volume": bars.volume / UNITS_PER_ONE,
    }
