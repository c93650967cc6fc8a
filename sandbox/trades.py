"""Deterministic trades consistent with the sandbox's 1m bars, and GET /api/v3/aggTrades.

Why: a client that lost an OHLCV window can rebuild it from trades ("trades -> bars
repair"); the rebuilt bars must equal the exchange's bars exactly, or nothing can be
asserted. So trades here are derived FROM the 1m bars (`generate_bars(market, 60, ...)`,
the closed bars) and reproduce them exactly:

* the trades of a minute aggregate to its 1m bar: open = first trade's price, close =
  last, high = max, low = min, volume = sum(qty), count = the kline's trade count, and
  taker buy base volume = sum(qty) of the trades with `is_buyer_maker` false;
* coarser bars are NOT consistent in general: `bars.py` generates the wicks and volume of
  every interval from its own hash, so only boundary prices are shared. Trades rebuild a
  coarse bar's open and close (outside restated windows) but not its high, low or volume;
* quote volumes are not reproduced (bars use an (O+H+L+C)/4 VWAP, not sum(price * qty)).

Model of one minute with n trades (n = the bar's `trades`): timestamps are sorted uniform
draws inside the minute, strictly increasing by at least 1 ms (non-decreasing only if a
minute has fewer tradable milliseconds than trades); prices follow a noisy path through
the anchors open (first trade), high and low (two distinct interior trades) and close
(last trade), clipped into [low, high] and rounded to the tick; taker buys are a random
subset of the trades, sized from the bar's taker share; each side's volume is split into
positive multiples of the lot step. Every draw is a splitmix64 hash of the market seed and
the bar's own values, so a restated bar gets different trades and everything else is
unchanged whatever window is asked.

Trade ids: `minute_index * TRADE_ID_SLOTS + j` (`minute_index = open_time_s // 60`, `j`
the trade's position in its minute), so an id is stable whatever the window, strictly
increasing in time, and names its minute; ids are not contiguous across minutes. Every
trade is its own aggregate trade: `a == f == l`.

Gaps remove the 1m bars they cover entirely (as klines); in a minute a gap or the listing
time covers only partly, the trades fall in the tradable part (a minute without one has
no trades). `kline_gaps` (a candle-service outage) do NOT apply to trades: the trades of
a kline gap are those of the bars as if it did not exist (`select_open_times` is called
with `outages=config.gaps_for(...)`), so rebuilding bars from them gives exactly the bars
the klines would serve without the kline gap; the oracles `expected_trades` and
`bars_from_trades` follow (they ignore `kline_gaps`, unlike `expected_bars`). No trades
before listing. A bar with volume 0 has no trades. Trades of the minute still forming at
the sandbox's now are those of the final bar up to now: they do not aggregate to the
forming kline (a different, interpolated model), only to the closed one.
`publish_delay_s` and `corruptions` do not apply to trades.

Endpoint semantics (`serve_agg_trades`), following Binance and ccxt's notes on it:
`symbol` (spot), `fromId`, `startTime`, `endTime` (ms, inclusive), `limit` (default 500
when none of the others is sent, else 1000; max 1000). Only trades at or before the
sandbox clock's now. `fromId` with a time bound: -1128; both times more than an hour
apart: -1127; start after end: -1023. Selection: `fromId` -> the first `limit` trades with
id >= fromId; `startTime` and `endTime` -> the LAST `limit` trades of the window (Binance
counts the limit from the end of a time window: ccxt's caveat in `fetch_trades`);
`startTime` only -> the first `limit` from it; `endTime` only or nothing -> the last
`limit` up to it (or now). Rows are ascending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .bars import generate_bars, interval_origin, market_seed, merge_windows, select_open_times
from .config import UNITS_PER_ONE, MarketSpec, SandboxConfig, market_id
from .klines import BinanceError, int_param, require_symbol
from .state import SandboxState

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

#: Binance spot request weight of GET /api/v3/aggTrades (ccxt's cost table: 0.4 = 2).
AGG_TRADES_WEIGHT = 2
#: Trade-id slots per minute: id = minute_index * TRADE_ID_SLOTS + position in the minute.
TRADE_ID_SLOTS = 1000
AGG_DEFAULT_LIMIT = 500
AGG_MAX_LIMIT = 1000
MAX_WINDOW_MS = 3_600_000  # startTime..endTime span allowed when both are sent
_MINUTE_MS = 60_000

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TRADE_DOMAIN = np.uint64(0x7472616465730001)  # "trades": keeps these draws apart from bars'
_INV_2_32 = 1.0 / 4294967296.0
_PATH_NOISE = 0.25  # interior price noise, as a fraction of the bar's range


@dataclass(frozen=True)
class Trades:
    """Trade columns in id order; prices and quantities are int64 with 8 implied decimals
    (multiples of the market's tick and lot step)."""

    id: I64
    ts_ms: I64
    price_units: I64
    qty_units: I64
    is_buyer_maker: B

    def __len__(self) -> int:
        return len(self.id)

    def take(self, index: Any) -> Trades:
        """The trades at a boolean mask, index array or slice."""
        return Trades(
            self.id[index],
            self.ts_ms[index],
            self.price_units[index],
            self.qty_units[index],
            self.is_buyer_maker[index],
        )

    @staticmethod
    def empty() -> Trades:
        i = np.empty(0, np.int64)
        return Trades(i, i, i, i, np.empty(0, np.bool_))

    @staticmethod
    def concat(parts: Sequence[Trades]) -> Trades:
        if not parts:
            return Trades.empty()
        return Trades(
            np.concatenate([p.id for p in parts]),
            np.concatenate([p.ts_ms for p in parts]),
            np.concatenate([p.price_units for p in parts]),
            np.concatenate([p.qty_units for p in parts]),
            np.concatenate([p.is_buyer_maker for p in parts]),
        )


# --------------------------------------------------------------------------- hashing
def _mix(x: U64) -> U64:
    """splitmix64 finaliser (the same as bars.py's), vectorised; uint64 wraps."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _halves(h: U64) -> tuple[F64, F64]:
    """Two uniforms in [0, 1) from each 64-bit hash."""
    hi = (h >> np.uint64(32)).astype(np.float64) * _INV_2_32
    lo = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * _INV_2_32
    return hi, lo


def _u64(a: I64) -> U64:
    return a.astype(np.uint64)


# --------------------------------------------------------------------------- generation
def generate_trades(market: MarketSpec, start_s: int, end_s: int, config: SandboxConfig) -> Trades:
    """Trades with `start_s * 1000 <= ts_ms < end_s * 1000`: a pure function of the market
    seed, the data seed and time (see the module doc for the model and the guarantees)."""
    if end_s <= start_s:
        return Trades.empty()
    minutes = select_open_times(
        market,
        60,
        config,
        lo_s=start_s - start_s % 60,
        hi_s=end_s - 1,
        limit=None,
        outages=config.gaps_for(market.key),  # a kline gap still trades
    )
    trades = minute_trades(market, minutes, config)
    keep = (trades.ts_ms >= start_s * 1000) & (trades.ts_ms < end_s * 1000)
    return trades if bool(keep.all()) else trades.take(keep)


def minute_trades(market: MarketSpec, minutes: I64, config: SandboxConfig) -> Trades:
    """All trades of the 1m bars opening at `minutes` (ascending open times of existing
    bars, as `select_open_times` gives them)."""
    if market.kind == "mark":
        raise ValueError("a mark-price market has no trades")
    if len(minutes) == 0:
        return Trades.empty()
    with np.errstate(over="ignore"):
        return _minute_trades(market, np.asarray(minutes, np.int64), config)


def _required_trades(o: I64, h: I64, lo: I64, c: I64) -> I64:
    """Fewest trades that can show open, high, low and close."""
    hi_extra = (h > np.maximum(o, c)).astype(np.int64)
    lo_extra = (lo < np.minimum(o, c)).astype(np.int64)
    flat = (o == c) & (hi_extra == 0) & (lo_extra == 0)
    return np.where(flat, 1, 2 + hi_extra + lo_extra).astype(np.int64)


def _minute_trades(market: MarketSpec, minutes: I64, config: SandboxConfig) -> Trades:
    bars = generate_bars(market, 60, minutes, config)
    o, h, lo, c = bars.open, bars.high, bars.low, bars.close
    step = np.int64(market.step_units)
    steps = bars.volume // step  # volume is a multiple of the step
    taker_steps = bars.taker_base // step
    allowed = _tradable_segments(market, minutes, config)
    length = np.full(len(minutes), _MINUTE_MS, np.int64)
    for g, segs in allowed.items():
        length[g] = sum(b - a for a, b in segs)
    # the kline's count; raised to what OHLC needs and capped by the volume's lot steps
    # (neither happens for the sandbox's bar model: every closed minute has >= 4 trades)
    n = np.minimum(np.maximum(bars.trades, _required_trades(o, h, lo, c)), steps)
    n = np.where((steps > 0) & (length > 0), n, 0).astype(np.int64)
    if int(n.max(initial=0)) > TRADE_ID_SLOTS:
        raise ValueError(f"more than {TRADE_ID_SLOTS} trades in a minute: ids would collide")
    total = int(n.sum())
    if total == 0:
        return Trades.empty()

    # per-minute seed: the market's, the time and the bar's own values (restated bars
    # therefore get other trades)
    seed = np.uint64(market_seed(market.seed_id, config.seed)) ^ _TRADE_DOMAIN
    gseed = _mix(np.full(len(minutes), seed, np.uint64) ^ _mix(_u64(minutes)))
    for col in (o, h, lo, c, bars.volume, bars.taker_base):
        gseed = _mix(gseed ^ _u64(col) * _GOLDEN)
    ga, gb = _halves(_mix(gseed ^ _M1))

    grp = np.repeat(np.arange(len(minutes)), n)
    first = np.cumsum(n) - n  # index of each minute's first trade
    j = np.arange(total, dtype=np.int64) - first[grp]
    key = gseed[grp] + _u64(j + 1) * _GOLDEN
    h1 = _mix(key)
    h2 = _mix(h1 ^ _M2)
    h3 = _mix(h2 ^ _GOLDEN)
    u_time, u_side = _halves(h1)
    u_noise1, u_noise2 = _halves(h2)
    u_qty, _ = _halves(h3)
    ng = n[grp]

    # ---- timestamps: sorted draws, at least 1 ms apart when the minute has room
    order = np.lexsort((u_time, grp))
    v = u_time[order]  # v[i] is the j-th smallest draw of minute grp[i]
    room = length[grp]
    spaced = room >= ng
    offset = np.where(
        spaced,
        np.floor(v * (room - ng + 1)).astype(np.int64) + j,
        np.floor(v * room).astype(np.int64),
    )
    ts_ms = minutes[grp] * 1000 + offset
    for g, segs in allowed.items():  # partly tradable minutes: map onto their segments
        sel = slice(int(first[g]), int(first[g] + n[g]))
        ts_ms[sel] = minutes[g] * 1000 + _map_offsets(offset[sel], segs)

    # ---- prices: anchors open (first), high and low (interior), close (last)
    hg, lg, og, cg = h[grp], lo[grp], o[grp], c[grp]
    need_hi = h > np.maximum(o, c)
    i_h = np.where(n >= 4, 1 + np.floor(ga * (n - 2)).astype(np.int64), 1)
    il0 = 1 + np.floor(gb * np.maximum(n - 3, 1)).astype(np.int64)
    i_l = np.where(n >= 4, il0 + (il0 >= i_h), 1)
    place_h = (n >= 4) | ((n == 3) & need_hi)
    place_l = (n >= 4) | ((n == 3) & ~need_hi)
    # piecewise linear path 0 -> pa -> pb -> n-1 through the anchors, then noise
    pa = np.where(n >= 4, np.minimum(i_h, i_l), 0)
    pb = np.where(n >= 4, np.maximum(i_h, i_l), 0)
    ya = np.where(i_h < i_l, h, lo).astype(np.float64)
    yb = np.where(i_h < i_l, lo, h).astype(np.float64)
    ya = np.where(n >= 4, ya, o)
    yb = np.where(n >= 4, yb, o)
    pa_t, pb_t, ya_t, yb_t = pa[grp], pb[grp], ya[grp], yb[grp]
    seg1, seg2 = j <= pa_t, (j > pa_t) & (j <= pb_t)
    x0 = np.where(seg1, 0, np.where(seg2, pa_t, pb_t))
    x1 = np.where(seg1, pa_t, np.where(seg2, pb_t, ng - 1))
    y0 = np.where(seg1, og, np.where(seg2, ya_t, yb_t))
    y1 = np.where(seg1, ya_t, np.where(seg2, yb_t, cg))
    frac = (j - x0) / np.maximum(x1 - x0, 1)
    span = (hg - lg).astype(np.float64)
    path = y0 + (y1 - y0) * frac + (u_noise1 + u_noise2 - 1.0) * _PATH_NOISE * span
    tick = np.int64(market.tick_units)
    path = np.where(path < lg, 2.0 * lg - path, path)  # reflect: no pile-up at the wicks
    path = np.where(path > hg, 2.0 * hg - path, path)
    price = np.rint(np.clip(path, lg, hg) / tick).astype(np.int64) * tick
    price = np.clip(price, lg, hg)
    last = first + n - 1
    has = n > 0
    price[first[has]] = o[has]
    price[last[has]] = c[has]
    ph, pl = place_h & has, place_l & has
    price[(first + i_h)[ph]] = h[ph]
    price[(first + i_l)[pl]] = lo[pl]

    # ---- sides: k taker buys (random trades) whose lots sum to the taker buy volume
    sell_steps = steps - taker_steps
    share = np.divide(n * taker_steps, steps, out=np.zeros(len(n)), where=steps > 0)
    k = np.rint(share).astype(np.int64)
    k_lo = np.maximum((taker_steps > 0).astype(np.int64), n - sell_steps)
    k_hi = np.minimum(taker_steps, n - (sell_steps > 0))
    feasible = k_lo <= k_hi
    k = np.where(feasible, np.clip(k, k_lo, np.maximum(k_hi, k_lo)), np.clip(k, 0, n))
    buy_steps = np.clip(taker_steps, k, steps - (n - k))  # == taker_steps when feasible
    order = np.lexsort((u_side, grp))
    rank = np.empty(total, np.int64)
    rank[order] = np.arange(total) - first[grp[order]]
    buy = rank < k[grp]

    # ---- quantities: each side's steps split into positive lots (exponential weights)
    pool = np.where(buy, buy_steps[grp], (steps - buy_steps)[grp])
    count = np.where(buy, k[grp], (n - k)[grp])
    sub = grp * 2 + buy
    order = np.argsort(sub, kind="stable")
    s_sub = sub[order]
    w = -np.log1p(-u_qty[order])
    cw = np.cumsum(w)
    starts = np.flatnonzero(np.r_[True, s_sub[1:] != s_sub[:-1]])
    ends = np.r_[starts[1:], total] - 1
    run = np.repeat(np.arange(len(starts)), ends - starts + 1)
    base = np.r_[0.0, cw][starts][run]
    cum = cw - base
    extra = (pool - count)[order]
    whole = cum[ends][run]
    cut = np.minimum(np.floor(extra * (cum / whole)).astype(np.int64), extra)
    cut[ends] = extra[ends]
    prev = np.r_[np.int64(0), cut[:-1]]
    prev[starts] = 0
    lots = np.empty(total, np.int64)
    lots[order] = 1 + cut - prev
    qty = lots * step

    ids = minutes[grp] // 60 * TRADE_ID_SLOTS + j
    return Trades(ids.astype(np.int64), ts_ms.astype(np.int64), price, qty, ~buy)


def _tradable_segments(
    market: MarketSpec, minutes: I64, config: SandboxConfig
) -> dict[int, list[tuple[int, int]]]:
    """Minutes (by position in `minutes`) that a gap or the listing time covers partly:
    their tradable `[start, end)` ms offsets. Minutes absent are tradable throughout.
    Only `gaps` stop trading (`kline_gaps` remove klines, not trades)."""
    forbidden = [(gs * 1000, ge * 1000) for gs, ge in merge_windows(config.gaps_for(market.key))]
    forbidden.append((int(minutes[0]) * 1000 - _MINUTE_MS, market.listing_ts * 1000))
    forbidden = merge_windows(forbidden)
    out: dict[int, list[tuple[int, int]]] = {}
    for edge in {e for win in forbidden for e in win if e % _MINUTE_MS}:
        m = edge // _MINUTE_MS * 60
        g = int(np.searchsorted(minutes, m))
        if g >= len(minutes) or int(minutes[g]) != m or g in out:
            continue
        lo_ms, hi_ms = m * 1000, m * 1000 + _MINUTE_MS
        segs, cursor = [], lo_ms
        for fs, fe in forbidden:
            if fe <= cursor or fs >= hi_ms:
                continue
            if fs > cursor:
                segs.append((cursor - lo_ms, fs - lo_ms))
            cursor = max(cursor, fe)
        if cursor < hi_ms:
            segs.append((cursor - lo_ms, _MINUTE_MS))
        out[g] = segs
    return out


def _map_offsets(offset: I64, segs: list[tuple[int, int]]) -> I64:
    """Offsets into the tradable length -> offsets into the minute."""
    if not segs:
        return offset
    lengths = np.array([b - a for a, b in segs], np.int64)
    before = np.cumsum(lengths) - lengths
    which = np.searchsorted(np.cumsum(lengths), offset, side="right")
    which = np.minimum(which, len(segs) - 1)
    starts = np.array([a for a, _ in segs], np.int64)
    return starts[which] + offset - before[which]


# --------------------------------------------------------------------------- aggregation
def _columns(trades: Any) -> tuple[I64, I64, I64, I64, B]:
    """(ids, ts_ms, price units, qty units, is_buyer_maker) of `Trades`, of a mapping of
    arrays with ccxt's keys (`expected_trades`), or of a list of ccxt trade dicts."""
    if isinstance(trades, Trades):
        return (
            trades.id,
            trades.ts_ms,
            trades.price_units,
            trades.qty_units,
            trades.is_buyer_maker,
        )
    if isinstance(trades, Mapping):
        cols = {k: np.asarray(trades[k]) for k in ("id", "timestamp", "price", "amount")}
        side = np.asarray(trades["side"]) if "side" in trades else None
    else:
        rows = list(trades)
        cols = {k: np.asarray([r[k] for r in rows]) for k in ("id", "timestamp", "price", "amount")}
        side = np.asarray([r.get("side") for r in rows])
    n = len(cols["timestamp"])
    maker = np.zeros(n, np.bool_) if side is None else (side == "sell")
    # a float parsed from an 8-decimal string (or units / 1e8) times 1e8 rounds back to
    # the exact units for any magnitude the sandbox produces (< 2**51 units)
    return (
        cols["id"].astype(np.int64),
        cols["timestamp"].astype(np.int64),
        np.rint(cols["price"].astype(np.float64) * UNITS_PER_ONE).astype(np.int64),
        np.rint(cols["amount"].astype(np.float64) * UNITS_PER_ONE).astype(np.int64),
        np.asarray(maker, np.bool_),
    )


def aggregate_trades(
    trades: Trades | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    interval_s: int = 60,
    config: SandboxConfig | None = None,
) -> dict[str, I64]:
    """Bars of `interval_s` from trades, in units: `ts` (open time s) and int64 `open,
    high, low, close, volume, trades, taker_base` (taker buy base volume). Trades are
    ordered by (timestamp, id) first; bars are aligned like the sandbox's (`config`'s
    week origin for 1w). Only intervals with trades appear."""
    ids, ts_ms, price, qty, maker = _columns(trades)
    order = np.lexsort((ids, ts_ms))
    ts_ms, price, qty, maker = ts_ms[order], price[order], qty[order], maker[order]
    origin = interval_origin(interval_s, config or SandboxConfig())
    bucket = (ts_ms // 1000 - origin) // interval_s * interval_s + origin
    if len(bucket) == 0:
        e = np.empty(0, np.int64)
        keys = ("ts", "open", "high", "low", "close", "volume", "trades", "taker_base")
        return {k: e for k in keys}
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)]
    return {
        "ts": bucket[starts].astype(np.int64),
        "open": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "low": np.minimum.reduceat(price, starts),
        "close": price[ends - 1],
        "volume": np.add.reduceat(qty, starts),
        "trades": (ends - starts).astype(np.int64),
        "taker_base": np.add.reduceat(np.where(maker, 0, qty), starts),
    }


def bars_from_trades(
    trades: Trades | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    interval_s: int = 60,
    config: SandboxConfig | None = None,
) -> dict[str, npt.NDArray[np.float64] | I64]:
    """Canonical bars rebuilt from trades, shaped like `expected_bars`: `ts` (int64 s)
    and float64 `open, high, low, close, volume`. For 1m bars of closed minutes these are
    bit-identical to `expected_bars(symbol, 60, ...)`, except that they ignore
    `kline_gaps` (trades go on in a kline gap: there they equal `expected_bars` of the
    config without its `kline_gaps`); coarser bars share only open and close (see the
    module doc). Accepts `Trades`, `expected_trades`' output or the list
    ccxt's `fetch_trades` returns."""
    agg = aggregate_trades(trades, interval_s, config)
    out: dict[str, npt.NDArray[np.float64] | I64] = {"ts": agg["ts"]}
    for col in ("open", "high", "low", "close", "volume"):
        out[col] = agg[col] / UNITS_PER_ONE  # the float ccxt parses from the 8-decimal text
    return out


def expected_trades(
    symbol: str,
    start_s: int,
    end_s: int,
    config: SandboxConfig | None = None,
    now_s: float | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """What ccxt's `binance.fetch_trades` parses for a spot `symbol`, for trades with
    `start_s * 1000 <= timestamp < end_s * 1000` (and `timestamp <= now` when `now_s` is
    given, as the endpoint serves them): `id` (int64; ccxt gives it as a string),
    `timestamp` (int64 ms), `price`, `amount` (float64, equal to ccxt's floats) and `side`
    (`"buy"` for a taker buy, else `"sell"`), in id order. `gaps` have no trades;
    `kline_gaps` are ignored (trades go on while klines are missing)."""
    config = config or SandboxConfig()
    market = config.market_for(symbol)
    if market.kind != "spot":
        raise ValueError(f"aggTrades are served for Binance spot markets only, not {symbol!r}")
    trades = generate_trades(market, start_s, end_s, config)
    if now_s is not None:
        trades = trades.take(trades.ts_ms <= int(now_s * 1000))
    return {
        "id": trades.id,
        "timestamp": trades.ts_ms,
        "price": trades.price_units / UNITS_PER_ONE,
        "amount": trades.qty_units / UNITS_PER_ONE,
        "side": np.where(trades.is_buyer_maker, "sell", "buy"),
    }


# --------------------------------------------------------------------------- endpoint
def _scan(
    market: MarketSpec,
    config: SandboxConfig,
    *,
    lo_ms: int | None,
    hi_ms: int,
    from_id: int | None,
    limit: int,
    from_end: bool,
) -> Trades:
    """The first (or, `from_end`, last) `limit` trades with `lo_ms <= ts <= hi_ms` and
    `id >= from_id`, generating minutes in growing chunks from the end it starts at."""
    lo_s = None if lo_ms is None else lo_ms // 1000 - (lo_ms // 1000) % 60
    if from_id is not None:
        lo_s = max(lo_s or 0, from_id // TRADE_ID_SLOTS * 60)
    hi_s = hi_ms // 1000
    parts: list[Trades] = []
    found, chunk = 0, 64
    while found < limit:
        minutes = select_open_times(
            market,
            60,
            config,
            lo_s=lo_s,
            hi_s=hi_s,
            limit=chunk,
            from_end=from_end,
            outages=config.gaps_for(market.key),  # a kline gap still trades
        )
        if len(minutes) == 0:
            break
        got = minute_trades(market, minutes, config)
        keep = got.ts_ms <= hi_ms
        if lo_ms is not None:
            keep &= got.ts_ms >= lo_ms
        if from_id is not None:
            keep &= got.id >= from_id
        got = got.take(keep)
        parts.append(got)
        found += len(got)
        if from_end:
            hi_s = int(minutes[0]) - 60
        else:
            lo_s = int(minutes[-1]) + 60
        chunk = min(chunk * 2, 4096)
    if from_end:
        parts.reverse()
    trades = Trades.concat(parts)
    return trades.take(slice(-limit, None) if from_end else slice(0, limit))


def _dec(units: int) -> str:
    return f"{units // UNITS_PER_ONE}.{units % UNITS_PER_ONE:08d}"


def encode_agg_trades(trades: Trades) -> bytes:
    """Binance's aggTrades JSON: each trade its own aggregate (`a == f == l`)."""
    rows = [
        f'{{"a":{i},"p":"{_dec(p)}","q":"{_dec(q)}","f":{i},"l":{i},"T":{t},'
        f'"m":{"true" if m else "false"},"M":true}}'
        for i, p, q, t, m in zip(
            trades.id.tolist(),
            trades.price_units.tolist(),
            trades.qty_units.tolist(),
            trades.ts_ms.tolist(),
            trades.is_buyer_maker.tolist(),
            strict=True,
        )
    ]
    return ("[" + ",".join(rows) + "]").encode()


def serve_agg_trades(state: SandboxState, query: Any) -> tuple[bytes, int]:
    """GET /api/v3/aggTrades of an admitted request: `(body, rows)`; raises
    `BinanceError` with Binance's code and message for a bad request."""
    cfg = state.config
    symbol = require_symbol(query)
    from_id = int_param(query, "fromId")
    start_ms = int_param(query, "startTime")
    end_ms = int_param(query, "endTime")
    raw_limit = int_param(query, "limit")
    markets = cfg.markets()
    market = markets.get(symbol) if symbol == market_id(symbol) else None
    if market is None:
        raise BinanceError(-1121, "Invalid symbol.")
    if from_id is not None and (start_ms is not None or end_ms is not None):
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    if start_ms is not None and end_ms is not None:
        if start_ms > end_ms:
            raise BinanceError(-1023, "Start time is greater than end time.")
        if end_ms - start_ms > MAX_WINDOW_MS:
            raise BinanceError(-1127, "More than 1 hours between startTime and endTime.")
    if raw_limit is not None and raw_limit < 1:
        raise BinanceError(-1130, "Invalid data sent for a parameter.")
    bounded = from_id is not None or start_ms is not None or end_ms is not None
    default = AGG_MAX_LIMIT if bounded else AGG_DEFAULT_LIMIT
    limit = default if raw_limit is None else min(raw_limit, AGG_MAX_LIMIT)
    now_ms = state.clock.now_ms()
    hi_ms = now_ms if end_ms is None else min(end_ms, now_ms)
    trades = _scan(
        market,
        cfg,
        lo_ms=start_ms,
        hi_ms=hi_ms,
        from_id=from_id,
        limit=limit,
        from_end=from_id is None and (start_ms is None or end_ms is not None),
    )
    return encode_agg_trades(trades), len(trades)


__all__ = [
    "AGG_TRADES_WEIGHT",
    "TRADE_ID_SLOTS",
    "BinanceError",
    "Trades",
    "aggregate_trades",
    "bars_from_trades",
    "encode_agg_trades",
    "expected_trades",
    "generate_trades",
    "minute_trades",
    "serve_agg_trades",
]
