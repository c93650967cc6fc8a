"""The ccxt client: windowed pagination of closed bars under a shared rate budget.

One `ExchangeClient` lives for one run. It loads markets once, learns the exchange's
clock once, fetches a requested range in contiguous windows of the exchange's maximum
candles per call (concurrently, within the budget), retries network errors, timeouts
and 5xx with exponential backoff and jitter, and turns every 429/418 into a penalty on
the limiter key (from that response's own `Retry-After`) that pauses all requests.

Imports: `ccxt.base.errors` is all this module needs at import time. Any `ccxt.*` import
runs the `ccxt` package itself (every sync exchange: 0.35 s warm, ~2.5 s cold), which
config validation imports anyway; `ccxt.async_support` (every async exchange, as much
again) is imported only when a client is built, so loading definitions does not pay it.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from seamless_assets.config import BackfillConfig, SeamlessConfig
from seamless_assets.core.frame import Range
from seamless_assets.core.stabilization import closed_end as bars_closed_end
from seamless_assets.errors import ExchangeUnavailable, UnknownExchange, UnknownSymbol
from seamless_assets.nodes import Timeframe, market_kind

from .ccxt_lean import ccxt_errors
from .kline_pages import (
    FAST_OHLCV_ROW_EXCHANGES,
    PackedPage,
    PackedRows,
    fast_row_parser,
    is_ms,
    pack_rows,
    packing_pages,
    page_within,
    split_page,
    unfiltered,
    unpack_rows,
)
from .rate_budget import PublishedLimit, exchange_limits, published_limit
from .rate_limit import RateLimiter, limiter_key

if TYPE_CHECKING:
    import ccxt.async_support as ccxt_async

log = logging.getLogger(__name__)

# ccxt's credential keys (`Exchange.requiredCredentials`). This client reads public market
# data only, so it is never given any: ccxt with an `apiKey` calls private endpoints on
# its own (binance's `load_markets` fetches currencies from a signed wallet endpoint).
CREDENTIAL_KEYS = frozenset(
    (
        "apiKey",
        "secret",
        "uid",
        "accountId",
        "login",
        "password",
        "twofa",
        "privateKey",
        "walletAddress",
        "token",
    )
)

DEFAULT_CANDLES_PER_CALL = 500
MAX_RATE_LIMITED_RETRIES = 50
#: ccxt errors retried with backoff: transport failures, timeouts, 5xx, garbled bodies.
RETRIABLE_ERRORS = (ccxt_errors.NetworkError, ccxt_errors.BadResponse)
#: Binance answers 429 and 418 with `DDoSProtection`; other exchanges use both classes.
RATE_LIMIT_ERRORS = (ccxt_errors.RateLimitExceeded, ccxt_errors.DDoSProtection)

T = TypeVar("T")

#: the exchange-unit cost of the request this task was last granted (re-acquired when a
#: penalty arrives between the grant and the send)
_COST: contextvars.ContextVar[float] = contextvars.ContextVar("request_cost", default=0.0)
# the ccxt API of the request being made (binance: `public` spot, `fapiPublic` USDⓈ-M)
_API: contextvars.ContextVar[str] = contextvars.ContextVar("request_api", default="")


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A response header's value by case-insensitive name."""
    lowered = name.lower()
    for key, value in (headers or {}).items():
        if key.lower() == lowered:
            return str(value)
    return None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `override` into `base` (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: float | None = None
) -> float | None:
    """`Retry-After` of a response in seconds (delta-seconds or HTTP-date), else None."""
    for name, value in (headers or {}).items():
        if name.lower() != "retry-after":
            continue
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
        try:
            when = parsedate_to_datetime(str(value)).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    return None


@dataclass(frozen=True)
class ExchangeSettings:
    """Everything needed to build the ccxt client of one exchange."""

    exchange_id: str
    ccxt_config: Mapping[str, Any]
    market_types: tuple[str, ...] | None  # ccxt's names, as configured; None: market_kinds
    max_candles_per_call: int | None
    backfill: BackfillConfig
    rate_key: str
    penalty_backoff_s: float
    acquire_deadline_s: float = 600.0
    market_kinds: tuple[str, ...] = ("spot",)  # what the catalog trades (nodes.market_kind)

    @classmethod
    def from_config(cls, config: SeamlessConfig, exchange_id: str) -> ExchangeSettings:
        exchange = config.exchange(exchange_id)
        rate = config.rate_limit_for(exchange_id)
        return cls(
            exchange_id=exchange_id,
            ccxt_config=exchange.ccxt_config,
            market_types=exchange.market_types,
            market_kinds=config.market_kinds(exchange_id),
            max_candles_per_call=exchange.max_candles_per_call,
            backfill=config.seamless.backfill,
            rate_key=limiter_key(rate.key_template, exchange_id, exchange.account),
            penalty_backoff_s=rate.penalty_backoff_ms / 1000,
        )


@dataclass
class RequestStats:
    """What this client sent, for run metadata and benchmarks."""

    http_requests: Counter[str] = field(default_factory=Counter)  # by endpoint path
    http_status: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0
    rate_limit_wait_s: float = 0.0  # waited for the limiter's budget and 429/418 penalties
    fetch_s: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.http_requests.values())


def _no_windows() -> np.ndarray:
    return np.empty((0, 2), dtype=np.int64)


@dataclass(frozen=True)
class FetchedBars:
    """Raw ccxt rows `[ts_ms, o, h, l, c, v]` for a window, as the exchange answered.

    `row_windows[i]` is the `[start, end)` (epoch s) where row `i`'s open time must lie
    (`conform(..., windows=...)` flags a row outside it `invalid_timestamp`): the window
    its request asked for, or the part of the fetch before it for a row a page repeats
    from an earlier page. `answers` are the disjoint windows each response answered for
    (a response covers from its `since` to the next request's), covering the closed part
    of `window`: a slot is only confirmed empty by a response that placed every row it
    sent. Rows opening at or after `closed_end` were still forming: callers drop them.
    """

    rows: list[list[Any]]
    window: Range
    server_now_s: int
    closed_end: int  # bars opening at or after this were still forming: callers drop them
    row_windows: np.ndarray = field(default_factory=_no_windows)
    answers: tuple[Range, ...] = ()
    packed: PackedRows | None = None  # the rows, packed (`fetch_bars(pack=True)`): `unpack`
    source: str = "rest"  # where the rows came from (`core.provenance.SOURCES`)

    def unpack(self) -> FetchedBars:
        """The page with its rows as lists (a packed page's made again), for conformance."""
        if self.packed is None:
            return self
        return replace(self, rows=unpack_rows(self.packed), packed=None)


# Exchanges whose pages are the oldest bars from `since` up to `limit`, whatever the range
# holds: a page that starts late means the bars before it do not exist. Any other exchange
# may answer a range's newest bars (bybit v5 gives the newest `limit` of [start, end]), so
# there a short page starting late has the bars before it asked for again.
PAGES_FROM_SINCE = frozenset({"binance", "binanceusdm", "binancecoinm"})


def _per_ms(limit: PublishedLimit) -> float:
    return limit.limit / limit.interval_ms


def load_market_types(exchange: Any, settings: ExchangeSettings) -> tuple[str, ...]:
    """Set which of ccxt's market types `exchange` loads (its `fetchMarkets.types`): the
    user's ccxt option, else `market_types`, else the catalog's kinds in the exchange's
    names; the types it will load (empty: the exchange has no such option)."""
    fetch_markets = exchange.options.get("fetchMarkets")
    if not isinstance(fetch_markets, dict) or "types" not in fetch_markets:
        return ()
    user_types = settings.ccxt_config.get("options", {}).get("fetchMarkets", {}).get("types")
    fetch_markets["types"] = list(
        user_types
        or settings.market_types
        or native_market_types(settings.market_kinds, fetch_markets["types"])
    )
    return tuple(fetch_markets["types"])


def native_market_types(kinds: tuple[str, ...], offered: list[str]) -> list[str]:
    """ccxt's names for market kinds on one exchange (its default `fetchMarkets.types`):
    binance and bybit load `linear`/`inverse` contracts by those names, OKX-style
    exchanges as `swap` and `future`."""
    types: list[str] = []
    for kind in kinds:
        names = [kind] if kind in offered else [t for t in ("swap", "future") if t in offered]
        types.extend(name for name in names or [kind] if name not in types)
    return types


# The ccxt API and path of an exchange's candles per market kind, where the cost of a page
# depends on its size (`byLimit`): binance's futures klines weigh 1/2/5/10 by limit.
KLINE_ENDPOINTS: dict[str, dict[str, tuple[str, str]]] = {
    "binance": {"linear": ("fapiPublic", "klines"), "inverse": ("dapiPublic", "klines")},
}


def cheapest_page(cost: Any, most: int) -> int:
    """The page size up to `most` bars with the most bars per unit of cost, from a ccxt
    cost entry `{"cost": c, "byLimit": [[up_to, cost], ...]}` (anything else: `most`).
    Binance USD-M: 499 bars for weight 2, not 500 for 5 (2.5x the bars per weight)."""
    if not isinstance(cost, dict) or not cost.get("byLimit"):
        return most
    tiers = sorted((int(up_to), float(c)) for up_to, c in cost["byLimit"])
    candidates = [(min(up_to, most), c) for up_to, c in tiers if c > 0]
    candidates += [(most, next((c for up_to, c in tiers if most <= up_to), tiers[-1][1]))]
    return max(candidates, key=lambda p: (p[0] / p[1], p[0]))[0]


def split_windows(window: Range, interval_s: int, bars_per_call: int) -> list[Range]:
    """Contiguous sub-windows of at most `bars_per_call` bars covering `window`."""
    step = interval_s * bars_per_call
    return [Range(s, min(s + step, window.end)) for s in range(window.start, window.end, step)]


async def _all_or_nothing(aws: list[Awaitable[T]]) -> list[T]:
    """Like `asyncio.gather`, but the first failure cancels the rest before it is raised
    (so no request outlives a failed fetch and hits a closed session)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:  # in order: the first window's error wins among simultaneous ones
            if task in done and (error := task.exception()) is not None:
                raise error
        return [t.result() for t in tasks]
    finally:
        unfinished = [t for t in tasks if not t.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)


class ExchangeClient:
    """ccxt async exchange for one run; use as `async with ExchangeClient(...) as client`."""

    def __init__(self, settings: ExchangeSettings, limiter: RateLimiter) -> None:
        self.settings = settings
        self.limiter = limiter
        self.stats = RequestStats()
        self._exchange = self._build_exchange()
        self._markets_loaded = False
        self._markets_lock = asyncio.Lock()
        self._closing: asyncio.Future[None] | None = None
        # backfill.max_concurrent_requests caps this client's windows in flight; the
        # limiter's slot (rate_limit.local_semaphore) caps the whole process per key.
        self._windows_in_flight = asyncio.Semaphore(settings.backfill.max_concurrent_requests)
        self._clock_lock = asyncio.Lock()
        self._clock: tuple[float, float] | None = None  # (server epoch s, local monotonic)
        self._penalty_until = 0.0  # wall clock: the latest 429/418 penalty this client saw
        self._date_offset: float | None = None  # exchange clock - local clock, from Date
        self._published: list[PublishedLimit] = []  # limits the exchangeInfo documents state

    def _build_exchange(self) -> ccxt_async.Exchange:
        import ccxt.async_support as ccxt_async  # heavy: only when a client is built

        exchange_id = self.settings.exchange_id
        if exchange_id not in ccxt_async.exchanges:
            close = difflib.get_close_matches(exchange_id.lower(), ccxt_async.exchanges, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownExchange(f"ccxt has no exchange {exchange_id!r}{hint}")
        base: dict[str, Any] = {"timeout": self.settings.backfill.request_timeout_ms}
        public = {k: v for k, v in self.settings.ccxt_config.items() if k not in CREDENTIAL_KEYS}
        config = deep_merge(base, public)
        # ccxt calls throttle(cost) only with enableRateLimit; throttle is our limiter, so a
        # user's `enableRateLimit: false` must not switch the shared budget off.
        config["enableRateLimit"] = True
        exchange = getattr(ccxt_async, exchange_id)(config)
        self.market_types = load_market_types(exchange, self.settings)

        key = self.settings.rate_key
        # The budget is in the exchange's units: ccxt's costs are converted here, and the
        # limiter learns the exchange's limits, published limit and count through hooks.
        # A request reaches the exchange within its timeout of the grant (fixed windows count
        # it in every window of that span); the clock follows the exchange once a Date came.
        limits = exchange_limits(exchange_id, getattr(exchange, "rateLimit", None))
        limits = limits.arriving_within(self.settings.backfill.request_timeout_ms / 1000)
        self._used_header = limits.used_header
        if callable(register := getattr(self.limiter, "register", None)):
            register(key, limits, self.exchange_time, self.clock_synced)

        async def throttle(cost: float | None = None) -> None:
            # A penalty this client saw but the limiter may not know yet (e.g. a remote
            # limiter whose penalize() has not run) still holds back this request.
            waited_from = time.monotonic()
            if self._penalty_until > time.time():
                await self.limiter.penalize(key, self._penalty_until, "Retry-After")
            units = limits.units_for(1.0 if cost is None else cost, _API.get())
            _COST.set(units)
            await self.limiter.acquire(key, units, self.settings.acquire_deadline_s)
            self.stats.rate_limit_wait_s += time.monotonic() - waited_from

        original_handle_errors = exchange.handle_errors
        original_fetch = exchange.fetch
        original_fetch2 = exchange.fetch2

        async def fetch2(path: Any, api: Any = "public", *args: Any, **kwargs: Any) -> Any:
            # throttle(cost) runs inside: it converts the cost by the API it is for
            _API.set(api if isinstance(api, str) else "/".join(map(str, api)))
            return await original_fetch2(path, api, *args, **kwargs)

        def handle_errors(
            code: int, reason: str, url: str, method: str, headers: Any, *rest: Any
        ) -> Any:
            # Runs synchronously as each response arrives: read Retry-After from this very
            # response (last_response_headers can be overwritten by a concurrent request)
            # and pause the key at once, before any other request can be started.
            self.stats.http_status[int(code)] += 1
            if code in (418, 429):
                self._record_penalty(code, headers)
            self._record_count(headers)
            return original_handle_errors(code, reason, url, method, headers, *rest)

        async def counted_fetch(
            url: str, method: str = "GET", headers: Any = None, body: Any = None
        ) -> Any:
            await self._hold_for_penalty()
            self.stats.http_requests[urlparse(url).path] += 1
            response = await original_fetch(url, method, headers, body)
            if urlparse(url).path.endswith("/exchangeInfo"):
                self._clock_from_markets(response)
                if (published := published_limit(response)) is not None:
                    self._published.append(published)
            return response

        exchange.throttle = throttle
        exchange.fetch2 = fetch2
        exchange.handle_errors = handle_errors
        exchange.fetch = counted_fetch
        if exchange_id in FAST_OHLCV_ROW_EXCHANGES:
            exchange.parse_ohlcv = fast_row_parser(exchange.parse_ohlcv)
        exchange.parse_ohlcvs = unfiltered(
            exchange.parse_ohlcvs, fast_rows=exchange_id in FAST_OHLCV_ROW_EXCHANGES
        )
        return exchange

    def exchange_time(self) -> float:
        """The exchange's clock by its Date headers (epoch s). It may lag by up to a second
        (Date is truncated), never lead, so a count is never put in a later window."""
        return time.time() + (self._date_offset or 0.0)

    def clock_synced(self) -> bool:
        """Whether `exchange_time` follows the exchange (a response with a Date came)."""
        return self._date_offset is not None

    def _record_count(self, headers: Mapping[str, Any] | None) -> None:
        """Follow the exchange's clock (Date) and its own count (the used-weight header)."""
        at = None
        if (date := header(headers, "Date")) is not None:
            try:
                at = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError, IndexError):
                at = None
        if at is not None:
            offset = at - time.time()
            if self._date_offset is None or offset > self._date_offset:
                self._date_offset = offset
        if self._used_header is None or (used := header(headers, self._used_header)) is None:
            return
        report = getattr(self.limiter, "report_used", None)
        try:
            value = float(used)
        except ValueError:
            return
        if callable(report):
            # on the same clock estimate the limiter tags its grants with, so a count and
            # the grants it includes land in the same window
            report(self.settings.rate_key, value, self.exchange_time())

    async def _hold_for_penalty(self) -> None:
        """No request starts while a 429/418 penalty runs: one granted before the penalty
        and still inside ccxt (between throttle() and the send) waits it out, then takes
        its budget again (the window it was granted in may be over)."""
        known = getattr(self.limiter, "known_penalty_until", None)
        held = False
        waited_from = time.monotonic()
        while True:
            until = max(self._penalty_until, known(self.settings.rate_key) if known else 0.0)
            if until <= time.time():
                break
            held = True
            await asyncio.sleep(until - time.time())
        if held:
            await self.limiter.acquire(
                self.settings.rate_key, _COST.get() or 1.0, self.settings.acquire_deadline_s
            )
            self.stats.rate_limit_wait_s += time.monotonic() - waited_from

    def _record_penalty(self, code: int, headers: Mapping[str, str] | None) -> None:
        self.stats.rate_limited += 1
        retry_after = retry_after_seconds(headers)
        wait_s = retry_after if retry_after is not None else self.settings.penalty_backoff_s
        until = time.time() + wait_s
        self._penalty_until = max(self._penalty_until, until)
        penalize_now = getattr(self.limiter, "penalize_now", None)
        if callable(penalize_now):  # synchronous: blocks the key before control returns
            penalize_now(self.settings.rate_key, until, f"HTTP {code}")
        log.warning(
            "%s answered HTTP %s: pausing every request on %s for %.1fs (Retry-After=%s)",
            self.settings.exchange_id,
            code,
            self.settings.rate_key,
            wait_s,
            retry_after,
        )

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start_closing(self) -> None:
        """Begin closing in the background, once the client is done with the exchange:
        ccxt's close pauses `timeout_on_exit` (250 ms) so transports finish, and the run
        need not wait for that. `close` waits for it."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._exchange.close())

    async def close(self) -> None:
        """Close the connections; once (later calls wait for the same close)."""
        self.start_closing()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    @property
    def exchange(self) -> ccxt_async.Exchange:
        return self._exchange

    async def load_markets(self) -> dict[str, Any]:
        """Markets, loaded once per client (spot only unless configured)."""
        async with self._markets_lock:
            if not self._markets_loaded:
                await self._call("load_markets", self._exchange.load_markets)
                self._markets_loaded = True
                self._publish_limit()
        markets: dict[str, Any] = self._exchange.markets
        return markets

    def _publish_limit(self) -> None:
        """Hand the limiter the tightest limit the markets' documents published (binance:
        spot 6000 and USDⓈ-M 2400 weight a minute, one key for both), once they are all in,
        so no request is admitted under the looser one meanwhile."""
        publish = getattr(self.limiter, "publish", None)
        if self._published and callable(publish):
            publish(self.settings.rate_key, min(self._published, key=_per_ms))

    async def check_symbol(self, symbol: str) -> None:
        markets = await self.load_markets()
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownSymbol(
                f"{self.settings.exchange_id} has no market {symbol!r}{hint} "
                f"(market types loaded: {list(self.market_types)})"
            )

    def candles_per_call(self, symbol: str | None = None) -> int:
        """Bars per request: `max_candles_per_call`, else ccxt's `features` for the kind of
        market `symbol` names (spot, or swap/future linear/inverse)."""
        if self.settings.max_candles_per_call:
            return self.settings.max_candles_per_call
        features = self._exchange.features or {}
        kind = "spot" if symbol is None else market_kind(symbol)
        if kind == "spot":
            features = features.get("spot") or {}
        else:
            contract = features.get("swap") or features.get("future") or {}
            features = contract.get(kind) or {}
        features = features.get("fetchOHLCV") or {}
        most = int(features.get("limit") or DEFAULT_CANDLES_PER_CALL)
        endpoint = KLINE_ENDPOINTS.get(self.settings.exchange_id, {}).get(kind)
        if endpoint is None:
            return most
        api, path = endpoint
        cost = self._exchange.api.get(api, {}).get("get", {}).get(path)
        return cheapest_page(cost, most)

    def _clock_from_markets(self, response: Any) -> None:
        """Binance's exchangeInfo carries its `serverTime`: the clock without a round trip
        of its own, taken as the answer arrives (as `server_now_s` takes it)."""
        if self._clock is not None or not isinstance(response, dict):
            return
        server_ms = self._exchange.safe_integer(response, "serverTime")  # ccxt: a string
        if server_ms is not None and is_ms(server_ms):
            self._clock = (server_ms / 1000, time.monotonic())

    async def server_now_s(self) -> float:
        """The exchange's clock (one request per client, none when the markets' answer
        carried it, then advanced locally).

        The local reference is taken when the answer arrives, so the estimate never runs
        ahead of the exchange (a bar is never taken as closed before the exchange says so).
        """
        async with self._clock_lock:
            if self._clock is None:
                server_ms = await self._call("fetch_time", self._exchange.fetch_time)
                self._clock = (server_ms / 1000, time.monotonic())
        server_s, at = self._clock
        return server_s + (time.monotonic() - at)

    async def fetch_bars(
        self,
        symbol: str,
        timeframe: Timeframe,
        window: Range,
        *,
        pack: bool = False,
        price: str | None = None,
    ) -> FetchedBars:
        """Closed bars with open time in `window`, fetched in concurrent full-size windows.
        `pack`: each window's rows are packed as they arrive (`FetchedBars.packed`, ~6x
        smaller), for bars that wait to be settled; `unpack` makes them lists again.
        `price`: ccxt's `fetch_ohlcv` price (`mark`: a contract's mark-price bars)."""
        started = time.monotonic()
        await self.check_symbol(symbol)
        if timeframe.code not in (self._exchange.timeframes or {}):
            raise UnknownSymbol(
                f"{self.settings.exchange_id} has no timeframe {timeframe.code!r}; "
                f"it offers {sorted(self._exchange.timeframes or {})}"
            )
        now_s = await self.server_now_s()
        closed_end = bars_closed_end(int(now_s), timeframe.seconds, origin_s=timeframe.origin_s)
        fetch_window = window.intersect(Range(window.start, max(window.start, closed_end)))
        rows: list[list[Any]] = []
        row_windows = [_no_windows()]
        answers: list[Range] = []
        packed: PackedRows | None = None
        if fetch_window is not None:
            per_call = self.candles_per_call(symbol)
            windows = split_windows(fetch_window, timeframe.seconds, per_call)
            pages = await _all_or_nothing(
                [
                    self._fetch_window(symbol, timeframe, w, per_call, fetch_window, pack, price)
                    for w in windows
                ]
            )
            # every window packed: so is the whole; else rows as lists (garbage is rare)
            all_packed = pack and all(p.packed is not None or not p.rows for p in pages)
            for page in pages:
                if not all_packed:
                    rows.extend(page.rows if page.packed is None else unpack_rows(page.packed))
                row_windows.append(page.row_windows)
                answers.extend(page.answers)
            if kept := [page.packed for page in pages if all_packed and page.packed]:
                packed = (
                    np.concatenate([p[0] for p in kept]),
                    np.concatenate([p[1] for p in kept]),
                )
        self.stats.fetch_s += time.monotonic() - started
        return FetchedBars(
            rows=rows,
            window=window,
            server_now_s=int(now_s),
            closed_end=closed_end,
            row_windows=np.concatenate(row_windows),
            answers=tuple(answers),
            packed=packed,
        )

    async def _fetch_window(
        self,
        symbol: str,
        timeframe: Timeframe,
        window: Range,
        per_call: int,
        fetched: Range,
        pack: bool = False,
        price: str | None = None,
    ) -> _WindowAnswer:
        """Every bar opening in `window` (at most `per_call` of them): one request when the
        exchange honours `limit`, more if it answers with shorter pages than asked for.

        What a page holds besides the bars of its request goes on to conformance too, so
        nothing the exchange sent is lost unseen:

        * a row repeated from before the page's `since` but inside `fetched` (the whole
          range being fetched: a bar of an earlier page or window), to be flagged
          `duplicate_ts` (its window is `fetched` up to the page's `since`);
        * a row whose open time is impossible for the request (before `fetched`, at or
          after its end: open time 0, the year 3000) or not in milliseconds (µs, ns,
          garbage; conformance converts or drops it), held to the page's own window.

        Only a row after the page's window but inside `fetched` is left out: it belongs to
        a later window of this fetch, whose own request gets it (exchanges that ignore
        `until`)."""
        acc = _WindowFetch(
            symbol, timeframe, window, fetched, {} if price is None else {"price": price}
        )
        async with self._windows_in_flight, self.limiter.slot(self.settings.rate_key):
            with packing_pages() if pack else nullcontext():
                await self._fetch_span(acc, window.start * 1000, window.end * 1000, per_call)
        counts = np.array([n for n, _, _ in acc.bounds], dtype=np.int64)
        edges = np.array([(a, b) for _, a, b in acc.bounds], dtype=np.int64)
        answers = [Range(a // 1000, min(b // 1000, window.end)) for a, b in sorted(acc.answered)]
        packed = _pack_parts(acc.parts) if pack and counts.sum() else None
        rows = [] if packed else [r for part in acc.parts for r in _rows_of(part)]
        return _WindowAnswer(rows, np.repeat(edges, counts, axis=0), answers, packed)

    async def _fetch_span(self, acc: _WindowFetch, cursor: int, stop: int, limit: int) -> None:
        """The pages of `[cursor, stop)` ms into `acc` (a method, not a closure: a
        recursive closure is a reference cycle that would keep every page's rows alive
        until the cyclic garbage collector runs)."""
        fetched_start_ms, fetched_end_ms = acc.fetched.start * 1000, acc.fetched.end * 1000
        from_since = self.settings.exchange_id in PAGES_FROM_SINCE
        while cursor < stop:
            page: list[list[Any]] | PackedPage = await self._call(
                f"fetch_ohlcv {acc.symbol} {acc.timeframe} {acc.window}",
                self._exchange.fetch_ohlcv,
                acc.symbol,
                acc.timeframe.code,
                since=cursor,
                limit=limit,
                params={**acc.params, "until": stop - 1},
            )
            in_window: list[list[Any]] | PackedPage
            repeats: list[list[Any]]
            odd: list[list[Any]]
            if isinstance(page, PackedPage) and page_within(page, cursor, stop):
                in_window, repeats, odd = page, [], []  # the usual page, as it came
            else:
                in_window, repeats, odd = split_page(
                    _rows_of(page), cursor, stop, fetched_start_ms, fetched_end_ms
                )
            first = cursor if from_since or not in_window else _first_open(in_window)
            if first > cursor:
                # A page that starts late, from an exchange that may cap pages below
                # `limit` and answer a range's newest bars (bybit): the bars before it
                # are asked for first (rows stay in time order), at the size it served;
                # an empty answer confirms a gap.
                await self._fetch_span(acc, cursor, first, len(page))
            acc.parts += [repeats, in_window, odd]
            acc.bounds.append((len(repeats), acc.fetched.start, cursor // 1000))
            acc.bounds.append((len(in_window) + len(odd), cursor // 1000, acc.window.end))
            if not in_window:
                acc.answered.append((cursor, stop))
                return
            cursor = first  # the bars before it: answered by the request for them
            after = _last_open(in_window) + acc.timeframe.seconds * 1000
            acc.answered.append((cursor, after))
            cursor = after

    async def request(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """One ccxt call (`method` of `exchange`) in the key's slot, under this client's
        budget, retries and penalties; `what` names it in errors."""
        async with self.limiter.slot(self.settings.rate_key):
            return await self._call(what, method, *args, **kwargs)

    async def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ccxt with retries: backoff+jitter on network errors, penalties on 429/418."""
        backfill = self.settings.backfill
        failures = 0
        rate_limited = 0
        while True:
            try:
                return await method(*args, **kwargs)
            except RATE_LIMIT_ERRORS as exc:
                rate_limited += 1
                if rate_limited > MAX_RATE_LIMITED_RETRIES:
                    raise ExchangeUnavailable(
                        f"{self.settings.exchange_id} kept rate-limiting {what} "
                        f"({rate_limited} times); lower rate_limit.tokens_per_interval or "
                        "raise rate_limit.safety_margin, and check that nothing else spends "
                        "this IP's budget"
                    ) from exc
                now = time.time()
                # the penalty handle_errors recorded from this response's Retry-After; a
                # rate-limit error without a fresh one (e.g. from a body code) backs off
                until = self._penalty_until
                if until <= now:
                    self.stats.rate_limited += 1
                    until = now + self.settings.penalty_backoff_s
                    self._penalty_until = until
                await self.limiter.penalize(self.settings.rate_key, until, type(exc).__name__)
                self.stats.retries += 1
            except ccxt_errors.BadSymbol as exc:
                raise UnknownSymbol(f"{self.settings.exchange_id}: {exc}") from exc
            except RETRIABLE_ERRORS as exc:
                failures += 1
                if failures >= backfill.max_attempts:
                    raise ExchangeUnavailable(
                        f"{self.settings.exchange_id} failed {what} {failures} times "
                        f"({type(exc).__name__}: {str(exc)[:200]}); check the exchange URL in "
                        "exchanges.<id>.ccxt_config and that the exchange is up"
                    ) from exc
                delay = backfill.retry_backoff_ms / 1000 * 2 ** (failures - 1)
                delay *= 1 + backfill.jitter_ratio * random.random()
                log.warning("%s failed (%s), retry %d in %.2fs", what, exc, failures, delay)
                self.stats.retries += 1
                await asyncio.sleep(delay)


@dataclass
class _WindowFetch:
    """What the pages of one window add up to while they are fetched."""

    symbol: str
    timeframe: Timeframe
    window: Range
    fetched: Range  # the whole range being fetched
    params: dict[str, Any]
    # the rows in order, as pages' parts: rows, or a packed page as it came
    parts: list[list[list[Any]] | PackedPage] = field(default_factory=list)
    bounds: list[tuple[int, int, int]] = field(default_factory=list)  # (rows, window s)
    answered: list[tuple[int, int]] = field(default_factory=list)  # [since, up to) ms


@dataclass(frozen=True)
class _WindowAnswer:
    rows: list[list[Any]]
    row_windows: np.ndarray  # (len(rows), 2): where each row's open time must lie
    answers: list[Range]  # the window each response answered for
    packed: PackedRows | None = None  # the rows, when packed (then `rows` is empty)


def _rows_of(part: list[list[Any]] | PackedPage) -> list[list[Any]]:
    return part.rows() if isinstance(part, PackedPage) else part


def _pack_parts(parts: list[list[list[Any]] | PackedPage]) -> PackedRows | None:
    """The parts' rows as two arrays (`pack_rows`), or None when some rows are not
    `[int, float x5]`."""
    packs = [p.packed() if isinstance(p, PackedPage) else pack_rows(p) for p in parts if p]
    if any(p is None for p in packs):
        return None
    kept = [p for p in packs if p is not None]
    return np.concatenate([p[0] for p in kept]), np.concatenate([p[1] for p in kept])


def _first_open(rows: list[list[Any]] | PackedPage) -> Any:
    return int(rows.opens[0]) if isinstance(rows, PackedPage) else min(r[0] for r in rows)


def _last_open(rows: list[list[Any]] | PackedPage) -> Any:
    return int(rows.opens[-1]) if isinstance(rows, PackedPage) else max(r[0] for r in rows)
