"""The production topology from deploy/, on real servers: a Postgres instance, the gRPC code
server, the webserver and the daemon as separate processes, four nodes of one exchange
backfilled concurrently through the webserver's GraphQL under one Redis budget.

a. four queued single-run backfills: all succeed, the exchange pool holds, the exchange
   (the bundled sandbox) records no minute over its budget and no 418;
b. Redis killed while such runs are in flight: the same;
c. Redis down while the code server starts: the location loads with its sensors and
   schedules.
"""

from __future__ import annotations

import shutil
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
from seamless_assets.nodes import NodeId
from tests.services import fresh_postgres_database, postgres_url, unavailable

from .conftest import FAILED
from .topology import (
    BIN,
    DEPLOY,
    GraphQL,
    Processes,
    child_env,
    free_port,
    launch_backfill,
    listening,
    location_entry,
    peak_overlap,
    pool_steps,
    run_failures,
    start_redis,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT")
NODES = [NodeId.of("binance", symbol, "1m") for symbol in SYMBOLS]
BUDGET = 240  # the sandbox's request weight per minute (a kline request weighs 2)
POOL = "exchange_binance"
POOL_LIMIT = 2
LOCATION = "seamless"
# 20 days x 1440 bars = 29 requests of 1000 bars (weight 2 each) per node: with
# exchangeInfo (20) and history starts the four runs need ~1.4 minutes of budget.
DAYS_A = [f"2024-01-{d:02d}" for d in range(1, 21)]
DAYS_B = [f"2024-03-{d:02d}" for d in range(1, 7)]


@dataclass
class Topology:
    work: Path
    procs: Processes
    env: dict[str, str]
    grpc_port: int
    gql: GraphQL
    instance: dg.DagsterInstance
    exchange: SandboxAdmin

    def start_code_server(self) -> None:
        """What deploy/Procfile's `code:` line does: `seamless pools`, then the gRPC server."""
        pools = subprocess.run(
            [str(BIN / "seamless"), "pools"],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=180,
        )
        (self.procs.log_dir / "seamless_pools.log").write_text(pools.stdout + pools.stderr)
        assert pools.returncode == 0, (
            f"`seamless pools` exited {pools.returncode}: {pools.stdout}{pools.stderr}"
        )
        cmd = [str(BIN / "dagster"), "api", "grpc", "-m", "seamless_assets.definitions"]
        cmd += ["-a", "defs", "-h", "127.0.0.1", "-p", str(self.grpc_port)]
        self.procs.start("code_server", cmd, self.env, self.work)
        wait_until(
            "code server listening",
            lambda: listening(self.grpc_port),
            180,
            self.procs.tails,
            lambda: self.procs.alive("code_server"),
        )

    def kill_redis(self) -> None:
        self.procs.stop("redis", sig=9)

    def budget(self) -> dict[str, Any]:
        stats = self.exchange.stats()
        keep = ("max_weight_per_minute", "sent_429", "sent_418", "requests_total")
        return {
            **{k: stats[k] for k in keep},
            "weight": sum(minute["weight"] for minute in stats["weight_history"]),
            "klines": stats["by_endpoint"].get("klines", {}),
        }


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed; `bash scripts/services.sh start redis`")
    work = tmp_path_factory.mktemp("topology")
    procs = Processes(work / "logs")
    procs.log_dir.mkdir()
    sandbox, url = spawn_sandbox_process({"weight_limit_per_minute": BUDGET, "penalty_grace_ms": 0})
    started = time.monotonic()
    with fresh_postgres_database("seamless_topology") as db, pytest.MonkeyPatch.context() as mp:
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
                "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
            }
            for key, value in env.items():
                mp.setenv(key, value)  # this process opens the same instance to inspect it
            instance = dg.DagsterInstance.from_config(str(home))
            topo = Topology(
                work,
                procs,
                child_env(env),
                grpc_port,
                GraphQL(f"http://127.0.0.1:{web_port}/graphql"),
                instance,
                SandboxAdmin(url),
            )
            topo.start_code_server()
            workspace = str(DEPLOY / "workspace.yaml")
            web = [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1"]
            procs.start("webserver", [*web, "-p", str(web_port)], topo.env, work)
            daemon = [str(BIN / "dagster-daemon"), "run", "-w", workspace]
            procs.start("daemon", daemon, topo.env, work)
            wait_until("webserver answering GraphQL", topo.gql.ready, 180, procs.tails)
            wait_until("location loaded", lambda: _loaded(topo) is not None, 180, procs.tails)
            print(f"topology up in {time.monotonic() - started:.0f} s")
            yield topo
        finally:
            procs.stop_all()
            sandbox.terminate()
            sandbox.wait(timeout=20)
            print(f"topology logs: {procs.log_dir}")


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, topology: Topology) -> Iterator[None]:
    yield
    if request.node.stash.get(FAILED, False):
        print(topology.procs.tails(80))


def _config(work: Path, sandbox_url: str, redis_port: int) -> dict[str, Any]:
    """Four 1m nodes of one exchange; the budget is the exchange's published limit (the
    default), shared through the private Redis."""
    return {
        "seamless": {
            "data_dir": str(work / "data"),
            "backfill": {"retry_backoff_ms": 200, "max_attempts": 5},
            "rate_limit": {"redis_dsn": f"redis://127.0.0.1:{redis_port}/0"},
            "partitions": {"intraday_start": "2023-01-01", "daily_start": "2023-01-01"},
        },
        "exchanges": {
            "binance": {
                "symbols": list(SYMBOLS),
                "timeframes": ["1m"],
                "pool_limit": POOL_LIMIT,
                "ccxt_config": {"urls": {"api": {"public": f"{sandbox_url}/api/v3"}}},
            }
        },
        "dagster": {"executor": "in_process"},
    }


def _loaded(topo: Topology, since: float = 0.0) -> dict[str, Any] | None:
    """The location's repository (sensors, schedules) once the webserver reports it LOADED
    from a code server it reached after `since` (epoch seconds)."""
    entry = location_entry(topo.gql, LOCATION)
    if entry is None or entry["loadStatus"] != "LOADED" or entry["updatedTimestamp"] < since:
        return None
    location = entry["locationOrLoadError"]
    if location["__typename"] != "RepositoryLocation":
        raise AssertionError(f"location {LOCATION} failed to load: {location}")
    return dict(location["repositories"][0])


def _run_backfills(topo: Topology, days: list[str], scenario: str, during: Any = None) -> list[Any]:
    """Launch one backfill per node through GraphQL, call `during(runs)` while they are in
    flight until it returns True, wait until every backfill's run finished; returns each
    backfill's runs. (Not the backfills' own status: the daemon's backfill loop updates it
    every 30 s, which would only add waiting.)"""
    ids = [launch_backfill(topo.gql, node.asset_key_path(), days) for node in NODES]
    deadline = time.monotonic() + 600
    while True:
        runs = [_runs_of(topo, backfill_id) for backfill_id in ids]
        if during is not None and during(runs):
            during = None
        if all(rs and all(r.is_finished for r in rs) for rs in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"scenario {scenario}: backfill runs not finished in 600 s: "
                f"{[[r.status.value for r in rs] for rs in runs]}"
            )
        time.sleep(1)


def _runs_of(topo: Topology, backfill_id: str) -> list[Any]:
    return list(topo.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id})))


def _check_runs_and_budget(
    topo: Topology, scenario: str, runs: list[list[Any]], before: dict[str, Any]
) -> None:
    after = topo.budget()
    flat = [r for rs in runs for r in rs]
    steps = pool_steps(topo.instance, flat, {"__".join(n.asset_key_path()) for n in NODES})
    overlap = peak_overlap(steps)
    measured = (
        f"scenario {scenario}: runs per backfill {[len(rs) for rs in runs]}, statuses "
        f"{[r.status.value for r in flat]}, pool overlap {overlap} (limit {POOL_LIMIT}), "
        f"exchange max weight/min {after['max_weight_per_minute']} (budget {BUDGET}), "
        f"429s {after['sent_429'] - before['sent_429']}, 418s "
        f"{after['sent_418'] - before['sent_418']}, klines {after['klines']}"
    )
    print(measured)
    failures = run_failures(topo.instance, flat)
    assert not failures, f"{measured}\nfailures:\n" + "\n".join(failures)
    assert [len(rs) for rs in runs] == [1] * len(NODES), measured  # single-run backfills
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in flat), measured
    t0 = min((s for s, _, _ in steps), default=0.0)
    timeline = [f"{s - t0:7.2f}..{e - t0:7.2f} {k}" for s, e, k in sorted(steps)]
    assert 1 <= overlap <= POOL_LIMIT, f"{measured}\nsteps:\n" + "\n".join(timeline)
    assert after["sent_418"] == before["sent_418"], measured
    assert after["max_weight_per_minute"] <= BUDGET, measured
    assert after["sent_429"] - before["sent_429"] <= len(flat), measured  # <= 1 per run


def test_a_concurrent_backfills_share_the_pool_and_budget(topology: Topology) -> None:
    slots = topology.instance.event_log_storage.get_concurrency_info(POOL).slot_count
    assert slots == POOL_LIMIT, (
        f"scenario a: pool {POOL} has {slots} slots after `seamless pools`, want {POOL_LIMIT}"
    )
    before, started = topology.budget(), time.monotonic()
    runs = _run_backfills(topology, DAYS_A, "a")
    print(f"scenario a: backfills done in {time.monotonic() - started:.0f} s")
    _check_runs_and_budget(topology, "a", runs, before)
    weight = topology.budget()["weight"] - before["weight"]
    assert weight > BUDGET, f"scenario a: the runs used {weight} weight: the budget never bound"


def test_b_redis_killed_mid_run(topology: Topology) -> None:
    before = topology.budget()
    killed: dict[str, Any] = {}

    def kill_when_fetching(runs: list[list[Any]]) -> bool:
        served = topology.budget()["klines"].get("requests", 0)
        if served - before["klines"].get("requests", 0) < 4:
            return False
        flat = [r for rs in runs for r in rs]
        killed["unfinished_runs"] = sum(1 for r in flat if not r.is_finished) + 4 - len(flat)
        topology.kill_redis()
        return True

    started = time.monotonic()
    runs = _run_backfills(topology, DAYS_B, "b", during=kill_when_fetching)
    print(f"scenario b: backfills done in {time.monotonic() - started:.0f} s; {killed}")
    assert killed, "scenario b: the runs finished before Redis could be killed"
    assert killed["unfinished_runs"] >= 2, f"scenario b: Redis was killed too late: {killed}"
    _check_runs_and_budget(topology, "b", runs, before)


def test_c_location_loads_with_redis_down(topology: Topology) -> None:
    started, restarted_at = time.monotonic(), time.time()
    topology.kill_redis()
    topology.procs.stop("code_server")
    topology.start_code_server()
    repo: dict[str, Any] = {}

    def loaded() -> bool:  # the webserver notices the new server by itself, as in production
        repo.update(_loaded(topology, since=restarted_at) or {})
        return bool(repo)

    wait_until("scenario c: location loaded with Redis down", loaded, 180)
    sensors = [s["name"] for s in repo["sensors"]]
    schedules = [s["name"] for s in repo["schedules"]]
    assert sensors and schedules, f"scenario c: sensors {sensors}, schedules {schedules}"
    assert topology.procs.alive("code_server"), "scenario c: the code server exited"
    print(f"scenario c: location reloaded in {time.monotonic() - started:.0f} s")
