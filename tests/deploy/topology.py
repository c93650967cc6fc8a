"""Real processes for the distributed topology test: a private Redis, Dagster's code server,
webserver and daemon (deploy/ files), and a GraphQL client for the webserver.

Every process is started with its own environment and log file, and stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # the project's virtualenv: dagster, dagster-webserver, ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    what: str,
    ready: Callable[[], bool],
    timeout_s: float,
    explain: Callable[[], str] = lambda: "",
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Poll `ready`; fail after `timeout_s`, or as soon as `alive` says the process that
    should become ready is gone, with `explain()` (e.g. the logs' tails)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not alive():
            raise AssertionError(f"{what}: the process exited\n{explain()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s:g}s\n{explain()}")
        time.sleep(0.5)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any Dagster or seamless setting, plus `extra`:
    each service gets exactly the variables a deployment would give it."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "SEAMLESS_", "PYTEST_")) and k != "PYTHONPATH"
    }
    return {**base, **extra}


@dataclass
class Processes:
    """Named long-running processes with their logs; `stop` by pid (SIGTERM, then SIGKILL)."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            list(cmd), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs[name] = proc
        return proc.pid

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def tails(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(out)


def start_redis(procs: Processes, port: int, cwd: Path) -> None:
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    procs.start("redis", [*cmd, "--appendonly", "no"], child_env({}), cwd)
    wait_until(
        "private redis-server listening",
        lambda: listening(port),
        20,
        procs.tails,
        lambda: procs.alive("redis"),
    )


@dataclass(frozen=True)
class GraphQL:
    """POSTs queries to the webserver's /graphql endpoint."""

    url: str

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        req = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def ready(self) -> bool:
        try:
            self("{ version }")
            return True
        except (OSError, urllib.error.URLError, AssertionError):
            return False


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""

WORKSPACE = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        updatedTimestamp
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            repositories { name sensors { name } schedules { name } }
          }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}"""


def launch_backfill(gql: GraphQL, asset_path: Sequence[str], partitions: Sequence[str]) -> str:
    params = {
        "assetSelection": [{"path": list(asset_path)}],
        "partitionNames": list(partitions),
        "title": f"topology {'/'.join(asset_path)}",
    }
    answer = gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", f"launch failed: {answer}"
    return str(answer["backfillId"])


def location_entry(gql: GraphQL, name: str) -> dict[str, Any] | None:
    workspace = gql(WORKSPACE)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        return None
    for entry in workspace["locationEntries"]:
        if entry["name"] == name:
            return dict(entry)
    return None


def start_code_server(
    procs: Processes, env: Mapping[str, str], cwd: Path, port: int, timeout_s: float = 180
) -> None:
    """`dagster api grpc` over the project's definitions on `port`, waited for."""
    code = [str(BIN / "dagster"), "api", "grpc", "-m", "seamless_assets.definitions"]
    procs.start("code_server", [*code, "-a", "defs", "-p", str(port)], env, cwd)
    wait_until(
        "code server listening",
        lambda: listening(port),
        timeout_s,
        procs.tails,
        lambda: procs.alive("code_server"),
    )


def start_webserver_and_daemon(
    procs: Processes,
    env: Mapping[str, str],
    cwd: Path,
    web_port: int,
    location: str = "seamless",
    timeout_s: float = 180,
) -> GraphQL:
    """`dagster-webserver` and `dagster-daemon` on deploy/workspace.yaml, waited for until
    the webserver answers and has `location` loaded; returns its GraphQL endpoint."""
    workspace = str(DEPLOY / "workspace.yaml")
    web = [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1"]
    procs.start("webserver", [*web, "-p", str(web_port)], env, cwd)
    procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, cwd)
    gql = GraphQL(f"http://127.0.0.1:{web_port}/graphql")
    wait_until("webserver answering GraphQL", gql.ready, timeout_s, procs.tails)
    wait_until(
        "location loaded",
        lambda: (location_entry(gql, location) or {}).get("loadStatus") == "LOADED",
        timeout_s,
        procs.tails,
    )
    return gql


def pool_steps(
    instance: dg.DagsterInstance, runs: Sequence[Any], pool_step_keys: set[str]
) -> list[tuple[float, float, str]]:
    """(start, end, step) of every step of `runs` that claims the exchange pool (the nodes'
    asset steps, not their governance-check steps, which talk to no exchange)."""
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    kinds.add(dg.DagsterEventType.STEP_FAILURE)
    steps = []
    for run in runs:
        started: dict[str, float] = {}
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            key = str(entry.step_key)
            if key not in pool_step_keys or entry.dagster_event is None:
                continue
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[key] = entry.timestamp
            else:
                steps.append((started.pop(key), entry.timestamp, key))
    return steps


def peak_overlap(steps: Sequence[tuple[float, float, str]]) -> int:
    """The most steps running at once (one ending as another starts is not overlap)."""
    edges = sorted([(s, 1) for s, _, _ in steps] + [(e, -1) for _, e, _ in steps])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def run_failures(instance: dg.DagsterInstance, runs: Sequence[Any]) -> list[str]:
    """What each failed run's event log says went wrong."""
    kinds = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    out = []
    for run in runs:
        if run.status == dg.DagsterRunStatus.SUCCESS:
            continue
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            event = entry.dagster_event
            error = getattr(event.event_specific_data, "error", None) if event else None
            detail = error.to_string() if error is not None else ""
            kind = event.event_type_value if event else "?"
            out.append(f"run {run.run_id} {kind}: {entry.message}\n{detail}")
    return out
