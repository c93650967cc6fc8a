"""A one-year backtest read with the shipped config on a machine kept busy (two CPU-bound
processes per core) returns the whole year, every time: backtest reads are judged by
correctness, not latency, so a slow disk never turns into an empty or partial frame. With
a latency budget forced onto the backtest domain, a read that runs out of it says so
(`partial`, with the reason); it is never silently short."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.exchange import ExchangeClient, ExchangeSettings
from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range
from seamless_assets.errors import SeamlessSLAExceeded
from seamless_assets.pipeline import PipelineSettings, backfill
from seamless_assets.runtime import resources_from_config
from tests.assets.conftest import open_artifacts, open_hot, write_config

ROOT = Path(__file__).resolve().parents[2]
NODE_ID = "ohlcv:binance:BTC/USDT:1m"
DAY = 86_400
T0 = 1_672_531_200  # 2023-01-01T00:00:00Z
DAYS = 365
YEAR_BARS = DAYS * 1440
TRIES = 3
#: The latency budget backtests had before domains had their own (the issue's failure).
OLD_BUDGET = {
    "max_wait_storage_ms": 300,
    "max_wait_backfill_ms": 5000,
    "max_wait_live_ms": 800,
    "total_deadline_ms": 1500,
    "on_violation": "PARTIAL_FILL",
}


def shipped_config(directory: Path, sandbox_url: str, **domains: Any) -> SeamlessConfig:
    """The test project with the shipped `seamless.sla` and `domains` sections."""
    shipped = yaml.safe_load((ROOT / "seamless.yaml").read_text())
    path = write_config(directory, sandbox_url, sla=shipped["seamless"]["sla"])
    raw = yaml.safe_load(path.read_text())
    raw["domains"] = {**shipped["domains"], **domains}
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int]]:
    """A year of 1m bars published through the pipeline and committed as one snapshot:
    (directory, sandbox url, as_of)."""
    directory = tmp_path_factory.mktemp("year")
    end = T0 + DAYS * DAY
    with SandboxExchange(SandboxConfig(frozen_now_s=end + DAY)) as sandbox:
        config = shipped_config(directory, sandbox.url)
        node = config.node(NODE_ID)
        resources: dict[str, Any] = resources_from_config(config)
        settings = ExchangeSettings.from_config(config, node.exchange)
        limiter = resources["rate_limiter"].limiter(config.rate_limit_for(node.exchange))
        hot = open_hot(config)
        try:
            asyncio.run(
                backfill(
                    node,
                    [Range(T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(DAYS)],
                    hot=hot,
                    artifacts=open_artifacts(config),
                    client_factory=lambda: ExchangeClient(settings, limiter),
                    settings=PipelineSettings(stabilization_bars=2),
                )
            )
        finally:
            hot.close()
        snapshot = open_artifacts(config).advance_snapshot(node, "v2", end, end + DAY)
        assert snapshot is not None and snapshot.watermark_s == end
        yield directory, sandbox.url, snapshot.as_of_s


@pytest.fixture
def busy_machine() -> Iterator[int]:
    """Two CPU-bound processes per core for the duration of the test."""
    count = (os.cpu_count() or 1) * 2
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.2)  # let them take the cores
        yield count
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def read_year(config: SeamlessConfig, as_of: int) -> Any:
    context = ComputeContext(world_id="busy", execution_domain="backtest", as_of=as_of)
    with SeamlessReader.open(config) as reader:  # cold: resolution and manifests each time
        return reader.fetch(NODE_ID, T0, T0 + DAYS * DAY, context)


def test_a_one_year_backtest_on_a_busy_machine_returns_the_whole_year_every_time(
    year: tuple[Path, str, int], busy_machine: int, tmp_path: Path
) -> None:
    directory, url, as_of = year
    config = shipped_config(directory, url)
    assert config.sla_for("backtest").max_wait_storage_ms is None
    for _ in range(TRIES):
        frame, meta = read_year(config, as_of)
        assert len(frame) == YEAR_BARS and meta.rows == YEAR_BARS
        assert not meta.partial and meta.sla_exceeded == () and meta.coverage_ratio == 1.0


def test_a_latency_budget_forced_onto_backtests_is_never_silently_short(
    year: tuple[Path, str, int], busy_machine: int
) -> None:
    directory, url, as_of = year
    config = shipped_config(directory, url, backtest={"sla": OLD_BUDGET})
    frame, meta = read_year(config, as_of)
    if len(frame) < YEAR_BARS:
        assert meta.partial and meta.sla_exceeded
        assert "budget of" in (meta.downgrade_reason or "")
    else:
        assert not meta.partial
    failing = shipped_config(
        directory, url, backtest={"sla": {**OLD_BUDGET, "on_violation": "FAIL_FAST"}}
    )
    try:
        frame, meta = read_year(failing, as_of)
    except SeamlessSLAExceeded as exc:
        assert exc.phase in ("storage_wait", "total")
    else:
        assert len(frame) == YEAR_BARS and not meta.partial
