"""Production runtime: the executor chosen in config, the exchange pools present with their
limits from the first deploy, and which process holds a pool slot while it starts."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from sandbox import SandboxExchange
from seamless_assets.cli import main as seamless_main
from seamless_assets.config import load_config
from seamless_assets.definitions import build_definitions, load_definitions
from seamless_assets.pools import apply_pool_limits, configured_pool_limits
from sensors.pools import POOLS_SENSOR

from .conftest import write_config

POOL = "exchange_binance"
PARTITION = "2024-01-02"
JOB = "ohlcv_intraday_job"


def _config_file(tmp_path: Path, sandbox_url: str, **top: Any) -> Path:
    path = write_config(tmp_path, sandbox_url)
    raw = yaml.safe_load(path.read_text())
    # The exchange's published budget: a few requests per run stay far inside it.
    raw["seamless"]["rate_limit"] = {"min_interval_ms": 0, "penalty_backoff_ms": 500}
    for key, value in top.items():
        if key == "exchange":
            raw["exchanges"]["binance"].update(value)
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


# -- executor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dagster", "executor", "max_concurrent"),
    [
        (None, "in_process", None),
        ({"executor": "in_process"}, "in_process", None),
        ({"executor": "multiprocess"}, "multiprocess", None),
        ({"executor": "multiprocess", "max_concurrent": 3}, "multiprocess", 3),
    ],
)
def test_every_job_runs_on_the_configured_executor(
    tmp_path: Path, dagster: dict[str, Any] | None, executor: str, max_concurrent: int | None
) -> None:
    extra = {"dagster": dagster} if dagster is not None else {}
    config = load_config(_config_file(tmp_path, "http://127.0.0.1:1", **extra))
    repo = build_definitions(config).get_repository_def()
    jobs = repo.get_all_jobs()
    assert {j.name for j in jobs} >= {JOB, "__ASSET_JOB"}
    for job in jobs:
        assert job.executor_def.name == executor, job.name
        if max_concurrent is not None:
            resolved = job.executor_def.config_schema.resolve_config({})
            assert resolved.value["config"]["max_concurrent"] == max_concurrent


# -- pools ---------------------------------------------------------------------------------


def _limits(instance: dg.DagsterInstance) -> dict[str, tuple[int, bool]]:
    return {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}


def test_pools_exist_with_their_limits_after_the_command_and_the_sensor(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path, "http://127.0.0.1:1", exchange={"pool_limit": 3})
    with dg.DagsterInstance.get() as instance:
        assert POOL not in _limits(instance)  # a fresh instance knows no pool

        assert seamless_main(["--config", str(path), "pools"]) == 0
        out = capsys.readouterr().out
        assert f"{POOL}: 3 (was unset)" in out
        assert _limits(instance)[POOL] == (3, False)

        # The deployed definitions change the limit: the daemon's sensor applies it.
        path = _config_file(tmp_path, "http://127.0.0.1:1", exchange={"pool_limit": 2})
        defs = build_definitions(load_config(path))
        sensor = defs.resolve_sensor_def(POOLS_SENSOR)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        with dg.build_sensor_context(instance=instance) as context:
            result = sensor(context)
        assert isinstance(result, dg.SkipReason)
        assert f"{POOL}: 2 (was 3)" in (result.skip_message or "")
        assert _limits(instance)[POOL] == (2, False)

        # A second tick writes nothing: the storage's write path is never reached.
        writes: list[tuple[str, int]] = []
        storage = instance.event_log_storage
        original = storage.set_concurrency_slots
        storage.set_concurrency_slots = lambda key, n: writes.append((key, n))  # type: ignore[method-assign]
        try:
            with dg.build_sensor_context(instance=instance) as context:
                again = sensor(context)
        finally:
            storage.set_concurrency_slots = original  # type: ignore[method-assign]
        assert writes == []
        assert "already as configured" in (again.skip_message or "")
        assert _limits(instance)[POOL] == (2, False)


def test_a_limit_dagster_filled_in_from_the_default_is_replaced_by_the_configured_one(
    tmp_path: Path, dagster_home: Path
) -> None:
    config = load_config(_config_file(tmp_path, "http://127.0.0.1:1"))
    with dg.DagsterInstance.get() as instance:
        # What Dagster does on a first claim: the pool takes concurrency.pools.default_limit.
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)
        assert _limits(instance)[POOL] == (1, True)
        [change] = apply_pool_limits(instance, configured_pool_limits(config))
        assert (change.before, change.limit, change.changed) == (None, 1, True)
        assert _limits(instance)[POOL] == (1, False)  # explicit now: a new default keeps it


def test_the_pools_command_names_a_missing_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path, "http://127.0.0.1:1")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    assert seamless_main(["--config", str(path), "pools"]) == 2
    err = capsys.readouterr().err
    assert "DAGSTER_HOME" in err and "nowhere" in err


# -- who holds the pool slot while processes start -----------------------------------------


def _job_in_process() -> dg.JobDefinition:
    """The intraday job of `$SEAMLESS_CONFIG`, rebuilt in every process that runs it."""
    return load_definitions().resolve_job_def(JOB)


def _job_multiprocess() -> dg.JobDefinition:
    # Its own name: Dagster caches what a reconstructable pointer loaded, per process.
    return load_definitions().resolve_job_def(JOB)


class _SlotWatch:
    """Polls the pool; the run's first claim happened in `(not_before, seen_at]` (the storage
    keeps claim times to the second only)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.not_before = time.time()
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set() and self.seen_at is None:
            asked = time.time()
            info = self.instance.event_log_storage.get_concurrency_info(POOL)
            if info.claimed_slots:
                self.seen_at = time.time()
            else:
                self.not_before = asked
                time.sleep(0.002)

    def __enter__(self) -> _SlotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def run_env(
    tmp_path: Path, sandbox: SandboxExchange, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("SEAMLESS_SANDBOX_URL", sandbox.url)
    yield tmp_path


def _run(
    tmp_path: Path, sandbox_url: str, dagster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Execute one partition of the intraday job; when the slot was assigned, and where the
    step ran."""
    path = _config_file(tmp_path, sandbox_url, dagster=dagster)
    job = _job_multiprocess if dagster["executor"] == "multiprocess" else _job_in_process
    monkeypatch.setenv("SEAMLESS_CONFIG", str(path))  # step processes load the same config
    with dg.DagsterInstance.get() as instance:
        with _SlotWatch(instance) as watch:
            result = dg.execute_job(
                dg.reconstructable(job), instance, tags={"dagster/partition": PARTITION}
            )
        assert result.success
        events = {e.event_type: e for e in reversed(result.all_events)}
        assert watch.seen_at is not None, "the step never claimed the exchange pool"
        return {
            "claimed_not_before": watch.not_before,
            "claimed_by": watch.seen_at,
            "run_pid": events[dg.DagsterEventType.RUN_START].pid,
            "step_pid": events[dg.DagsterEventType.STEP_START].pid,
            "step_start": min(
                r.timestamp
                for r in instance.get_records_for_run(
                    result.run_id, of_type=dg.DagsterEventType.STEP_START
                ).records
            ),
            "worker_starting": [
                r.timestamp
                for r in instance.get_records_for_run(result.run_id).records
                if r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_WORKER_STARTING
            ],
        }


def test_in_process_claims_the_slot_only_inside_the_started_run_worker(
    run_env: Path, sandbox: SandboxExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(run_env, sandbox.url, {"executor": "in_process"}, monkeypatch)
    # The step ran in the run's own process, which had started (and loaded the
    # definitions) before the claim; no step process was started after it.
    assert run["step_pid"] == run["run_pid"] == os.getpid()
    assert run["worker_starting"] == []
    # Claim to step start is Dagster's own bookkeeping: well under a step process start.
    assert run["step_start"] - run["claimed_not_before"] < 1.0, run


def test_multiprocess_is_honoured_and_starts_the_step_process_holding_the_slot(
    run_env: Path, sandbox: SandboxExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(run_env, sandbox.url, {"executor": "multiprocess", "max_concurrent": 1}, monkeypatch)
    # What in_process avoids: the step's own process is started after the slot was claimed
    # and the slot stays held while it imports and loads the definitions.
    assert len(run["worker_starting"]) == 2  # one process per asset step (1m, 1h)
    assert min(run["worker_starting"]) >= run["claimed_not_before"]
    # The step process imports Dagster, loads the definitions and sets up its resources.
    assert run["step_start"] - run["claimed_by"] > 1.5, run
