"""Governance checks: pure spike rule, and the checks job over real stores and Dagster."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.governance_checks import (
    AS_OF_STALL,
    FLAG_SPIKE,
    GOVERNANCE_JOB,
    LIVE_STALENESS,
    PARTITION_COVERAGE,
    flag_spikes,
)
from sensors.as_of import SENSOR_NAME as AS_OF_SENSOR
from sensors.gap_repair import SENSOR_NAME as GAP_SENSOR
from sensors.live_edge import SENSOR_NAME as LIVE_SENSOR

from .conftest import DAY, NODE, T0, execute, tick


def test_flag_spike_is_judged_against_the_median_of_earlier_partitions() -> None:
    quiet = [{"gap": 1}] * 10
    assert flag_spikes([*quiet, {"gap": 3}]) == []  # 3× median but below the minimum excess
    assert flag_spikes([*quiet, {"gap": 9}]) == [(10, "gap", 9, 1.0, 10)]
    assert flag_spikes([{"gap": 9}, {"gap": 9}]) == []  # too little history to judge
    noisy = [{"gap": 20}] * 10
    assert flag_spikes([*noisy, {"gap": 30}]) == []  # within 3× of its usual


def _backfill(project: SeamlessConfig, first_day: int, days: int) -> None:
    start = datetime.fromtimestamp(T0 + first_day * DAY, tz=UTC)
    end = datetime.fromtimestamp(T0 + (first_day + days) * DAY, tz=UTC)
    assert run_backfill(project, [project.node(NODE)], start, end).success


def _evaluate(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def(GOVERNANCE_JOB).execute_in_process(instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_fail_with_routable_severities_then_clear_when_the_sensors_repair(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    bad = [T0 + 6 * DAY + 60 * i for i in range(8)]  # 8 inconsistent bars on 01-07
    sandbox.configure(
        corruptions=[{"symbol": "BTC/USDT", "ts": ts, "kind": "high_below_low"} for ts in bad]
    )
    _backfill(project, 0, 2)
    _backfill(project, 3, 4)  # 01-03 missing

    checks = _evaluate(defs, instance)
    assert set(checks) == {PARTITION_COVERAGE, LIVE_STALENESS, AS_OF_STALL, FLAG_SPIKE}
    coverage = checks[PARTITION_COVERAGE]
    assert not coverage.passed and coverage.severity == dg.AssetCheckSeverity.WARN
    assert coverage.metadata["node_id"].value == NODE
    assert coverage.metadata["bad_partitions"].value == ["2024-01-03 0.0000 (0/1440)"]
    assert coverage.metadata["threshold"].value == 0.98

    stale = checks[LIVE_STALENESS]  # data ends 01-08 00:00, newest closed bar 12:00
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert (stale.metadata["lag_s"].value, stale.metadata["max_lag_s"].value) == (12 * 3600, 120)

    stall = checks[AS_OF_STALL]  # no snapshot yet
    assert not stall.passed and stall.severity == dg.AssetCheckSeverity.ERROR
    assert stall.metadata["as_of"].value is None
    assert stall.metadata["stall_bars_threshold"].value == 60

    spike = checks[FLAG_SPIKE]
    assert not spike.passed and spike.severity == dg.AssetCheckSeverity.ERROR  # integrity flag
    # Dropped rows are gaps too; both spike against the 5 clean partitions before 01-07.
    assert spike.metadata["spikes"].value == [
        f"[2024-01-07T00:00:00Z, 2024-01-08T00:00:00Z) {flag}=8 "
        "(median 0 of the 5 partitions before)"
        for flag in ("gap", "ohlc_inconsistent")
    ]

    # The sensors repair what the checks reported: gap → runs, live edge → run, as_of → snapshot.
    for name in (GAP_SENSOR, LIVE_SENSOR):
        for request in tick(defs, name, instance).run_requests or []:
            assert execute(defs, request, instance).success
    assert tick(defs, AS_OF_SENSOR, instance).asset_events

    checks = _evaluate(defs, instance)
    assert checks[PARTITION_COVERAGE].passed
    assert checks[LIVE_STALENESS].passed and checks[LIVE_STALENESS].metadata["lag_s"].value == 0
    assert checks[AS_OF_STALL].passed
    assert checks[AS_OF_STALL].metadata["partitions_behind"].value == 0
    assert checks[AS_OF_STALL].metadata["unsnapshotted"].value == []
    assert not checks[FLAG_SPIKE].passed  # the restated-looking day stays flagged
