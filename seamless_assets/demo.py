"""The offline demo: replay exchange + a Dagster backfill of 2 symbols × N days of 1m."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from .cli import ensure_dagster_home, run_backfill
from .config import load_config

DEMO_NODES = ("ohlcv:binance:BTC/USDT:1m", "ohlcv:binance:ETH/USDT:1m")


def run_demo(days: int = 7) -> int:
    from sandbox import spawn_sandbox_process  # the demo is one of the sandbox's users

    process, url = spawn_sandbox_process(port=0)
    try:
        os.environ["SEAMLESS_SANDBOX_URL"] = url
        config = load_config()
        home = ensure_dagster_home(config)
        nodes = [config.node(n) for n in DEMO_NODES]
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=days)
        print(f"replay exchange at {url}; backfilling {days} days of {len(nodes)} nodes")
        started = time.perf_counter()
        result = run_backfill(config, nodes, start, today)
        elapsed = time.perf_counter() - started
        from .cli import _print_run

        status = _print_run(result)
        print(f"took {elapsed:.1f}s")
        print(f"hot rows:   {config.hot_store_path} (DuckDB, table ohlcv)")
        print(f"artifacts:  {config.artifact_uri}")
        print(f"dagster:    DAGSTER_HOME={home}; open the UI with")
        print(f"            DAGSTER_HOME={home} uv run dagster dev -w workspace.yaml")
        print(
            "inspect:    uv run seamless coverage ohlcv:binance:BTC/USDT:1m; uv run seamless verify"
        )
        return status
    finally:
        process.terminate()
        process.wait(timeout=10)
