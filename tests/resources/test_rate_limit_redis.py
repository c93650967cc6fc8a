"""The Redis rate limiter against a real Redis: one budget across processes, penalties that
pause every worker, deadlines, and the local fallback through an outage.

Grant instants come from Redis itself: `GrantLog` appends the server time (`TIME`, read
by the token-bucket script) to a list in the same atomic step that takes the tokens, so
window counts are exact whatever the processes' clocks and scheduling.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from resources.rate_budget import ExchangeLimits
from resources.rate_limit import (
    TOKEN_BUCKET_LUA,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from seamless_assets.config import REDIS_ENV, RateLimitConfig, load_config_dict
from seamless_assets.errors import RateLimitTimeout
from tests.resources.budgets import unbounded_budget
from tests.services import REDIS_ADDR, REDIS_DSN, reachable, require_service

KEY = "ccxt:binance"
SPAWN = multiprocessing.get_context("spawn")


def _logging_grants(script: str) -> str:
    grant = "  tokens = tokens - cost\n"
    assert script.count(grant) == 1, "the token-bucket script takes the tokens in one place"
    log = "  redis.call('RPUSH', KEYS[1] .. ':grants', string.format('%.3f', now))\n"
    return script.replace(grant, grant + log)


class GrantLog(RedisRateLimiter):
    """Logs each grant's Redis server time (ms) to `{bucket}:grants`, inside the script."""

    token_bucket_lua = _logging_grants(TOKEN_BUCKET_LUA)

    def grants(self, key: str = KEY) -> list[float]:
        return [
            float(ms) / 1000 for ms in self.client.lrange(self.bucket_key(key) + ":grants", 0, -1)
        ]


config = unbounded_budget


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key namespace of its own for each test on the shared Redis; removed afterwards."""
    require_service("redis", REDIS_ADDR)
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_DSN)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make(prefix: str) -> Iterator[Callable[..., GrantLog]]:
    made: list[GrantLog] = []

    def build(cfg: RateLimitConfig, dsn: str = REDIS_DSN, **kwargs: Any) -> GrantLog:
        limiter = GrantLog(cfg, dsn, key_prefix=prefix, **kwargs)
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        limiter.close()


# --------------------------------------------------------------------------- processes
def _worker(
    role: str,
    prefix: str,
    cfg: dict[str, Any],
    barrier: Any,
    penalized: Any,
    results: Any,
    run_s: float,
) -> None:
    """A worker process: `spend` acquires with 4 coroutines for `run_s`; `penalize` pauses
    the key for 0.8 s; `wait` acquires once after the penalty is set."""
    limiter = GrantLog(RateLimitConfig(**cfg), REDIS_DSN, key_prefix=prefix)
    limiter.client.ping()  # connected before the start line
    barrier.wait(30)

    async def spend() -> int:
        stop = time.monotonic() + run_s
        granted = 0

        async def one() -> None:
            nonlocal granted
            while time.monotonic() < stop:
                try:
                    await limiter.acquire(KEY, 1, deadline_s=max(0.0, stop - time.monotonic()))
                except RateLimitTimeout:
                    return
                granted += 1

        await asyncio.gather(*(one() for _ in range(4)))
        return granted

    if role == "spend":
        results.put((role, asyncio.run(spend()), limiter.stats.fallbacks))
    elif role == "penalize":
        limiter.penalize_now(KEY, time.time() + 0.8, "HTTP 418")
        penalized.set()
        results.put((role, 0, limiter.stats.fallbacks))
    else:
        penalized.wait(30)
        started = time.monotonic()
        asyncio.run(limiter.acquire(KEY, 1, deadline_s=10))
        results.put((role, time.monotonic() - started, limiter.stats.fallbacks))
    limiter.close()


def run_processes(
    roles: list[str], prefix: str, cfg: RateLimitConfig, run_s: float = 0.0
) -> list[tuple[str, float, int]]:
    barrier = SPAWN.Barrier(len(roles))
    penalized = SPAWN.Event()
    results = SPAWN.Queue()
    args = (prefix, cfg.model_dump(), barrier, penalized, results, run_s)
    procs = [SPAWN.Process(target=_worker, args=(role, *args)) for role in roles]
    for proc in procs:
        proc.start()
    out = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return out


def test_four_processes_never_exceed_the_budget(prefix: str) -> None:
    """4 processes x 4 coroutines on one key: in every interval-long window (any
    alignment) at most tokens_per_interval grants, burst included, and the budget is used."""
    per_interval, interval_s, burst = 10, 0.25, 5
    cfg = config(
        tokens_per_interval=per_interval, interval_ms=250, burst_tokens=burst, safety_margin=0
    )
    run_s = 1.5
    results = run_processes(["spend"] * 4, prefix, cfg, run_s)
    log = GrantLog(cfg, REDIS_DSN, key_prefix=prefix)
    times = sorted(log.grants())
    log.close()

    assert sum(n for _, n, _ in results) == len(times)
    assert all(n > 0 for _, n, _ in results)  # every process got a share
    assert all(fallbacks == 0 for *_, fallbacks in results)
    rate = (per_interval - burst) / interval_s  # the burst is taken out of the window
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + interval_s)
        assert in_window <= per_interval
        # the exact token-bucket bound: grants i..j need burst + rate x elapsed tokens
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-6
    span = times[-1] - times[0]
    assert len(times) >= 0.9 * rate * span  # waiting sleeps exactly the deficit
    assert span >= run_s - 0.3


def test_a_penalty_set_by_one_process_pauses_the_others(prefix: str) -> None:
    cfg = config()
    results = run_processes(["penalize", "wait", "wait", "wait"], prefix, cfg)
    log = GrantLog(cfg, REDIS_DSN, key_prefix=prefix)
    until_ms = float(log.client.hget(log.penalty_key(KEY), "until_ms") or 0)
    reason = log.client.hget(log.penalty_key(KEY), "reason")
    grants = log.grants()
    log.close()

    assert reason == b"HTTP 418" and until_ms > 0
    assert len(grants) == 3
    assert all(t * 1000 >= until_ms for t in grants)  # on Redis time: none before the end
    waits = [w for role, w, _ in results if role == "wait"]
    assert len(waits) == 3 and all(0.5 <= w < 3 for w in waits)


# --------------------------------------------------------------------------- deadlines
def test_deadline_raises_at_once_when_it_cannot_be_met(make: Callable[..., GrantLog]) -> None:
    limiter = make(
        config(tokens_per_interval=1, interval_ms=60_000, burst_tokens=0, safety_margin=0)
    )
    started = time.monotonic()
    with pytest.raises(RateLimitTimeout, match=r"within 0\.5s .*the budget needs 60\.0s"):
        asyncio.run(limiter.acquire(KEY, 1, deadline_s=0.5))
    other = make(config())
    other.penalize_now("ccxt:other", time.time() + 30, "HTTP 418")
    # a fresh limiter (another worker) knows the penalty only through Redis
    fresh = make(config())
    with pytest.raises(
        RateLimitTimeout, match=r"paused this key for (29|30)\.\d+s more \(HTTP 418\)"
    ):
        asyncio.run(fresh.acquire("ccxt:other", 1, deadline_s=1))
    assert time.monotonic() - started < 3
    assert limiter.stats.acquisitions == fresh.stats.acquisitions == 0
    assert fresh.penalty_until("ccxt:other") == pytest.approx(time.time() + 30, abs=1)


def test_a_deadline_that_can_be_met_waits_the_exact_deficit(
    make: Callable[..., GrantLog],
) -> None:
    limiter = make(
        config(tokens_per_interval=2, interval_ms=600, burst_tokens=1, safety_margin=0)
    )  # capacity 1, refill (2 - 1) / 0.6 s

    async def scenario() -> None:
        await limiter.acquire(KEY, 1, deadline_s=2)  # the new bucket is empty: one refill
        await limiter.acquire(KEY, 1, deadline_s=2)  # one refill later

    started = time.time()
    asyncio.run(scenario())
    first, second = limiter.grants()
    assert first - started >= 0.6 - 0.05  # on Redis time: the first waited a refill too
    assert 0.6 - 1e-3 <= second - first < 0.7
    assert limiter.stats.acquisitions == 2


def test_the_exchange_count_seen_by_one_worker_holds_the_others(
    make: Callable[..., GrantLog],
) -> None:
    """Worker A hears the exchange report 99 of 100 used in this window (someone else
    spent most of it): worker B, which saw no response, holds its request to the next
    window instead of sending it."""
    cfg = config(tokens_per_interval=None, burst_tokens=None, safety_margin=0)
    limits = ExchangeLimits("request weight", 1.0, 100, 2000, "X-USED", 1.0)
    a, b = make(cfg), make(cfg)
    for limiter in (a, b):
        limiter.register(KEY, limits, time.time)
    while time.time() % 2 > 0.5:  # start early in a 2 s window
        time.sleep(0.05)

    async def scenario() -> float:
        await a.acquire(KEY, 1, deadline_s=5)
        a.report_used(KEY, 99, time.time())  # synchronous, as in the response handler
        window_end = (time.time() // 2 + 1) * 2
        await b.acquire(KEY, 2, deadline_s=5)
        return window_end

    window_end = asyncio.run(scenario())
    assert b.grants()[-1] >= window_end  # on Redis time: not before the window ended
    assert b.stats.window_holds >= 1 and b.stats.held_windows == 1
    assert a.stats.window_holds == 0


def test_min_interval_and_slots_stay_per_process(make: Callable[..., GrantLog]) -> None:
    limiter = make(config(min_interval_ms=40, local_semaphore=2))
    in_flight, most = 0, 0

    async def one() -> None:
        nonlocal in_flight, most
        async with limiter.slot(KEY):
            in_flight += 1
            most = max(most, in_flight)
            await limiter.acquire(KEY, 1, deadline_s=5)
            in_flight -= 1

    async def scenario() -> None:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(6))), 10)

    asyncio.run(scenario())
    grants = limiter.grants()
    assert len(grants) == 6 and most == 2
    assert all(b - a >= 0.04 - 2e-3 for a, b in itertools.pairwise(grants))


# --------------------------------------------------------------------------- outage
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    give_up = time.monotonic() + 10
    while not reachable(("127.0.0.1", port), 0.1):
        assert proc.poll() is None and time.monotonic() < give_up, "redis-server did not start"
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(10)


def test_outage_falls_back_to_local_and_returns_to_redis(
    make: Callable[..., GrantLog], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    dsn = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    try:
        limiter = make(config(tokens_per_interval=1000), dsn, retry_redis_after_s=0.2)
        probe = redis.Redis.from_url(dsn)

        async def spend(n: int) -> None:
            for _ in range(n):
                await limiter.acquire(KEY, 1, deadline_s=1)

        asyncio.run(spend(3))
        assert limiter.using_redis and len(limiter.grants()) == 3

        stop(server)  # outage: acquisitions carry on, on the local bucket
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="resources.rate_limit"):
            asyncio.run(spend(20))
            limiter.penalize_now("ccxt:kraken", time.time() + 30, "HTTP 429")  # local only
        assert time.monotonic() - started < 2
        assert not limiter.using_redis
        assert limiter.stats.fallbacks == 1 and limiter.stats.local_acquisitions == 20
        assert "falling back to the in-process limiter" in caplog.text
        assert limiter.stats.acquisitions == 23
        with pytest.raises(RateLimitTimeout, match="HTTP 429"):  # the local penalty holds
            asyncio.run(limiter.acquire("ccxt:kraken", 1, deadline_s=0.5))

        server = start_redis(port, tmp_path)  # back, empty, on the same port
        time.sleep(0.25)  # past retry_redis_after_s: the next request tries Redis
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="resources.rate_limit"):
            asyncio.run(spend(2))
        assert limiter.using_redis and limiter.stats.recoveries == 1
        assert limiter.stats.fallbacks == 1 and limiter.stats.local_acquisitions == 20
        assert "is back" in caplog.text
        assert len(limiter.grants()) == 2  # granted by the new server's bucket
        # the penalty seen during the outage now pauses every worker
        assert probe.hget(limiter.penalty_key("ccxt:kraken"), "reason") == b"HTTP 429"
        probe.close()
    finally:
        stop(server)


# --------------------------------------------------------------------------- wiring
def test_resource_picks_redis_when_a_dsn_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # imported here: spawned workers import this module, and dagster is slow to import
    from seamless_assets.runtime import RateLimiterResource, resources_from_config

    cfg = config(tokens_per_interval=7)
    redis_limiter = RateLimiterResource(redis_dsn=REDIS_DSN).limiter(cfg)
    assert isinstance(redis_limiter, RedisRateLimiter) and isinstance(redis_limiter, RateLimiter)
    assert RateLimiterResource(redis_dsn=REDIS_DSN).limiter(cfg) is redis_limiter  # per process
    assert isinstance(RateLimiterResource().limiter(cfg), LocalRateLimiter)

    raw = {"exchanges": {"binance": {"symbols": ["BTC/USDT"], "timeframes": ["1m"]}}}
    monkeypatch.delenv(REDIS_ENV, raising=False)
    connector = {**raw, "connectors": {"ccxt_rate_limiter_redis": REDIS_DSN}}
    for loaded in (load_config_dict(connector), load_config_dict(raw)):
        resource = resources_from_config(loaded)["rate_limiter"]
        assert isinstance(resource, RateLimiterResource)
        limiter = resource.limiter(loaded.seamless.rate_limit)
        assert isinstance(limiter, RedisRateLimiter) == bool(loaded.redis_dsn)
    monkeypatch.setenv(REDIS_ENV, REDIS_DSN)
    from_env = load_config_dict(raw)
    limiter = RateLimiterResource(redis_dsn=from_env.redis_dsn).limiter(cfg)
    assert limiter is redis_limiter
