"""Runs whose process died (SIGKILL, OOM, power cut) while STARTED: fail them and free the
pool slots they hold, whatever launched them.

Dagster's run monitoring cannot see such a run here: the DefaultRunLauncher (a run worker
subprocess of the code server) has no worker health check in dagster 1.13
(`supports_check_run_worker_health` is False), and `free_slots_after_run_end_seconds` only
frees the slots of runs that already ended. A STARTED run whose worker is gone would hold
its `exchange_<id>` slot forever and every later run of that exchange would wait on it.

Which process runs a run, and where:
- a run launched by the daemon or the UI: the run worker's pid is on the run's RUN_START
  event (every Dagster event carries the pid of the process that emitted it); the
  DefaultRunLauncher started it on the host of the code server in the run's
  `dagster/grpc_info` tag;
- a `seamless backfill` run in its own process: the `seamless/pid` and `seamless/host` tags.
A run is judged only on the host it runs on (a pid means nothing elsewhere).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

PID_TAG = "seamless/pid"
HOST_TAG = "seamless/host"
GRPC_INFO_TAG = "dagster/grpc_info"  # written by Dagster's DefaultRunLauncher


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a killed child its parent has not
    reaped yet still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust signal 0
    return state not in ("Z", "X")


def this_host(host: str) -> bool:
    """True when `host` (a name or address) is this machine."""
    if host in ("localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        return socket.gethostbyname(host) in {
            "127.0.0.1",
            socket.gethostbyname(socket.gethostname()),
        }
    except OSError:
        return False


@dataclass(frozen=True)
class RunProcess:
    run_id: str
    pid: int
    how: str  # "run worker" or "seamless process"


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The process running `run` when it runs on this host and is known, else None."""
    import dagster as dg

    tags = run.tags
    if PID_TAG in tags:
        if tags.get(HOST_TAG) != socket.gethostname():
            return None
        return RunProcess(run.run_id, int(tags[PID_TAG] or 0), "seamless process")
    grpc_info = tags.get(GRPC_INFO_TAG)
    if not grpc_info or not this_host(str(json.loads(grpc_info).get("host", ""))):
        return None
    records = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    event = records[0].event_log_entry.dagster_event if records else None
    if event is None or not event.pid:
        return None  # not started yet: run monitoring's start_timeout_seconds covers it
    return RunProcess(run.run_id, int(event.pid), "run worker")


def release_dead_runs(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Fail every STARTED run of this host whose process is gone and free its pool slots
    (`report_run_failed`, then `free_concurrency_slots_for_run`). Returns them."""
    import dagster as dg

    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    released = []
    for run in runs:
        proc = run_process(instance, run)
        if proc is None or proc.pid <= 0 or proc.pid == os.getpid() or process_alive(proc.pid):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue  # it ended meanwhile (its own RUN_SUCCESS/FAILURE won)
        instance.report_run_failed(
            current,
            f"the {proc.how} (pid {proc.pid}) running this run is gone (killed?); "
            "run marked failed and its pool slots freed",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(proc)
    return released


def free_slots_of_ended_runs(instance: dg.DagsterInstance) -> list[str]:
    """Free the pool slots still held by runs that ended (a run worker killed mid-step is
    often marked failed by its code server, but its claimed slot stays). Dagster's run
    monitoring does the same after `free_slots_after_run_end_seconds`, on instances where it
    is enabled; here it happens on the next tick. Returns those runs' ids."""
    import dagster as dg

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return []
    ended = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
    ended.append(dg.DagsterRunStatus.CANCELED)
    runs = instance.get_runs(filters=dg.RunsFilter(run_ids=list(holders), statuses=ended))
    for run in runs:
        storage.free_concurrency_slots_for_run(run.run_id)
    return [run.run_id for run in runs]
