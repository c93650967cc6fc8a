"""A SIGKILLed run does not keep its exchange pool slot: with a real code server, webserver
and daemon (deploy/dagster.yaml on Postgres, DefaultRunLauncher) and the exchange pool at
limit 1, each run that waits was launched through the webserver's GraphQL (the UI's path)
and must start its step within BOUND_S of the kill, without any CLI command:

1. a `seamless backfill` process killed with SIGKILL in the middle of its exchange
   requests (nothing of Dagster watches it: `seamless_dead_runs_sensor` fails the run
   and frees its slot);
2. a UI run's worker killed right after its step claimed the slot (the code server marks
   the run failed; the sensor frees the slot the failed run still holds).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from sandbox.admin import SandboxAdmin, spawn_sandbox_process
from seamless_assets.dead_runs import PID_TAG
from seamless_assets.nodes import NodeId
from tests.deploy.topology import (
    BIN,
    DEPLOY,
    GraphQL,
    Processes,
    child_env,
    free_port,
    launch_backfill,
    start_code_server,
    start_redis,
    start_webserver_and_daemon,
    wait_until,
)
from tests.services import fresh_postgres_database, postgres_url, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
NODES = [NodeId.of("binance", symbol, "1m") for symbol in SYMBOLS]
DAYS = [f"2024-01-{d:02d}" for d in range(1, 31)]  # ~45 requests one at a time: ~40 s
BOUND_S = 60.0  # sensor interval 15 s + daemon sensor loop + the waiting step's next claim
LATENCY_MS = 800
SEAMLESS = [str(BIN / "seamless")]
CLI_END = "2024-04-01"  # ~130 requests one at a time: still fetching when the UI run waits


@dataclass
class World:
    work: Path
    env: dict[str, str]
    procs: Processes
    gql: GraphQL
    instance: dg.DagsterInstance
    exchange: SandboxAdmin


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed; `bash scripts/services.sh start redis`")
    work = tmp_path_factory.mktemp("dead_runs")
    procs = Processes(work / "logs")
    procs.log_dir.mkdir()
    sandbox, url = spawn_sandbox_process({"latency_ms": LATENCY_MS})
    with fresh_postgres_database("seamless_dead_runs") as db, pytest.MonkeyPatch.context() as mp:
        try:
            redis_port = free_port()
            start_redis(procs, redis_port, work)
            home = work / "dagster_home"
            home.mkdir()
            shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
            config = work / "seamless.yaml"
            config.write_text(yaml.safe_dump(_config(work, url, redis_port)))
            grpc_port, web_port = free_port(), free_port()
            env = {
                "DAGSTER_HOME": str(home),
                "DAGSTER_POSTGRES_URL": postgres_url(db),
                "DAGSTER_COMPUTE_LOG_DIR": str(work / "compute_logs"),
                "SEAMLESS_CONFIG": str(config),
                "SEAMLESS_GRPC_HOST": "127.0.0.1",
                "SEAMLESS_GRPC_PORT": str(grpc_port),
            }
            for key, value in env.items():
                mp.setenv(key, value)
            instance = dg.DagsterInstance.from_config(str(home))
            cenv = child_env(env)
            start_code_server(procs, cenv, work, grpc_port)
            gql = start_webserver_and_daemon(procs, cenv, work, web_port)
            yield World(work, cenv, procs, gql, instance, SandboxAdmin(url))
        finally:
            procs.stop_all()
            sandbox.terminate()
            sandbox.wait(timeout=20)
            print(f"logs: {procs.log_dir}")


def _config(work: Path, sandbox_url: str, redis_port: int) -> dict[str, Any]:
    return {
        "seamless": {
            "data_dir": str(work / "data"),
            "backfill": {"retry_backoff_ms": 200, "max_attempts": 5, "max_concurrent_requests": 1},
            "rate_limit": {"redis_dsn": f"redis://127.0.0.1:{redis_port}/0"},
            "partitions": {"intraday_start": "2023-01-01", "daily_start": "2023-01-01"},
        },
        "exchanges": {
            "binance": {
                "symbols": list(SYMBOLS),
                "timeframes": ["1m"],
                "pool_limit": 1,
                "ccxt_config": {"urls": {"api": {"public": f"{sandbox_url}/api/v3"}}},
            }
        },
        "dagster": {"executor": "in_process"},
    }


STEP_KEYS = {"__".join(n.asset_key_path()): n for n in NODES}


def _step_starts(instance: dg.DagsterInstance, runs: list[Any]) -> dict[str, float]:
    """run id -> when its asset step started (claimed the pool slot)."""
    out = {}
    for run in runs:
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
            if entry.step_key in STEP_KEYS:
                out[run.run_id] = entry.timestamp
    return out


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    event = records[0].event_log_entry.dagster_event
    assert event is not None and event.pid
    return int(event.pid)


def _klines(world: World) -> int:
    return int(world.exchange.stats()["by_endpoint"].get("klines", {}).get("requests", 0))


def test_killed_slot_holders_do_not_block_the_next_ui_run(world: World) -> None:
    instance = world.instance
    ids: list[str] = []

    def runs() -> list[Any]:
        out = list(instance.get_runs(dg.RunsFilter(tags={PID_TAG: str(cli.pid)})))
        for backfill_id in ids:
            out += instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        return out

    def claimed(exclude: set[str]) -> str | None:
        starts = _step_starts(instance, runs())
        fresh = {rid: t for rid, t in starts.items() if rid not in exclude}
        return min(fresh, key=lambda rid: fresh[rid]) if fresh else None

    measured = []

    # 1. a `seamless backfill` process killed during its fetch: nothing of Dagster watches
    #    it; a UI run of the same exchange waits on its slot until the sensor frees it
    cli_log = open(world.procs.log_dir / "seamless_backfill.log", "wb")  # noqa: SIM115
    cli = subprocess.Popen(
        [*SEAMLESS, "backfill", str(NODES[0]), "--start", DAYS[0], "--end", CLI_END],
        env=world.env,
        cwd=world.work,
        stdout=cli_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            "the CLI run claims the pool",
            lambda: claimed(set()) is not None,
            240,
            world.procs.tails,
            lambda: cli.poll() is None,
        )
        first = claimed(set())
        assert first is not None
        ids.append(launch_backfill(world.gql, NODES[1].asset_key_path(), DAYS))
        before = _klines(world)
        wait_until(
            "the CLI run fetching", lambda: _klines(world) >= before + 2, 60, world.procs.tails
        )
        wait_until(
            # the queue holds it (QUEUED: its pool is full) or it waits in its step
            "the UI run submitted, waiting for the slot",
            lambda: len(runs()) == 2,
            120,
            world.procs.tails,
        )
        assert claimed({first}) is None
        assert cli.poll() is None, "the CLI run ended before the UI run waited on its slot"
        cli.send_signal(signal.SIGKILL)
        killed_at = time.time()
        cli.wait(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        cli_log.close()
    wait_until(
        f"the UI run's step within {BOUND_S:g}s of the SIGKILL",
        lambda: claimed({first}) is not None,
        BOUND_S,
        world.procs.tails,
    )
    second = claimed({first})
    assert second is not None
    measured.append(_step_starts(instance, runs())[second] - killed_at)

    # 2. a UI run's worker killed right after its step claimed the slot
    ids.append(launch_backfill(world.gql, NODES[2].asset_key_path(), DAYS))
    os.kill(_worker_pid(instance, second), signal.SIGKILL)
    killed_at = time.time()
    wait_until(
        f"the third run's step within {BOUND_S:g}s of the SIGKILL",
        lambda: claimed({first, second}) is not None,
        BOUND_S + 60,
        world.procs.tails,
    )
    third = claimed({first, second})
    assert third is not None
    measured.append(_step_starts(instance, runs())[third] - killed_at)
    print(f"SIGKILL -> next run's step started: {[f'{s:.1f}s' for s in measured]}")
    assert measured[1] <= BOUND_S, measured

    for victim in (first, second):
        run = instance.get_run_by_id(victim)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE, victim
    failure = instance.all_logs(first, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert any("is gone" in (e.message or "") for e in failure), failure
