"""End to end through Dagster: real ccxt → sandbox exchange → DuckDB + Parquet segments."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from sandbox import SandboxExchange, expected_bars
from seamless_assets.cli import root_cause, run_backfill
from seamless_assets.config import SeamlessConfig, load_config
from seamless_assets.core.frame import Range

from .conftest import DAY, tree_digest, write_config
from .conftest import kline_requests as _klines
from .conftest import open_artifacts as _artifacts
from .conftest import open_hot as _hot

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())


def _checks(result: dg.JobExecutionResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_thirty_partitions_one_run_then_rerun_makes_no_requests(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = project.node("ohlcv:binance:BTC/USDT:1m")
    end = datetime.fromtimestamp(T0 + 30 * DAY, tz=UTC)

    result = run_backfill(project, [node], START, end)
    assert result.success
    instance = dg.DagsterInstance.get()
    assert len(instance.get_runs()) == 1  # a 30-partition backfill is a single run
    materialized = {e.partition for e in result.get_asset_materialization_events() if e.partition}
    assert len(materialized) == 30
    bars = 30 * 1440
    # Contiguous windows, not per partition; plus one for the node's first candle (its
    # history start, discovered on its first run only).
    assert _klines(sandbox) == math.ceil(bars / 1000) + 1

    stored = _hot(project).read_range(str(node), Range(T0, T0 + 30 * DAY))
    expected = expected_bars("BTC/USDT", 60, T0, T0 + 30 * DAY)
    assert len(stored) == bars
    np.testing.assert_array_equal(stored["ts"].to_numpy(), expected["ts"])
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(stored[column].to_numpy(), expected[column])

    artifacts_dir = project.data_dir / "artifacts"
    before = tree_digest(artifacts_dir)
    manifests = [k for k in before if k.endswith("manifest.json")]
    assert len(manifests) == 30

    sandbox.reset()
    again = run_backfill(project, [node], START, end)
    assert again.success
    assert sandbox.stats()["requests_total"] == 0  # closed, covered partitions: no requests
    assert tree_digest(artifacts_dir) == before  # byte-identical Parquet and manifests
    assert _artifacts(project).verify_all() == []


def test_maintenance_gap_is_ledgered_reported_and_not_refetched(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = project.node("ohlcv:binance:BTC/USDT:1m")
    gap = [T0 + DAY + 10 * 3600, T0 + DAY + 13 * 3600]
    sandbox.configure(gaps={"BTC/USDT": [gap]})
    end = datetime.fromtimestamp(T0 + 3 * DAY, tz=UTC)

    result = run_backfill(project, [node], START, end)
    assert result.success
    coverage = _checks(result)["coverage_ratio"]
    # Bars the exchange confirmed empty are known, not missing: complete, nothing to fix.
    assert coverage.passed and coverage.metadata["coverage_ratio"].value == 1.0
    assert coverage.metadata["stored_ratio"].value == pytest.approx(1 - 3 / 72)
    assert coverage.metadata["missing_bars"].value == 0
    assert "exchange_returned_no_bars" in str(coverage.metadata["known_gaps"].value)

    ledger = _hot(project).ledger_gaps(str(node))
    assert [(g.range.start, g.range.end, g.reason) for g in ledger] == [
        (gap[0], gap[1], "exchange_returned_no_bars")
    ]
    day2 = _artifacts(project).head(node, Range(T0 + DAY, T0 + 2 * DAY))
    manifest = _artifacts(project).read_manifest(node, day2)
    assert manifest["gaps"][0]["reason"] == "exchange_returned_no_bars"
    assert manifest["coverage"]["ratio"] == pytest.approx(1 - 3 / 24)
    assert manifest["coverage"]["completeness"] == 1.0

    sandbox.reset()
    assert run_backfill(project, [node], START, end).success
    assert _klines(sandbox) == 0  # the confirmed-empty window is not refetched

    sandbox.configure(gaps={})  # the exchange now has the bars: an explicit refetch finds them
    assert run_backfill(project, [node], START, end, refetch_gaps=True).success
    assert _klines(sandbox) == 1
    assert _hot(project).ledger_gaps(str(node)) == []
    assert len(_hot(project).read_range(str(node), Range(T0, T0 + 3 * DAY))) == 3 * 1440


def test_forming_and_unstable_bars_are_stored_hot_but_not_published(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = project.node("ohlcv:binance:BTC/USDT:1m")
    # Exchange clock: 30 s into the first minute after day 2 began, so day 2's first bar is
    # still forming and day 1's last bars are within stabilization_bars (2) of now.
    sandbox.set_clock(now=T0 + 2 * DAY + 30)
    end = datetime.fromtimestamp(T0 + 3 * DAY, tz=UTC)
    assert run_backfill(project, [node], START, end).success

    stored = _hot(project).read_range(str(node), Range(T0, T0 + 3 * DAY))
    assert stored["ts"].max() == T0 + 2 * DAY - 60  # the forming bar never stored
    heads = _artifacts(project).heads(node)
    assert Range(T0, T0 + DAY) in heads  # stable
    assert Range(T0 + DAY, T0 + 2 * DAY) not in heads  # closed but not yet stable
    assert _hot(project).ledger_gaps(str(node)) == []  # the future is not a confirmed gap


def test_rate_limited_mid_backfill_waits_and_loses_nothing(
    project: SeamlessConfig, sandbox: SandboxExchange
) -> None:
    node = project.node("ohlcv:binance:BTC/USDT:1m")
    sandbox.configure(force_429=1, force_429_retry_after=1)
    end = datetime.fromtimestamp(T0 + 5 * DAY, tz=UTC)
    started = time.monotonic()
    assert run_backfill(project, [node], START, end).success
    assert time.monotonic() - started >= 1.0  # waited out Retry-After
    stats = sandbox.stats()
    assert stats["sent_429"] >= 1
    assert stats["sent_418"] == 0 and stats["requests_in_penalty"] == 0
    stored = _hot(project).read_range(str(node), Range(T0, T0 + 5 * DAY))
    assert len(stored) == 5 * 1440 and stored["ts"].is_unique


def test_unknown_symbol_fails_clearly_and_writes_nothing(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path
) -> None:
    config = load_config(write_config(tmp_path, sandbox.url, symbols=("BTC/USDX",)))
    node = config.node("ohlcv:binance:BTC/USDX:1m")
    result = run_backfill(config, [node], START, datetime.fromtimestamp(T0 + DAY, tz=UTC))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = root_cause(failure.step_failure_data.error)
    assert "UnknownSymbol" in message and "BTC/USDT" in message  # did you mean …
    assert _hot(config).node_ids() == []
    assert not (config.data_dir / "artifacts").exists() or not any(
        (config.data_dir / "artifacts").rglob("manifest.json")
    )


@pytest.mark.parametrize("kill_when", ["fetching", "publishing"])
def test_killed_run_resumes_without_duplicates_or_orphans(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path, kill_when: str
) -> None:
    config_path = write_config(tmp_path, sandbox.url)
    sandbox.configure(latency_ms=150 if kill_when == "fetching" else 0)
    artifacts_dir = tmp_path / "data" / "artifacts"

    def reached() -> bool:
        if kill_when == "fetching":
            return _klines(sandbox) >= 5
        return artifacts_dir.exists() and any(artifacts_dir.rglob("data.parquet"))

    env = {**os.environ, "SEAMLESS_CONFIG": str(config_path), "DAGSTER_HOME": str(dagster_home)}
    args = [
        sys.executable, "-m", "seamless_assets.cli", "backfill", "ohlcv:binance:BTC/USDT:1m",
        "--start", "2024-01-01", "--end", "2024-01-21",
    ]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not reached() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    sandbox.configure(latency_ms=0)
    config = load_config(config_path)
    node = config.node("ohlcv:binance:BTC/USDT:1m")
    result = run_backfill(config, [node], START, datetime(2024, 1, 21, tzinfo=UTC))
    assert result.success
    stored = _hot(config).read_range(str(node), Range(T0, T0 + 20 * DAY))
    assert len(stored) == 20 * 1440 and stored["ts"].is_unique
    artifacts = _artifacts(config)
    assert artifacts.verify_all() == []
    assert len(artifacts.heads(node)) == 20
    for manifest in (config.data_dir / "artifacts").rglob("manifest.json"):
        assert (manifest.parent / "data.parquet").is_file()
        assert json.loads(manifest.read_text())["row_count"] == 1440


def test_only_runs_whose_process_died_are_released(dagster_home: Path) -> None:
    """A run whose `seamless` process is alive (or is this one) keeps its slot."""
    import socket

    from dagster._core.storage.dagster_run import DagsterRun

    from seamless_assets.dead_runs import HOST_TAG, PID_TAG, release_dead_runs

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    instance = dg.DagsterInstance.get()
    pids = {"alive": alive.pid, "dead": dead.pid, "self": os.getpid()}
    for name, pid in pids.items():
        instance.add_run(
            DagsterRun(
                job_name="ohlcv_intraday_job",
                run_id=f"{name}-run",
                status=dg.DagsterRunStatus.STARTED,
                tags={PID_TAG: str(pid), HOST_TAG: host},
            )
        )
    instance.add_run(  # another host's run is never judged from here
        DagsterRun(
            job_name="ohlcv_intraday_job",
            run_id="elsewhere-run",
            status=dg.DagsterRunStatus.STARTED,
            tags={PID_TAG: str(dead.pid), HOST_TAG: f"not-{host}"},
        )
    )
    try:
        assert [r.run_id for r in release_dead_runs(instance)] == ["dead-run"]
        statuses = {r.run_id: r.status for r in instance.get_runs()}
        assert statuses["dead-run"] == dg.DagsterRunStatus.FAILURE
        assert {statuses[r] for r in ("alive-run", "self-run", "elsewhere-run")} == {
            dg.DagsterRunStatus.STARTED
        }
        assert release_dead_runs(instance) == []
    finally:
        alive.kill()
        alive.wait()
