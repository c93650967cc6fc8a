"""Acceptance: a fresh install with the shipped seamless.yaml (sandbox exchange), after one
single-run backfill of 10 partitions through Dagster (what a UI partition backfill launches
under `BackfillPolicy.single_run`), then the as_of sensor and the governance checks: every
check is green or states a real problem; none is red or yellow by construction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from sandbox import SandboxConfig, SandboxExchange
from seamless_assets.config import load_config
from seamless_assets.definitions import build_definitions
from seamless_assets.governance_checks import (
    AS_OF_STALL,
    FLAG_SPIKE,
    GOVERNANCE_JOB,
    LIVE_STALENESS,
    PARTITION_COVERAGE,
)
from seamless_assets.nodes import NodeId
from sensors.as_of import SENSOR_NAME as AS_OF_SENSOR
from sensors.gap_repair import SENSOR_NAME as GAP_SENSOR

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 3, 11, 0, 30, 30, tzinfo=UTC).timestamp()
FIRST, LAST = "2024-03-01", "2024-03-10"  # the ten newest closed daily partitions
BTC_LISTED = date(2017, 8, 17)  # the sandbox's first BTC/USDT and ETH/USDT bars: 04:00 UTC
INLINE = {"coverage_ratio", "no_duplicate_ts", "monotonic_ts", "ohlc_sanity", "exchange_gaps"}

# Dagster's documented tags of a single-run partition-range backfill (what the UI sets).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with SandboxExchange(SandboxConfig(frozen_now_s=NOW)) as exchange:
        yield exchange


def _tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, resources=defs.resources, definitions=defs
    ) as context:
        result = defs.resolve_sensor_def(name)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_fresh_install_after_a_ten_partition_backfill_has_no_check_failing_by_construction(
    tmp_path: Path,
    sandbox: SandboxExchange,
    dagster_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEAMLESS_SANDBOX_URL", sandbox.url)
    monkeypatch.setenv("SEAMLESS_DATA_DIR", str(tmp_path / "data"))
    config = load_config(ROOT / "seamless.yaml")
    assert len(config.nodes) == 4
    defs = build_definitions(config, clock=lambda: NOW)
    instance = dg.DagsterInstance.get()

    job = defs.resolve_job_def("ohlcv_intraday_job")
    tags = {ASSET_PARTITION_RANGE_START_TAG: FIRST, ASSET_PARTITION_RANGE_END_TAG: LAST}
    run = job.execute_in_process(instance=instance, tags=tags)
    assert run.success
    inline = run.get_asset_check_evaluations()
    assert {(e.asset_key, e.check_name) for e in inline} == {
        (dg.AssetKey(n.asset_key_path()), name) for n in config.nodes for name in INLINE
    }
    assert [e for e in inline if not e.passed] == []

    assert len(_tick(defs, AS_OF_SENSOR, instance).asset_events) == 4

    result = defs.resolve_job_def(GOVERNANCE_JOB).execute_in_process(instance=instance)
    assert result.success
    governance = result.get_asset_check_evaluations()
    # No node is served live in the shipped config: no live_staleness to fail.
    assert {e.check_name for e in governance} == {PARTITION_COVERAGE, AS_OF_STALL, FLAG_SPIKE}
    assert LIVE_STALENESS not in {e.check_name for e in governance}
    for evaluation in governance:
        assert evaluation.passed, (evaluation.check_name, evaluation.metadata)
        if evaluation.check_name != PARTITION_COVERAGE:
            continue
        # The history since each node's first bar that nobody has materialized yet is work
        # not yet done (the gap-repair sensor requests it), reported but not a failure:
        # nothing before the first bar is counted and no materialized partition is thin.
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        unmaterialized = (date(2024, 3, 10) - BTC_LISTED).days + 1 - 10
        assert meta["history_start"] == "2017-08-17T04:00:00Z"
        assert meta["not_backfilled_count"] == unmaterialized
        assert meta["bad_partition_count"] == meta["thin_partition_count"] == 0
        # The ten backfilled ones are judged too (1h nodes: 03-10 is stable only at 02:00).
        tf = NodeId.from_asset_key_path(evaluation.asset_key.path).timeframe.code
        stable = 10 if tf == "1m" else 9
        assert meta["partitions_checked"] == unmaterialized + stable
        assert evaluation.description is not None
        assert (
            f"{unmaterialized} partition(s) since 2017-08-17T04:00:00Z are not backfilled yet"
            in evaluation.description
        )

    # Gap repair asks for exactly that history, from the first bar on, never from 2017-01-01.
    requests = _tick(defs, GAP_SENSOR, instance).run_requests or []
    starts = {r.tags[ASSET_PARTITION_RANGE_START_TAG] for r in requests}
    assert min(starts) == "2017-08-17"
    assert all(r.tags[ASSET_PARTITION_RANGE_END_TAG] < FIRST for r in requests)
