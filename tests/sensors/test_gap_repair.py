"""Gap repair over a real Dagster instance, DuckDB hot store, artifact directory and ccxt."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from sandbox import SandboxExchange, expected_bars
from seamless_assets.backfill_events import GAP_DETECTED_AT_TAG
from seamless_assets.cli import run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.frame import CANONICAL_COLUMNS
from sensors.common import NEED_TAG, NODE_TAG, TRIGGER_TAG
from sensors.gap_repair import SENSOR_NAME
from tests.assets.conftest import kline_requests, open_artifacts, open_hot, write_config

from .conftest import DAY, NODE, T0, Clock, execute, tick


def _backfill(project: SeamlessConfig, first_day: int, days: int) -> None:
    start = datetime.fromtimestamp(T0 + first_day * DAY, tz=UTC)
    end = datetime.fromtimestamp(T0 + (first_day + days) * DAY, tz=UTC)
    assert run_backfill(project, [project.node(NODE)], start, end).success


def _ranges(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [
        (r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
        for r in result.run_requests or []
    ]


def test_three_missing_partitions_are_requested_once_in_contiguous_runs_then_none(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    # Closed partitions 2024-01-01 … 01-07; 01-02 is a whole-day exchange outage (ledgered).
    sandbox.configure(gaps={"BTC/USDT": [[T0 + DAY, T0 + 2 * DAY]]})
    _backfill(project, 0, 2)  # 01-01, 01-02
    _backfill(project, 4, 1)  # 01-05
    _backfill(project, 6, 1)  # 01-07  → 01-03, 01-04, 01-06 are missing

    first = tick(defs, SENSOR_NAME, instance)
    assert _ranges(first) == [("2024-01-03", "2024-01-04"), ("2024-01-06", "2024-01-06")]
    node = project.node(NODE)
    for request in first.run_requests or []:
        assert request.job_name == "ohlcv_intraday_job"
        assert request.asset_selection == [dg.AssetKey(node.asset_key_path())]
        assert request.tags[NODE_TAG] == NODE and request.tags[TRIGGER_TAG] == "gap_repair"
        assert request.run_key and NODE in request.run_key
    assert len({r.run_key for r in first.run_requests or []}) == 2

    # The same need on the next tick (runs not yet launched): nothing new.
    again = tick(defs, SENSOR_NAME, instance, first.cursor)
    assert again.run_requests == []
    assert again.skip_reason is not None
    assert again.skip_reason.skip_message == "2 repair(s) already requested, running or given up"

    sandbox.reset()
    materialized = set()
    for request in first.run_requests or []:
        result = execute(defs, request, instance)
        assert result.success
        materialized |= {e.partition for e in result.get_asset_materialization_events()}
        # Only the asset and its inline checks: governance checks run on their schedule.
        assert {c.check_name for c in result.get_asset_check_evaluations()} == {
            "coverage_ratio",
            "no_duplicate_ts",
            "monotonic_ts",
            "ohlc_sanity",
            "exchange_gaps",
        }
    assert materialized == {"2024-01-03", "2024-01-04", "2024-01-06"}
    # Each run fetches its missing window in full pages of 1000 bars, nothing else.
    assert kline_requests(sandbox) == math.ceil(2 * 1440 / 1000) + math.ceil(1440 / 1000)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: "gap_repair"}))
    assert len(runs) == 2

    # Repaired: no request with the cursor, and none from a fresh cursor either.
    assert tick(defs, SENSOR_NAME, instance, again.cursor).run_requests == []
    fresh = tick(defs, SENSOR_NAME, instance)
    assert fresh.run_requests == []
    assert fresh.skip_reason is not None
    assert fresh.skip_reason.skip_message == "every closed partition is covered"
    assert json.loads(fresh.cursor or "{}") == {}
    heads = open_artifacts(project).heads(node)
    assert len(heads) == 7  # every closed partition published, the outage day too


def test_a_node_with_a_repair_in_flight_gets_no_second_run(
    project: SeamlessConfig,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    _backfill(project, 0, 3)
    first = tick(defs, SENSOR_NAME, instance)
    assert _ranges(first) == [("2024-01-04", "2024-01-07")]
    request = (first.run_requests or [])[0]
    job = defs.resolve_job_def("ohlcv_intraday_job")
    run = instance.create_run_for_job(job, tags={**request.tags}, run_id=None)
    assert run.status == dg.DagsterRunStatus.NOT_STARTED
    # A fresh cursor (e.g. the sensor was reset): the pending run still blocks a duplicate.
    assert tick(defs, SENSOR_NAME, instance).run_requests == []

    instance.report_run_failed(run)
    retry = tick(defs, SENSOR_NAME, instance, first.cursor)
    assert [r.run_key for r in retry.run_requests or []] == [f"{request.run_key}:retry1"]
    assert tick(defs, SENSOR_NAME, instance, retry.cursor).run_requests == []


def test_a_thin_partition_is_repaired_by_fetching_only_its_missing_bars(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    clock: Clock,
) -> None:
    _backfill(project, 0, 2)
    _backfill(project, 3, 4)
    # 01-03 holds only its first 12 hours (say, a run that died half way): 50% < 98%.
    half = expected_bars("BTC/USDT", 60, T0 + 2 * DAY, T0 + 2 * DAY + DAY // 2)
    hot = open_hot(project)
    hot.upsert(NODE, pd.DataFrame({c: half[c] for c in CANONICAL_COLUMNS}))
    hot.close()

    first = tick(defs, SENSOR_NAME, instance)
    [request] = first.run_requests or []
    assert _ranges(first) == [("2024-01-03", "2024-01-03")]
    assert (
        request.tags[NEED_TAG]
        == "1 partition(s) 2024-01-03..2024-01-03: 720 bar(s) missing, 1 unpublished"
    )
    assert float(request.tags[GAP_DETECTED_AT_TAG]) == clock.now_s  # its repair latency's start
    sandbox.reset()
    assert execute(defs, request, instance).success
    assert kline_requests(sandbox) == 1  # the 720 missing bars only
    assert tick(defs, SENSOR_NAME, instance).run_requests == []


def test_a_long_gap_is_split_into_runs_of_bounded_size() -> None:
    """A node with no data must not become one run of its whole history."""
    from seamless_assets.config import PartitionsConfig
    from seamless_assets.core.frame import Range
    from seamless_assets.nodes import NodeId
    from seamless_assets.partitions import timeframe_classes
    from sensors.common import WatchedNode
    from sensors.coverage_scan import PartitionCoverage
    from sensors.gap_repair import MAX_BARS_PER_RUN, group_needs

    node = NodeId.parse(NODE)
    tf_class = timeframe_classes(PartitionsConfig())["intraday"]
    watched = WatchedNode(node, tf_class, dg.AssetKey(node.asset_key_path()), ())
    days = 400
    coverage = [
        PartitionCoverage(f"d{i}", Range(T0 + i * DAY, T0 + (i + 1) * DAY), 1440, 0, 0, False, True)
        for i in range(days)
    ]
    needs = group_needs(watched, coverage, 0.98)
    per_run = MAX_BARS_PER_RUN // 1440
    assert [len(n.partitions) for n in needs] == [per_run] * (days // per_run) + [days % per_run]
    assert [p.key for n in needs for p in n.partitions] == [c.key for c in coverage]
    assert len({n.run_key for n in needs}) == len(needs)


def test_a_node_is_scanned_only_from_a_discovered_history_start(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    """Without its first bar every day since the partitions' start would look missing: a
    node whose start cannot be discovered (exchange down) is skipped, and says so."""
    from seamless_assets.history import history_start_s

    node = project.node(NODE)
    sandbox.configure(down=True)
    down = tick(defs, SENSOR_NAME, instance)
    assert down.run_requests == []
    assert down.skip_reason is not None
    assert f"history start unknown): {NODE}" in down.skip_reason.skip_message
    assert history_start_s(open_artifacts(project), node) is None

    sandbox.configure(down=False, listing_ts={"BTC/USDT": T0 + 5 * DAY})
    up = tick(defs, SENSOR_NAME, instance, down.cursor)
    assert history_start_s(open_artifacts(project), node) == T0 + 5 * DAY
    assert _ranges(up) == [("2024-01-06", "2024-01-07")]


def test_an_unreachable_exchange_is_asked_once_per_tick(
    tmp_path: Path, sandbox: SandboxExchange, clock: Clock, instance: dg.DagsterInstance
) -> None:
    """Discovering history starts must not multiply an outage's retries by the nodes."""
    from seamless_assets.config import load_config
    from seamless_assets.definitions import build_definitions

    path = write_config(tmp_path, sandbox.url, symbols=("BTC/USDT", "ETH/USDT"))
    defs = build_definitions(load_config(path), clock=clock)
    sandbox.configure(down=True)
    sandbox.reset()
    result = tick(defs, SENSOR_NAME, instance)
    assert result.run_requests == []
    assert result.skip_reason is not None
    message = result.skip_reason.skip_message
    assert all(
        f"ohlcv:binance:{s}:{tf}" in message
        for s in ("BTC/USDT", "ETH/USDT")
        for tf in ("1m", "1h")
    )
    # One failed discovery: the attempts of one request (backfill.max_attempts: 4), not 4 × 4.
    assert sandbox.stats()["requests_total"] == 4


def test_a_new_install_queues_a_bounded_number_of_runs_from_each_listing(
    tmp_path: Path,
    sandbox: SandboxExchange,
    clock: Clock,
    instance: dg.DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Partitions from 2017, three markets listed on 2024-01-03 and nothing stored: no run
    asks for a day before the listing, and one tick requests at most
    `backfill.max_repair_runs_per_tick` runs (saying so); the rest follow on later ticks."""
    from seamless_assets.config import load_config
    from seamless_assets.definitions import build_definitions

    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    path = write_config(
        tmp_path,
        sandbox.url,
        symbols=symbols,
        partitions={"intraday_start": "2017-01-01", "daily_start": "2017-01-01"},
        backfill={"max_repair_runs_per_tick": 2},
    )
    raw = yaml.safe_load(path.read_text())
    raw["exchanges"]["binance"]["timeframes"] = ["1m"]
    path.write_text(yaml.safe_dump(raw))
    sandbox.configure(listing_ts={s: T0 + 2 * DAY for s in symbols})
    defs = build_definitions(load_config(path), clock=clock)

    first = tick(defs, SENSOR_NAME, instance)
    logged = "".join(capfd.readouterr())  # the sensor context's log (Dagster's console)
    assert _ranges(first) == [("2024-01-03", "2024-01-07")] * 2
    assert "1 more left for later ticks (seamless.backfill.max_repair_runs_per_tick: 2)" in logged
    second = tick(defs, SENSOR_NAME, instance, first.cursor)
    assert _ranges(second) == [("2024-01-03", "2024-01-07")]
    nodes = {r.tags[NODE_TAG] for r in [*(first.run_requests or []), *(second.run_requests or [])]}
    assert nodes == {f"ohlcv:binance:{s}:1m" for s in symbols}
    assert tick(defs, SENSOR_NAME, instance, second.cursor).run_requests == []
