"""as_of sensor: advance the snapshot once partitions are stable, record it once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from resources.reader import ComputeContext, SeamlessReader, frame_bytes
from sandbox import SandboxExchange
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import Range
from seamless_assets.errors import MissingPartitions
from seamless_assets.history import history_start_s
from sensors.as_of import SENSOR_NAME
from tests.assets.conftest import open_artifacts

from .conftest import DAY, NODE, T0, Clock, tick


def _backfill(project: SeamlessConfig, first_day: int, days: int) -> None:
    start = datetime.fromtimestamp(T0 + first_day * DAY, tz=UTC)
    end = datetime.fromtimestamp(T0 + (first_day + days) * DAY, tz=UTC)
    assert run_backfill(project, [project.node(NODE)], start, end).success


def _backtest(as_of_s: int) -> ComputeContext:
    return ComputeContext(world_id="w", execution_domain="backtest", as_of=as_of_s)


def _observations(result: dg.SensorResult) -> list[dg.AssetObservation]:
    return [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]


def test_as_of_advances_after_materializations_and_is_recorded_once(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    node = project.node(NODE)
    assert _observations(tick(defs, SENSOR_NAME, instance)) == []  # nothing published yet

    _backfill(project, 0, 7)
    first = tick(defs, SENSOR_NAME, instance)
    [observation] = _observations(first)
    snapshot = open_artifacts(project).latest_snapshot(node)
    assert snapshot is not None
    assert observation.asset_key == dg.AssetKey(node.asset_key_path())
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["as_of_s"] == int(clock())  # the commit instant
    assert meta["watermark"] == "2024-01-08T00:00:00Z"
    assert meta["snapshot_fingerprint"] == snapshot.fingerprint
    assert meta["segment_count"] == 7
    # The exchange's history starts in 2017, but the partitions begin at T0: what no
    # partition could ever hold is not missing.
    start = history_start_s(open_artifacts(project), node)
    assert start is not None and start < T0
    assert snapshot.missing == ()
    assert (meta["missing_count"], meta["missing"]) == (0, [])
    assert (meta["rows"], meta["expected_bars"], meta["coverage"]) == (7 * 1440, 7 * 1440, 1.0)

    # The daemon stores sensor asset events like this: the pointer is in the event log.
    for event in first.asset_events:
        instance.report_runless_asset_event(event)
    recorded = instance.fetch_observations(dg.AssetKey(node.asset_key_path()), limit=10)
    # the sensor's is runless; the backfill's run-totals observation belongs to its run
    assert len([r for r in recorded.records if not r.run_id]) == 1

    assert _observations(tick(defs, SENSOR_NAME, instance, first.cursor)) == []  # once only

    # A day later the next partition is materialized: one new pointer, as_of one day on.
    clock.advance(DAY)
    _backfill(project, 7, 1)
    second = tick(defs, SENSOR_NAME, instance, first.cursor)
    [observation] = _observations(second)
    assert observation.metadata["as_of_s"].value == int(clock())
    assert observation.metadata["watermark"].value == "2024-01-09T00:00:00Z"
    assert observation.metadata["segment_count"].value == 8
    assert _observations(tick(defs, SENSOR_NAME, instance, second.cursor)) == []
    log = open_artifacts(project).snapshot_log(node)
    assert [entry.as_of_s for entry in log] == [int(clock()) - DAY, int(clock())]


def test_a_node_whose_heads_are_broken_is_logged_not_fatal(
    project: SeamlessConfig,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    node = project.node(NODE)
    _backfill(project, 0, 7)
    first = tick(defs, SENSOR_NAME, instance)
    assert len(_observations(first)) == 1
    store = open_artifacts(project)
    # A head pointing at a segment that was never sealed (an interrupted publish elsewhere).
    key = f"{store.segment_prefix(node)}/heads/{T0 + 7 * DAY}-{T0 + 8 * DAY}.json"
    store.blobs.put(key, json.dumps({"fingerprint": "sha256:" + "0" * 64}).encode())
    clock.advance(DAY)
    _backfill(project, 6, 1)  # a new materialization, so the sensor looks again
    broken = tick(defs, SENSOR_NAME, instance, first.cursor)
    assert _observations(broken) == []
    assert json.loads(broken.cursor or "{}") == json.loads(first.cursor or "{}")
    assert len(store.snapshot_log(node)) == 1


def test_repaired_holes_are_committed_within_one_tick(
    project: SeamlessConfig,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    node = project.node(NODE)
    for day in (0, 2, 4, 6):  # three holes: days 1, 3 and 5
        _backfill(project, day, 1)
    first = tick(defs, SENSOR_NAME, instance)
    [observation] = _observations(first)
    store = open_artifacts(project)
    start = history_start_s(store, node)
    assert start is not None
    holes = tuple(Range(T0 + d * DAY, T0 + (d + 1) * DAY) for d in (1, 3, 5))
    assert observation.metadata["missing_count"].value == 3  # the partitions begin at T0
    before = store.latest_snapshot(node)
    assert before is not None and before.missing == holes
    old_bytes = store.read_snapshot_range(node, before, Range(T0, T0 + 7 * DAY))
    week = (T0, T0 + 7 * DAY)
    with SeamlessReader.from_config(project.source) as reader:
        with pytest.raises(MissingPartitions, match="2024-01-02"):
            reader.fetch(NODE, *week, _backtest(before.as_of_s))
        day0_before, _ = reader.fetch(NODE, T0, T0 + DAY, _backtest(before.as_of_s))
    clock.advance(60)
    for day in (1, 3, 5):  # gap repair runs
        _backfill(project, day, 1)
    second = tick(defs, SENSOR_NAME, instance, first.cursor)
    [observation] = _observations(second)
    assert observation.metadata["missing_count"].value == 0
    after = store.latest_snapshot(node)
    assert after is not None and after.as_of_s > before.as_of_s
    assert after.missing == ()
    assert after.uncovered(Range(T0, T0 + 7 * DAY)) == []
    with SeamlessReader.from_config(project.source) as reader:  # a backtest at the new as_of
        whole, meta = reader.fetch(NODE, *week, _backtest(after.as_of_s))
        assert len(whole) == 7 * 1440 and not meta.partial
        assert meta.snapshot_fingerprint == after.fingerprint
        day0_again, _ = reader.fetch(NODE, T0, T0 + DAY, _backtest(before.as_of_s))
    assert frame_bytes(day0_again) == frame_bytes(day0_before)
    pinned = store.resolve_snapshot(node, before.as_of_s)
    pd.testing.assert_frame_equal(
        store.read_snapshot_range(node, pinned, Range(T0, T0 + 7 * DAY)), old_bytes
    )
    for _ in range(3):  # nothing changed: no new commit on later ticks
        clock.advance(60)
        assert _observations(tick(defs, SENSOR_NAME, instance, second.cursor)) == []
    assert len(store.snapshot_log(node)) == 2


def test_a_restatement_is_committed_within_one_tick(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    node = project.node(NODE)
    _backfill(project, 0, 4)
    first = tick(defs, SENSOR_NAME, instance)
    assert len(_observations(first)) == 1
    restated = [{"start": T0 + DAY, "end": T0 + 3 * DAY, "version": 1}]
    sandbox.configure(restatements={"BTC/USDT": restated})
    clock.advance(60)
    start = datetime.fromtimestamp(T0, tz=UTC)
    end = datetime.fromtimestamp(T0 + 4 * DAY, tz=UTC)
    assert run_backfill(project, [node], start, end, refetch_stored=True).success
    second = tick(defs, SENSOR_NAME, instance, first.cursor)
    assert len(_observations(second)) == 1
    store = open_artifacts(project)
    old, new = (store.read_snapshot(node, e) for e in store.snapshot_log(node))
    assert new.as_of_s > old.as_of_s and new.watermark_s == old.watermark_s
    diff = store.diff_snapshots(node, old, new)
    assert len(diff) and diff["ts"].between(T0 + DAY, T0 + 3 * DAY - 1).all()
