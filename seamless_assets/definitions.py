"""Assemble the Dagster definitions from `seamless.yaml`: assets, checks, jobs, schedules."""

from __future__ import annotations

import warnings
from collections import defaultdict

import dagster as dg
from dagster._core.definitions.partitions.partitioned_schedule import (
    UnresolvedPartitionedAssetScheduleDefinition,
)

from .config import SeamlessConfig, load_config
from .ohlcv import ohlcv_asset
from .partitions import TimeframeClass, timeframe_class_name, timeframe_classes
from .runtime import check_services, resources_from_config

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


def build_definitions(config: SeamlessConfig) -> dg.Definitions:
    classes = timeframe_classes(config.seamless.partitions)
    assets: dict[str, list[dg.AssetsDefinition]] = defaultdict(list)
    longest_s: dict[str, int] = defaultdict(int)
    for node in config.nodes:
        name = timeframe_class_name(node.timeframe)
        assets[name].append(ohlcv_asset(node, classes[name], config))
        longest_s[name] = max(longest_s[name], node.interval_s)

    jobs, schedules = [], []
    stabilization = config.seamless.artifact.stabilization_bars
    for name, class_assets in assets.items():
        tf_class = classes[name]
        job = dg.define_asset_job(
            tf_class.job_name,
            selection=dg.AssetSelection.assets(*class_assets),
            partitions_def=tf_class.partitions_def,
            description=f"Backfill {name} OHLCV nodes partition by partition.",
        )
        jobs.append(job)
        delay_s = (stabilization + 1) * longest_s[name] + SCHEDULE_MARGIN_S
        schedules.append(_schedule(tf_class, job, delay_s))

    return dg.Definitions(
        assets=[a for group in assets.values() for a in group],
        jobs=jobs,
        schedules=schedules,
        resources=resources_from_config(config),
    )


def load_definitions() -> dg.Definitions:
    config = load_config()
    check_services(config)
    return build_definitions(config)


defs = load_definitions()
