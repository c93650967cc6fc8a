"""Benchmark: acquisitions/s through the Redis rate limiter from several processes at once.

    uv run python bench/bench_redis_limiter.py [--processes 4] [--concurrency 8]
        [--seconds 3] [--repeat 3] [--dsn redis://127.0.0.1:6379/0]

Every process runs one event loop with `--concurrency` coroutines acquiring on ONE key
with an unlimited budget (so this measures the limiter's own cost: one Lua script per
acquisition, run from a worker thread), for `--seconds` after a common start line.
Prints one JSON line per run and a summary line with the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "ccxt:bench"
UNLIMITED = 1_000_000_000


def worker(dsn: str, prefix: str, concurrency: int, seconds: float, barrier: Any, out: Any) -> None:
    from resources.rate_limit import RedisRateLimiter
    from seamless_assets.config import RateLimitConfig

    config = RateLimitConfig(
        tokens_per_interval=UNLIMITED,
        interval_ms=1000,
        burst_tokens=UNLIMITED / 10,  # the bucket is part of the window's budget
        local_semaphore=concurrency,
        min_interval_ms=0,
    )
    limiter = RedisRateLimiter(config, dsn, key_prefix=prefix)
    limiter.client.ping()

    async def run() -> int:
        count = 0
        stop = time.monotonic() + seconds

        async def one() -> None:
            nonlocal count
            while time.monotonic() < stop:
                await limiter.acquire(KEY, 1, deadline_s=10)
                count += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
        return count

    barrier.wait(60)
    started = time.monotonic()
    count = asyncio.run(run())
    out.put((count, time.monotonic() - started, limiter.stats.fallbacks))
    limiter.close()


def one_run(dsn: str, processes: int, concurrency: int, seconds: float) -> dict[str, Any]:
    import redis

    ctx = multiprocessing.get_context("spawn")
    prefix = f"bench:{uuid.uuid4().hex[:12]}:"
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(dsn, prefix, concurrency, seconds, barrier, out))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
    client = redis.Redis.from_url(dsn)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
    total = sum(count for count, _, _ in results)
    elapsed = max(wall for _, wall, _ in results)
    return {
        "processes": processes,
        "concurrency": concurrency,
        "acquisitions": total,
        "elapsed_s": round(elapsed, 3),
        "acquisitions_per_s": round(total / elapsed),
        "per_process": [count for count, _, _ in results],
        "fallbacks": sum(f for _, _, f in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates = []
    for _ in range(args.repeat):
        run = one_run(args.dsn, args.processes, args.concurrency, args.seconds)
        print(json.dumps(run), flush=True)
        rates.append(run["acquisitions_per_s"])
    summary = {
        "summary": "redis_limiter",
        "processes": args.processes,
        "concurrency": args.concurrency,
        "median_acquisitions_per_s": round(statistics.median(rates)),
        "runs": rates,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
