"""Benchmark: fetch-only download time of the real exchange client against the bundled
exchange (`sandbox`, in its own process), old vs new rate settings, interleaved.

    uv run python bench/bench_download.py [--repeat 5] [--cases latency year]
        [--variants sliding shipped]

Cases (one `ExchangeClient.fetch_bars` over the whole range, as the pipeline calls it for
one missing range, with a fresh limiter and client each run, so the bucket starts empty
and markets and the clock are loaded as in a fresh process):

* `latency`: 91 days of 1m (131 klines requests of 1000 bars) with 100 ms injected
  latency per request; the budget (6000 weight/min) does not bind.
* `year`: 365 days of 1m (526 klines requests, 1052 weight), no latency, the sandbox
  enforcing Binance's published 6000 weight/min (a 429 or 418 would show in the counts).

Variants: `shipped` is the `rate_limit` and `backfill` sections of the shipped
`seamless.yaml` (no Redis); `sliding` is the same with the settings the project shipped
before the exchange-window limiter (`rate_limit.window: sliding`, `local_semaphore: 10`,
`max_concurrent_requests: 8`, `min_interval_ms: 10`). Rounds run the variants in turn
(A, B, A, B...), so a change of machine load hits both. Prints one JSON line per run and
a summary: median seconds per case and variant, their ratio, the sandbox's peak requests
in flight, 429/418 counts, and the load average (`os.getloadavg`) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = 86_400
CASES: dict[str, dict[str, Any]] = {
    "latency": {"days": 91, "latency_ms": 100.0},
    "year": {"days": 365, "latency_ms": 0.0},
}
ROOT = Path(__file__).resolve().parents[1]
OLD_SETTINGS: dict[str, dict[str, Any]] = {
    "rate_limit": {"window": "sliding", "local_semaphore": 10, "min_interval_ms": 10},
    "backfill": {"max_concurrent_requests": 8},
}


def shipped() -> dict[str, dict[str, Any]]:
    """The `rate_limit` and `backfill` sections of the shipped seamless.yaml, no Redis."""
    import yaml

    seamless = yaml.safe_load((ROOT / "seamless.yaml").read_text())["seamless"]
    rate_limit = {k: v for k, v in seamless["rate_limit"].items() if k != "redis_dsn"}
    return {"rate_limit": rate_limit, "backfill": dict(seamless["backfill"])}


def variant(name: str) -> dict[str, dict[str, Any]]:
    settings = shipped()
    if name == "sliding":
        for section, values in OLD_SETTINGS.items():
            settings[section].update(values)
    elif name != "shipped":
        raise ValueError(f"unknown variant {name!r}: shipped or sliding")
    return settings


def one_run(url: str, case: str, variant_name: str) -> dict[str, Any]:
    from resources.exchange import ExchangeClient, ExchangeSettings
    from resources.rate_limit import LocalRateLimiter
    from sandbox import SandboxAdmin
    from sandbox.server import ccxt_config
    from seamless_assets.config import load_config_dict
    from seamless_assets.core.frame import Range
    from seamless_assets.nodes import Timeframe

    spec, overrides = CASES[case], variant(variant_name)
    admin = SandboxAdmin(url)
    admin.configure(latency_ms=spec["latency_ms"])
    admin.reset()
    ccxt = ccxt_config(url)
    del ccxt["enableRateLimit"]
    config = load_config_dict(
        {
            "seamless": dict(overrides),
            "exchanges": {"binance": {"ccxt_config": ccxt}},
        }
    )
    limiter = LocalRateLimiter(config.rate_limit_for("binance"))
    client = ExchangeClient(ExchangeSettings.from_config(config, "binance"), limiter)
    end = (int(time.time()) // DAY - 1) * DAY
    window = Range(end - spec["days"] * DAY, end)

    async def fetch() -> int:
        async with client:
            fetched = await client.fetch_bars("BTC/USDT", Timeframe.parse("1m"), window)
        return len(fetched.rows)

    started = time.perf_counter()
    rows = asyncio.run(fetch())
    seconds = time.perf_counter() - started
    stats = admin.stats()
    return {
        "case": case,
        "variant": variant_name,
        "seconds": round(seconds, 3),
        "rows": rows,
        "requests": dict(client.stats.http_requests),
        "rate_limit_wait_s": round(client.stats.rate_limit_wait_s, 3),  # summed over tasks
        "window_holds": limiter.stats.window_holds,
        "max_in_flight": stats["max_in_flight"],
        "sent_429": stats["sent_429"],
        "sent_418": stats["sent_418"],
        "max_weight_per_minute": stats["max_weight_per_minute"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--variants", nargs="+", default=["sliding", "shipped"])
    args = parser.parse_args()
    from sandbox import spawn_sandbox_process

    load_before = os.getloadavg()
    proc, url = spawn_sandbox_process({"weight_limit_per_minute": 6000})
    results: list[dict[str, Any]] = []
    try:
        for case in args.cases:
            one_run(url, case, args.variants[-1])  # warm-up (imports, first connections)
            for _ in range(args.repeat):
                for variant in args.variants:
                    result = one_run(url, case, variant)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    summary: dict[str, Any] = {"summary": True, "load_before": load_before}
    for case in args.cases:

        def runs(variant: str, case: str = case) -> list[dict[str, Any]]:
            return [r for r in results if (r["case"], r["variant"]) == (case, variant)]

        medians = {v: statistics.median(r["seconds"] for r in runs(v)) for v in args.variants}
        summary[case] = {
            "median_s": medians,
            "ratio_first_to_last": round(medians[args.variants[0]] / medians[args.variants[-1]], 2),
            "max_in_flight": {v: max(r["max_in_flight"] for r in runs(v)) for v in args.variants},
        }
    summary["sent_429_total"] = sum(r["sent_429"] for r in results)
    summary["sent_418_total"] = sum(r["sent_418"] for r in results)
    summary["load_after"] = os.getloadavg()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
