"""Closed and stable bar boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_assets.core.frame import Range
from seamless_assets.core.stabilization import (
    as_of_for,
    closed_end,
    is_window_stable,
    stable_end,
)


def test_closed_end_at_and_between_boundaries() -> None:
    assert closed_end(120, 60) == 120  # bar 60 closes exactly at 120: closed
    assert closed_end(119, 60) == 60  # bar 60 is still forming
    assert closed_end(0, 60) == 0
    assert closed_end(3600 * 24 + 5, 3600) == 3600 * 24


def test_stable_end_holds_back_bars() -> None:
    assert stable_end(120, 60, 0) == closed_end(120, 60)
    assert stable_end(600, 60, 2) == 480  # bars 480 and 540 must close first


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        closed_end(100, 0)
    with pytest.raises(ValueError, match="stabilization_bars"):
        stable_end(100, 60, -1)


@given(st.integers(0, 10**10), st.sampled_from([1, 60, 300, 3600, 86400]), st.integers(0, 5))
def test_bar_boundaries_match_the_definitions(now: int, interval: int, lag: int) -> None:
    end = closed_end(now, interval)
    assert end % interval == 0
    last = end - interval  # the newest closed bar
    assert last + interval <= now < end + interval  # bar `end` is not closed yet
    stable = stable_end(now, interval, lag)
    assert stable % interval == 0
    assert (end - stable) // interval == lag  # exactly `lag` closed bars after the last stable


def test_window_stability_and_as_of() -> None:
    now, interval = 1000, 60  # closed_end 960; with 2 bars of lag: 840
    assert is_window_stable(Range(0, 840), now, interval, 2)
    assert not is_window_stable(Range(0, 841), now, interval, 2)  # bar 840 opens inside
    assert is_window_stable(Range(0, 960), now, interval, 0)
    assert as_of_for(Range(0, 3600), now, interval, 2) == 840  # close of bar 780
    assert as_of_for(Range(0, 600), now, interval, 2) == 600  # whole window stable
    assert as_of_for(Range(840, 3600), now, interval, 2) is None
    assert as_of_for(Range(30, 100), now, interval, 0) == 120  # bar 60 opens inside


@given(
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.integers(0, 10000),
    st.sampled_from([1, 7, 60]),
    st.integers(0, 3),
)
def test_as_of_is_the_close_of_the_last_stable_bar(
    a: int, b: int, now: int, interval: int, lag: int
) -> None:
    window = Range(min(a, b), max(a, b))
    stable = stable_end(now, interval, lag)
    opens = [t for t in range(window.start, window.end) if t % interval == 0 and t < stable]
    as_of = as_of_for(window, now, interval, lag)
    assert as_of == (opens[-1] + interval if opens else None)
    every = [t for t in range(window.start, window.end) if t % interval == 0]
    if every:  # a bar is stable once it and `lag` more bars have closed
        stable_now = all(t + interval * (lag + 1) <= now for t in every)
        assert is_window_stable(window, now, interval, lag) == stable_now


# ------------------------------------------------------------------- bar-grid origin

WEEK, MONDAY = 604_800, 345_600


@given(
    st.integers(0, 10**10),
    st.sampled_from([1, 7, 60, 3600, WEEK]),
    st.integers(-WEEK, WEEK),
    st.integers(0, 5),
)
def test_boundaries_with_origin_are_the_shifted_epoch_boundaries(
    now: int, interval: int, origin: int, lag: int
) -> None:
    end = closed_end(now, interval, origin_s=origin)
    assert end == closed_end(now - origin, interval) + origin
    assert (end - origin) % interval == 0
    assert end <= now < end + interval  # bar `end` is forming at `now`, every earlier is closed
    stable = stable_end(now, interval, lag, origin_s=origin)
    assert stable == stable_end(now - origin, interval, lag) + origin
    assert (end - stable) // interval == lag


@given(
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.integers(0, 10000),
    st.sampled_from([1, 7, 60]),
    st.integers(-100, 100),
    st.integers(0, 3),
)
def test_stability_and_as_of_with_origin_are_the_shifted_epoch_results(
    a: int, b: int, now: int, interval: int, origin: int, lag: int
) -> None:
    window = Range(min(a, b), max(a, b))
    moved = Range(window.start - origin, window.end - origin)
    stable = is_window_stable(window, now, interval, lag, origin_s=origin)
    assert stable == is_window_stable(moved, now - origin, interval, lag)
    as_of = as_of_for(window, now, interval, lag, origin_s=origin)
    base = as_of_for(moved, now - origin, interval, lag)
    assert as_of == (None if base is None else base + origin)
    # Brute force on the shifted grid.
    opens = [t for t in range(window.start, window.end) if (t - origin) % interval == 0]
    closed_stable = [t for t in opens if t + interval * (lag + 1) <= now]
    assert as_of == (closed_stable[-1] + interval if closed_stable else None)
    if opens:
        assert stable == (closed_stable == opens)


def test_a_forming_weekly_bar_is_not_closed() -> None:
    monday = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday
    thursday = monday + 3 * 86_400  # an epoch-grid week boundary
    # On the epoch grid the week [Thu Dec 28, Thu Jan 4) would look closed at Thursday;
    # on Binance's Monday grid the bar that opened on Monday is still forming.
    assert closed_end(thursday, WEEK) == thursday
    assert closed_end(thursday, WEEK, origin_s=MONDAY) == monday
    assert closed_end(monday + WEEK, WEEK, origin_s=MONDAY) == monday + WEEK
    week = Range(monday, monday + WEEK)
    assert not is_window_stable(week, monday + WEEK - 1, WEEK, 0, origin_s=MONDAY)
    assert is_window_stable(week, monday + WEEK, WEEK, 0, origin_s=MONDAY)
    assert (
        as_of_for(Range(monday, monday + 31 * 86_400), thursday, WEEK, 0, origin_s=MONDAY) is None
    )
