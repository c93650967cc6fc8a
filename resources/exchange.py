"""The ccxt client: windowed pagination of closed bars under a shared rate budget.

One `ExchangeClient` lives for one run. It loads markets once, learns the exchange's
clock once, fetches a requested range in contiguous windows of the exchange's maximum
candles per call (concurrently, within the budget), retries network errors, timeouts
and 5xx with exponential backoff and jitter, and turns every 429/418 into a penalty on
the limiter key (from that response's own `Retry-After`) that pauses all requests.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import ccxt
import ccxt.async_support as ccxt_async

from seamless_assets.config import BackfillConfig, SeamlessConfig
from seamless_assets.core.frame import Range
from seamless_assets.errors import ExchangeUnavailable, UnknownExchange, UnknownSymbol
from seamless_assets.nodes import Timeframe

from .rate_limit import RateLimiter, limiter_key

log = logging.getLogger(__name__)

DEFAULT_CANDLES_PER_CALL = 500
MAX_RATE_LIMITED_RETRIES = 50


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `override` into `base` (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class ExchangeSettings:
    """Everything needed to build the ccxt client of one exchange."""

    exchange_id: str
    ccxt_config: Mapping[str, Any]
    market_types: tuple[str, ...]
    max_candles_per_call: int | None
    backfill: BackfillConfig
    rate_key: str
    penalty_backoff_s: float
    acquire_deadline_s: float = 600.0

    @classmethod
    def from_config(cls, config: SeamlessConfig, exchange_id: str) -> ExchangeSettings:
        exchange = config.exchange(exchange_id)
        rate = config.rate_limit_for(exchange_id)
        return cls(
            exchange_id=exchange_id,
            ccxt_config=exchange.ccxt_config,
            market_types=exchange.market_types,
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
    fetch_s: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.http_requests.values())


@dataclass(frozen=True)
class FetchedBars:
    """Raw ccxt rows `[ts_ms, o, h, l, c, v]` for a window, closed bars only."""

    rows: list[list[Any]]
    window: Range
    server_now_s: int
    closed_end: int  # bars opening at or after this were still forming: callers drop them


def split_windows(window: Range, interval_s: int, bars_per_call: int) -> list[Range]:
    """Contiguous sub-windows of at most `bars_per_call` bars covering `window`."""
    step = interval_s * bars_per_call
    return [Range(s, min(s + step, window.end)) for s in range(window.start, window.end, step)]


class ExchangeClient:
    """ccxt async exchange for one run; use as `async with ExchangeClient(...) as client`."""

    def __init__(self, settings: ExchangeSettings, limiter: RateLimiter) -> None:
        self.settings = settings
        self.limiter = limiter
        self.stats = RequestStats()
        self._exchange = self._build_exchange()
        self._markets_loaded = False
        self._markets_lock = asyncio.Lock()
        self._clock: tuple[float, float] | None = None  # (server epoch s, local monotonic)
        self._penalty_until = 0.0

    def _build_exchange(self) -> ccxt_async.Exchange:
        exchange_id = self.settings.exchange_id
        if exchange_id not in ccxt_async.exchanges:
            raise UnknownExchange(f"ccxt has no exchange {exchange_id!r}")
        base: dict[str, Any] = {
            "enableRateLimit": True,  # ccxt calls throttle(cost): routed to our limiter below
            "timeout": self.settings.backfill.request_timeout_ms,
        }
        exchange = getattr(ccxt_async, exchange_id)(deep_merge(base, self.settings.ccxt_config))
        fetch_markets = exchange.options.get("fetchMarkets")
        if isinstance(fetch_markets, dict) and "types" in fetch_markets:
            user_types = (
                self.settings.ccxt_config.get("options", {}).get("fetchMarkets", {}).get("types")
            )
            fetch_markets["types"] = list(user_types or self.settings.market_types)

        key = self.settings.rate_key

        async def throttle(cost: float | None = None) -> None:
            await self.limiter.acquire(key, cost or 1.0, self.settings.acquire_deadline_s)

        original_handle_errors = exchange.handle_errors
        original_fetch = exchange.fetch

        def handle_errors(
            code: int, reason: str, url: str, method: str, headers: Any, *rest: Any
        ) -> Any:
            # Read Retry-After from this very response (last_response_headers can be
            # overwritten by a concurrent request) and remember the penalty at once.
            if code in (418, 429):
                self._record_penalty(code, headers)
            return original_handle_errors(code, reason, url, method, headers, *rest)

        async def counted_fetch(
            url: str, method: str = "GET", headers: Any = None, body: Any = None
        ) -> Any:
            self.stats.http_requests[urlparse(url).path] += 1
            return await original_fetch(url, method, headers, body)

        exchange.throttle = throttle
        exchange.handle_errors = handle_errors
        exchange.fetch = counted_fetch
        return exchange

    def _record_penalty(self, code: int, headers: Mapping[str, str] | None) -> None:
        self.stats.rate_limited += 1
        retry_after = None
        for name, value in (headers or {}).items():
            if name.lower() == "retry-after":
                try:
                    retry_after = float(value)
                except ValueError:
                    retry_after = None
        wait_s = retry_after if retry_after is not None else self.settings.penalty_backoff_s
        self._penalty_until = max(self._penalty_until, time.time() + wait_s)
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

    async def close(self) -> None:
        await self._exchange.close()

    @property
    def exchange(self) -> ccxt_async.Exchange:
        return self._exchange

    async def load_markets(self) -> dict[str, Any]:
        """Markets, loaded once per client (spot only unless configured)."""
        async with self._markets_lock:
            if not self._markets_loaded:
                await self._call("load_markets", self._exchange.load_markets)
                self._markets_loaded = True
        return self._exchange.markets

    async def check_symbol(self, symbol: str) -> None:
        markets = await self.load_markets()
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownSymbol(
                f"{self.settings.exchange_id} has no market {symbol!r}{hint} "
                f"(market types loaded: {list(self.settings.market_types)})"
            )

    def candles_per_call(self) -> int:
        if self.settings.max_candles_per_call:
            return self.settings.max_candles_per_call
        features = (self._exchange.features or {}).get("spot", {}).get("fetchOHLCV") or {}
        return int(features.get("limit") or DEFAULT_CANDLES_PER_CALL)

    async def server_now_s(self) -> float:
        """The exchange's clock (one request per client, then advanced locally)."""
        if self._clock is None:
            server_ms = await self._call("fetch_time", self._exchange.fetch_time)
            self._clock = (server_ms / 1000, time.monotonic())
        server_s, at = self._clock
        return server_s + (time.monotonic() - at)

    async def fetch_bars(self, symbol: str, timeframe: Timeframe, window: Range) -> FetchedBars:
        """Closed bars with open time in `window`, fetched in concurrent full-size windows."""
        started = time.monotonic()
        await self.check_symbol(symbol)
        if timeframe.code not in (self._exchange.timeframes or {}):
            raise UnknownSymbol(
                f"{self.settings.exchange_id} has no timeframe {timeframe.code!r}; "
                f"it offers {sorted(self._exchange.timeframes or {})}"
            )
        now_s = await self.server_now_s()
        closed_end = int(now_s // timeframe.seconds) * timeframe.seconds
        fetch_window = window.intersect(Range(window.start, max(window.start, closed_end)))
        rows: list[list[Any]] = []
        if fetch_window is not None:
            per_call = self.candles_per_call()
            windows = split_windows(fetch_window, timeframe.seconds, per_call)
            pages = await asyncio.gather(
                *(self._fetch_window(symbol, timeframe, w, per_call) for w in windows)
            )
            for page in pages:
                rows.extend(page)
        self.stats.fetch_s += time.monotonic() - started
        return FetchedBars(rows=rows, window=window, server_now_s=int(now_s), closed_end=closed_end)

    async def _fetch_window(
        self, symbol: str, timeframe: Timeframe, window: Range, per_call: int
    ) -> list[list[Any]]:
        async with self.limiter.slot(self.settings.rate_key):
            result: list[list[Any]] = await self._call(
                f"fetch_ohlcv {symbol} {timeframe} {window}",
                self._exchange.fetch_ohlcv,
                symbol,
                timeframe.code,
                since=window.start * 1000,
                limit=per_call,
                params={"until": window.end * 1000 - 1},
            )
        return result

    async def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ccxt with retries: backoff+jitter on network errors, penalties on 429/418."""
        backfill = self.settings.backfill
        failures = 0
        rate_limited = 0
        while True:
            try:
                return await method(*args, **kwargs)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                rate_limited += 1
                if rate_limited > MAX_RATE_LIMITED_RETRIES:
                    raise ExchangeUnavailable(
                        f"{self.settings.exchange_id} kept rate-limiting {what} "
                        f"({rate_limited} times); lower rate_limit.tokens_per_interval"
                    ) from exc
                until = self._penalty_until or time.time() + self.settings.penalty_backoff_s
                await self.limiter.penalize(self.settings.rate_key, until, type(exc).__name__)
                self.stats.retries += 1
            except ccxt.BadSymbol as exc:
                raise UnknownSymbol(f"{self.settings.exchange_id}: {exc}") from exc
            except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
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
