"""Assemble the Dagster definitions from `seamless.yaml`: assets, checks, jobs, schedules,
sensors.

`defs` is lazy (`@dg.definitions`): importing this module reads no config and contacts no
service; Dagster builds the definitions when it loads the code location. Loading never
checks the services either, so an outage degrades runs instead of failing the location
(`seamless doctor` checks them)."""

from __future__ import annotations

import warnings
from collections import defaultdict

import dagster as dg
from dagster._core.definitions.partitions.partitioned_schedule import (
    UnresolvedPartitionedAssetScheduleDefinition,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from resources.reader import SeamlessReader
from sensors import build_sensors, watched_nodes
from sensors.common import Clock, wall_clock
from sensors.pools import dead_runs_sensor, pools_sensor

from .config import DagsterConfig, SeamlessConfig, load_config
from .event_assets import event_asset
from .governance_checks import (
    GOVERNANCE_CRON,
    GOVERNANCE_JOB,
    governance_check_keys,
    governance_checks,
)
from .ohlcv import ohlcv_asset
from .partitions import TimeframeClass, timeframe_class_name, timeframe_classes
from .runtime import resources_from_config

SCHEDULE_MARGIN_S = 300

# BackfillPolicy.single_run() is the documented way to make one run per backfill; Dagster
# still labels the parameter beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def _schedule(
    tf_class: TimeframeClass, job: dg.UnresolvedAssetJobDefinition, delay_s: int
) -> dg.ScheduleDefinition | UnresolvedPartitionedAssetScheduleDefinition:
    """Materialize the newest closed partition once its last bars are stable."""
    hours, minutes = divmod(delay_s // 60, 60)
    if tf_class.name == "intraday":
        return dg.build_schedule_from_partitioned_job(
            job, hour_of_day=min(hours, 23), minute_of_hour=minutes
        )
    days, hours = divmod(hours, 24)
    return dg.build_schedule_from_partitioned_job(
        job, day_of_month=min(1 + days, 28), hour_of_day=hours, minute_of_hour=minutes
    )


def executor_for(config: DagsterConfig) -> dg.ExecutorDefinition:
    """The executor of every job of the definitions (`dagster.executor`).

    `in_process` runs each step inside the run worker, which has started and loaded the
    definitions before any step claims its exchange pool slot; `multiprocess` would claim
    the slot and then start the step's process (imports, definitions load) while holding it.
    """
    if config.executor == "multiprocess":
        if config.max_concurrent is None:
            return dg.multiprocess_executor
        return dg.multiprocess_executor.configured(
            {"max_concurrent": config.max_concurrent}, name="multiprocess"
        )
    return dg.in_process_executor


def build_definitions(config: SeamlessConfig, *, clock: Clock = wall_clock) -> dg.Definitions:
    """Everything Dagster loads; `clock` is the sensors' and checks' notion of now."""
    classes = timeframe_classes(config.seamless.partitions)
    assets: dict[str, list[dg.AssetsDefinition]] = defaultdict(list)
    longest_s: dict[str, int] = defaultdict(int)
    catalog = []
    for node in config.nodes:
        name = timeframe_class_name(node.timeframe)
        asset = ohlcv_asset(node, classes[name], config)
        assets[name].append(asset)
        catalog.append((node, classes[name], asset))
        longest_s[name] = max(longest_s[name], node.interval_s)
    # Event nodes share the daily partitions, so the intraday job backfills them too: one
    # run (and the schedule's one run a day) covers a whole day-partitioned catalog.
    days = classes["intraday"].partitions_def
    assets["intraday"] += [event_asset(event, days, config) for event in config.event_nodes]
    nodes = watched_nodes(catalog)
    governance = [governance_checks(node, config, clock=clock) for node in nodes]
    governance_keys = governance_check_keys(governance)

    jobs: list[UnresolvedAssetJobDefinition] = []
    schedules: list[dg.ScheduleDefinition | UnresolvedPartitionedAssetScheduleDefinition] = []
    stabilization = config.seamless.artifact.stabilization_bars
    for name, class_assets in assets.items():
        tf_class = classes[name]
        job = dg.define_asset_job(
            tf_class.job_name,
            # Materializations run their inline checks; governance checks run on their own.
            selection=dg.AssetSelection.assets(*class_assets)
            - dg.AssetSelection.checks(*governance_keys),
            partitions_def=tf_class.partitions_def,
            description=f"Backfill {name} nodes partition by partition"
            + (" (bars ≤1h, funding, trades)." if name == "intraday" else " (bars >1h)."),
        )
        jobs.append(job)
        delay_s = (stabilization + 1) * longest_s[name] + SCHEDULE_MARGIN_S
        schedules.append(_schedule(tf_class, job, delay_s))

    governance_job = dg.define_asset_job(
        GOVERNANCE_JOB,
        selection=dg.AssetSelection.checks(*governance_keys),
        description="Coverage, live staleness, as_of stall and conformance spike checks.",
    )
    schedules.append(
        dg.ScheduleDefinition(
            name="seamless_governance_checks_schedule",
            job=governance_job,
            cron_schedule=GOVERNANCE_CRON,
            execution_timezone="UTC",
        )
    )
    sensors, live_jobs = build_sensors(config, nodes, jobs, clock=clock)
    sensors.append(pools_sensor(config))
    sensors.append(dead_runs_sensor())

    return dg.Definitions(
        assets=[a for group in assets.values() for a in group],
        asset_checks=governance,
        jobs=[*jobs, governance_job, *live_jobs],
        schedules=schedules,
        sensors=sensors,
        # Every job, including the implicit asset job of UI materializations.
        executor=executor_for(config.dagster),
        resources={
            **resources_from_config(config),
            # Strategies and downstream assets read nodes through this (domain policy, SLA).
            "reader": SeamlessReader(config_path=config.source or ""),
        },
    )


def load_definitions() -> dg.Definitions:
    """The definitions of `$SEAMLESS_CONFIG` (else ./seamless.yaml). No service is contacted:
    with Redis down runs use the in-process limiter, with QuestDB or S3 down a run fails
    with the store's own error when it touches it."""
    return build_definitions(load_config())


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev -w workspace.yaml` and the code server load."""
    return load_definitions()
