"""Shared helpers of the read-resource tests (no tests here): a sandbox-backed project,
materializing partitions through the real pipeline, and advancing snapshots."""

from __future__ import annotations

import asyncio
import threading
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
    tmp_path: Path,
    sandbox: SandboxExchange,
    *,
    cache: dict[str, Any] | None = None,
    domains: dict[str, Any] | None = None,
    **section: Any,
) -> SeamlessConfig:
    """A config for `sandbox` with data under tmp_path; `section` merges into `seamless:`,
    `cache` and `domains` are top-level sections."""
    section = {"sla": ROOMY_SLA, **section}
    path = write_config(tmp_path, sandbox.url, **section)
    if cache is not None or domains is not None:
        import yaml

        raw = yaml.safe_load(path.read_text())
        if cache is not None:
            raw["cache"] = cache
        if domains is not None:
            raw["domains"] = domains
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


def advance(config: SeamlessConfig, stable_end_s: int, now_s: float | None = None) -> Snapshot:
    """Commit the published set; by default at `stable_end_s`, the instant the data became
    stable (a sensor ticking then), so as_of values stay in the frozen exchange's time."""
    now = stable_end_s if now_s is None else now_s
    snapshot = open_artifacts(config).advance_snapshot(NODE, "v2", stable_end_s, now)
    assert snapshot is not None, "the snapshot did not advance"
    return snapshot


def artifacts_of(config: SeamlessConfig) -> ArtifactStore:
    return open_artifacts(config)


def endpoint_requests(sandbox: SandboxExchange, endpoint: str) -> int:
    return int(sandbox.stats()["by_endpoint"].get(endpoint, {}).get("requests", 0))


def reader_for(config: SeamlessConfig, **stores: Any) -> SeamlessReader:
    return SeamlessReader.open(config, **stores)


class Slow:
    """A real store (hot or artifact) whose chosen methods first sleep `delay_s`: a hung
    server, injected as a fault (the store underneath does the real work). `release()`
    wakes every sleeping call."""

    def __init__(self, inner: Any, delay_s: float, methods: tuple[str, ...]) -> None:
        self.inner, self.delay_s, self.methods = inner, delay_s, methods
        self.calls: list[str] = []
        self.released = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.methods:
            return attr

        def slow(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            self.released.wait(self.delay_s)
            return attr(*args, **kwargs)

        return slow

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()  # let abandoned calls finish before the store closes
        self.inner.close()
