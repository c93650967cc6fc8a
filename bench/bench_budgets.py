"""Benchmark: the default rate budget against the bundled exchange at 300, 1200 and 6000
request weight per minute: bans, 429s and throughput as a fraction of the limit.

    uv run python bench/bench_budgets.py [--budgets 300 1200 6000] [--seconds 190]
        [--configs default max_semaphore]

Each run spawns a fresh sandbox process (its own CPU, like a real exchange) with
`weight_limit_per_minute` = B and backfills 1m bars of BTC/USDT backwards from now with
one `ExchangeClient` until `--seconds` have passed; demand always exceeds the budget, so
the budget binds. Pages of 100 candles keep the client's CPU below what 6000 weight/min
asks. Configs: `default` (the shipped rate_limit and backfill sections) and
`max_semaphore` (the same with rate_limit.local_semaphore = 64 and
backfill.max_concurrent_requests = 64).

Per run it prints one JSON line: 418s, 429s (penalties issued), the weight of every
complete sandbox minute and `fraction` = the median of those minutes' weight / B (the
physical limit). The bucket starts empty and keeps a 2% safety margin, so 0.98 is the
ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

M1 = 60


def run_once(budget: int, config_name: str, seconds: float) -> dict[str, Any]:
    from resources.exchange import ExchangeClient, ExchangeSettings
    from resources.rate_limit import LocalRateLimiter
    from sandbox import SandboxAdmin, spawn_sandbox_process
    from sandbox.server import ccxt_config
    from seamless_assets.config import LOCAL_SEMAPHORE_MAX, load_config_dict
    from seamless_assets.core.frame import Range
    from seamless_assets.nodes import Timeframe

    proc, url = spawn_sandbox_process({"weight_limit_per_minute": budget})
    try:
        ccxt = ccxt_config(url)
        del ccxt["enableRateLimit"]
        rate_limit: dict[str, Any] = {}
        backfill: dict[str, Any] = {}
        if config_name == "max_semaphore":
            rate_limit["local_semaphore"] = LOCAL_SEMAPHORE_MAX
            backfill["max_concurrent_requests"] = LOCAL_SEMAPHORE_MAX
        config = load_config_dict(
            {
                "seamless": {"rate_limit": rate_limit, "backfill": backfill},
                "exchanges": {"binance": {"ccxt_config": ccxt, "max_candles_per_call": 100}},
            }
        )
        limiter = LocalRateLimiter(config.rate_limit_for("binance"))
        client = ExchangeClient(ExchangeSettings.from_config(config, "binance"), limiter)
        m1 = Timeframe.parse("1m")

        async def backfill_until() -> int:
            rows = 0
            async with client:
                end = int(await client.server_now_s()) // M1 * M1
                stop = time.monotonic() + seconds
                while time.monotonic() < stop:
                    start = end - 100 * 100 * M1  # 100 requests per call
                    fetched = await client.fetch_bars("BTC/USDT", m1, Range(start, end))
                    rows += len(fetched.rows)
                    end = start
            return rows

        started = time.monotonic()
        rows = asyncio.run(backfill_until())
        elapsed = time.monotonic() - started
        stats = SandboxAdmin(url).stats()
    finally:
        proc.terminate()
        proc.wait(10)
    history = stats["weight_history"]
    full = [h["weight"] for h in history[1:-1]]  # complete minutes only
    return {
        "budget": budget,
        "config": config_name,
        "seconds": round(elapsed, 1),
        "rows": rows,
        "sent_418": stats["sent_418"],
        "sent_429": stats["sent_429"],
        "requests_in_penalty": stats["requests_in_penalty"],
        "minute_weights": [h["weight"] for h in history],
        "max_minute": max((h["weight"] for h in history), default=0),
        "fraction": round(statistics.median(full) / budget, 4) if full else None,
        "window_holds": limiter.stats.window_holds,
        "penalties": limiter.stats.penalties,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[300, 1200, 6000])
    parser.add_argument("--configs", nargs="+", default=["default", "max_semaphore"])
    parser.add_argument("--seconds", type=float, default=190.0)
    args = parser.parse_args()
    results = []
    for budget in args.budgets:
        for name in args.configs:
            result = run_once(budget, name, args.seconds)
            results.append(result)
            print(json.dumps(result), flush=True)
    fractions = [r["fraction"] for r in results if r["fraction"] is not None]
    print(
        json.dumps(
            {
                "summary": True,
                "runs": len(results),
                "sent_418_total": sum(r["sent_418"] for r in results),
                "max_429_per_run": max(r["sent_429"] for r in results),
                "over_budget_minutes": sum(
                    1 for r in results for w in r["minute_weights"] if w > r["budget"]
                ),
                "median_fraction": statistics.median(fractions) if fractions else None,
                "min_fraction": min(fractions) if fractions else None,
            }
        )
    )


if __name__ == "__main__":
    main()
