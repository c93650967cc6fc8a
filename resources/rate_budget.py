"""Rate budgets in the exchange's own units: the table, the bucket maths, the window ledger.

Pure data and arithmetic (no I/O, no clocks of its own): `rate_limit.py` applies it.

Units. `rate_limit.tokens_per_interval` and `burst_tokens` are stated the way the exchange
states its limit (Binance: request weight per minute). ccxt hands `throttle(cost)` its own
cost units; `ExchangeLimits.units_per_cost` converts (binance spot: 1 ccxt unit = 5
weight, so klines 0.4 = 2 weight, exchangeInfo 4 = 20 weight).

Window-safe bucket. An exchange counts in fixed windows of `T` (Binance: the clock
minute). A token bucket of capacity `b` refilled at `r` grants at most `b + r*T` in ANY
interval of length `T`, aligned to the exchange's window or not. With `r = (L_eff - b)/T`
that is exactly `L_eff = L * (1 - safety_margin)`: the burst is taken out of the window's
budget, never added on top of it. `b = max(burst_tokens, c_max)`, where `c_max` is the
largest single request the client sends (binance: exchangeInfo, 20 weight), so every
request fits in a full bucket; a request larger than `b` anyway waits for a full bucket
plus its excess, which can overshoot `L_eff` by at most `cost - b` in one window.
`burst_tokens: null` means 2% of `L_eff`. Buckets start empty, so a new bucket (a new
process, a Redis fallback, a recovery) never adds a burst to a window already in use.

Fixed windows (`rate_limit.window: exchange`, the default). Where the exchange states that it
counts in fixed windows of its own clock and reports its count (Binance: REQUEST_WEIGHT per
MINUTE in exchangeInfo, `X-MBX-USED-WEIGHT-1M` resetting at each exchange minute), and the
budget is stated in that window (`tokens_per_interval: null`, or per the exchange's own
`interval_ms`), the bucket is not needed: up to `L_eff` is admitted per exchange window,
aligned to the exchange clock (its Date headers: the estimate never leads it), at once. A
request granted at exchange time `t` reaches the exchange at some instant of
`[t, t + arrival_s]` (`arrival_s` = 1 s of clock error + the request timeout), so it is
counted against EVERY window that interval touches (the one in progress and, near its end,
the next): requests in flight across a boundary can never push either window over `L_eff`,
and the safety margin stays a margin. `burst_tokens` does not apply there. Before the
exchange's clock is known (no response yet), the first request goes under the same rule on
the local clock (its response carries the exchange's count, which then includes it), later
ones through the bucket. Exchanges with unknown or sliding windows, a budget stated per
another interval, and `window: sliding` keep the window-safe bucket.

The exchange's own count. Where the exchange reports its count (`X-MBX-USED-WEIGHT-1M`),
`WindowLedger` keeps, per exchange window, this limiter's own grants and the largest
`excess` = reported count - own grants up to the reporting request: weight spent by
someone else (another program on the IP, a wrong cost table). A request is held to the
next window when `excess + own + cost > L_eff`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from seamless_assets.errors import ConfigError

DEFAULT_BURST_FRACTION = 0.02
#: seconds added to a held request's wait past the window end, for clock error
WINDOW_GUARD_S = 1.0
#: seconds after its grant a request may still reach the exchange, unless the client says
#: (clock error + ccxt's default request timeout of the client, 10 s)
DEFAULT_ARRIVAL_S = WINDOW_GUARD_S + 10.0

_INTERVAL_MS = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


@dataclass(frozen=True)
class ExchangeLimits:
    """What an exchange publishes about its request budget, per ccxt exchange id."""

    unit: str  # the exchange's name for what it counts
    units_per_cost: float  # exchange units per ccxt cost unit
    limit: float  # published limit per window (before exchangeInfo says otherwise)
    interval_ms: int  # the exchange's counting window
    used_header: str | None  # response header carrying the exchange's count, if any
    max_request_cost: float  # c_max: the largest single request this client sends
    # the exchange counts in fixed windows of its own clock (not sliding ones) and says so
    fixed_window: bool = False
    arrival_s: float = DEFAULT_ARRIVAL_S  # a request reaches the exchange within this
    # ccxt APIs (by name prefix) whose costs are in other units: binance states its futures
    # APIs' costs in their own weight (fapi klines of 500 bars: 5), its spot API's in
    # fifths of a weight (klines: 0.4)
    api_units_per_cost: tuple[tuple[str, float], ...] = ()

    def units_for(self, cost: float, api: str) -> float:
        """A request's ccxt `cost` in the exchange's units, for ccxt API `api`."""
        for prefix, units in self.api_units_per_cost:
            if api.startswith(prefix):
                return cost * units
        return cost * self.units_per_cost

    def arriving_within(self, request_timeout_s: float) -> ExchangeLimits:
        """These limits for a client whose requests time out after `request_timeout_s`."""
        return replace(self, arrival_s=WINDOW_GUARD_S + request_timeout_s)

    def with_published(self, published: PublishedLimit | None) -> ExchangeLimits:
        if published is None:
            return self
        return replace(self, limit=published.limit, interval_ms=published.interval_ms)


@dataclass(frozen=True)
class PublishedLimit:
    limit: float
    interval_ms: int


EXCHANGE_LIMITS: dict[str, ExchangeLimits] = {
    # spot api: 6000 weight/min; ccxt binance rateLimit 50 ms, cost 0.2 per weight
    # (exchangeInfo: REQUEST_WEIGHT per 1 MINUTE; the header resets at each exchange minute)
    # (the futures APIs count their own weight; one key counts both, at the tightest limit
    # either API publishes: see ExchangeClient)
    "binance": ExchangeLimits(
        "request weight",
        5.0,
        6000,
        60_000,
        "X-MBX-USED-WEIGHT-1M",
        20,
        fixed_window=True,
        api_units_per_cost=(("fapi", 1.0), ("dapi", 1.0)),
    ),
    # USD-M futures: 2400 weight/min; ccxt costs are weights (klines limit 1500: 10)
    "binanceusdm": ExchangeLimits(
        "request weight", 1.0, 2400, 60_000, "X-MBX-USED-WEIGHT-1M", 10, fixed_window=True
    ),
}


def exchange_limits(exchange_id: str, ccxt_rate_limit_ms: float | None = None) -> ExchangeLimits:
    """The table entry of `exchange_id`; other exchanges count ccxt cost units, with the
    limit ccxt itself paces at (one unit per `rateLimit` ms: 60000/rateLimit a minute)."""
    known = EXCHANGE_LIMITS.get(exchange_id.lower())
    if known is not None:
        return known
    rate_ms = ccxt_rate_limit_ms if ccxt_rate_limit_ms and ccxt_rate_limit_ms > 0 else 1000.0
    return ExchangeLimits("ccxt cost", 1.0, 60_000 / rate_ms, 60_000, None, 1.0)


def published_limit(exchange_info: Any) -> PublishedLimit | None:
    """The REQUEST_WEIGHT limit of a Binance-style exchangeInfo body (the tightest one when
    several windows are listed, scaled to its own window), else None."""
    if not isinstance(exchange_info, Mapping):
        return None
    found: list[PublishedLimit] = []
    for entry in exchange_info.get("rateLimits") or ():
        if not isinstance(entry, Mapping) or entry.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        try:
            limit = float(entry["limit"])
            interval_ms = _INTERVAL_MS[str(entry["interval"]).upper()] * int(
                entry.get("intervalNum", 1)
            )
        except (KeyError, TypeError, ValueError):
            continue
        if limit > 0 and interval_ms > 0:
            found.append(PublishedLimit(limit, interval_ms))
    return min(found, key=lambda p: p.limit / p.interval_ms) if found else None


@dataclass(frozen=True)
class Budget:
    """The bucket one limiter applies to one key, in exchange units."""

    unit: str
    limit: float  # L_eff per window (this process's share during a Redis outage)
    interval_s: float  # the exchange's window T
    capacity: float  # b
    rate_per_s: float  # r = (limit - b) / T
    published: float  # L, what the exchange allows per window
    clamped_from: float | None = None  # a configured limit above L that was lowered to L
    fixed: bool = False  # up to `limit` per exchange window, no bucket (module docstring)
    arrival_s: float = 0.0  # fixed: a grant counts in every window of [t, t + arrival_s]

    @property
    def window_limit(self) -> float:
        """At most this much is granted in any window of length T (b + r*T), or, in fixed
        windows, in any window of the exchange."""
        if self.fixed:
            return self.limit
        return self.capacity + self.rate_per_s * self.interval_s

    def landing_windows(self, exchange_time_s: float) -> tuple[int, int]:
        """(first, last) exchange window a request granted now is counted in: the one in
        progress and, for fixed windows near its end, the next one it may land in."""
        first = window_of(exchange_time_s, self.interval_s)
        if not self.fixed:
            return first, first
        return first, window_of(exchange_time_s + self.arrival_s, self.interval_s)


def plan_budget(
    *,
    limits: ExchangeLimits,
    tokens_per_interval: float | None,
    interval_ms: int,
    burst_tokens: float | None,
    safety_margin: float,
    share: int = 1,
    window: str = "exchange",
) -> Budget:
    """The window-safe bucket for an exchange (see the module docstring).

    A configured `tokens_per_interval` (per `interval_ms`) is rescaled to the exchange's
    window and wins when it is lower than the published limit; a higher one is lowered to
    the published limit, its `burst_tokens` in proportion (`Budget.clamped_from` says so,
    for a warning). `share` > 1 plans
    one worker's part of the budget (`L_eff / share`) while Redis is down. `window`
    "exchange" follows the exchange's fixed windows where it states them (`Budget.fixed`),
    "sliding" always plans the window-safe bucket.
    """
    window_s = limits.interval_ms / 1000
    published = limits.limit
    limit = published
    clamped = None
    if tokens_per_interval is not None:
        configured = tokens_per_interval * limits.interval_ms / interval_ms
        if configured > published * (1 + 1e-9):
            clamped = configured
            if burst_tokens is not None:  # the burst shrinks with the rate it was set for
                burst_tokens = burst_tokens * published / configured
        else:
            limit = configured
    limit_eff = limit * (1 - safety_margin) / share
    # a worker's share during an outage banks 2% of the share, whatever burst_tokens says
    use_default = burst_tokens is None or share > 1
    wanted = DEFAULT_BURST_FRACTION * limit_eff if use_default else float(burst_tokens or 0)
    capacity = max(wanted, limits.max_request_cost)
    if capacity >= limit_eff:
        what = "burst_tokens" if not use_default and wanted >= limit_eff else None
        reason = (
            f"a bucket of {capacity:g} {limits.unit} leaves no refill inside a budget of "
            f"{limit_eff:g} {limits.unit} per {window_s:g}s"
            + (f" shared by {share} workers" if share > 1 else "")
            + "; "
            + (
                "lower burst_tokens"
                if what
                else "raise tokens_per_interval or lower rate_limit.workers"
            )
        )
        raise ConfigError(f"seamless.rate_limit.{what or 'tokens_per_interval'}", reason)
    fixed = (
        window == "exchange"
        and limits.fixed_window
        and limits.used_header is not None
        and (tokens_per_interval is None or interval_ms == limits.interval_ms)
        and limits.arrival_s < window_s
    )
    return Budget(
        unit=limits.unit,
        limit=limit_eff,
        interval_s=window_s,
        capacity=capacity,
        rate_per_s=(limit_eff - capacity) / window_s,
        published=published,
        clamped_from=clamped,
        fixed=fixed,
        arrival_s=limits.arrival_s if fixed else 0.0,
    )


def window_of(exchange_time_s: float, interval_s: float) -> int:
    """The exchange's counting window holding this instant (fixed, epoch-aligned)."""
    return math.floor(exchange_time_s / interval_s)


def hold_until(window: int, interval_s: float) -> float:
    """The exchange time at which a request held out of `window` may go: its end plus a
    guard for clock error (1 s, or a twentieth of a shorter window)."""
    return (window + 1) * interval_s + min(WINDOW_GUARD_S, interval_s / 20)


@dataclass
class WindowLedger:
    """One key's view of the exchange's current window (see the module docstring)."""

    window: int = -1
    own: float = 0.0  # cost granted by this limiter counted in `window`
    excess: float = 0.0  # max over reports of (reported count - own grants before it)
    next_own: float = 0.0  # fixed windows: cost granted that may land in `window + 1`
    blocked_through: int = -1  # windows up to this one count as used up (Redis fallback)

    @property
    def blocked(self) -> bool:
        return self.window <= self.blocked_through

    def block(self, window: int, through: int) -> None:
        """Count windows `window`..`through` as used up."""
        self._roll(window)
        self.blocked_through = max(self.blocked_through, through)

    def _roll(self, window: int) -> None:
        if window > self.window:
            carried = self.next_own if window == self.window + 1 else 0.0
            self.window, self.own, self.excess, self.next_own = window, carried, 0.0, 0.0

    def must_hold(self, window: int, cost: float, limit: float) -> bool:
        """Whether a request of `cost` would take `window` past `limit`."""
        self._roll(window)
        if self.blocked:
            return True
        spent = self.excess + self.own
        # a request alone in its window goes: the bucket bounds it (see the docstring)
        return spent > 0 and spent + cost > limit + 1e-9

    def must_hold_fixed(
        self, first: int, last: int, cost: float, limit: float, full_limit: float
    ) -> bool:
        """Fixed windows: whether a request of `cost` counted in windows `first`..`last`
        would take one past `limit` (this limiter's own grants: its share during a Redis
        outage) or the exchange's count past `full_limit`. A request alone in a window
        goes (one larger than the whole budget could never go otherwise)."""
        self._roll(first)
        if self.blocked or last <= self.blocked_through:
            return True
        spent = self.excess + self.own
        if spent > 0 and (spent + cost > full_limit + 1e-9 or self.own + cost > limit + 1e-9):
            return True
        return last > first and self.next_own > 0 and self.next_own + cost > limit + 1e-9

    def grant(self, window: int, cost: float, last: int | None = None) -> float:
        """Record a grant counted in `window` (and in `last` = `window + 1` too, when it
        may land there); returns own grants in `window` so far (the request's mark)."""
        self._roll(window)
        if window == self.window:
            self.own += cost
            if last is not None and last > window:
                self.next_own += cost
        return self.own

    def report(self, window: int, used: float, own_at_grant: float | None) -> None:
        """The exchange reported `used` for `window` on a response to a request granted
        when own grants in that window were `own_at_grant` (None: unknown, count 0)."""
        self._roll(window)
        if window == self.window:
            self.excess = max(self.excess, used - (own_at_grant or 0.0))


def exceeding_windows(
    grants: Sequence[tuple[float, float]], interval_s: float, offset_s: float
) -> dict[int, float]:
    """Sum of `(time, cost)` grants per window of `interval_s` shifted by `offset_s`
    (tests: check no window of any alignment exceeds a limit)."""
    sums: dict[int, float] = {}
    for at, cost in grants:
        w = math.floor((at - offset_s) / interval_s)
        sums[w] = sums.get(w, 0.0) + cost
    return sums
