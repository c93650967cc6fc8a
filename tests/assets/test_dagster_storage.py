"""The project's SQLite event storage stores what Dagster's own stores, faster."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-06")


@dg.asset(
    partitions_def=DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("rows_positive", asset="bars")],
)
def bars() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        check_results=[dg.AssetCheckResult(check_name="rows_positive", passed=True)]
    )


def _run(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    job = dg.Definitions(assets=[bars], jobs=[dg.define_asset_job("j", [bars])]).resolve_job_def(
        "j"
    )
    tags = {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-01-05",
    }
    assert job.execute_in_process(instance=instance, tags=tags).success
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("bars"), "rows_positive"), limit=100
    )
    return sorted((r.partition or "", r.status.value) for r in history)


@pytest.mark.parametrize("batched", [True, False])
def test_check_executions_are_dagsters_for_every_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """One planned-then-evaluated execution per partition of a single-run backfill, as
    Dagster's stock SQLite storage records them (batched events or one by one)."""
    if batched:
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    else:
        monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    stock, ours = _instances(tmp_path)
    assert type(ours.event_log_storage).__name__ == "SeamlessSqliteEventLogStorage"
    expected = _run(stock)
    assert [p for p, _ in expected if p] == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
    ]
    assert _run(ours) == expected


def _instances(tmp_path: Path) -> tuple[dg.DagsterInstance, dg.DagsterInstance]:
    for name in ("stock", "ours"):
        (tmp_path / name).mkdir()
    stock = dg.DagsterInstance.local_temp(str(tmp_path / "stock"))
    ours = dg.DagsterInstance.local_temp(
        str(tmp_path / "ours"),
        overrides={
            "storage": {
                "custom": {
                    "module": "seamless_assets.dagster_storage",
                    "class": "SeamlessSqliteStorage",
                    "config": {"base_dir": str(tmp_path / "ours")},
                }
            }
        },
    )
    return stock, ours


def _asset_row(instance: dg.DagsterInstance) -> tuple[int, str | None, bool, float]:
    """The asset's row: its last materialization (storage id, partition), whether its last
    run is the newest run, and the timestamp that says the asset exists."""
    (record,) = instance.get_asset_records([dg.AssetKey("bars")])
    entry = record.asset_entry
    last = entry.last_materialization_record
    assert last is not None and last.event_log_entry.dagster_event is not None
    newest_run = instance.get_runs(limit=1)[0].run_id
    assert entry.last_materialization is not None
    return (
        last.storage_id,
        last.event_log_entry.dagster_event.partition,
        entry.last_run_id == newest_run,
        entry.last_materialization.timestamp,
    )


def test_the_asset_row_is_dagsters_after_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch writes only the last materialization's asset row; it is the row Dagster's
    stock storage leaves after writing all five, in a first run and in a second one."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    stock, ours = _instances(tmp_path)
    for _ in range(2):
        _run(stock)
        _run(ours)
        got, expected = _asset_row(ours), _asset_row(stock)
        assert got[:3] == expected[:3]
        assert got[1] == "2024-01-05" and got[2]
        latest = ours.get_latest_materialization_event(dg.AssetKey("bars"))
        assert latest is not None and latest.timestamp == got[3]
