"""A real Dagster UI for browser tests: the bundled sandbox exchange, a gRPC code server over
a temp seamless.yaml, `dagster-webserver` and `dagster-daemon` on a temp SQLite
DAGSTER_HOME (the project's dagster.yaml), and Debian's Chromium driven by Playwright.

Processes, ports, GraphQL and waiting come from tests/deploy/topology.py."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from sandbox.admin import SandboxAdmin, spawn_sandbox_process
from seamless_assets.nodes import NodeId
from tests.assets.conftest import write_config
from tests.deploy.topology import (
    GraphQL,
    Processes,
    child_env,
    free_port,
    start_code_server,
    start_webserver_and_daemon,
)
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "seamless"


def chromium_path() -> str:
    """Debian's chromium (no Playwright browser download); fails under CI=true if absent."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        unavailable("chromium is not installed; `sudo apt-get install -y chromium`")
    return path


@dataclass
class UiStack:
    work: Path
    procs: Processes
    base_url: str
    gql: GraphQL
    instance: dg.DagsterInstance
    exchange: SandboxAdmin
    nodes: list[NodeId]
    config: Path  # the seamless.yaml the code server loads

    def asset_url(self, node: NodeId, **query: str) -> str:
        path = "/".join(node.asset_key_path())
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{self.base_url}/assets/{path}" + (f"?{params}" if params else "")

    def runs(self) -> list[Any]:
        return list(self.instance.get_runs())


def _config(work: Path, sandbox_url: str, symbols: Sequence[str]) -> Path:
    path = write_config(work, sandbox_url, symbols=tuple(symbols))
    raw = yaml.safe_load(path.read_text())
    raw["exchanges"]["binance"]["timeframes"] = ["1m"]
    raw["seamless"]["partitions"] = {"intraday_start": "2024-01-01", "daily_start": "2024-01-01"}
    raw["dagster"] = {"executor": "in_process"}
    path.write_text(yaml.safe_dump(raw))
    return path


@contextmanager
def ui_stack(
    work: Path, symbols: Sequence[str], sandbox_config: dict[str, Any] | None = None
) -> Iterator[UiStack]:
    """Everything up (location loaded in the webserver); stopped by pid on exit."""
    procs = Processes(work / "logs")
    procs.log_dir.mkdir(parents=True)
    sandbox, url = spawn_sandbox_process(sandbox_config or {})
    try:
        home = work / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        config = _config(work, url, symbols)
        grpc_port, web_port = free_port(), free_port()
        env = {
            "DAGSTER_HOME": str(home),
            "SEAMLESS_CONFIG": str(config),
            "SEAMLESS_GRPC_HOST": "127.0.0.1",
            "SEAMLESS_GRPC_PORT": str(grpc_port),
        }
        cenv = child_env(env)
        start_code_server(procs, cenv, work, grpc_port, timeout_s=120)
        gql = start_webserver_and_daemon(procs, cenv, work, web_port, LOCATION, timeout_s=120)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DAGSTER_HOME", str(home))
            instance = dg.DagsterInstance.from_config(str(home))
            nodes = [NodeId.of("binance", s, "1m") for s in symbols]
            yield UiStack(
                work,
                procs,
                f"http://127.0.0.1:{web_port}",
                gql,
                instance,
                SandboxAdmin(url),
                nodes,
                config,
            )
    finally:
        procs.stop_all()
        sandbox.terminate()
        sandbox.wait(timeout=20)


def wait_for(what: str, ready: Any, timeout_s: float, stack: UiStack) -> Any:
    """Poll `ready()` until it returns something truthy; fail with the processes' logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s:g}s\n{stack.procs.tails()}")
        time.sleep(1)
