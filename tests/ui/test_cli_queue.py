"""`seamless backfill --queue`: the CLI submits through the webserver, the run is created
from the code location (like a UI launch), waits in the instance's run queue and is
launched by the daemon; it shows in the webserver's runs with its location."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import dagster as dg
import pytest

from tests.deploy.topology import BIN

from .harness import LOCATION, UiStack, ui_stack

pytestmark = [pytest.mark.timeout(300)]
SYMBOLS = ("BTC/USDT", "ETH/USDT")

RUNS_QUERY = """
query { runsOrError { ... on Runs { results {
  runId status tags { key value } repositoryOrigin { repositoryLocationName repositoryName }
} } } }
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    with ui_stack(tmp_path_factory.mktemp("cli_queue"), SYMBOLS) as ui:
        yield ui


def seamless(stack: UiStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGSTER_HOME": str(stack.instance.root_directory)}
    return subprocess.run(
        [str(BIN / "seamless"), "--config", str(stack.config), "backfill", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_queued_cli_backfill_runs_from_the_code_location(stack: UiStack) -> None:
    nodes = [str(n) for n in stack.nodes]
    done = seamless(
        stack, *nodes, "--start", "2024-01-01", "--end", "2024-01-03", "--queue", "--wait",
        "--webserver", stack.base_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + stack.procs.tails()
    run_id = done.stdout.split("queued run ", 1)[1].split(":", 1)[0]
    assert f"{stack.base_url}/runs/{run_id}" in done.stdout

    run = stack.instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == LOCATION
    assert run.tags["dagster/asset_partition_range_start"] == "2024-01-01"
    assert run.tags["dagster/asset_partition_range_end"] == "2024-01-02"
    assert run.asset_selection == {dg.AssetKey(n.asset_key_path()) for n in stack.nodes}
    # it went through the run queue: enqueued, then launched (starting) by the daemon
    kinds = [
        e.dagster_event.event_type
        for e in stack.instance.all_logs(run_id)
        if e.dagster_event is not None
    ]
    assert dg.DagsterEventType.RUN_ENQUEUED in kinds, sorted({k.value for k in kinds})
    assert kinds.index(dg.DagsterEventType.RUN_ENQUEUED) < kinds.index(
        dg.DagsterEventType.RUN_STARTING
    )
    # each node's partitions were materialized by that one run
    for node in stack.nodes:
        key = dg.AssetKey(node.asset_key_path())
        parts = stack.instance.get_materialized_partitions(key)
        assert parts == {"2024-01-01", "2024-01-02"}
    # the UI lists it with its code location, like a run launched there
    runs = stack.gql(RUNS_QUERY)["runsOrError"]["results"]
    [listed] = [r for r in runs if r["runId"] == run_id]
    assert listed["repositoryOrigin"]["repositoryLocationName"] == LOCATION
    assert {"key": "seamless/submitted_by", "value": "cli"} in listed["tags"]


REPOSITORY_QUERY = """
query ($selector: RepositorySelector!) { repositoryOrError(repositorySelector: $selector) {
  ... on Repository { jobs { name } }
} }
"""


def test_a_cli_backfill_run_in_process_belongs_to_the_code_location(stack: UiStack) -> None:
    """Without --queue the run executes inside `seamless`, yet it is recorded as a run of
    the location: the Overview timeline keeps only runs with a repository origin, and
    groups them by location, repository and job."""
    node = stack.nodes[0]
    done = seamless(stack, str(node), "--start", "2024-01-05", "--end", "2024-01-06")
    assert done.returncode == 0, done.stdout + done.stderr + stack.procs.tails()
    run_id = done.stdout.rsplit("run ", 1)[1].split(":", 1)[0]
    run = stack.instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == LOCATION
    assert stack.instance.get_materialized_partitions(dg.AssetKey(node.asset_key_path())) >= {
        "2024-01-05"
    }

    runs = stack.gql(RUNS_QUERY)["runsOrError"]["results"]
    [listed] = [r for r in runs if r["runId"] == run_id]
    origin = listed["repositoryOrigin"]
    assert origin["repositoryLocationName"] == LOCATION
    # the location the webserver loaded holds that repository and the run's job
    selector = {"repositoryLocationName": LOCATION, "repositoryName": origin["repositoryName"]}
    repo = stack.gql(REPOSITORY_QUERY, {"selector": selector})["repositoryOrError"]
    assert run.job_name in {job["name"] for job in repo["jobs"]}


def test_an_unreachable_webserver_is_named_and_nothing_is_queued(stack: UiStack) -> None:
    before = len(stack.runs())
    failed = seamless(
        stack, str(stack.nodes[0]), "--start", "2024-01-01", "--end", "2024-01-02", "--queue",
        "--webserver", "http://127.0.0.1:9",
    )  # fmt: skip
    assert failed.returncode != 0
    assert "http://127.0.0.1:9 is not reachable" in failed.stderr and "--webserver" in (
        failed.stderr
    )
    assert len(stack.runs()) == before


def test_credentials_in_the_webserver_url_are_refused(stack: UiStack) -> None:
    failed = seamless(
        stack, str(stack.nodes[0]), "--start", "2024-01-01", "--end", "2024-01-02", "--queue",
        "--webserver", "http://admin:hunter2@127.0.0.1:3000",
    )  # fmt: skip
    assert failed.returncode != 0 and "credentials" in failed.stderr
    assert "hunter2" not in failed.stderr + failed.stdout
