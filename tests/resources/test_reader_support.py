"""Shared helpers of the read-resource tests (no tests here): a sandbox-backed project,
materializing partitions through the real pipeline, and advancing snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resources.artifacts.base import ArtifactStore
from resources.exchange import ExchangeClient, ExchangeSettings
from resources.hot_store.base import HotStore
from resources.reader import SeamlessReader
from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range
from seamless_assets.core.snapshot import Snapshot
from seamless_assets.nodes import NodeId
from seamless_assets.pipeline import PipelineSettings, RunOutcome, backfill
from seamless_assets.runtime import resources_from_config
from tests.assets.conftest import open_artifacts, open_hot, write_config

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
NOW = T0 + 9 * DAY + 30  # the frozen exchange clock: 30 s into 2024-01-10
NODE_ID = "ohlcv:binance:BTC/USDT:1m"
NODE = NodeId.parse(NODE_ID)
#: Generous budgets for tests that are not about the SLA (a cold client builds in ~1 s).
ROOMY_SLA = {
    "max_wait_storage_ms": 10_000,
    "max_wait_backfill_ms": 30_000,
    "max_wait_live_ms": 30_000,
    "total_deadline_ms": 60_000,
}


@contextmanager
def frozen_sandbox(now_s: float = NOW, **knobs: Any) -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=now_s, **knobs)) as sandbox:
        yield sandbox


def project(
    tmp_path: Path, sandbox: SandboxExchange, *, cache: dict[str, Any] | None = None, **section: Any
) -> SeamlessConfig:
    """A config for `sandbox` with data under tmp_path; `section` merges into `seamless:`."""
    section = {"sla": ROOMY_SLA, **section}
    path = write_config(tmp_path, sandbox.url, **section)
    if cache is not None:
        import yaml

        raw = yaml.safe_load(path.read_text())
        raw["cache"] = cache
        path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def day(index: int) -> Range:
    return Range(T0 + index * DAY, T0 + (index + 1) * DAY)


def materialize(
    config: SeamlessConfig,
    days: list[int],
    *,
    hot: HotStore | None = None,
    refetch: bool = False,
) -> RunOutcome:
    """Run the pipeline (as the asset does) over the given daily partitions of NODE."""
    resources: dict[str, Any] = resources_from_config(config)
    settings = ExchangeSettings.from_config(config, NODE.exchange)
    limiter = resources["rate_limiter"].limiter(config.rate_limit_for(NODE.exchange))
    own_hot = hot is None
    store = hot if hot is not None else open_hot(config)
    try:
        return asyncio.run(
            backfill(
                NODE,
                [day(i) for i in days],
                hot=store,
                artifacts=open_artifacts(config),
                client_factory=lambda: ExchangeClient(settings, limiter),
                settings=PipelineSettings(stabilization_bars=2),
                refetch_stored=refetch,
            )
        )
    finally:
        if own_hot:
            store.close()


def advance(config: SeamlessConfig, stable_end_s: int) -> Snapshot:
    snapshot = open_artifacts(config).advance_snapshot(NODE, "v2", stable_end_s, time.time())
    assert snapshot is not None, "the snapshot did not advance"
    return snapshot


def artifacts_of(config: SeamlessConfig) -> ArtifactStore:
    return open_artifacts(config)


def endpoint_requests(sandbox: SandboxExchange, endpoint: str) -> int:
    return int(sandbox.stats()["by_endpoint"].get(endpoint, {}).get("requests", 0))


def reader_for(config: SeamlessConfig, **stores: Any) -> SeamlessReader:
    return SeamlessReader.open(config, **stores)
