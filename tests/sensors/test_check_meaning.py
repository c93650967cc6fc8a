"""Each governance check fails for its reason, and only for it: history before a node's
first bar is never missing, every check executes on its own, flag spikes are judged over
the whole history, and a published partition the newest snapshot lacks stalls as_of."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import Range
from seamless_assets.governance_checks import (
    AS_OF_STALL,
    CHECK_NAMES,
    FLAG_SPIKE,
    GOVERNANCE_JOB,
    PARTITION_COVERAGE,
    GovernanceSettings,
    coverage_result,
    flag_spikes,
)
from seamless_assets.history import history_start_s
from seamless_assets.nodes import NodeId
from seamless_assets.partitions import timeframe_classes
from sensors.as_of import SENSOR_NAME as AS_OF_SENSOR
from sensors.common import WatchedNode
from sensors.coverage_scan import PartitionCoverage
from sensors.gap_repair import SENSOR_NAME as GAP_SENSOR
from tests.assets.conftest import open_artifacts

from .conftest import DAY, NODE, T0, Clock, execute, tick


def _backfill(project: SeamlessConfig, first_day: int, days: int) -> None:
    start = datetime.fromtimestamp(T0 + first_day * DAY, tz=UTC)
    end = datetime.fromtimestamp(T0 + (first_day + days) * DAY, tz=UTC)
    assert run_backfill(project, [project.node(NODE)], start, end).success


def _evaluate(
    defs: dg.Definitions, instance: dg.DagsterInstance, *names: str
) -> dict[str, dg.AssetCheckEvaluation]:
    """Run the governance job, or only the checks `names` of the node (as the UI's
    "Execute" on a check does: a subset of the checks, no asset)."""
    job = defs.resolve_job_def(GOVERNANCE_JOB)
    if names:
        key = dg.AssetKey(NodeId.parse(NODE).asset_key_path())
        job = job.get_subset(asset_check_selection={dg.AssetCheckKey(key, n) for n in names})
    result = job.execute_in_process(instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_each_governance_check_executes_on_its_own(
    project: SeamlessConfig, defs: dg.Definitions, instance: dg.DagsterInstance, name: str
) -> None:
    _backfill(project, 0, 2)
    assert set(_evaluate(defs, instance, name)) == {name}


def test_history_before_the_first_bar_is_never_missing(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    listing = T0 + 2 * DAY + 12 * 3600  # BTC/USDT trades from 2024-01-03 12:00
    sandbox.configure(listing_ts={"BTC/USDT": listing})
    first = tick(defs, GAP_SENSOR, instance)  # discovers the start: repairs from it only
    assert history_start_s(open_artifacts(project), project.node(NODE)) == listing
    [request] = first.run_requests or []
    assert (
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    ) == ("2024-01-03", "2024-01-07")

    coverage = _evaluate(defs, instance, PARTITION_COVERAGE)[PARTITION_COVERAGE]
    # Five partitions before any materialized one: not backfilled yet, reported, not failed.
    assert coverage.passed
    assert coverage.metadata["history_start"].value == "2024-01-03T12:00:00Z"
    assert coverage.metadata["partitions_checked"].value == 5  # not 01-01, 01-02
    assert coverage.metadata["not_backfilled_count"].value == 5
    assert coverage.description and "since 2024-01-03T12:00:00Z" in coverage.description

    assert execute(defs, request, instance).success
    assert tick(defs, GAP_SENSOR, instance).run_requests == []
    coverage = _evaluate(defs, instance, PARTITION_COVERAGE)[PARTITION_COVERAGE]
    assert coverage.passed  # 01-03 holds its 720 bars from noon: complete
    assert coverage.metadata["bad_partition_count"].value == 0


def test_flag_spikes_are_judged_over_the_whole_history() -> None:
    quiet = [{"gap": 1}] * 60
    for index in (3, 10, 30, 59):
        counts = [*quiet[:index], {"gap": 1, "ohlc_inconsistent": 8}, *quiet[index + 1 :]]
        assert flag_spikes(counts) == [(index, "ohlc_inconsistent", 8, 0.0, min(index, 30))]


def test_a_corrupt_day_deep_in_a_backfill_is_flagged(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    clock.advance(30 * DAY)  # 37 closed partitions; the corrupt one is the 5th
    bad = [T0 + 4 * DAY + 60 * i for i in range(8)]
    sandbox.configure(
        corruptions=[{"symbol": "BTC/USDT", "ts": ts, "kind": "high_below_low"} for ts in bad]
    )
    _backfill(project, 0, 37)
    spike = _evaluate(defs, instance, FLAG_SPIKE)[FLAG_SPIKE]
    assert not spike.passed and spike.severity == dg.AssetCheckSeverity.ERROR
    assert spike.metadata["partitions_checked"].value == 37
    assert any(
        s.startswith("[2024-01-05T00:00:00Z, 2024-01-06T00:00:00Z) ohlc_inconsistent=8")
        for s in spike.metadata["spikes"].value
    )


def test_a_published_partition_the_snapshot_lacks_stalls_as_of_until_committed(
    project: SeamlessConfig,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    _backfill(project, 0, 3)
    _backfill(project, 4, 3)  # 01-04 missing
    assert tick(defs, AS_OF_SENSOR, instance).asset_events
    stall = _evaluate(defs, instance, AS_OF_STALL)[AS_OF_STALL]
    assert stall.passed and stall.metadata["partitions_behind"].value == 0

    _backfill(project, 3, 1)  # the hole is repaired after the snapshot
    stall = _evaluate(defs, instance, AS_OF_STALL)[AS_OF_STALL]
    # Just published: not stalled yet, but counted.
    assert stall.passed and stall.metadata["partitions_behind"].value == 1
    assert stall.metadata["unsnapshotted"].value == ["[2024-01-04T00:00:00Z, 2024-01-05T00:00:00Z)"]
    clock.advance(61 * 60)  # the as_of sensor did not run for 61 bars
    stall = _evaluate(defs, instance, AS_OF_STALL)[AS_OF_STALL]
    assert not stall.passed and stall.severity == dg.AssetCheckSeverity.WARN
    assert stall.metadata["stall_bars"].value == 61
    assert stall.description and "as_of sensor" in stall.description
    clock.advance(60 * 60)
    stall = _evaluate(defs, instance, AS_OF_STALL)[AS_OF_STALL]
    assert not stall.passed and stall.severity == dg.AssetCheckSeverity.ERROR

    assert tick(defs, AS_OF_SENSOR, instance).asset_events  # the next tick commits it
    stall = _evaluate(defs, instance, AS_OF_STALL)[AS_OF_STALL]
    assert stall.passed and stall.metadata["partitions_behind"].value == 0


@pytest.mark.parametrize(
    ("stored", "fails"),
    [
        ([0, 0, 1440, 1440, 0, 0], False),  # fetched span in the middle: the rest not yet
        ([1440, 1440, 0, 0, 0, 0], False),  # oldest days only (after them: not backfilled)
        ([0, 0, 0, 0, 1440, 1440], False),  # newest days only
        ([1440, 0, 1440, 0, 0, 0], True),  # a hole inside the fetched span
        ([1440, 700, 1440, 0, 0, 0], True),  # a thin partition
    ],
)
def test_partition_coverage_fails_for_holes_inside_the_fetched_span_only(
    project: SeamlessConfig, stored: list[int], fails: bool
) -> None:
    node_id = project.node(NODE)
    tf_class = timeframe_classes(project.seamless.partitions)["intraday"]
    node = WatchedNode(node_id, tf_class, dg.AssetKey(node_id.asset_key_path()), ())
    coverage = [
        PartitionCoverage(
            key=datetime.fromtimestamp(T0 + i * DAY, tz=UTC).strftime("%Y-%m-%d"),
            window=Range(T0 + i * DAY, T0 + (i + 1) * DAY),
            expected_bars=1440,
            stored_bars=bars,
            empty_bars=0,
            published=bars > 0,
            stable=True,
        )
        for i, bars in enumerate(stored)
    ]
    settings = GovernanceSettings.from_config(project)
    result = coverage_result(node, coverage, settings, history_start=T0)
    assert result.passed is not fails
    meta = {k: v.value for k, v in result.metadata.items()}
    span = [i for i, bars in enumerate(stored) if bars]
    outside = sum(1 for i, bars in enumerate(stored) if not bars and not span[0] < i < span[-1])
    assert meta["not_backfilled_count"] == outside
    assert meta["thin_partition_count"] == sum(1 for bars in stored if bars < 1440) - outside
