"""Request weight of a year of 1m USDⓈ-M perpetual candles through the exchange client,
against the bundled exchange: the page size the client picks by cost (499 bars, weight 2)
next to ccxt's own page size (500 bars, weight 5). Reports requests, the weight the
exchange counted and the download time.

    uv run python bench/bench_perp_weight.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.exchange import ExchangeClient
from resources.rate_limit import LocalRateLimiter
from sandbox import SandboxConfig, SandboxExchange, ccxt_config
from seamless_assets.core.frame import Range
from seamless_assets.nodes import Timeframe
from tests.resources.budgets import unbounded_budget
from tests.resources.test_exchange import settings

YEAR = Range(1_704_067_200, 1_735_689_600)  # 2024


def run(sx: SandboxExchange, per_call: int | None) -> dict[str, float]:
    config = ccxt_config(sx.url, market_types=("linear",))
    del config["timeout"]
    base = settings(sx, max_candles_per_call=per_call, max_concurrent_requests=8)
    client = ExchangeClient(
        dataclasses.replace(base, ccxt_config=config, market_types=("linear",)),
        LocalRateLimiter(unbounded_budget(local_semaphore=8)),
    )
    sx.reset()

    async def fetch() -> int:
        async with client:
            fetched = await client.fetch_bars("BTC/USDT:USDT", Timeframe.parse("1m"), YEAR)
            return len(fetched.rows)

    started = time.perf_counter()
    bars = asyncio.run(fetch())
    seconds = time.perf_counter() - started
    klines = sx.stats()["by_endpoint"]["fapi/klines"]
    return {"bars": bars, "requests": klines["requests"], "weight": klines["weight"], "s": seconds}


def main() -> None:
    with SandboxExchange(SandboxConfig(frozen_now_s=YEAR.end + 86_400)) as sx:
        for label, per_call in (("by cost (499)", None), ("ccxt features (500)", 500)):
            print(json.dumps({"page": label, **run(sx, per_call)}))


if __name__ == "__main__":
    main()
