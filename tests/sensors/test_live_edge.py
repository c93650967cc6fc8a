"""Live edge: one run per node and bar boundary, none while one is pending, only new bars."""

from __future__ import annotations

import dagster as dg

from sandbox import SandboxExchange
from seamless_assets.config import SeamlessConfig
from sensors.common import TRIGGER_TAG
from sensors.live_edge import SENSOR_NAME, forming_partition
from tests.assets.conftest import kline_requests, open_hot

from .conftest import DAY, NODE, NOW, T0, Clock, execute, tick

BOUNDARY = T0 + 7 * DAY + 12 * 3600  # 2024-01-08 12:00, the newest closed 1m bar ends here


def _data_end(project: SeamlessConfig) -> int | None:
    bounds = open_hot(project).bounds(NODE)
    return bounds[1] + 60 if bounds else None


def test_forming_partition_is_the_one_after_the_last_closed() -> None:
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    window = forming_partition(daily, NOW)
    assert (window.start, window.end) == (T0 + 7 * DAY, T0 + 8 * DAY)
    monthly = dg.MonthlyPartitionsDefinition(start_date="2024-01-01")
    assert forming_partition(monthly, NOW).start == T0  # January is still forming


def test_live_runs_per_bar_boundary_without_flooding(
    project: SeamlessConfig,
    sandbox: SandboxExchange,
    clock: Clock,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.minimum_interval_seconds == 60  # the smallest timeframe of the catalog

    first = tick(defs, SENSOR_NAME, instance)
    [request] = first.run_requests or []
    assert request.run_key == f"live_edge:{NODE}:{BOUNDARY}"
    assert request.job_name == "ohlcv_live_binance_job"
    assert tick(defs, SENSOR_NAME, instance, first.cursor).run_requests == []  # same boundary

    sandbox.reset()
    assert execute(defs, request, instance).success
    assert _data_end(project) == BOUNDARY  # the forming day up to its newest closed bar
    assert kline_requests(sandbox) == 1  # 720 bars: one page
    # Current already: a fresh cursor asks for nothing either.
    assert tick(defs, SENSOR_NAME, instance).run_requests == []

    clock.advance(60)
    second = tick(defs, SENSOR_NAME, instance, first.cursor)
    [request] = second.run_requests or []
    assert request.run_key == f"live_edge:{NODE}:{BOUNDARY + 60}"
    job = defs.resolve_job_def(request.job_name or "")
    pending = instance.create_run_for_job(
        job, run_config=request.run_config, tags={**request.tags}, run_id=None
    )

    clock.advance(60)  # a new boundary, but the node's previous live run is still pending
    assert tick(defs, SENSOR_NAME, instance, second.cursor).run_requests == []
    instance.report_run_failed(pending)
    third = tick(defs, SENSOR_NAME, instance, second.cursor)
    [request] = third.run_requests or []
    assert request.run_key == f"live_edge:{NODE}:{BOUNDARY + 120}"

    sandbox.reset()
    result = execute(defs, request, instance)
    assert result.success
    assert _data_end(project) == BOUNDARY + 120
    assert kline_requests(sandbox) == 1  # only the bars after the stored maximum
    [observation] = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.metadata["fetched_rows"].value == 2
    live_runs = instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: "live_edge"}))
    assert len(live_runs) == 3
