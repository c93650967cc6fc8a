"""Rate budgets per exchange key `ccxt:{exchange}:{account?}`, in the exchange's own units.

`RateLimiter` is the protocol the exchange client uses. `LocalRateLimiter` is the
embedded implementation: per key, up to `L_eff = L * (1 - safety_margin)` per exchange
window where the exchange counts in fixed windows of its own clock (Binance; a request is
counted in every window it may land in), else a window-safe token bucket
(`resources.rate_budget`: capacity `b` is taken out of the exchange's window, so ANY
window of `interval` sees at most `L_eff`; buckets start empty), a ledger of the exchange's
own count (`X-MBX-USED-WEIGHT-1M`) that holds a request to the next window rather than
send it into one the exchange would refuse, a per-process concurrency cap
(`local_semaphore`, at most 64), a minimum spacing between request starts
(`min_interval_ms`) and a penalty window that pauses every request on the key after a
429/418 (`Retry-After`, else `penalty_backoff_ms`).

Costs are asked in exchange units (the client converts ccxt's costs). The exchange
client `register`s each key with its exchange's limits (`rate_budget.exchange_limits`),
`publish`es the limit exchangeInfo states, and `report_used`s every used-weight header.
A key nobody registered uses `tokens_per_interval` per `interval_ms` as given.

`RedisRateLimiter` (`rate_limit_redis.py`) shares the bucket, the exchange's count and the
penalty window across every worker and falls back to a conservative share of the budget
while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from seamless_assets.config import RateLimitConfig
from seamless_assets.errors import ConfigError, RateLimitTimeout

from .rate_budget import (
    Budget,
    ExchangeLimits,
    PublishedLimit,
    WindowLedger,
    hold_until,
    plan_budget,
    window_of,
)

log = logging.getLogger(__name__)

_OPTIONAL_SECTION = re.compile(r":?\{(account|suffix|key_suffix)\?\}")


def limiter_key(template: str, exchange_id: str, account: str | None = None) -> str:
    """Render the blueprint's key template.

    `{exchange}` is the lower-cased id, `{exchange_id}` the original case; `{account}`,
    `{suffix}` and `{key_suffix}` are aliases of the optional account. Sections written
    `:{account?}` disappear entirely when no account is set.
    """
    values = {
        "exchange": exchange_id.lower(),
        "exchange_id": exchange_id,
        "account": account or "",
        "suffix": account or "",
        "key_suffix": account or "",
    }
    if account:
        rendered = re.sub(r"\{(account|suffix|key_suffix)\?\}", r"{\1}", template)
    else:
        rendered = _OPTIONAL_SECTION.sub("", template)
    return rendered.format(**values)


def _timeout_text(
    key: str, cost: float, deadline_s: float, wait_s: float, penalty_s: float, reason: str
) -> str:
    head = f"no rate-limit token for {key!r} within {deadline_s:.1f}s (cost {cost}): "
    if penalty_s > 0:
        return head + (
            f"the exchange paused this key for {penalty_s:.1f}s more ({reason}); wait for "
            "the penalty to end or raise the acquire deadline"
        )
    return head + (
        f"the budget needs {wait_s:.1f}s more (the bucket refills, or the exchange's window "
        "is used up); raise the acquire deadline, or rate_limit.tokens_per_interval if it is "
        "below the exchange's limit"
    )


@runtime_checkable
class RateLimiter(Protocol):
    """What the exchange client needs from a rate budget."""

    async def acquire(self, key: str, cost: float = 1.0, deadline_s: float | None = None) -> None:
        """Wait until `cost` tokens are granted on `key` (or raise `RateLimitTimeout`)."""
        ...

    async def penalize(self, key: str, until_epoch_s: float, reason: str) -> None:
        """Pause every request on `key` until the wall-clock time `until_epoch_s`."""
        ...

    def slot(self, key: str) -> AbstractSlot:
        """A concurrency slot: `async with limiter.slot(key): ...`."""
        ...


class AbstractSlot(Protocol):
    async def __aenter__(self) -> None: ...
    async def __aexit__(self, *exc: object) -> None: ...


@dataclass
class LimiterStats:
    acquisitions: int = 0
    tokens_granted: float = 0.0
    waited_s: float = 0.0
    penalties: int = 0
    penalty_s: float = 0.0
    window_holds: int = 0  # requests held to the next window by the exchange's own count
    held_windows: int = 0  # windows in which that happened (one log line each)


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False  # the slot was handed to this waiter


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ProcessSemaphore:
    """A FIFO counting semaphore shared by every event loop (thread) of the process.

    Why not `asyncio.Semaphore`: it belongs to one loop, and several loops (threads) can
    share one limiter, so per-loop semaphores would multiply the cap. A released slot is
    handed straight to the oldest waiter, woken thread-safely on its own loop.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._held < self._limit and not self._waiters:
                self._held += 1
                return
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:  # cancelled while waiting: leave, or pass on a slot just got
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiters.remove(waiter)
            if granted:
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # that waiter's loop is closed: it is gone
                    continue
                waiter.granted = True
                return
            self._held -= 1


class _Slot:
    """`async with limiter.slot(key):` holds one of the key's `local_semaphore` slots."""

    def __init__(self, semaphore: _ProcessSemaphore) -> None:
        self._semaphore = semaphore

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()


#: (key, window, grants in the window, "local" | "redis") of the request this task was last
#: granted: read back when that request's response reports the exchange's count.
GRANT: contextvars.ContextVar[tuple[str, int, float, str] | None] = contextvars.ContextVar(
    "rate_limit_grant", default=None
)


@dataclass
class _Bucket:
    semaphore: _ProcessSemaphore
    refilled_at: float  # monotonic
    tokens: float = 0.0  # a new bucket starts empty: it never adds a burst to a window
    next_start: float = 0.0  # monotonic: earliest next request start (min interval)
    penalty_until: float = 0.0  # wall clock
    penalty_reason: str = ""
    limits: ExchangeLimits | None = None  # None: tokens_per_interval per interval_ms as given
    published: PublishedLimit | None = None
    clock: Callable[[], float] = time.time  # the exchange's clock estimate (epoch s)
    synced: Callable[[], bool] = lambda: True  # whether `clock` follows the exchange yet
    presync_granted: bool = False  # fixed windows: the one request before the clock is known
    share: int = 1  # > 1: this process's share of the budget while Redis is down
    ledger: WindowLedger = field(default_factory=WindowLedger)
    budget: Budget | None = None  # cached plan
    full_limit: float = 0.0  # L_eff of the whole key (the ledger's limit)
    logged_window: int = -1


class LocalRateLimiter:
    """In-process window-safe bucket + exchange count + semaphore + spacing + penalty."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.stats = LimiterStats()
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()  # several event loops (threads) may share one limiter
        self._warned: set[tuple[str, float]] = set()

    # ----------------------------------------------------------------- budget per key
    def _bucket(self, key: str) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(
                semaphore=_ProcessSemaphore(self.config.local_semaphore),
                refilled_at=time.monotonic(),
            )
            self._buckets[key] = bucket
        return bucket

    def _plan(self, key: str, bucket: _Bucket, share: int) -> Budget:
        cfg = self.config
        limits = bucket.limits
        if limits is None:
            if cfg.tokens_per_interval is None:
                raise ConfigError(
                    "seamless.rate_limit.tokens_per_interval",
                    f"no exchange limit is known for rate key {key!r} (no exchange client "
                    "registered it); set tokens_per_interval",
                )
            limits = ExchangeLimits(
                "units", 1.0, cfg.tokens_per_interval, cfg.interval_ms, None, 0.0
            )
        return plan_budget(
            limits=limits.with_published(bucket.published),
            tokens_per_interval=cfg.tokens_per_interval,
            interval_ms=cfg.interval_ms,
            burst_tokens=cfg.burst_tokens,
            safety_margin=cfg.safety_margin,
            share=share,
            window=cfg.window,
        )

    def _budget_locked(self, key: str, bucket: _Bucket) -> Budget:
        if bucket.budget is None:
            budget = self._plan(key, bucket, bucket.share)
            full = budget if bucket.share == 1 else self._plan(key, bucket, 1)
            bucket.budget, bucket.full_limit = budget, full.limit
            bucket.tokens = min(bucket.tokens, budget.capacity)
            if budget.clamped_from is not None and (key, budget.published) not in self._warned:
                self._warned.add((key, budget.published))
                log.warning(
                    "rate_limit.tokens_per_interval for %s is %.0f %s per %.0fs, above the "
                    "%.0f the exchange publishes: using the published limit",
                    key,
                    budget.clamped_from,
                    budget.unit,
                    budget.interval_s,
                    budget.published,
                )
        return bucket.budget

    def budget(self, key: str) -> Budget:
        """The bucket `key` is paced by now (exchange units)."""
        with self._lock:
            return self._budget_locked(key, self._bucket(key))

    def register(
        self,
        key: str,
        limits: ExchangeLimits,
        clock: Callable[[], float] | None = None,
        synced: Callable[[], bool] | None = None,
    ) -> None:
        """Pace `key` by an exchange's limits, windows counted on `clock` (epoch s), which
        follows the exchange's own clock once `synced()` (default: at once)."""
        with self._lock:
            bucket = self._bucket(key)
            if bucket.limits != limits:
                bucket.limits, bucket.budget = limits, None
            if clock is not None:
                bucket.clock = clock
            if synced is not None:
                bucket.synced = synced

    def publish(self, key: str, published: PublishedLimit) -> None:
        """The exchange published its limit (exchangeInfo): it replaces the table's."""
        with self._lock:
            bucket = self._bucket(key)
            if bucket.published != published:
                bucket.published, bucket.budget = published, None

    def set_share(self, key: str, share: int) -> None:
        """Pace `key` at 1/`share` of its budget, from an empty bucket (Redis outage)."""
        with self._lock:
            bucket = self._bucket(key)
            bucket.share, bucket.budget, bucket.tokens = share, None, 0.0
            bucket.refilled_at = time.monotonic()

    def block_window(self, key: str) -> None:
        """Count the exchange's current window on `key` as used up, and with fixed windows
        the next one too when requests granted now may land in it."""
        with self._lock:
            bucket = self._bucket(key)
            budget = self._budget_locked(key, bucket)
            bucket.ledger.block(*budget.landing_windows(bucket.clock()))

    def own_in_window(self, key: str) -> tuple[int, float, float]:
        """(current window, cost this limiter counted in it, and in the next) on `key`."""
        with self._lock:
            bucket = self._bucket(key)
            budget = self._budget_locked(key, bucket)
            window = window_of(bucket.clock(), budget.interval_s)
            ledger = bucket.ledger
            if ledger.window != window:
                return window, (ledger.next_own if ledger.window == window - 1 else 0.0), 0.0
            return window, ledger.own, ledger.next_own

    def claim_fixed(self, key: str) -> bool:
        """Whether the next grant on `key` follows the exchange's fixed windows (see
        `rate_budget`): the budget says so, and the exchange's clock is known, or this
        claims the one request allowed before it is (a shared limiter asks here)."""
        with self._lock:
            bucket = self._bucket(key)
            if not self._budget_locked(key, bucket).fixed:
                return False
            if bucket.synced():
                return True
            if bucket.presync_granted:
                return False
            bucket.presync_granted = True
            return True

    def report_used(self, key: str, used: float, exchange_time_s: float) -> None:
        """The exchange reported `used` units spent in the window holding `exchange_time_s`,
        on a response to the request this task was last granted (`GRANT`)."""
        with self._lock:
            bucket = self._bucket(key)
            budget = self._budget_locked(key, bucket)
            window = window_of(exchange_time_s, budget.interval_s)
            bucket.ledger.report(window, used, own_at_grant(key, window, "local"))

    # ----------------------------------------------------------------- granting
    def _fixed_wait(self, key: str, bucket: _Bucket, budget: Budget, cost: float) -> float:
        """Fixed windows: seconds to hold a request of `cost` so that no exchange window it
        may land in goes past the budget (0: it may go now)."""
        now_x = bucket.clock()
        first, last = budget.landing_windows(now_x)
        ledger = bucket.ledger
        if not ledger.must_hold_fixed(first, last, cost, budget.limit, bucket.full_limit):
            return 0.0
        self.stats.window_holds += 1
        if bucket.logged_window != first:
            bucket.logged_window = first
            self.stats.held_windows += 1
            log.warning(
                "%s: the exchange's window is used up (%.0f %s granted, %.0f reported beyond "
                "that, limit %.0f%s): holding requests until it ends",
                key,
                ledger.own,
                budget.unit,
                ledger.excess,
                budget.limit,
                ", window counted as spent after a Redis fallback" if ledger.blocked else "",
            )
        # held by the window in progress: until it ends; by the next one only, or by windows
        # counted as spent: until the last of those ends
        held_by_first = ledger.must_hold_fixed(first, first, cost, budget.limit, bucket.full_limit)
        until = max(first if held_by_first else last, ledger.blocked_through)
        return max(0.01, hold_until(until, budget.interval_s) - now_x)

    def _window_wait(self, key: str, bucket: _Bucket, budget: Budget, cost: float) -> float:
        """Seconds to hold a request of `cost` so the exchange's window is not exceeded."""
        now_x = bucket.clock()
        window = window_of(now_x, budget.interval_s)
        if not bucket.ledger.must_hold(window, cost, bucket.full_limit):
            return 0.0
        self.stats.window_holds += 1
        if bucket.logged_window != window:
            bucket.logged_window = window
            self.stats.held_windows += 1
            ledger = bucket.ledger
            log.warning(
                "%s: the exchange's window is used up (%.0f reported beyond our %.0f %s, limit "
                "%.0f%s): holding requests until it ends",
                key,
                ledger.excess,
                ledger.own,
                budget.unit,
                bucket.full_limit,
                ", window counted as spent after a Redis fallback" if ledger.blocked else "",
            )
        return max(0.01, hold_until(window, budget.interval_s) - now_x)

    def _try_take(self, key: str, cost: float) -> float:
        """Take the tokens now and return 0, or return how long to wait before retrying."""
        with self._lock:
            bucket = self._bucket(key)
            penalty_wait = bucket.penalty_until - time.time()
            if penalty_wait > 0:
                return penalty_wait
            budget = self._budget_locked(key, bucket)
            now = time.monotonic()
            # a request larger than the bucket waits for a full bucket plus its excess
            capacity = max(budget.capacity, cost)
            bucket.tokens = min(
                capacity, bucket.tokens + (now - bucket.refilled_at) * budget.rate_per_s
            )
            bucket.refilled_at = now
            spacing_wait = bucket.next_start - now
            if spacing_wait > 0:
                return spacing_wait
            if budget.fixed and (bucket.synced() or not bucket.presync_granted):
                window_wait = self._fixed_wait(key, bucket, budget, cost)
                if window_wait > 0:
                    return window_wait
                if not bucket.synced():
                    bucket.presync_granted = True
                return self._granted(key, bucket, budget, cost, now)
            window_wait = self._window_wait(key, bucket, budget, cost)
            if window_wait > 0:
                return window_wait
            if bucket.tokens < cost:
                return (cost - bucket.tokens) / budget.rate_per_s
            bucket.tokens -= cost
            return self._granted(key, bucket, budget, cost, now)

    def _granted(self, key: str, bucket: _Bucket, budget: Budget, cost: float, now: float) -> float:
        """Record a grant (lock held): spacing, the exchange windows it counts in, stats."""
        bucket.next_start = now + self.config.min_interval_seconds
        first, last = budget.landing_windows(bucket.clock())
        GRANT.set((key, first, bucket.ledger.grant(first, cost, last), "local"))
        self.stats.acquisitions += 1
        self.stats.tokens_granted += cost
        return 0.0

    def _hold_wait(self, key: str, cost: float = 0.0) -> float:
        """How long this process must hold back a request on `key` before asking a shared
        budget: the penalty it knows of and the minimum spacing (nothing is taken)."""
        with self._lock:
            bucket = self._bucket(key)
            return max(bucket.penalty_until - time.time(), bucket.next_start - time.monotonic())

    def _mark_start(self, key: str) -> None:
        """A shared budget granted a request on `key` now: space the next start from it."""
        with self._lock:
            bucket = self._bucket(key)
            bucket.next_start = time.monotonic() + self.config.min_interval_seconds

    async def acquire(self, key: str, cost: float = 1.0, deadline_s: float | None = None) -> None:
        started = time.monotonic()
        while (wait := self._try_take(key, cost)) > 0:
            if deadline_s is not None and time.monotonic() + wait > started + deadline_s:
                raise RateLimitTimeout(self._timeout_message(key, cost, deadline_s, wait))
            await asyncio.sleep(wait)
        self.stats.waited_s += time.monotonic() - started

    def _timeout_message(self, key: str, cost: float, deadline_s: float, wait_s: float) -> str:
        with self._lock:
            bucket = self._bucket(key)
            penalty_s = bucket.penalty_until - time.time()
            reason = bucket.penalty_reason
        return _timeout_text(key, cost, deadline_s, wait_s, penalty_s, reason)

    async def penalize(self, key: str, until_epoch_s: float, reason: str) -> None:
        self.penalize_now(key, until_epoch_s, reason)

    def penalize_now(self, key: str, until_epoch_s: float, reason: str) -> None:
        """`penalize` without awaiting: the exchange client calls it from inside ccxt's
        response handling, so the key is paused before any other request can start."""
        with self._lock:
            bucket = self._bucket(key)
            now = time.time()
            if until_epoch_s > max(now, bucket.penalty_until):
                self.stats.penalties += 1
                self.stats.penalty_s += until_epoch_s - max(now, bucket.penalty_until)
                bucket.penalty_until = until_epoch_s
                bucket.penalty_reason = reason

    def penalty_until(self, key: str) -> float:
        with self._lock:
            return self._bucket(key).penalty_until

    def known_penalty_until(self, key: str) -> float:
        """The penalty this process knows of on `key` (no I/O)."""
        return self.penalty_until(key)

    def slot(self, key: str) -> AbstractSlot:
        with self._lock:
            return _Slot(self._bucket(key).semaphore)


def own_at_grant(key: str, window: int, source: str) -> float | None:
    """Grants (by `source`) in `window` up to this task's last granted request on `key`: 0
    when that request was granted in an earlier window, None when unknown."""
    grant = GRANT.get()
    if grant is None or grant[0] != key or grant[3] != source:
        return None
    _, granted_in, mark, _ = grant
    if granted_in == window:
        return mark
    return 0.0 if granted_in < window else None


_REDIS_NAMES = frozenset(
    (
        "PENALIZE_LUA",
        "PENALTY_LUA",
        "TOKEN_BUCKET_LUA",
        "RedisLimiterStats",
        "RedisRateLimiter",
        "redact_dsn",
    )
)

if TYPE_CHECKING:
    from .rate_limit_redis import (
        PENALIZE_LUA,
        PENALTY_LUA,
        TOKEN_BUCKET_LUA,
        RedisLimiterStats,
        RedisRateLimiter,
        redact_dsn,
    )


def __getattr__(name: str) -> Any:
    """The Redis limiter lives in `rate_limit_redis` (it builds on this module); its names
    stay importable from here."""
    if name in _REDIS_NAMES:
        from . import rate_limit_redis

        return getattr(rate_limit_redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GRANT",
    "PENALIZE_LUA",
    "PENALTY_LUA",
    "TOKEN_BUCKET_LUA",
    "LimiterStats",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisLimiterStats",
    "RedisRateLimiter",
    "limiter_key",
    "own_at_grant",
    "redact_dsn",
]
