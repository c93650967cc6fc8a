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


def _epoch(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp())


def partition_range(partitions_def: dg.TimeWindowPartitionsDefinition, key: str) -> Range:
    window = partitions_def.time_window_for_partition_key(key)
    return Range(_epoch(window.start), _epoch(window.end))


def partition_ranges(
    partitions_def: dg.TimeWindowPartitionsDefinition, first_key: str, last_key: str
) -> list[Range]:
    """The half-open windows of every partition from `first_key` to `last_key` inclusive."""
    keys = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(first_key, last_key))
    return [partition_range(partitions_def, key) for key in keys]


def partition_keys_for(
    partitions_def: dg.TimeWindowPartitionsDefinition, start: datetime, end: datetime
) -> list[str]:
    """Keys of the partitions overlapping `[start, end)` (existing partitions only)."""
    keys = partitions_def.get_partition_keys()
    lo, hi = _epoch(start), _epoch(end)
    selected = []
    for key in keys:
        window = partition_range(partitions_def, key)
        if window.start < hi and window.end > lo:
            selected.append(key)
    return selected
