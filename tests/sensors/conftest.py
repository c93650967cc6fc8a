"""Fixtures for the sensors: a sandbox exchange frozen on 2024-01-08 12:00:30 UTC, a project
of one 1m node whose history starts 2024-01-01, and the sensors' clock set to the same time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.definitions import build_definitions
from tests.assets.conftest import write_config

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
DAY = 86_400
NOW = T0 + 7 * DAY + 12 * 3600 + 30.5  # 2024-01-08 12:00:30.5: seven closed daily partitions
NODE = "ohlcv:binance:BTC/USDT:1m"


class Clock:
    """The sensors' and checks' now, kept equal to the sandbox exchange's clock."""

    def __init__(self, sandbox: SandboxExchange, now_s: float = NOW) -> None:
        self.sandbox, self.now_s = sandbox, now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
        self.sandbox.set_clock(now=self.now_s)


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW)) as exchange:
        yield exchange


@pytest.fixture
def clock(sandbox: SandboxExchange) -> Clock:
    return Clock(sandbox)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path) -> SeamlessConfig:
    path = write_config(tmp_path, sandbox.url)
    raw = yaml.safe_load(path.read_text())
    raw["exchanges"]["binance"]["timeframes"] = ["1m"]
    raw["seamless"]["partitions"] = {"intraday_start": "2024-01-01", "daily_start": "2024-01-01"}
    raw["domains"] = {"live": {"max_lag_sec": 120, "allow_partial": True, "nodes": [NODE]}}
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture
def instance(dagster_home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.get()


@pytest.fixture
def defs(project: SeamlessConfig, clock: Clock) -> dg.Definitions:
    return build_definitions(project, clock=clock)


def tick(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """One evaluation of sensor `name` against the real instance and configured stores."""
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, definitions=defs
    ) as context:  # the read resource has a teardown: resources open as a context
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def execute(
    defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """Run a sensor's request the way the daemon would launch it (same job, tags, config)."""
    job = defs.resolve_job_def(request.job_name or "")
    if request.asset_selection is not None:
        checks = request.asset_check_keys
        job = job.get_subset(
            asset_selection=set(request.asset_selection),
            asset_check_selection=set(checks) if checks is not None else None,
        )
    tags = {**request.tags, "dagster/run_key": request.run_key or ""}
    return job.execute_in_process(
        run_config=request.run_config or None,
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )
