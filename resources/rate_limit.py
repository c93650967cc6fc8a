"""Rate budgets per exchange key `ccxt:{exchange}:{account?}`.

`RateLimiter` is the protocol the exchange client uses. `LocalRateLimiter` is the
embedded implementation: a token bucket (`tokens_per_interval` per `interval_ms`, at most
`burst_tokens` banked), a per-process concurrency cap (`local_semaphore`), a minimum
spacing between request starts (`min_interval_ms`) and a penalty window that pauses
every request on the key after a 429/418 (`Retry-After`, else `penalty_backoff_ms`).
Tokens are ccxt cost units, the unit ccxt's own endpoint tables use.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from seamless_assets.config import RateLimitConfig
from seamless_assets.errors import RateLimitTimeout

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


@dataclass
class _Bucket:
    tokens: float
    refilled_at: float  # monotonic
    semaphore: _ProcessSemaphore
    next_start: float = 0.0  # monotonic: earliest next request start (min interval)
    penalty_until: float = 0.0  # wall clock
    penalty_reason: str = ""


class LocalRateLimiter:
    """In-process token bucket + semaphore + min interval + penalty window, per key."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.stats = LimiterStats()
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()  # several event loops (threads) may share one limiter

    @property
    def rate_per_s(self) -> float:
        return self.config.tokens_per_interval / (self.config.interval_ms / 1000)

    def _bucket(self, key: str) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(
                tokens=self.config.burst_tokens,
                refilled_at=time.monotonic(),
                semaphore=_ProcessSemaphore(self.config.local_semaphore),
            )
            self._buckets[key] = bucket
        return bucket

    def _try_take(self, key: str, cost: float) -> float:
        """Take the tokens now and return 0, or return how long to wait before retrying."""
        with self._lock:
            bucket = self._bucket(key)
            penalty_wait = bucket.penalty_until - time.time()
            if penalty_wait > 0:
                return penalty_wait
            now = time.monotonic()
            capacity = max(self.config.burst_tokens, cost)
            bucket.tokens = min(
                capacity, bucket.tokens + (now - bucket.refilled_at) * self.rate_per_s
            )
            bucket.refilled_at = now
            spacing_wait = bucket.next_start - now
            if spacing_wait > 0:
                return spacing_wait
            if bucket.tokens < cost:
                return (cost - bucket.tokens) / self.rate_per_s
            bucket.tokens -= cost
            bucket.next_start = now + self.config.min_interval_seconds
            self.stats.acquisitions += 1
            self.stats.tokens_granted += cost
            return 0.0

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
        head = f"no rate-limit token for {key!r} within {deadline_s:.1f}s (cost {cost}): "
        if penalty_s > 0:
            return head + (
                f"the exchange paused this key for {penalty_s:.1f}s more ({reason}); wait for "
                "the penalty to end or raise the acquire deadline"
            )
        return head + (
            f"the token budget needs {wait_s:.1f}s more; raise rate_limit.tokens_per_interval "
            "or burst_tokens, or the acquire deadline"
        )

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

    def slot(self, key: str) -> AbstractSlot:
        with self._lock:
            return _Slot(self._bucket(key).semaphore)
