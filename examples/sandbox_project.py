"""A throwaway project for the examples: the bundled replay exchange, a config pointing at
it, a few materialized days of `ohlcv:binance:BTC/USDT:1m` and their snapshot.

Real deployments skip this: materialize partitions from Dagster (the as_of sensor advances
snapshots) and give the examples `--config seamless.yaml`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resources.exchange import ExchangeClient, ExchangeSettings
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import load_config
from seamless_assets.core.frame import Range
from seamless_assets.pipeline import PipelineSettings, backfill
from seamless_assets.runtime import resources_from_config

NODE = "ohlcv:binance:BTC/USDT:1m"
DAY = 86_400
START = 1_704_067_200  # 2024-01-01T00:00:00Z


@dataclass(frozen=True)
class DemoProject:
    config_path: Path
    sandbox: SandboxExchange
    as_of_s: int | None  # the snapshot's as_of (None: nothing materialized)


def write_config(directory: Path, sandbox_url: str) -> Path:
    config = {
        "seamless": {
            "data_dir": str(directory / "data"),
            "backfill": {"retry_backoff_ms": 50, "max_attempts": 3},
            # Live and dryrun read under these latency budgets (backtest and research have
            # none by default). Roomier than the shipped ones: the example's first live
            # read fills two hours into a cold store, on a machine that also runs the
            # exchange.
            "sla": {
                "max_wait_storage_ms": 2000,
                "max_wait_backfill_ms": 20_000,
                "max_wait_live_ms": 3000,
                "total_deadline_ms": 30_000,
            },
            "partitions": {"intraday_start": "2023-01-01", "daily_start": "2023-01-01"},
        },
        "domains": {"live": {"max_lag_sec": 120, "allow_partial": True}},
        "exchanges": {
            "binance": {
                "symbols": ["BTC/USDT"],
                "timeframes": ["1m"],
                "ccxt_config": {"urls": {"api": {"public": f"{sandbox_url}/api/v3"}}},
            }
        },
    }
    path = directory / "seamless.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def materialize(config_path: Path, days: int, now_s: float) -> int:
    """Fetch, store and publish `days` daily partitions from START; commit them as a
    snapshot at `now_s` (the exchange's clock, as the as_of sensor would)."""
    config = load_config(config_path)
    node = config.node(NODE)
    resources: dict[str, Any] = resources_from_config(config)
    hot, artifacts = resources["hot_store"].open(), resources["artifacts"].open()
    settings = ExchangeSettings.from_config(config, node.exchange)
    limiter = resources["rate_limiter"].limiter(config.rate_limit_for(node.exchange))
    partitions = [Range(START + i * DAY, START + (i + 1) * DAY) for i in range(days)]
    try:
        asyncio.run(
            backfill(
                node,
                partitions,
                hot=hot,
                artifacts=artifacts,
                client_factory=lambda: ExchangeClient(settings, limiter),
                settings=PipelineSettings(stabilization_bars=2),
            )
        )
    finally:
        hot.close()
    snapshot = artifacts.advance_snapshot(node, "v2", START + days * DAY, now_s)
    assert snapshot is not None
    return snapshot.as_of_s


@contextmanager
def demo_project(
    *, days: int = 3, live: bool = False, directory: Path | None = None
) -> Iterator[DemoProject]:
    """A sandbox and a config; with `days`, that many days materialized and snapshotted.

    `live=True` runs the exchange clock in real time (two days behind, so partitions are
    closed), otherwise it is frozen a week after START.
    """
    knobs = (
        SandboxConfig(clock_offset_s=-2 * DAY)
        if live
        else SandboxConfig(frozen_now_s=START + 7 * DAY + 30)
    )
    with tempfile.TemporaryDirectory(prefix="seamless-example-") as tmp:
        work = directory or Path(tmp)
        with SandboxExchange(knobs) as sandbox:
            config_path = write_config(work, sandbox.url)
            now_s = knobs.frozen_now_s or time.time() + knobs.clock_offset_s
            as_of = materialize(config_path, days, now_s) if days else None
            yield DemoProject(config_path, sandbox, as_of)
