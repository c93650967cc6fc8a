"""Rate budgets per exchange key `ccxt:{exchange}:{account?}`.

`RateLimiter` is the protocol the exchange client uses. `LocalRateLimiter` is the
embedded implementation: a token bucket (`tokens_per_interval` per `interval_ms`, at most
`burst_tokens` banked), a per-process concurrency cap (`local_semaphore`), a minimum
spacing between request starts (`min_interval_ms`) and a penalty window that pauses
every request on the key after a 429/418 (`Retry-After`, else `penalty_backoff_ms`).
Tokens are ccxt cost units, the unit ccxt's own endpoint tables use.

`RedisRateLimiter` shares the token bucket and the penalty window across every worker
through Redis (one atomic Lua script on Redis server time), keeps the concurrency cap and
the minimum spacing per process, and falls back to the local limiter while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from seamless_assets.config import RateLimitConfig
from seamless_assets.errors import RateLimitTimeout

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
        f"the token budget needs {wait_s:.1f}s more; raise rate_limit.tokens_per_interval "
        "or burst_tokens, or the acquire deadline"
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

    def _hold_wait(self, key: str) -> float:
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

    def slot(self, key: str) -> AbstractSlot:
        with self._lock:
            return _Slot(self._bucket(key).semaphore)


# --------------------------------------------------------------------------- Redis
# One atomic step of the shared token bucket, on Redis server time (TIME, so workers'
# clocks never matter; Redis >= 5 replicates effects, so TIME before a write is allowed).
# KEYS[1] bucket hash {tokens, ts}, KEYS[2] penalty hash {until_ms, reason};
# ARGV tokens_per_interval, interval_ms, burst_tokens, cost.
# Returns 0 when the tokens were taken, else the ms to wait: the penalty remaining or the
# token deficit / rate. A refusal writes nothing, except to create the bucket (its clock
# starts then, so an empty new bucket does refill).
TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local penalty = tonumber(redis.call('HGET', KEYS[2], 'until_ms'))
if penalty and penalty > now then
  return math.max(1, math.ceil(penalty - now))
end
local rate = tonumber(ARGV[1]) / tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local capacity = math.max(burst, cost)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
local new = tokens == nil or ts == nil
if new then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local wait = 0
if tokens < cost then
  wait = math.max(1, math.ceil((cost - tokens) / rate))
  if not new then
    return wait
  end
else
  tokens = tokens - cost
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ts', string.format('%.3f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return wait
"""

# Extend the penalty window of a key to now + ARGV[1] ms (Redis time); never shortens it.
# KEYS[1] penalty hash; ARGV duration_ms, reason. Returns 1 when the window grew.
PENALIZE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local duration = tonumber(ARGV[1])
local until_ms = now + duration
local current = tonumber(redis.call('HGET', KEYS[1], 'until_ms'))
if current and current >= until_ms then
  return 0
end
redis.call('HSET', KEYS[1], 'until_ms', string.format('%.3f', until_ms), 'reason', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(duration) + 1000)
return 1
"""

# Remaining penalty ms (0 when none) and its reason, on Redis time.
PENALTY_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'until_ms', 'reason')
local until_ms = tonumber(state[1])
if until_ms == nil or until_ms <= now then
  return {'0', ''}
end
return {string.format('%.3f', until_ms - now), state[2] or ''}
"""


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
    """The cluster-wide budget: token bucket and penalty window in Redis, shared by every
    worker on the key; `local_semaphore` and `min_interval_ms` stay per process (an inner
    `LocalRateLimiter`).

    Redis calls run in a worker thread on a thread-safe sync client, so any number of
    event loops may share one limiter. When a call fails the limiter logs a warning,
    counts `stats.fallbacks` and serves every key from the inner local limiter (its own
    per-process budget and the penalties this process knows); every `retry_redis_after_s`
    one request tries Redis again, and the first success switches back (`stats.recoveries`)
    and pushes the penalties still running locally to Redis.

    Keys: the bucket is `{key_prefix}{key}`, its penalty window `{key_prefix}{key}:penalty`.
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
        self._args = [config.tokens_per_interval, config.interval_ms, config.burst_tokens]
        self._lock = threading.Lock()
        self._redis_up = True
        self._retry_at = 0.0  # monotonic: when the next Redis try is due during an outage
        self._gates: dict[str, _ProcessSemaphore] = {}

    @property
    def using_redis(self) -> bool:
        """False while an outage has the local limiter serving requests."""
        with self._lock:
            return self._redis_up

    def bucket_key(self, key: str) -> str:
        return self.key_prefix + key

    def penalty_key(self, key: str) -> str:
        return f"{self.key_prefix}{key}:penalty"

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
        log.warning(
            "Redis rate limiter at %s failed (%s: %s): falling back to the in-process "
            "limiter (a per-process budget); retrying Redis every %.1fs",
            redact_dsn(self.dsn),
            type(exc).__name__,
            exc,
            self.retry_redis_after_s,
        )

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
        # Penalties seen during the outage now pause the other workers too.
        now = time.time()
        with self.local._lock:
            running = [
                (key, bucket.penalty_until, bucket.penalty_reason)
                for key, bucket in self.local._buckets.items()
                if bucket.penalty_until > now
            ]
        for key, until, reason in running:
            try:
                self._push_penalty(key, until, reason)
            except redis.RedisError as exc:
                self._redis_failed(exc)
                return

    # ----------------------------------------------------------------- Redis calls (sync)
    def _redis_take(self, key: str, cost: float) -> float:
        """One token-bucket step in Redis: 0 when granted, else the seconds to wait."""
        reply = self._take(
            keys=[self.bucket_key(key), self.penalty_key(key)], args=[*self._args, cost]
        )
        self._redis_succeeded()
        return int(reply) / 1000

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
        try:
            wait = await asyncio.to_thread(self._redis_take, key, cost)
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return self._local_take(key, cost)
        if wait == 0:
            self.local._mark_start(key)
        return wait

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
