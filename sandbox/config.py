"""Sandbox configuration: the knobs, the listed markets and the Binance/Bybit interval tables.

Everything here is plain data so the same config can be built in-process, loaded from a
JSON file by the subprocess, and partially updated over the admin API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Binance spot kline intervals this sandbox serves (1M has no fixed length: refused).
INTERVALS: dict[str, int] = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1_800,
    "1h": 3_600,
    "2h": 7_200,
    "4h": 14_400,
    "6h": 21_600,
    "8h": 28_800,
    "12h": 43_200,
    "1d": 86_400,
    "3d": 259_200,
    "1w": 604_800,
}
WEEK_S = INTERVALS["1w"]
#: Bybit v5 kline intervals this sandbox serves, by Bybit name (`M` has no fixed length:
#: refused, like Binance's 1M). Weeks open on Monday 00:00 UTC, as Binance's.
BYBIT_INTERVALS: dict[str, int] = {
    "1": 60,
    "3": 180,
    "5": 300,
    "15": 900,
    "30": 1_800,
    "60": 3_600,
    "120": 7_200,
    "240": 14_400,
    "360": 21_600,
    "720": 43_200,
    "D": 86_400,
    "W": 604_800,
}
#: Binance weekly bars open on Monday 00:00 UTC; the epoch (1970-01-01) was a Thursday.
BINANCE_WEEK_ORIGIN_S = 4 * 86_400

#: Fixed-point scale of every decimal the sandbox emits (Binance prints 8 decimals).
UNITS_PER_ONE = 100_000_000

DEFAULT_WEIGHTS: dict[str, int] = {"ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2}

#: Kinds of the `corruptions` knob (what each does to a kline row: see `sandbox/corrupt.py`).
CORRUPTION_KINDS: tuple[str, ...] = (
    "string",  # open = "abc"
    "nan",  # open = "NaN"
    "inf",  # open = "Infinity"
    "negative_volume",  # volume negated
    "high_below_low",  # high and low swapped
    "us_ts",  # openTime and closeTime in microseconds
    "misaligned",  # openTime and closeTime shifted by +30 s
    "duplicate",  # the row sent twice in its page
    "duplicate_next_page",  # the row repeated at the start of the page that follows it
    "ts_zero",  # openTime 0 (and closeTime one interval later): the bar's slot is empty
    "ts_future",  # openTime in the year 3000 (3000-01-01T00:00:00Z)
    "zero_price",  # open, high, low and close 0 (volume kept)
    "negative_price",  # low negated (open, high, close kept)
    "zero_bar",  # open, high, low, close and volume all 0
)
_CORRUPTION_KEYS = {"symbol", "ts", "kind", "interval", "times"}
#: Open times at or above this are milliseconds or finer, not the seconds the knob takes.
_MAX_TS_S = 10**11


@dataclass(frozen=True)
class MarketSpec:
    """One market and the parameters of its synthetic price process.

    `kind` is `"spot"`, `"perp"` (the USDⓈ-M perpetual of a spot market) or `"mark"` (that
    perpetual's mark price) on Binance, `"bybit-spot"` or `"bybit-linear"` (the USDT
    perpetual) on Bybit. All kinds share the `id` (`BTCUSDT`) and the price trend; the bar
    noise is seeded by `seed_id`, so every kind differs from the others while Binance spot
    data stays what it always was. Config knobs key a market by `key`: the spot id,
    `BTCUSDT:USDT` (`market_id("BTC/USDT:USDT")`) for a perpetual and its mark price, and
    `bybit:BTCUSDT` / `bybit:BTCUSDT:USDT` for Bybit's markets.
    """

    base: str
    quote: str
    base_price: float
    tick_units: int  # price tick in 1e-8 units (PRICE_FILTER.tickSize)
    step_units: int  # quantity step in 1e-8 units (LOT_SIZE.stepSize)
    volume_per_min: float  # mean base volume per minute
    listing_ts: int  # epoch seconds of the first trade
    kind: str = "spot"  # "spot" | "perp" | "mark" | "bybit-spot" | "bybit-linear"

    @property
    def id(self) -> str:
        return f"{self.base}{self.quote}"

    @property
    def venue(self) -> str:
        """`"bybit"` for the Bybit kinds, else `"binance"`."""
        return BYBIT if self.kind.startswith(f"{BYBIT}-") else "binance"

    @property
    def symbol(self) -> str:
        """The ccxt symbol: `BTC/USDT`, or `BTC/USDT:USDT` for a perpetual (and its mark)."""
        spot = f"{self.base}/{self.quote}"
        return spot if self.kind in ("spot", "bybit-spot") else f"{spot}:{self.quote}"

    @property
    def key(self) -> str:
        """Config key (`market_id(symbol)`): `BTCUSDT`, or `BTCUSDT:USDT` for perp and mark;
        prefixed `bybit:` for Bybit's markets."""
        key = market_id(self.symbol)
        return f"{BYBIT}:{key}" if self.venue == BYBIT else key

    @property
    def seed_id(self) -> str:
        """What seeds the bar noise: the id for spot (unchanged data), `id|kind` otherwise."""
        return self.id if self.kind == "spot" else f"{self.id}|{self.kind}"


_BTC_LISTING = 1_502_942_400  # 2017-08-17 04:00 UTC, when Binance listed BTCUSDT
KNOWN_MARKETS: dict[str, MarketSpec] = {
    m.id: m
    for m in (
        MarketSpec("BTC", "USDT", 30_000.0, 1_000_000, 1_000, 12.0, _BTC_LISTING),
        MarketSpec("ETH", "USDT", 2_000.0, 1_000_000, 10_000, 150.0, _BTC_LISTING),
        MarketSpec("SOL", "USDT", 100.0, 1_000_000, 100_000, 900.0, 1_597_125_600),
        MarketSpec("BNB", "USDT", 300.0, 1_000_000, 100_000, 200.0, 1_509_940_800),
        MarketSpec("ETH", "BTC", 0.06, 1_000, 10_000, 40.0, 1_500_004_800),
    )
}
DEFAULT_LISTING_TS = 1_577_836_800  # 2020-01-01, for configured symbols without a listing time
#: A perpetual lists at max(its spot market's listing, this): 2019-09-08 00:00 UTC, when
#: Binance launched USDⓈ-M futures (BTCUSDT). `listing_ts["BTC/USDT:USDT"]` overrides it.
PERP_LISTING_FLOOR_TS = 1_567_900_800
PERP_QUOTE = "USDT"  # every spot market quoted in it has a perpetual
BYBIT = "bybit"  # venue name, and the config key prefix of its markets (`bybit:BTC/USDT`)
#: Bybit lists every spot market at max(its Binance default listing, the floor of its
#: category) unless `listing_ts["bybit:BTC/USDT"]` (or `...:USDT`) names it: Bybit's USDT
#: perpetuals launched 2020-03-30 00:00 UTC (BTCUSDT's `launchTime`), its spot trading
#: about 2021-07-01 00:00 UTC.
BYBIT_LISTING_FLOOR_TS: dict[str, int] = {"spot": 1_625_097_600, "linear": 1_585_526_400}
#: Funding interval (hours) before any `funding_intervals` entry; allowed intervals divide
#: a day, so fundings fall on multiples of the interval in UTC (00:00, 08:00, 16:00 ...).
DEFAULT_FUNDING_HOURS = 8
FUNDING_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)


def market_id(symbol: str) -> str:
    """`BTC/USDT` or `BTCUSDT` -> `BTCUSDT` (the Binance id used in config keys);
    a perpetual `BTC/USDT:USDT` -> `BTCUSDT:USDT`; a Bybit key `bybit:BTC/USDT` ->
    `bybit:BTCUSDT` (the prefix is case-insensitive)."""
    prefix, sep, rest = symbol.partition(":")
    if sep and prefix.strip().lower() == BYBIT:
        return f"{BYBIT}:{market_id(rest)}"
    return symbol.replace("/", "").upper()


def _derived_market(symbol: str) -> MarketSpec:
    """A market configured by name only: price level and tick derived from a stable hash."""
    if "/" not in symbol:
        raise ValueError(f"extra symbol {symbol!r} must look like 'BASE/QUOTE', e.g. 'DOGE/USDT'")
    base, quote = (p.strip().upper() for p in symbol.split("/", 1))
    digest = int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "big")
    price = 0.5 * 1000.0 ** ((digest % 10_000) / 10_000)  # 0.5 .. 500, log-uniform
    magnitude = math.floor(math.log10(price))
    tick_units = int(min(1_000_000, max(1, 10 ** (magnitude - 4 + 8))))  # ~5 significant digits
    step_units = int(min(UNITS_PER_ONE, max(1, 10 ** (8 - magnitude - 1))))  # ~0.1 quote/step
    return MarketSpec(
        base, quote, price, tick_units, step_units, 5_000.0 / price, DEFAULT_LISTING_TS
    )


@dataclass
class SandboxConfig:
    """Every knob of the sandbox. All times are epoch seconds unless the name says `_ms`.

    Symbol keys accept `BTC/USDT` or `BTCUSDT`; `"*"` in `gaps`/`kline_gaps`/`restatements`
    means all markets of every kind. `BTC/USDT:USDT` (or `BTCUSDT:USDT`) keys the perpetual
    in `gaps`, `kline_gaps`, `restatements`, `listing_ts` and `corruptions`: its gaps (an
    outage) also remove its mark klines and fundings, its kline gaps also remove its mark
    klines (not its fundings), its restatements also restate its mark klines, corruptions
    touch its trade klines only; spot keys never touch the perpetual.

    `gaps` are maintenance outages: `{"BTC/USDT": [[start, end], ...]}` (or `{"start": s,
    "end": e}` objects), windows `[start, end)` in which the market has neither klines nor
    trades (a bar of any interval is absent when it lies entirely inside one; trades and
    fundings stop for the window's exact span). `kline_gaps` has the same shape, keys and
    validation and models a candle-service outage: klines are absent exactly as for
    `gaps` (REST klines of both APIs and mark prices, archive files, the WS kline stream,
    Bybit's klines, `expected_bars`) while trading goes on: aggTrades, fundings and the
    trade oracles (`expected_trades`, `bars_from_trades`) ignore it, so the trades of a
    kline gap rebuild the bars that would be served without it. `kline_outages_for` is
    the one place the two combine; trades use `gaps_for` only.

    `funding_intervals` changes a perpetual's funding interval from a time on:
    `{"BTC/USDT:USDT": [[from_ts_s, hours], ...]}` (from times strictly increasing, hours
    in `FUNDING_HOURS`; `"*"` for perpetuals without their own entry). Before the first
    entry, and without one, fundings are every 8 h at 00:00/08:00/16:00 UTC.

    `corruptions` injects malformed kline rows (raw JSON, before any client parses them):
    a list of `{"symbol": "BTC/USDT", "ts": <bar open time, s>, "kind": <kind>}` with an
    optional `"interval": "1m"` (default: every interval with a bar opening at `ts`;
    `"symbol": "*"` means every market) and an optional `"times": N`: the entry applies
    to the first N responses that serve the bar, later ones serve it clean (a transient
    fault, so a rerun can complete the data; re-armed by configuring `corruptions`).
    Kinds are `CORRUPTION_KINDS`; several entries on one bar apply in list order. Empty
    (the default) keeps the vectorised fast path.

    `publish_delay_s` makes every bar late: a bar is served only once it closed at least
    that long ago by the sandbox clock (so the newest closed minute is missing from a
    request made within the delay, and present on a later one). A number applies to every
    market of both venues; an object keyed like `gaps` (`{"*": 5, "bybit:BTC/USDT": 30}`)
    sets it per market: its own entry, else `"*"`'s, else no delay.

    Bybit (`bybit.py`): `gaps`, `restatements`, `listing_ts` and `publish_delay_s` key its
    markets with a `bybit:` prefix (`bybit:BTC/USDT`, `bybit:BTC/USDT:USDT` for the linear
    perpetual); unprefixed keys are Binance's and never touch Bybit, `"*"` touches every
    market of both venues. `corruptions` apply to Binance only. `bybit_requests_per_5s`
    is Bybit's own IP limit (requests per 5-second wall-clock window; over it: 403 and a
    `ban_seconds` ban); `down`, `latency_ms`, `error_rate_5xx` and `force_429` apply to
    both venues (`force_429` counts kline requests of either venue).
    """

    extra_symbols: list[str] = field(default_factory=list)  # e.g. ["DOGE/USDT"]
    listing_ts: dict[str, int] = field(default_factory=dict)  # symbol -> first trade time
    gaps: dict[str, list[list[int]]] = field(default_factory=dict)  # symbol -> [[start, end)]
    # candle-service outages: klines absent as in `gaps`, trades unaffected
    kline_gaps: dict[str, list[list[int]]] = field(default_factory=dict)
    restatements: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    seed: int = 0  # data seed: a different seed is a different (but still pure) market
    week_origin_s: int = BINANCE_WEEK_ORIGIN_S  # 1w bar alignment; 0 = epoch-aligned
    # rate limiting (windows are REAL wall-clock minutes, like Binance)
    weight_limit_per_minute: int | None = None
    ban_seconds: int = 2
    # Requests arriving within this grace after a 429 was issued were already in flight
    # when the client got the 429: answered 429 (counted `in_flight_after_429`), not banned.
    # Later requests inside the penalty window are violations: 418 and the ban extends.
    penalty_grace_ms: float = 200.0
    weights: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    # fault injection
    error_rate_5xx: float = 0.0
    error_seed: int = 0
    latency_ms: float = 0.0
    force_429: int = 0  # the next N kline requests get 429 (fapi: also fundingRate)
    force_429_retry_after: int = 1  # 0: send no Retry-After header (and no penalty window)
    down: bool = False  # 503 to every /api/v3 and /fapi/v1 request
    corruptions: list[dict[str, Any]] = field(default_factory=list)  # malformed kline rows
    publish_delay_s: float | dict[str, float] = 0.0  # bars served this long after closing
    bybit_requests_per_5s: int | None = None  # Bybit IP limit per 5 s window; None: unlimited
    funding_intervals: dict[str, list[list[int]]] = field(default_factory=dict)
    # clock at start-up: frozen at `frozen_now_s`, else real time + `clock_offset_s`
    frozen_now_s: float | None = None
    clock_offset_s: float = 0.0
    kline_log_size: int = 200

    def _base_markets(self) -> dict[str, MarketSpec]:
        """Known and configured spot markets by id, at their default listing times."""
        out = dict(KNOWN_MARKETS)
        for sym in self.extra_symbols:
            mid = market_id(sym)
            if mid not in out:
                out[mid] = _derived_market(sym)
        return out

    def markets(self) -> dict[str, MarketSpec]:
        """Listed markets by Binance id, with configured listing times applied."""
        out = self._base_markets()
        for sym, ts in self.listing_ts.items():
            mid = market_id(sym)
            if mid in out:
                out[mid] = dataclasses.replace(out[mid], listing_ts=int(ts))
        return out

    def perpetuals(self) -> dict[str, MarketSpec]:
        """USDⓈ-M perpetuals by Binance id (`BTCUSDT`): one per spot market quoted in USDT,
        listed at max(spot listing, `PERP_LISTING_FLOOR_TS`) unless `listing_ts` names it."""
        own = {market_id(k): int(v) for k, v in self.listing_ts.items()}
        out: dict[str, MarketSpec] = {}
        for mid, spot in self.markets().items():
            if spot.quote == PERP_QUOTE:
                perp = dataclasses.replace(spot, kind="perp")
                listing = own.get(perp.key, max(spot.listing_ts, PERP_LISTING_FLOOR_TS))
                out[mid] = dataclasses.replace(perp, listing_ts=listing)
        return out

    def bybit_markets(self, category: str) -> dict[str, MarketSpec]:
        """Bybit's markets of a category (`"spot"` or `"linear"`) by id (`BTCUSDT`): every
        spot market, and a linear perpetual per USDT-quoted one; listed at max(default
        listing, `BYBIT_LISTING_FLOOR_TS[category]`) unless `listing_ts` names its
        `bybit:` key (Binance listing overrides never move a Bybit market)."""
        if category not in BYBIT_LISTING_FLOOR_TS:
            raise ValueError(f"Bybit category must be 'spot' or 'linear', got {category!r}")
        own = {market_id(k): int(v) for k, v in self.listing_ts.items()}
        floor = BYBIT_LISTING_FLOOR_TS[category]
        out: dict[str, MarketSpec] = {}
        for mid, base in self._base_markets().items():
            if category == "linear" and base.quote != PERP_QUOTE:
                continue
            market = dataclasses.replace(base, kind=f"{BYBIT}-{category}")
            listing = own.get(market.key, max(base.listing_ts, floor))
            out[mid] = dataclasses.replace(market, listing_ts=listing)
        return out

    def market_for(self, symbol: str, price: str | None = None) -> MarketSpec:
        """The market of a ccxt symbol or id (`BTC/USDT`, `BTC/USDT:USDT`, `BTCUSDT`);
        `price="mark"` gives a perpetual's mark-price market; a `bybit:` prefix gives
        Bybit's market (`bybit:BTC/USDT:USDT`: linear). KeyError when not listed."""
        if price not in (None, "mark"):
            raise ValueError(f"price must be None or 'mark', got {price!r}")
        key = market_id(symbol)
        if key.startswith(f"{BYBIT}:"):
            if price is not None:
                raise ValueError(f"Bybit serves no mark-price bars here: {symbol!r}")
            rest = key.split(":", 1)[1]
            found = self.bybit_markets("linear" if ":" in rest else "spot").get(
                rest.split(":", 1)[0]
            )
            if found is None or found.key != key:
                raise KeyError(f"symbol {symbol!r} is not listed by this sandbox config")
            return found
        if ":" not in key:
            if price is not None:
                raise ValueError(f"price='mark' needs a perpetual like 'BTC/USDT:USDT': {symbol!r}")
            market = self.markets().get(key)
        else:
            market = self.perpetuals().get(key.split(":", 1)[0])
            if market is not None and market.key != key:
                market = None
            if market is not None and price == "mark":
                market = dataclasses.replace(market, kind="mark")
        if market is None:
            raise KeyError(f"symbol {symbol!r} is not listed by this sandbox config")
        return market

    def funding_schedule(self, key: str) -> list[tuple[int, int]]:
        """`(from_ts_s, interval_s)` segments of a perpetual's funding (config key
        `BTCUSDT:USDT`): the default 8 h from time 0, then its own entries (else `*`'s)."""
        own = [items for k, items in self.funding_intervals.items() if market_id(k) == key]
        items = own[0] if own else self.funding_intervals.get("*", [])
        out = [(0, DEFAULT_FUNDING_HOURS * 3600)]
        out.extend((int(start), int(hours) * 3600) for start, hours in items)
        return out

    def publish_delay_for(self, key: str) -> float:
        """`publish_delay_s` of one market (config key): the number, or its own entry,
        else `"*"`'s, else 0."""
        delay = self.publish_delay_s
        if not isinstance(delay, dict):
            return float(delay)
        own = [v for k, v in delay.items() if k != "*" and market_id(k) == key]
        return float(own[0] if own else delay.get("*", 0.0))

    def gaps_for(self, mid: str) -> list[tuple[int, int]]:
        """Maintenance windows `[start, end)` for one market id (own plus `*`): no klines
        and no trades there (what trades and fundings honour)."""
        return _windows(self.gaps, mid)

    def kline_outages_for(self, mid: str) -> list[tuple[int, int]]:
        """Windows `[start, end)` where one market's klines are absent (own plus `*`): its
        `gaps` and its `kline_gaps`. Everything that serves or predicts klines removes
        bars by these; trades keep `gaps_for` (a kline gap still trades)."""
        return _windows(self.gaps, mid) + _windows(self.kline_gaps, mid)

    def restatements_for(self, mid: str) -> list[tuple[int, int, int]]:
        """`(start, end, version)` windows for one market id (own plus `*`)."""
        out: list[tuple[int, int, int]] = []
        for key, items in self.restatements.items():
            if key == "*" or market_id(key) == mid:
                out.extend((int(r["start"]), int(r["end"]), int(r["version"])) for r in items)
        return out

    def corruptions_for(self, mid: str, interval: str) -> list[tuple[int, int, str]]:
        """`(entry index, open time s, kind)` of the corruptions that apply to one market
        and interval (the index identifies the entry for its `times` budget)."""
        return [
            (i, int(c["ts"]), str(c["kind"]))
            for i, c in enumerate(self.corruptions)
            if (c["symbol"] == "*" or market_id(c["symbol"]) == mid)
            and c.get("interval") in (None, interval)
        ]

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        return cls().updated(data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> SandboxConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def updated(self, knobs: dict[str, Any]) -> SandboxConfig:
        """A copy with `knobs` replaced (each knob wholesale); validates names and types."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(knobs) - names)
        if unknown:
            raise ValueError(f"unknown sandbox config knob(s) {unknown}; known: {sorted(names)}")
        knobs = {k: _coerce(k, v) for k, v in knobs.items()}
        if "weights" in knobs:  # a partial weight table keeps the other endpoints' weights
            knobs["weights"] = {**DEFAULT_WEIGHTS, **knobs["weights"]}
        new = dataclasses.replace(self, **knobs)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ValueError naming the knob when a value cannot work."""
        if not 0.0 <= float(self.error_rate_5xx) <= 1.0:
            raise ValueError(f"error_rate_5xx must be in [0, 1], got {self.error_rate_5xx}")
        if self.weight_limit_per_minute is not None and int(self.weight_limit_per_minute) < 1:
            raise ValueError("weight_limit_per_minute must be >= 1 or null (unlimited)")
        if int(self.ban_seconds) < 1:
            raise ValueError("ban_seconds must be >= 1")
        if int(self.force_429_retry_after) < 0:
            raise ValueError("force_429_retry_after must be >= 0 (0 = no Retry-After header)")
        if int(self.force_429) < 0 or float(self.latency_ms) < 0:
            raise ValueError("force_429 and latency_ms must be >= 0")
        if float(self.penalty_grace_ms) < 0:
            raise ValueError("penalty_grace_ms must be >= 0")
        delays = self.publish_delay_s
        for key, delay in (delays if isinstance(delays, dict) else {"": delays}).items():
            if not 0.0 <= float(delay) < 86_400.0:
                where = f"publish_delay_s[{key!r}]" if key else "publish_delay_s"
                raise ValueError(f"{where} must be >= 0 s and under a day, got {delay}")
        limit = self.bybit_requests_per_5s
        if limit is not None and int(limit) < 1:
            raise ValueError(f"bybit_requests_per_5s must be >= 1 or null (unlimited), got {limit}")
        for sym in self.extra_symbols:
            if "/" not in sym or ":" in sym:
                raise ValueError(
                    f"extra_symbols: {sym!r} must look like 'BASE/QUOTE' (a USDT market's "
                    "perpetual BASE/USDT:USDT is listed with it)"
                )
        for key, schedule in self.funding_intervals.items():
            _funding_intervals(key, schedule)
        for name in ("gaps", "kline_gaps"):
            _validate_windows(name, getattr(self, name))
        for key, items in self.restatements.items():
            for r in items:
                if not {"start", "end", "version"} <= set(r):
                    raise ValueError(f"restatements[{key!r}]: {r} needs start, end, version")
        if not isinstance(self.corruptions, list):
            raise ValueError("corruptions must be a list of {symbol, ts, kind} objects")
        for i, item in enumerate(self.corruptions):
            _corruption(i, item)


_INT_KNOBS = {
    "seed",
    "week_origin_s",
    "ban_seconds",
    "error_seed",
    "force_429",
    "force_429_retry_after",
    "kline_log_size",
}
_FLOAT_KNOBS = {
    "error_rate_5xx",
    "latency_ms",
    "clock_offset_s",
    "penalty_grace_ms",
}
_OPTIONAL_KNOBS = {
    "weight_limit_per_minute": int,
    "frozen_now_s": float,
    "bybit_requests_per_5s": int,
}


def _coerce(name: str, value: Any) -> Any:
    """Numbers from JSON or the command line to the knob's type; a clear error otherwise."""
    try:
        if name in _INT_KNOBS:
            return int(value)
        if name in _FLOAT_KNOBS:
            return float(value)
        if name in _OPTIONAL_KNOBS:
            if isinstance(value, bool):
                raise TypeError(name)
            return None if value is None else _OPTIONAL_KNOBS[name](value)
        if name == "publish_delay_s":
            if isinstance(value, dict):
                return {str(k): float(v) for k, v in value.items()}
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config knob `{name}` must be a number, got {value!r}") from exc
    if name == "down" and not isinstance(value, bool):
        raise ValueError(f"config knob `down` must be true or false, got {value!r}")
    if name in (
        "gaps",
        "kline_gaps",
        "restatements",
        "listing_ts",
        "weights",
        "funding_intervals",
    ) and (not isinstance(value, dict)):
        raise ValueError(f"config knob `{name}` must be an object keyed by symbol/endpoint")
    if name == "extra_symbols" and not isinstance(value, list):
        raise ValueError("config knob `extra_symbols` must be a list like ['DOGE/USDT']")
    if name == "corruptions":
        if not isinstance(value, list):
            raise ValueError(
                "config knob `corruptions` must be a list like "
                '[{"symbol": "BTC/USDT", "ts": 1704067200, "kind": "nan"}]'
            )
        return [_corruption(i, item) for i, item in enumerate(value)]
    return value


def _corruption(index: int, item: Any) -> dict[str, Any]:
    """One `corruptions` entry, normalised (`ts` an int); ValueError naming what is wrong."""
    where = f"corruptions[{index}]"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object {{symbol, ts, kind}}, got {item!r}")
    unknown = sorted(set(item) - _CORRUPTION_KEYS)
    missing = sorted({"symbol", "ts", "kind"} - set(item))
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; "
            f"allowed: {sorted(_CORRUPTION_KEYS)}"
        )
    symbol, ts, kind = item["symbol"], item["ts"], item["kind"]
    if not isinstance(symbol, str) or not (symbol == "*" or symbol.strip()):
        raise ValueError(f"{where}.symbol must be 'BASE/QUOTE', 'BASEQUOTE' or '*'")
    if market_id(symbol).startswith(f"{BYBIT}:"):
        raise ValueError(f"{where}.symbol {symbol!r}: corruptions apply to Binance markets only")
    if isinstance(ts, bool) or not isinstance(ts, int | str):
        raise ValueError(f"{where}.ts must be an integer open time in epoch seconds, got {ts!r}")
    if isinstance(ts, str) and not ts.isdigit():
        raise ValueError(f"{where}.ts must be an integer open time in epoch seconds, got {ts!r}")
    if not 0 <= int(ts) < _MAX_TS_S:
        raise ValueError(f"{where}.ts={ts} is not an open time in epoch SECONDS")
    if kind not in CORRUPTION_KINDS:
        raise ValueError(f"{where}.kind {kind!r} is not one of {list(CORRUPTION_KINDS)}")
    out: dict[str, Any] = {"symbol": symbol, "ts": int(ts), "kind": kind}
    if "times" in item:
        times = item["times"]
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(
                f"{where}.times must be a positive integer (how many responses carry the "
                f"fault), got {times!r}"
            )
        out["times"] = times
    if "interval" in item:
        if item["interval"] not in INTERVALS:
            raise ValueError(
                f"{where}.interval {item['interval']!r} is not one of {list(INTERVALS)}"
            )
        out["interval"] = item["interval"]
    return out


def _funding_intervals(key: str, items: Any) -> None:
    """Validate one `funding_intervals` entry; ValueError naming the knob otherwise."""
    where = f"funding_intervals[{key!r}]"
    if (key != "*" and ":" not in key) or market_id(key).startswith(f"{BYBIT}:"):
        raise ValueError(f"{where}: key must be a Binance perpetual like 'BTC/USDT:USDT', or '*'")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where} must be a non-empty list of [from_ts_s, hours] pairs")
    last = -1
    for item in items:
        ok = isinstance(item, list | tuple) and len(item) == 2
        if not ok or any(isinstance(x, bool) or not isinstance(x, int) for x in item):
            raise ValueError(f"{where}: {item!r} must be [from_ts_s, hours], two integers")
        start, hours = item
        if not 0 <= start < _MAX_TS_S:
            raise ValueError(f"{where}: from time {start} is not epoch SECONDS")
        if start <= last:
            raise ValueError(f"{where}: from times must be strictly increasing, got {start}")
        if hours not in FUNDING_HOURS:
            raise ValueError(f"{where}: {hours} h is not one of {list(FUNDING_HOURS)}")
        last = start


def _validate_windows(name: str, table: Any) -> None:
    """Validate a `gaps`-shaped knob (`{symbol key or "*": [[start, end], ...]}`, windows
    also as `{"start": s, "end": e}`); ValueError naming the knob and entry otherwise."""
    if not isinstance(table, dict):
        raise ValueError(f"config knob `{name}` must be an object keyed by symbol or '*'")
    for key, wins in table.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{name}: key {key!r} must be a symbol like 'BTC/USDT' or '*'")
        if not isinstance(wins, list | tuple):
            raise ValueError(f"{name}[{key!r}] must be a list of [start, end] windows")
        for w in wins:
            pair = isinstance(w, list | tuple) and len(w) == 2
            if not (pair or (isinstance(w, dict) and set(w) == {"start", "end"})):
                raise ValueError(
                    f"{name}[{key!r}]: window {w!r} must be [start, end] or "
                    '{"start": s, "end": e} (epoch seconds)'
                )
            values = list(w.values()) if isinstance(w, dict) else list(w)
            try:
                if any(isinstance(v, bool) for v in values):
                    raise TypeError("a boolean is not a time")
                start, end = _window(w)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{name}[{key!r}]: window {w!r} needs integer epoch seconds"
                ) from exc
            if end < start:
                raise ValueError(f"{name}[{key!r}]: window {w} ends before it starts")


def _window(w: Any) -> tuple[int, int]:
    if isinstance(w, dict):
        return int(w["start"]), int(w["end"])
    start, end = w
    return int(start), int(end)


def _windows(table: dict[str, list[Any]], mid: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for key, wins in table.items():
        if key == "*" or market_id(key) == mid:
            out.extend(_window(w) for w in wins)
    return out
