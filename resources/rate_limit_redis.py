"""The cluster-wide rate budget: per key in Redis (Lua, on Redis server time) the grants
per exchange window (fixed-window exchanges: up to L_eff per window of the exchange's
clock, a request counted in every window it may land in) or one window-safe bucket, the
exchange's count per window shared by every worker (max-merged), and the penalty window;
`local_semaphore` and `min_interval_ms` stay per process.

Redis down: every process falls back to its own bucket holding a conservative share of the
budget (`L_eff / rate_limit.workers`, starting empty), counts the exchange window in
progress as spent, and keeps honouring penalties and the exchange's count. When Redis
answers again it seeds the window with what it granted meanwhile and empties the shared
bucket, so the window in progress is not over-spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from seamless_assets.config import RateLimitConfig
from seamless_assets.errors import RateLimitTimeout

from .rate_budget import hold_until, window_of
from .rate_limit import (
    GRANT,
    AbstractSlot,
    LimiterStats,
    LocalRateLimiter,
    _ProcessSemaphore,
    _timeout_text,
    own_at_grant,
)
from .rate_limit_lua import PENALIZE_LUA, PENALTY_LUA, REPORT_LUA, SEED_LUA, TOKEN_BUCKET_LUA

log = logging.getLogger(__name__)

__all__ = [
    "PENALIZE_LUA",
    "PENALTY_LUA",
    "REPORT_LUA",
    "SEED_LUA",
    "TOKEN_BUCKET_LUA",
    "RedisLimiterStats",
    "RedisRateLimiter",
    "redact_dsn",
]


@dataclass
class RedisLimiterStats(LimiterStats):
    fallbacks: int = 0  # switches from Redis to the local limiter (an outage began)
    recoveries: int = 0  # switches back to Redis
    redis_errors: int = 0  # failed Redis calls
    local_acquisitions: int = 0  # grants made by the local limiter during an outage


def redact_dsn(dsn: str) -> str:
    """`dsn` without its password, for logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class RedisRateLimiter:
    """The cluster-wide budget: window-safe bucket, the exchange's count per window and
    the penalty window in Redis, shared by every worker on the key; `local_semaphore`,
    `min_interval_ms` and the budget plan (exchange limits, published limit, exchange
    clock) stay per process, in an inner `LocalRateLimiter`.

    Redis calls run in a worker thread on a thread-safe sync client, so any number of
    event loops may share one limiter. When a call fails the limiter logs a warning,
    counts `stats.fallbacks` and serves every key from the inner local limiter with
    1/`workers` of the budget (an empty bucket; the window in progress counted as spent;
    the penalties and exchange counts this process knows); every `retry_redis_after_s`
    one request tries Redis again, and the first success switches back
    (`stats.recoveries`): it seeds the window with this process's outage grants, empties
    the shared bucket and pushes the penalties still running locally to Redis.

    Keys: the bucket is `{key_prefix}{key}`, its penalty window `{key_prefix}{key}:penalty`,
    the exchange's window `{key_prefix}{key}:window`.
    """

    token_bucket_lua = TOKEN_BUCKET_LUA

    def __init__(
        self,
        config: RateLimitConfig,
        dsn: str,
        *,
        key_prefix: str = "",
        retry_redis_after_s: float = 1.0,
        socket_timeout_s: float = 0.5,
    ) -> None:
        self.config = config
        self.dsn = dsn
        self.key_prefix = key_prefix
        self.retry_redis_after_s = retry_redis_after_s
        self.local = LocalRateLimiter(config)
        self.stats = RedisLimiterStats()
        # One immediate retry re-opens a pooled connection a Redis restart has broken;
        # an outage then costs two refused connects, not redis-py's backoff schedule.
        self.client: redis.Redis = redis.Redis.from_url(
            dsn,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._take = self.client.register_script(self.token_bucket_lua)
        self._penalize = self.client.register_script(PENALIZE_LUA)
        self._penalty = self.client.register_script(PENALTY_LUA)
        self._report = self.client.register_script(REPORT_LUA)
        self._seed = self.client.register_script(SEED_LUA)
        self.workers = config.workers or 1
        self._lock = threading.Lock()
        self._redis_up = True
        self._retry_at = 0.0  # monotonic: when the next Redis try is due during an outage
        self._gates: dict[str, _ProcessSemaphore] = {}
        self._held_window: dict[str, int] = {}

    @property
    def using_redis(self) -> bool:
        """False while an outage has the local limiter serving requests."""
        with self._lock:
            return self._redis_up

    def bucket_key(self, key: str) -> str:
        return self.key_prefix + key

    def penalty_key(self, key: str) -> str:
        return f"{self.key_prefix}{key}:penalty"

    def window_key(self, key: str) -> str:
        return f"{self.key_prefix}{key}:window"

    # ----------------------------------------------------------------- budget per key
    def register(self, key: str, limits: Any, clock: Any = None, synced: Any = None) -> None:
        self.local.register(key, limits, clock, synced)

    def publish(self, key: str, published: Any) -> None:
        self.local.publish(key, published)

    def budget(self, key: str) -> Any:
        """The bucket `key` is paced by now: the shared one, or this process's share."""
        return self.local.budget(key)

    def report_used(self, key: str, used: float, exchange_time_s: float) -> None:
        """The exchange's count: kept locally and, while Redis is up, max-merged into the
        window every worker checks (synchronous: one Redis round trip)."""
        self.local.report_used(key, used, exchange_time_s)
        if not self.using_redis:
            return
        budget = self.local.budget(key)
        window = window_of(exchange_time_s, budget.interval_s)
        own = own_at_grant(key, window, "redis")
        try:
            self._report(
                keys=[self.window_key(key)],
                args=[window, used, own or 0.0, self._window_ttl_ms(budget.interval_s)],
            )
        except redis.RedisError as exc:
            self._redis_failed(exc)

    def known_penalty_until(self, key: str) -> float:
        """The penalty this process knows of on `key` (no I/O)."""
        return self.local.penalty_until(key)

    # ----------------------------------------------------------------- outage handling
    def _redis_turn(self) -> bool:
        """Whether this call should use Redis: always while it is up; during an outage,
        one call per `retry_redis_after_s` (the probe)."""
        with self._lock:
            if self._redis_up:
                return True
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_redis_after_s
            return True

    def _redis_failed(self, exc: Exception) -> None:
        with self._lock:
            self.stats.redis_errors += 1
            self._retry_at = time.monotonic() + self.retry_redis_after_s
            if not self._redis_up:
                return
            self._redis_up = False
            self.stats.fallbacks += 1
        # Each worker now spends 1/workers of the budget, from an empty bucket, and the
        # exchange window in progress counts as spent (the others may have used it up).
        for key in self._keys():
            self.local.set_share(key, self.workers)
            self.local.block_window(key)
        log.warning(
            "Redis rate limiter at %s failed (%s: %s): falling back to the in-process "
            "limiter with 1/%d of the budget per process (rate_limit.workers); retrying "
            "Redis every %.1fs",
            redact_dsn(self.dsn),
            type(exc).__name__,
            exc,
            self.workers,
            self.retry_redis_after_s,
        )

    def _keys(self) -> list[str]:
        with self.local._lock:
            return list(self.local._buckets)

    def _redis_succeeded(self) -> None:
        with self._lock:
            if self._redis_up:
                return
            self._redis_up = True
            self.stats.recoveries += 1
        log.warning(
            "Redis rate limiter at %s is back: the cluster-wide budget applies again",
            redact_dsn(self.dsn),
        )
        now = time.time()
        try:
            for key in self._keys():
                # What this process granted in the window in progress counts there, and the
                # shared bucket restarts empty: the recovery adds no burst to the window.
                window, own, own_next = self.local.own_in_window(key)
                budget = self.local.budget(key)
                self._seed(
                    keys=[self.window_key(key), self.bucket_key(key)],
                    args=[window, own, self._window_ttl_ms(budget.interval_s), 2000, own_next],
                )
                self.local.set_share(key, 1)
                # Penalties seen during the outage now pause the other workers too.
                with self.local._lock:
                    bucket = self.local._bucket(key)
                    until, reason = bucket.penalty_until, bucket.penalty_reason
                if until > now:
                    self._push_penalty(key, until, reason)
        except redis.RedisError as exc:
            self._redis_failed(exc)

    @staticmethod
    def _window_ttl_ms(interval_s: float) -> int:
        return math.ceil(interval_s * 2000) + 1000

    # ----------------------------------------------------------------- Redis calls (sync)
    def _redis_take(self, key: str, cost: float, args: list[float]) -> tuple[float, float]:
        """One bucket step in Redis: (0, window grants) when granted, else (seconds to
        wait, 0); a negative wait is a hold to the next exchange window."""
        wait_ms, granted = self._take(
            keys=[self.bucket_key(key), self.penalty_key(key), self.window_key(key)],
            args=[*args[:2], cost, *args[2:]],
        )
        self._redis_succeeded()
        return int(wait_ms) / 1000, float(granted)

    def _push_penalty(self, key: str, until_epoch_s: float, reason: str) -> None:
        duration_ms = (until_epoch_s - time.time()) * 1000
        if duration_ms > 0:
            self._penalize(keys=[self.penalty_key(key)], args=[duration_ms, reason])

    # ----------------------------------------------------------------- protocol
    @contextlib.asynccontextmanager
    async def _gate(self, key: str) -> AsyncIterator[None]:
        """With a minimum spacing, one request per key and process asks Redis at a time,
        so the spacing checked before the call still holds when the grant arrives."""
        if self.config.min_interval_seconds <= 0:
            yield
            return
        with self._lock:
            gate = self._gates.setdefault(key, _ProcessSemaphore(1))
        await gate.acquire()
        try:
            yield
        finally:
            gate.release()

    async def _attempt(self, key: str, cost: float) -> float:
        """Try once: 0 when granted (the request may start now), else seconds to wait."""
        if not self._redis_turn():
            return self._local_take(key, cost)
        wait = self.local._hold_wait(key)  # spacing, and a penalty Redis may not have yet
        if wait > 0:
            return wait
        args, window, limit = self._shared_args(key, self.local.claim_fixed(key))
        try:
            wait, granted = await asyncio.to_thread(self._redis_take, key, cost, args)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return self._local_take(key, cost)
        if wait == 0:
            self.local._mark_start(key)
            GRANT.set((key, window, granted, "redis"))
        elif wait < 0:
            self._count_hold(key, window, limit)
        return abs(wait)

    def _shared_args(self, key: str, fixed: bool) -> tuple[list[float], int, float]:
        """([capacity, rate per ms, window, window limit, hold ms, window ttl ms, fixed,
        last window, hold ms for the last], window, limit) of the shared budget: always the
        whole budget (share 1); `fixed`: this grant follows the exchange's fixed windows."""
        with self.local._lock:
            bucket = self.local._bucket(key)
            budget = self.local._plan(key, bucket, 1) if bucket.share > 1 else None
            if budget is None:
                budget = self.local._budget_locked(key, bucket)
            now_x = bucket.clock()
        window, last = budget.landing_windows(now_x)
        if not fixed:  # a grant of the bucket is counted in the window in progress only
            last = window
        hold_ms = (hold_until(window, budget.interval_s) - now_x) * 1000
        args = [
            budget.capacity,
            budget.rate_per_s / 1000,
            window,
            budget.limit,
            hold_ms,
            self._window_ttl_ms(budget.interval_s),
            1 if fixed else 0,
            last,
            (hold_until(last, budget.interval_s) - now_x) * 1000,
        ]
        return args, window, budget.limit

    def _count_hold(self, key: str, window: int, limit: float) -> None:
        with self._lock:
            self.stats.window_holds += 1
            if self._held_window.get(key) == window:
                return
            self._held_window[key] = window
            self.stats.held_windows += 1
        log.warning(
            "%s: the exchange's window is used up (its count plus the cluster's grants reach "
            "%.0f): holding requests until it ends",
            key,
            limit,
        )

    def _local_take(self, key: str, cost: float) -> float:
        wait = self.local._try_take(key, cost)
        if wait == 0:
            with self._lock:
                self.stats.local_acquisitions += 1
        return wait

    async def acquire(self, key: str, cost: float = 1.0, deadline_s: float | None = None) -> None:
        started = time.monotonic()
        while True:
            async with self._gate(key):
                wait = await self._attempt(key, cost)
            if wait <= 0:
                break
            if deadline_s is not None and time.monotonic() + wait > started + deadline_s:
                message = await asyncio.to_thread(
                    self._timeout_message, key, cost, deadline_s, wait
                )
                raise RateLimitTimeout(message)
            await asyncio.sleep(wait)
        with self._lock:
            self.stats.acquisitions += 1
            self.stats.tokens_granted += cost
            self.stats.waited_s += time.monotonic() - started

    def _timeout_message(self, key: str, cost: float, deadline_s: float, wait_s: float) -> str:
        penalty_s, reason = self._penalty_remaining(key)
        return _timeout_text(key, cost, deadline_s, wait_s, penalty_s, reason)

    def _penalty_remaining(self, key: str) -> tuple[float, str]:
        """(seconds left, reason) of the longest penalty known on `key`: this process's
        and, when Redis answers, the cluster's."""
        with self.local._lock:
            bucket = self.local._bucket(key)
            penalty_s, reason = bucket.penalty_until - time.time(), bucket.penalty_reason
        if self.using_redis:
            try:
                remaining_ms, redis_reason = self._penalty(keys=[self.penalty_key(key)])
            except redis.RedisError:
                return penalty_s, reason
            if float(remaining_ms) / 1000 > penalty_s:
                penalty_s, reason = float(remaining_ms) / 1000, _text(redis_reason)
        return penalty_s, reason

    async def penalize(self, key: str, until_epoch_s: float, reason: str) -> None:
        await asyncio.to_thread(self.penalize_now, key, until_epoch_s, reason)

    def penalize_now(self, key: str, until_epoch_s: float, reason: str) -> None:
        """Pause `key` in this process at once and, through Redis, in every worker.

        Synchronous (the exchange client calls it while handling a response): it blocks
        for one Redis round trip, at most the socket timeout when Redis is unreachable.
        """
        self.local.penalize_now(key, until_epoch_s, reason)
        with self._lock:
            self.stats.penalties = self.local.stats.penalties
            self.stats.penalty_s = self.local.stats.penalty_s
        if not self._redis_turn():
            return  # pushed to Redis when it is back
        try:
            self._push_penalty(key, until_epoch_s, reason)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return
        self._redis_succeeded()

    def penalty_until(self, key: str) -> float:
        """Wall-clock end of the longest penalty known on `key` (0 when none)."""
        penalty_s, _ = self._penalty_remaining(key)
        return time.time() + penalty_s if penalty_s > 0 else self.local.penalty_until(key)

    def slot(self, key: str) -> AbstractSlot:
        return self.local.slot(key)

    def close(self) -> None:
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
