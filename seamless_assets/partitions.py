"""Time-window partitions: one definition per timeframe class.

Intraday timeframes (≤ 1h) partition by day; longer ones (up to 1w) by month. From 2017
to 2030 that is under 5,000 daily and under 200 monthly partitions per asset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from .config import PartitionsConfig
from .core.frame import Range
from .nodes import Timeframe

INTRADAY_MAX_S = 3600


@dataclass(frozen=True)
class TimeframeClass:
    """A family of timeframes that share one partitions definition, job and schedule."""

    name: str
    partitions_def: dg.TimeWindowPartitionsDefinition

    @property
    def job_name(self) -> str:
        return f"ohlcv_{self.name}_job"


def timeframe_class_name(timeframe: Timeframe) -> str:
    return "intraday" if timeframe.seconds <= INTRADAY_MAX_S else "daily"


def timeframe_classes(config: PartitionsConfig) -> dict[str, TimeframeClass]:
    return {
        "intraday": TimeframeClass(
            "intraday", dg.DailyPartitionsDefinition(start_date=config.intraday_start)
        ),
        "daily": TimeframeClass(
            "daily", dg.MonthlyPartitionsDefinition(start_date=config.daily_start)
        ),
    }


def partitions_start_s(config: PartitionsConfig, timeframe: Timeframe) -> int:
    """Where a timeframe's partitions begin (`partitions.intraday_start` / `daily_start`):
    nothing before it can ever be materialized."""
    partitions_def = timeframe_classes(config)[timeframe_class_name(timeframe)].partitions_def
    window = partitions_def.get_first_partition_window()
    assert window is not None, "a partitions definition with a start has a first window"
    return int(_epoch(window.start))


def _epoch(moment: datetime) -> float:
    """Epoch seconds of `moment`; a naive datetime is taken as UTC (never as local time)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def partition_range(partitions_def: dg.TimeWindowPartitionsDefinition, key: str) -> Range:
    """The half-open `[start, end)` epoch-second window of one partition."""
    window = partitions_def.time_window_for_partition_key(key)
    return Range(int(_epoch(window.start)), int(_epoch(window.end)))


def partition_ranges(
    partitions_def: dg.TimeWindowPartitionsDefinition, first_key: str, last_key: str
) -> list[Range]:
    """The half-open windows of every partition from `first_key` to `last_key` inclusive."""
    keys = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first_key, last_key))
    return [partition_range(partitions_def, key) for key in keys]


def partition_keys_for(
    partitions_def: dg.TimeWindowPartitionsDefinition, start: datetime, end: datetime
) -> list[str]:
    """Keys of the existing partitions whose window overlaps `[start, end)`, in time order.

    Existing means from the definition's start to its last partition (the last one that has
    closed, per Dagster). Cost is proportional to the selected partitions, not to history.
    """
    first = partitions_def.get_first_partition_window()
    last = partitions_def.get_last_partition_window()
    if first is None or last is None:
        return []
    lo = max(_epoch(start), _epoch(first.start))
    hi = min(_epoch(end), _epoch(last.end))
    if lo >= hi:
        return []
    # Dagster's time-window query returns partitions *starting* in [window.start, window.end);
    # widen the start to the partition containing `lo` so one that began earlier is kept.
    first_key = partitions_def.get_partition_key_for_timestamp(lo)
    window = dg.TimeWindow(
        partitions_def.start_time_for_partition_key(first_key),
        datetime.fromtimestamp(hi, tz=UTC),
    )
    return list(partitions_def.get_partition_keys_in_time_window(window))
