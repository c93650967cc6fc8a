"""Exchange-side ceilings on the sandbox, run by the project's venv in its own process.

    python bench/peers/ceilings.py URL START END [SANDBOX_PID]
    python bench/peers/ceilings.py URL START END warm    (fetch the pages once, no figures)

* plain ccxt (async, the project's ccxt): the window's 1m pages with `fetch_ohlcv`, one at
  a time (1 connection) and 4 in flight; bars/s of parsed rows;
* the sandbox itself: the same pages as raw aiohttp GETs, 32 in flight, bodies read but
  not parsed (so the client does as little as it can): responses/s and bars/s. The client
  shares the machine with the server, so this is a lower bound of the server's ceiling;
  with the sandbox's pid, its CPU time per response too (/proc: utime + stime), whose
  inverse is the ceiling of its one event loop on an otherwise idle core.
Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGE = 1000


def _starts(start: int, end: int) -> list[int]:
    return [ms for ms in range(start * 1000, end * 1000, PAGE * 60_000)]


async def _ccxt(url: str, starts: list[int], in_flight: int) -> dict[str, float]:
    import ccxt.async_support as ccxt

    from sandbox import ccxt_config

    exchange = ccxt.binance(ccxt_config(url))
    try:
        await exchange.load_markets()
        gate = asyncio.Semaphore(in_flight)

        async def page(since: int) -> int:
            async with gate:
                rows = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=PAGE)
                return len(rows)

        t = time.perf_counter()
        bars = sum(await asyncio.gather(*(page(s) for s in starts)))
        seconds = time.perf_counter() - t
    finally:
        await exchange.close()
    return {"bars": bars, "s": seconds, "bars_per_s": bars / seconds}


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _raw(
    url: str, starts: list[int], in_flight: int, pid: int | None = None
) -> dict[str, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def page(since: int) -> int:
            params = {
                "symbol": "BTCUSDT",
                "interval": "1m",
                "startTime": str(since),
                "limit": str(PAGE),
            }
            async with session.get(f"{url}/api/v3/klines", params=params) as resp:
                body = await resp.read()
                assert resp.status == 200, body[:200]
                return body.count(b"],[") + 1

        await page(starts[0])  # connections open, first page encoded
        t, cpu = time.perf_counter(), _cpu_s(pid)
        bars = sum(await asyncio.gather(*(page(s) for s in starts * 2)))
        seconds, cpu = time.perf_counter() - t, _cpu_s(pid) - cpu
    n = len(starts) * 2
    return {
        "responses": n,
        "s": seconds,
        "responses_per_s": n / seconds,
        "bars_per_s": bars / seconds,
        "server_cpu_ms_per_response": cpu / n * 1000 if pid else None,
    }


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    url, start, end = argv[0], int(argv[1]), int(argv[2])
    starts = _starts(start, end)
    if argv[3:] == ["warm"]:
        asyncio.run(_raw(url, starts[:1], 8))  # the first page (encoded, then cached)
        print(json.dumps(asyncio.run(_raw(url, starts, 8))))
        return 0
    pid = int(argv[3]) if len(argv) > 3 else None
    out: dict[str, Any] = {
        "ccxt_1": asyncio.run(_ccxt(url, starts, 1)),
        "ccxt_4": asyncio.run(_ccxt(url, starts, 4)),
        "sandbox_raw_32": asyncio.run(_raw(url, starts, 32, pid)),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
