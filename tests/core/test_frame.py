"""The canonical frame helpers and half-open Range values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_assets.core.frame import (
    CANONICAL_COLUMNS,
    CANONICAL_DTYPES,
    Range,
    empty_frame,
    frame_from_arrays,
    is_canonical,
    iso_utc,
)


def test_range_is_half_open() -> None:
    r = Range(60, 180)
    assert r.contains(60) and r.contains(179)
    assert not r.contains(180) and not r.contains(59)
    assert r.duration_s == 120
    assert not r.empty
    assert Range(5, 5).empty and Range(5, 5).duration_s == 0


def test_range_rejects_end_before_start() -> None:
    with pytest.raises(ValueError, match="before its start"):
        Range(10, 9)


def test_range_intersect() -> None:
    assert Range(0, 100).intersect(Range(50, 150)) == Range(50, 100)
    assert Range(0, 100).intersect(Range(100, 150)) is None  # touching is not overlapping
    assert Range(0, 100).intersect(Range(10, 20)) == Range(10, 20)


@pytest.mark.parametrize(
    ("r", "bars"),
    [
        (Range(0, 180), 3),
        (Range(1, 180), 2),
        (Range(0, 181), 4),
        (Range(61, 119), 0),
        (Range(60, 60), 0),
        (Range(-60, 0), 1),
    ],
)
def test_range_bars_counts_open_times(r: Range, bars: int) -> None:
    assert r.bars(60) == bars


@given(st.integers(-1000, 1000), st.integers(0, 1000), st.sampled_from([1, 7, 60]))
def test_range_bars_matches_brute_force(start: int, length: int, interval: int) -> None:
    r = Range(start, start + length)
    assert r.bars(interval) == sum(1 for t in range(r.start, r.end) if t % interval == 0)


def test_range_is_ordered_hashable_and_renders_utc() -> None:
    assert sorted([Range(5, 9), Range(0, 3), Range(0, 2)]) == [
        Range(0, 2),
        Range(0, 3),
        Range(5, 9),
    ]
    assert len({Range(0, 1), Range(0, 1)}) == 1
    r = Range(1_704_067_200, 1_704_153_600)
    assert str(r) == "[2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z)"
    assert r.to_json() == {
        "start": 1_704_067_200,
        "end": 1_704_153_600,
        "start_iso": "2024-01-01T00:00:00Z",
        "end_iso": "2024-01-02T00:00:00Z",
    }
    assert iso_utc(0) == "1970-01-01T00:00:00Z"


def test_empty_and_built_frames_are_canonical() -> None:
    empty = empty_frame()
    assert is_canonical(empty) and len(empty) == 0
    frame = frame_from_arrays(
        np.array([0, 60], dtype=np.int32),
        {c: np.array([1, 2]) for c in CANONICAL_COLUMNS[1:]},
    )
    assert is_canonical(frame)
    assert {c: str(frame[c].dtype) for c in frame.columns} == CANONICAL_DTYPES


def test_is_canonical_rejects_order_and_dtype() -> None:
    frame = empty_frame()
    assert not is_canonical(frame[list(reversed(CANONICAL_COLUMNS))])
    assert not is_canonical(frame.astype({"volume": "float32"}))
    assert not is_canonical(frame.drop(columns=["volume"]))


@given(
    st.integers(-1000, 1000),
    st.integers(0, 1000),
    st.sampled_from([1, 7, 60]),
    st.integers(-100, 100),
)
def test_range_bars_with_origin_counts_the_shifted_grid(
    start: int, length: int, interval: int, origin: int
) -> None:
    r = Range(start, start + length)
    count = r.bars(interval, origin_s=origin)
    assert count == Range(r.start - origin, r.end - origin).bars(interval)
    assert count == sum(1 for t in range(r.start, r.end) if (t - origin) % interval == 0)


def test_range_bars_counts_monday_weeks() -> None:
    january = Range(1_704_067_200, 1_706_745_600)  # [2024-01-01, 2024-02-01), Monday start
    assert january.bars(604_800, origin_s=345_600) == 5  # Jan 1, 8, 15, 22, 29
    assert january.bars(604_800) == 4  # the epoch grid's Thursdays: Jan 4, 11, 18, 25
