"""The rate limiters and limiter keys: budgets measured on the limiter's own clock.

Grant instants come from the limiter itself (`GrantLog`), so spacing assertions are exact;
wall-clock assertions are lower bounds (waits that must have happened) or generous caps.
Tests taking `make_limiter` run against both backends (local, and Redis when it is up);
the Redis-only behaviour is in `test_rate_limit_redis.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from pydantic import ValidationError

from resources.rate_limit import LocalRateLimiter, RateLimiter, RedisRateLimiter, limiter_key
from seamless_assets.config import RateLimitConfig
from seamless_assets.errors import RateLimitTimeout
from tests.resources.budgets import unbounded_budget
from tests.services import REDIS_ADDR, REDIS_DSN, require_service

KEY = "ccxt:binance"
AnyLimiter = LocalRateLimiter | RedisRateLimiter
MakeLimiter = Callable[[RateLimitConfig], AnyLimiter]


@pytest.fixture(params=["local", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> Iterator[MakeLimiter]:
    """Builds limiters of one backend; Redis ones share a key namespace of the test's own."""
    if request.param == "local":
        yield LocalRateLimiter
        return
    require_service("redis", REDIS_ADDR)
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    made: list[RedisRateLimiter] = []

    def build(cfg: RateLimitConfig) -> AnyLimiter:
        made.append(RedisRateLimiter(cfg, REDIS_DSN, key_prefix=prefix))
        return made[-1]

    yield build
    client = redis.Redis.from_url(REDIS_DSN)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
    for limiter in made:
        assert limiter.stats.fallbacks == 0  # Redis served every request
        limiter.close()


class GrantLog(LocalRateLimiter):
    """A limiter that records each grant (monotonic instant, cost) on its own clock, and
    counts the times a request had to wait."""

    def __init__(self, config: RateLimitConfig) -> None:
        super().__init__(config)
        self.grants: list[tuple[float, float]] = []
        self.refusals = 0

    def _try_take(self, key: str, cost: float) -> float:
        wait = super()._try_take(key, cost)
        if wait == 0:
            granted_at = self._buckets[key].next_start - self.config.min_interval_seconds
            self.grants.append((granted_at, cost))
        else:
            self.refusals += 1
        return wait


config = unbounded_budget


async def acquire_all(limiter: LocalRateLimiter, costs: list[float], key: str = KEY) -> None:
    await asyncio.gather(*(limiter.acquire(key, c, deadline_s=30) for c in costs))


# --------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    ("template", "exchange_id", "account", "key"),
    [
        ("ccxt:{exchange}:{account?}", "binance", None, "ccxt:binance"),
        ("ccxt:{exchange}:{account?}", "binance", "", "ccxt:binance"),
        ("ccxt:{exchange}:{account?}", "binance", "acct1", "ccxt:binance:acct1"),
        ("ccxt:{exchange}:{account?}", "BinanceUS", None, "ccxt:binanceus"),
        ("ccxt:{exchange_id}:{account?}", "BinanceUS", "Main", "ccxt:BinanceUS:Main"),
        ("ccxt:{exchange_id}:{account?}", "BinanceUS", None, "ccxt:BinanceUS"),
        ("rl:{exchange}:{suffix?}", "bybit", "sub", "rl:bybit:sub"),
        ("rl:{exchange}:{suffix?}", "bybit", None, "rl:bybit"),
        ("rl:{exchange}:{key_suffix?}:v1", "okx", "a", "rl:okx:a:v1"),
        ("rl:{exchange}:{key_suffix?}:v1", "okx", None, "rl:okx:v1"),
        ("{exchange}/{account}", "kraken", "k1", "kraken/k1"),
    ],
)
def test_limiter_key_templates(
    template: str, exchange_id: str, account: str | None, key: str
) -> None:
    RateLimitConfig(key_template=template)  # every template here is a valid config value
    assert limiter_key(template, exchange_id, account) == key


@pytest.mark.parametrize("template", ["ccxt:{account?}", "ccxt:{exchange}:{user}", "ccxt"])
def test_bad_key_templates_are_rejected(template: str) -> None:
    with pytest.raises(ValidationError, match="key_template"):
        RateLimitConfig(key_template=template)


def test_limiters_satisfy_the_protocol(make_limiter: MakeLimiter) -> None:
    assert isinstance(make_limiter(config()), RateLimiter)


# --------------------------------------------------------------------------- token bucket
def test_a_new_bucket_starts_empty_and_no_window_exceeds_the_limit() -> None:
    """A new bucket grants nothing at once (it never adds a burst to a window in use);
    then any interval-long window, however aligned, sees at most L_eff = b + r*T."""
    limiter = GrantLog(
        config(tokens_per_interval=20, interval_ms=1000, burst_tokens=4, safety_margin=0)
    )
    budget = limiter.budget(KEY)
    assert (budget.capacity, budget.rate_per_s, budget.window_limit) == (4, 16, 20)
    started = time.monotonic()
    asyncio.run(acquire_all(limiter, [1.0] * 30))
    times = [t for t, _ in limiter.grants]
    assert times[0] - started >= 1 / 16 - 1e-3  # the first token had to be refilled
    for i, at in enumerate(times):  # every window [at, at + 1 s) holds at most 20 grants
        assert sum(1 for t in times[i:] if t < at + 1.0) <= 20
    assert times[-1] - times[0] >= 29 / 16 - 4 / 16 - 1e-3


def test_idle_time_banks_at_most_the_bucket_capacity() -> None:
    limiter = GrantLog(
        config(tokens_per_interval=20, interval_ms=1000, burst_tokens=2, safety_margin=0)
    )

    async def scenario() -> int:
        await limiter.acquire(KEY, 2)  # empty the bucket
        await asyncio.sleep(0.3)  # would refill 5.4 tokens without the cap
        await limiter.acquire(KEY, 1)
        await limiter.acquire(KEY, 1)
        banked_refusals = limiter.refusals
        await limiter.acquire(KEY, 1)
        return banked_refusals

    refusals_before = asyncio.run(scenario())
    assert limiter.refusals > refusals_before  # 2 tokens were banked, not more
    assert limiter.grants[3][0] - limiter.grants[2][0] >= 1 / 18 - 1e-6


def test_a_cost_above_the_bucket_waits_for_a_full_bucket_plus_its_excess() -> None:
    limiter = GrantLog(
        config(tokens_per_interval=10, interval_ms=1000, burst_tokens=1, safety_margin=0)
    )
    started = time.monotonic()
    asyncio.run(limiter.acquire(KEY, 3, deadline_s=5))
    assert limiter.grants[0][0] - started >= 3 / 9 - 1e-3


def test_min_interval_spaces_request_starts() -> None:
    limiter = GrantLog(config(min_interval_ms=40))
    asyncio.run(acquire_all(limiter, [1.0] * 6))
    times = [t for t, _ in limiter.grants]
    assert all(b - a >= 0.04 - 1e-9 for a, b in itertools.pairwise(times))


def test_min_interval_s_is_an_alias_and_2ms_the_default() -> None:
    assert config(min_interval_ms=None, min_interval_s=0.5).min_interval_seconds == 0.5
    assert config(min_interval_ms=None).min_interval_seconds == 0.002
    with pytest.raises(ValidationError, match="disagree"):
        config(min_interval_ms=100, min_interval_s=0.5)


def test_keys_have_separate_budgets(make_limiter: MakeLimiter) -> None:
    """Two keys fill their own buckets side by side: 5 grants each take as long as 5."""
    limiter = make_limiter(
        config(tokens_per_interval=20, interval_ms=1000, burst_tokens=4, safety_margin=0)
    )

    async def scenario() -> None:
        await asyncio.gather(
            acquire_all(limiter, [1.0] * 5, "ccxt:binance:a"),
            acquire_all(limiter, [1.0] * 5, "ccxt:binance:b"),
        )

    started = time.monotonic()
    asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert 5 / 16 - 0.01 <= elapsed < 10 / 16  # one key at a time would need 10/16 s


# --------------------------------------------------------------------------- penalties
def test_penalty_pauses_the_key_until_then() -> None:
    limiter = GrantLog(config())

    async def scenario() -> float:
        until = time.time() + 0.3
        await limiter.penalize(KEY, until, "429")
        await limiter.penalize(KEY, until - 0.2, "an earlier end never shortens it")
        assert limiter.penalty_until(KEY) == until
        await limiter.acquire("ccxt:bybit", 1, deadline_s=0.1)  # other keys are not paused
        await limiter.acquire(KEY, 1, deadline_s=5)
        return until

    until = asyncio.run(scenario())
    assert time.time() >= until
    assert limiter.stats.penalties == 1 and 0.25 <= limiter.stats.penalty_s <= 0.3


def test_penalize_now_blocks_without_awaiting(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(config())
    limiter.penalize_now(KEY, time.time() + 30, "HTTP 418")
    with pytest.raises(
        RateLimitTimeout, match=r"paused this key for (29|30)\.\d+s more \(HTTP 418\)"
    ):
        asyncio.run(limiter.acquire(KEY, 1, deadline_s=1))


def test_deadline_raises_at_once_when_it_cannot_be_met(make_limiter: MakeLimiter) -> None:
    """A wait longer than the deadline fails now, instead of sleeping and then failing."""
    limiter = make_limiter(
        config(tokens_per_interval=1, interval_ms=60_000, burst_tokens=0, safety_margin=0)
    )
    started = time.monotonic()
    with pytest.raises(RateLimitTimeout, match=r"within 0\.5s .*the budget needs 60\.0s"):
        asyncio.run(limiter.acquire(KEY, 1, deadline_s=0.5))
    limiter.penalize_now("ccxt:other", time.time() + 60, "ban")
    with pytest.raises(RateLimitTimeout):
        asyncio.run(limiter.acquire("ccxt:other", 1, deadline_s=0.5))
    assert time.monotonic() - started < 5
    assert limiter.stats.acquisitions == 0


def test_a_deadline_that_can_be_met_waits(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(
        config(tokens_per_interval=1, interval_ms=200, burst_tokens=0, safety_margin=0)
    )
    started = time.monotonic()
    asyncio.run(limiter.acquire(KEY, 1, deadline_s=2))
    assert time.monotonic() - started >= 0.2 - 1e-3


# --------------------------------------------------------------------------- concurrency
class InFlight:
    """Counts holders of a slot across threads."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self.done = 0
        self._lock = threading.Lock()

    async def hold(self, limiter: AnyLimiter, key: str, seconds: float) -> None:
        async with limiter.slot(key):
            with self._lock:
                self.now += 1
                self.max = max(self.max, self.now)
            await asyncio.sleep(seconds)
            with self._lock:
                self.now -= 1
                self.done += 1


def test_local_semaphore_caps_concurrent_slots(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(config(local_semaphore=3))
    counter = InFlight()

    async def scenario() -> None:
        await asyncio.gather(*(counter.hold(limiter, KEY, 0.02) for _ in range(10)))
        await counter.hold(limiter, "ccxt:other", 0)  # another key has its own slots

    asyncio.run(scenario())
    assert counter.max == 3 and counter.done == 11


def test_local_semaphore_is_per_process_across_event_loops(make_limiter: MakeLimiter) -> None:
    """Two threads, each with its own event loop, share one limiter: together they never
    hold more than `local_semaphore` slots."""
    limiter = make_limiter(config(local_semaphore=3))
    counter = InFlight()

    def worker() -> None:
        async def run() -> None:
            await asyncio.gather(*(counter.hold(limiter, KEY, 0.02) for _ in range(8)))

        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert counter.done == 16 and counter.max <= 3


def test_a_cancelled_waiter_gives_its_slot_back(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(config(local_semaphore=1))
    counter = InFlight()

    async def scenario() -> None:
        holder = asyncio.create_task(counter.hold(limiter, KEY, 0.05))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(counter.hold(limiter, KEY, 0))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await holder
        await asyncio.wait_for(counter.hold(limiter, KEY, 0), timeout=5)  # slot is free

    asyncio.run(scenario())
    assert counter.done == 2
