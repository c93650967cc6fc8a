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
