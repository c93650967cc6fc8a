"""Partitions per timeframe class: daily for ≤ 1h, monthly above; half-open UTC windows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.config import PartitionsConfig
from seamless_assets.core.frame import Range
from seamless_assets.nodes import Timeframe
from seamless_assets.partitions import (
    partition_keys_for,
    partition_range,
    partition_ranges,
    timeframe_class_name,
    timeframe_classes,
)

DAY = 86_400
CLASSES = timeframe_classes(PartitionsConfig())
DAILY = CLASSES["intraday"].partitions_def
MONTHLY = CLASSES["daily"].partitions_def


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def epoch(year: int, month: int, day: int) -> int:
    return int(utc(year, month, day).timestamp())


# -- classes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("1s", "intraday"),
        ("1m", "intraday"),
        ("3m", "intraday"),
        ("5m", "intraday"),
        ("15m", "intraday"),
        ("30m", "intraday"),
        ("1h", "intraday"),
        ("2h", "daily"),
        ("4h", "daily"),
        ("6h", "daily"),
        ("8h", "daily"),
        ("12h", "daily"),
        ("1d", "daily"),
        ("3d", "daily"),
        ("1w", "daily"),
    ],
)
def test_intraday_up_to_one_hour_daily_classes_above(code: str, name: str) -> None:
    assert timeframe_class_name(Timeframe.parse(code)) == name


def test_classes_use_daily_and_monthly_partitions_from_the_configured_starts() -> None:
    classes = timeframe_classes(
        PartitionsConfig(intraday_start="2020-03-04", daily_start="2018-05-06")
    )
    intraday, daily = classes["intraday"], classes["daily"]
    assert isinstance(intraday.partitions_def, dg.DailyPartitionsDefinition)
    assert isinstance(daily.partitions_def, dg.MonthlyPartitionsDefinition)
    assert intraday.partitions_def.get_first_partition_key() == "2020-03-04"
    assert daily.partitions_def.get_first_partition_key() == "2018-06-01"  # first full month
    assert intraday.job_name == "ohlcv_intraday_job" and daily.job_name == "ohlcv_daily_job"


@pytest.mark.parametrize(("partitions_def", "limit"), [(DAILY, 10_000), (MONTHLY, 200)])
def test_2017_to_2030_stays_small(
    partitions_def: dg.TimeWindowPartitionsDefinition, limit: int
) -> None:
    window = dg.TimeWindow(utc(2017, 1, 1), utc(2030, 1, 1))
    keys = partitions_def.get_partition_keys_in_time_window(window)
    assert 0 < len(keys) < limit
    assert keys[0] in ("2017-01-01",) and partition_range(partitions_def, keys[-1]).end == epoch(
        2030, 1, 1
    )


# -- windows -------------------------------------------------------------------------------


def test_daily_partition_is_one_half_open_utc_day() -> None:
    assert partition_range(DAILY, "2024-02-28") == Range(epoch(2024, 2, 28), epoch(2024, 2, 29))
    assert partition_range(DAILY, "2024-02-29").duration_s == DAY


@pytest.mark.parametrize(
    ("key", "days"), [("2024-02-01", 29), ("2023-02-01", 28), ("2024-12-01", 31)]
)
def test_monthly_partition_is_one_half_open_utc_month(key: str, days: int) -> None:
    window = partition_range(MONTHLY, key)
    assert window.start == int(datetime.fromisoformat(key).replace(tzinfo=UTC).timestamp())
    assert window.duration_s == days * DAY


@pytest.mark.parametrize(
    ("partitions_def", "first", "last", "count"),
    [(DAILY, "2023-12-30", "2024-03-02", 64), (MONTHLY, "2017-01-01", "2024-12-01", 96)],
)
def test_partition_windows_tile_time_without_gaps_or_overlap(
    partitions_def: dg.TimeWindowPartitionsDefinition, first: str, last: str, count: int
) -> None:
    windows = partition_ranges(partitions_def, first, last)
    assert len(windows) == count
    assert all(w.start % DAY == 0 and w.end % DAY == 0 for w in windows)  # UTC midnights
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


# -- partition_keys_for --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "keys"),
    [
        (utc(2024, 1, 1), utc(2024, 1, 3), ["2024-01-01", "2024-01-02"]),
        (utc(2024, 1, 1, 12), utc(2024, 1, 3), ["2024-01-01", "2024-01-02"]),
        (utc(2024, 1, 1, 12), utc(2024, 1, 1, 13), ["2024-01-01"]),
        (utc(2023, 12, 31, 23, 59, 59), utc(2024, 1, 1, 0, 0, 1), ["2023-12-31", "2024-01-01"]),
        (utc(2024, 1, 1), utc(2024, 1, 2), ["2024-01-01"]),  # end is exclusive
        (utc(2024, 1, 1), utc(2024, 1, 2, 0, 0, 0, 1), ["2024-01-01", "2024-01-02"]),
        (utc(2024, 1, 2), utc(2024, 1, 2), []),  # empty window
        (utc(2024, 1, 3), utc(2024, 1, 1), []),  # reversed window
        (utc(2010, 1, 1), utc(2017, 1, 2), ["2017-01-01"]),  # clipped to the history start
        (utc(2010, 1, 1), utc(2017, 1, 1), []),
        (utc(3000, 1, 1), utc(3000, 1, 5), []),  # after the last partition
    ],
)
def test_daily_keys_overlapping_a_half_open_window(
    start: datetime, end: datetime, keys: list[str]
) -> None:
    assert partition_keys_for(DAILY, start, end) == keys


def test_monthly_keys_overlapping_a_window() -> None:
    keys = partition_keys_for(MONTHLY, utc(2024, 1, 31, 23), utc(2024, 3, 1))
    assert keys == ["2024-01-01", "2024-02-01"]
    assert partition_keys_for(MONTHLY, utc(2024, 2, 15), utc(2024, 2, 16)) == ["2024-02-01"]


def test_keys_stop_at_the_last_closed_partition() -> None:
    last = DAILY.get_last_partition_key()
    keys = partition_keys_for(DAILY, utc(2024, 1, 1), datetime.now(UTC) + timedelta(days=30))
    assert keys[-1] == last and len(keys) == len(set(keys))


def test_naive_datetimes_are_utc_and_other_zones_are_converted() -> None:
    naive = partition_keys_for(DAILY, datetime(2024, 1, 1, 23), datetime(2024, 1, 2, 1))
    assert naive == ["2024-01-01", "2024-01-02"]
    tokyo = timezone(timedelta(hours=9))
    # 2024-01-02 08:00 in Tokyo is 2024-01-01 23:00 UTC
    zoned = partition_keys_for(
        DAILY, datetime(2024, 1, 2, 8, tzinfo=tokyo), datetime(2024, 1, 2, 8, 30, tzinfo=tokyo)
    )
    assert zoned == ["2024-01-01"]


BOUNDED = [
    dg.DailyPartitionsDefinition(start_date="2023-11-01", end_date="2024-03-01"),
    dg.MonthlyPartitionsDefinition(start_date="2017-01-01", end_date="2024-01-01"),
    dg.HourlyPartitionsDefinition(start_date="2024-03-08-00:00", end_date="2024-03-13-00:00"),
    dg.DailyPartitionsDefinition(
        start_date="2024-03-01", end_date="2024-04-01", timezone="America/New_York"
    ),  # 23- and 25-hour days
]


def brute_force(
    partitions_def: dg.TimeWindowPartitionsDefinition, lo: float, hi: float
) -> list[str]:
    """The old implementation: every key, filtered in Python (plus: an empty window is empty)."""
    if lo >= hi:
        return []
    return [
        key
        for key in partitions_def.get_partition_keys()
        if (window := partition_range(partitions_def, key)).start < hi and window.end > lo
    ]


instants = st.datetimes(
    min_value=datetime(2016, 6, 1), max_value=datetime(2024, 6, 1), timezones=st.just(UTC)
)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, len(BOUNDED) - 1),
    a=instants,
    b=instants,
    jitter=st.integers(-3 * DAY, 3 * DAY),
)
def test_keys_are_exactly_the_partitions_overlapping_the_window(
    index: int, a: datetime, b: datetime, jitter: int
) -> None:
    partitions_def = BOUNDED[index]
    # Pull some windows close to the bounds, where off-by-one errors live.
    first = partitions_def.get_first_partition_window()
    assert first is not None
    if jitter % 3 == 0:
        a = first.start + timedelta(seconds=jitter)
    start, end = min(a, b), max(a, b)
    expected = brute_force(partitions_def, start.timestamp(), end.timestamp())
    assert partition_keys_for(partitions_def, start, end) == expected


@pytest.mark.parametrize("partitions_def", BOUNDED)
def test_partition_boundaries_exactly(partitions_def: dg.TimeWindowPartitionsDefinition) -> None:
    keys = list(partitions_def.get_partition_keys())
    for key in keys[:3] + keys[-3:]:
        window = partition_range(partitions_def, key)
        start = datetime.fromtimestamp(window.start, UTC)
        end = datetime.fromtimestamp(window.end, UTC)
        assert partition_keys_for(partitions_def, start, end) == [key]
        just_after = end + timedelta(microseconds=1)
        assert key in partition_keys_for(partitions_def, start, just_after)
        assert len(partition_keys_for(partitions_def, start, just_after)) in (1, 2)
