"""Interval math: unit cases for the edges, hypothesis properties checked against brute force."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seamless_assets.core.coverage import (
    GAP_REASONS,
    REASON_BEFORE_LISTING,
    REASON_NO_BARS,
    LedgerGap,
    align_range,
    bar_count,
    classify_empty_windows,
    completeness_ratio,
    coverage_ratio,
    intersect_ranges,
    merge_ranges,
    missing_ranges,
    ranges_from_timestamps,
    split_by_windows,
    subtract_ranges,
    unsettled_answers,
)
from seamless_assets.core.frame import Range

R = Range


# ------------------------------------------------------------------ brute-force oracles


def points(ranges: list[Range]) -> set[int]:
    return {t for r in ranges for t in range(r.start, r.end)}


def bars(ranges: list[Range], interval_s: int) -> set[int]:
    """Aligned open times held by the ranges (the module's membership rule)."""
    return {t for t in points(ranges) if t % interval_s == 0}


def bar_points(bar_set: set[int], interval_s: int) -> set[int]:
    return {t for b in bar_set for t in range(b, b + interval_s)}


# ---------------------------------------------------------------------------- strategies

coords = st.integers(min_value=-60, max_value=240)
intervals = st.sampled_from([1, 2, 5, 10, 60])


@st.composite
def ranges(draw: st.DrawFn) -> Range:
    a, b = draw(coords), draw(coords)
    return Range(min(a, b), max(a, b))


range_lists = st.lists(ranges(), max_size=8)


def well_formed(merged: list[Range]) -> bool:
    return all(not r.empty for r in merged) and all(a.end < b.start for a, b in pairwise(merged))


# ------------------------------------------------------------------------------- merge


def test_merge_coalesces_overlapping_and_touching() -> None:
    assert merge_ranges([R(10, 20), R(0, 5), R(5, 8), R(15, 30), R(40, 40)]) == [
        R(0, 8),
        R(10, 30),
    ]
    assert merge_ranges([]) == []
    assert merge_ranges([R(3, 3)]) == []


@given(range_lists, st.randoms())
def test_merge_properties(items: list[Range], rnd) -> None:
    merged = merge_ranges(items)
    assert well_formed(merged)
    assert points(merged) == points(items)
    assert merge_ranges(merged) == merged
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert merge_ranges(shuffled) == merged


# ---------------------------------------------------------------------------- subtract


def test_subtract_cases() -> None:
    assert subtract_ranges([R(0, 100)], [R(10, 20), R(50, 60)]) == [
        R(0, 10),
        R(20, 50),
        R(60, 100),
    ]
    assert subtract_ranges([R(0, 10)], []) == [R(0, 10)]
    assert subtract_ranges([R(0, 10)], [R(-5, 15)]) == []
    assert subtract_ranges([], [R(0, 1)]) == []
    assert subtract_ranges([R(0, 10), R(10, 20)], [R(5, 6)]) == [R(0, 5), R(6, 20)]


@given(range_lists, range_lists)
def test_subtract_matches_sets(a: list[Range], b: list[Range]) -> None:
    result = subtract_ranges(a, b)
    assert well_formed(result)
    assert points(result) == points(a) - points(b)


@given(range_lists, ranges())
def test_intersect_matches_sets(a: list[Range], window: Range) -> None:
    result = intersect_ranges(a, window)
    assert well_formed(result)
    assert points(result) == points(a) & points([window])


# ------------------------------------------------------------------------------- align


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (R(0, 180), R(0, 180)),
        (R(1, 180), R(60, 180)),
        (R(0, 181), R(0, 240)),  # bar 180 opens inside the window
        (R(61, 119), R(120, 120)),  # no bar opens inside: empty
        (R(-61, 0), R(-60, 0)),
        (R(60, 60), R(60, 60)),
    ],
)
def test_align_range(window: Range, expected: Range) -> None:
    assert align_range(window, 60) == expected


@given(ranges(), intervals)
def test_align_range_holds_exactly_the_bars_opening_inside(window: Range, interval: int) -> None:
    aligned = align_range(window, interval)
    assert aligned.start % interval == 0 and aligned.end % interval == 0
    assert bars([aligned], interval) == bars([window], interval)
    assert aligned.bars(interval) == window.bars(interval)


def test_invalid_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        align_range(R(0, 10), 0)
    with pytest.raises(ValueError, match="interval_s"):
        missing_ranges([], R(0, 10), -1)


# ------------------------------------------------------------------------------ missing


def test_missing_ranges_cases() -> None:
    window = R(0, 600)
    assert missing_ranges([], window, 60) == [R(0, 600)]
    assert missing_ranges([R(0, 600)], window, 60) == []
    # Missing first bar, discontinuity mid-range, trailing bars.
    covered = [R(60, 180), R(300, 420)]
    assert missing_ranges(covered, window, 60) == [R(0, 60), R(180, 300), R(420, 600)]
    assert missing_ranges(covered, window, 60, known_gaps=[R(180, 300)]) == [
        R(0, 60),
        R(420, 600),
    ]
    # A partial bar is never missing: the window's unaligned tail holds bar 600's open.
    assert missing_ranges([], R(30, 630), 60) == [R(60, 660)]
    # Covered ranges count by bar open time.
    assert missing_ranges([R(30, 90)], R(0, 180), 60) == [R(0, 60), R(120, 180)]
    assert missing_ranges([], R(10, 50), 60) == []


@given(range_lists, range_lists, ranges(), intervals)
def test_missing_ranges_partition_the_window(
    covered: list[Range], gaps: list[Range], window: Range, interval: int
) -> None:
    missing = missing_ranges(covered, window, interval, known_gaps=gaps)
    assert well_formed(missing)
    assert all(r.start % interval == 0 and r.end % interval == 0 for r in missing)
    expected = bars([window], interval)
    missing_bars = bars(missing, interval)
    done = bars(covered, interval) | bars(gaps, interval)
    assert missing_bars == expected - done  # disjoint from covered, nothing else missing
    assert missing_bars | (done & expected) == expected  # together they rebuild the window
    # No partial bar: each missing range is exactly the points of its bars.
    assert points(missing) == bar_points(missing_bars, interval)


# ----------------------------------------------------------------- timestamps & counts


def test_ranges_from_timestamps() -> None:
    ts = np.array([0, 60, 120, 300, 360, 600])
    assert ranges_from_timestamps(ts, 60) == [R(0, 180), R(300, 420), R(600, 660)]
    assert ranges_from_timestamps(np.array([], dtype=np.int64), 60) == []
    assert ranges_from_timestamps(np.array([120, 0, 60, 60]), 60) == [R(0, 180)]


@given(st.lists(st.integers(0, 40), max_size=30), st.sampled_from([1, 5, 60]))
def test_ranges_from_timestamps_islands(slots: list[int], interval: int) -> None:
    ts = np.array(slots, dtype=np.int64) * interval
    islands = ranges_from_timestamps(ts, interval)
    assert well_formed(islands)
    assert bars(islands, interval) == set(ts.tolist())
    assert bar_count(islands, interval) == len(set(slots))


def test_bar_count_and_ratios() -> None:
    assert bar_count([R(0, 180), R(120, 300)], 60) == 5  # overlap counted once
    assert bar_count([R(30, 90)], 60) == 1
    window = R(0, 600)
    assert coverage_ratio([R(0, 300)], window, 60) == 0.5
    assert coverage_ratio([R(-600, 1200)], window, 60) == 1.0
    assert coverage_ratio([], R(10, 50), 60) == 1.0  # no bar expected
    assert completeness_ratio([R(0, 300)], [R(300, 420)], window, 60) == 0.7
    assert completeness_ratio([R(0, 300)], [R(0, 420)], window, 60) == 0.7


@given(range_lists, range_lists, ranges(), intervals)
def test_ratios_are_bounded_and_consistent(
    covered: list[Range], gaps: list[Range], window: Range, interval: int
) -> None:
    cov = coverage_ratio(covered, window, interval)
    comp = completeness_ratio(covered, gaps, window, interval)
    assert 0.0 <= cov <= comp <= 1.0
    expected = window.bars(interval)
    if expected:
        assert cov == len(bars(covered, interval) & bars([window], interval)) / expected
        missing = missing_ranges(covered, window, interval, known_gaps=gaps)
        assert comp == pytest.approx(1.0 - bar_count(missing, interval) / expected)


def test_split_by_windows() -> None:
    ts = np.array([0, 60, 120, 180, 240, 300])
    windows = [R(0, 120), R(120, 240), R(240, 360), R(360, 480)]
    slices = split_by_windows(ts, windows)
    assert [ts[s].tolist() for s in slices] == [[0, 60], [120, 180], [240, 300], []]


@given(st.lists(st.integers(0, 100), max_size=40, unique=True), st.lists(coords, max_size=6))
def test_split_by_windows_matches_masks(values: list[int], cuts: list[int]) -> None:
    ts = np.array(sorted(values), dtype=np.int64)
    edges = sorted({-100, *cuts, 300})
    windows = [Range(a, b) for a, b in pairwise(edges)]
    slices = split_by_windows(ts, windows)
    for window, part in zip(windows, slices, strict=True):
        assert ts[part].tolist() == [t for t in ts.tolist() if window.contains(t)]
    assert np.concatenate([ts[s] for s in slices]).tolist() == ts.tolist()


# ------------------------------------------------------------------------ empty windows


END = 10**9  # a stable end after every window of these tests: everything is stable


def test_classify_empty_windows_reasons() -> None:
    fetched = R(0, 1200)
    bars_ts = np.array([300, 360, 420, 720, 780])
    gaps = classify_empty_windows(
        fetched, bars_ts, 60, np.array([], np.int64), None, stable_end_s=END
    )
    assert gaps == [
        LedgerGap(R(0, 300), REASON_BEFORE_LISTING),
        LedgerGap(R(480, 720), REASON_NO_BARS),
        LedgerGap(R(840, 1200), REASON_NO_BARS),
    ]
    # A bar known elsewhere (an earlier fetch) means the leading gap is not pre-listing.
    gaps = classify_empty_windows(
        fetched, bars_ts, 60, np.array([], np.int64), -600, stable_end_s=END
    )
    assert gaps[0] == LedgerGap(R(0, 300), REASON_NO_BARS)
    # Known bars only after the gap keep it pre-listing.
    gaps = classify_empty_windows(
        fetched, bars_ts, 60, np.array([], np.int64), 300, stable_end_s=END
    )
    assert gaps[0].reason == REASON_BEFORE_LISTING
    assert {g.reason for g in gaps} <= set(GAP_REASONS)


def test_classify_empty_windows_skips_windows_with_bad_rows() -> None:
    fetched = R(0, 600)
    bars_ts = np.array([0, 60, 300])
    dropped = np.array([180, 470])  # one bad bar in each gap; 470 is even unaligned
    assert classify_empty_windows(fetched, bars_ts, 60, dropped, None, stable_end_s=END) == []
    # A duplicate dropped at a covered bar does not taint any gap.
    gaps = classify_empty_windows(fetched, bars_ts, 60, np.array([60]), None, stable_end_s=END)
    assert gaps == [LedgerGap(R(120, 300), REASON_NO_BARS), LedgerGap(R(360, 600), REASON_NO_BARS)]


def test_classify_empty_windows_all_empty_and_all_full() -> None:
    empty = np.array([], np.int64)
    assert classify_empty_windows(R(0, 600), empty, 60, empty, None, stable_end_s=END) == [
        LedgerGap(R(0, 600), REASON_BEFORE_LISTING)
    ]
    assert classify_empty_windows(R(0, 600), empty, 60, empty, 0, stable_end_s=END) == [
        LedgerGap(R(0, 600), REASON_NO_BARS)
    ]
    full = np.arange(0, 600, 60)
    assert classify_empty_windows(R(0, 600), full, 60, empty, None, stable_end_s=END) == []


def test_fresh_empty_windows_stay_provisional() -> None:
    """The newest closed bars came back empty: only the part stable by the exchange's clock
    is confirmed, the rest is left for the next run (a late candle is not a hole)."""
    fetched, empty = R(0, 600), np.array([], np.int64)
    bars_ts = np.arange(0, 420, 60)  # bars 0..360 served, 420..540 not (yet)
    assert classify_empty_windows(fetched, bars_ts, 60, empty, None, stable_end_s=480) == [
        LedgerGap(R(420, 480), REASON_NO_BARS)
    ]
    assert classify_empty_windows(fetched, bars_ts, 60, empty, None, stable_end_s=420) == []
    assert classify_empty_windows(fetched, bars_ts, 60, empty, None, stable_end_s=-60) == []
    # an unaligned stable end confirms only bars opening before it
    assert classify_empty_windows(fetched, bars_ts, 60, empty, None, stable_end_s=500) == [
        LedgerGap(R(420, 540), REASON_NO_BARS)
    ]


def test_answers_with_misplaced_rows_confirm_nothing() -> None:
    """A page that held a row with an impossible open time (listed at the page's start)
    is no evidence for any empty slot of that page; the other pages' gaps still are."""
    pages = [R(0, 300), R(300, 600), R(600, 900)]
    bars_ts = np.array([0, 60, 240, 300, 360, 480, 600, 660])
    misplaced = np.array([300])  # e.g. open time 0 sent by the second page
    unsettled = unsettled_answers(pages, misplaced)
    assert unsettled == [R(300, 600)]
    gaps = classify_empty_windows(
        R(0, 900), bars_ts, 60, misplaced, None, stable_end_s=END, unsettled=unsettled
    )
    assert gaps == [LedgerGap(R(120, 240), REASON_NO_BARS), LedgerGap(R(720, 900), REASON_NO_BARS)]
    # a gap spanning two pages keeps the part the clean page answered for
    bars_ts = np.array([0, 60])
    gaps = classify_empty_windows(
        R(0, 900), bars_ts, 60, np.array([], np.int64), None, stable_end_s=END,
        unsettled=[R(300, 600)],
    )  # fmt: skip
    assert gaps == [LedgerGap(R(120, 300), REASON_NO_BARS), LedgerGap(R(600, 900), REASON_NO_BARS)]
    assert unsettled_answers(pages, np.array([], np.int64)) == []
    assert unsettled_answers(pages, np.array([899, 0])) == [R(0, 300), R(600, 900)]


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 30), max_size=20),
    st.lists(st.integers(0, 30), max_size=4),
    ranges(),
    st.one_of(st.none(), st.integers(-10, 40)),
    st.integers(-5, 35),
    st.lists(ranges(), max_size=3),
)
def test_classify_empty_windows_properties(
    bar_slots: list[int],
    dropped_slots: list[int],
    fetched: Range,
    earliest: int | None,
    stable_slot: int,
    unsettled: list[Range],
) -> None:
    interval = 10
    bars_ts = np.array(sorted(set(bar_slots)), dtype=np.int64) * interval
    dropped = np.array(dropped_slots, dtype=np.int64) * interval
    earliest_ts = None if earliest is None else earliest * interval
    stable_end = stable_slot * interval
    gaps = classify_empty_windows(
        fetched,
        bars_ts,
        interval,
        dropped,
        earliest_ts,
        stable_end_s=stable_end,
        unsettled=unsettled,
    )
    gap_ranges = [g.range for g in gaps]
    assert gap_ranges == merge_ranges(gap_ranges) or len(gap_ranges) <= 1
    assert all(r.start % interval == 0 and r.end % interval == 0 for r in gap_ranges)
    # Brute force, bar by bar: a bar is confirmed empty iff it is a missing bar of the
    # fetched range, opens before the stable end, lies in no unsettled window and its
    # missing run holds no dropped row.
    missing = missing_ranges(ranges_from_timestamps(bars_ts, interval), fetched, interval)
    stable_missing = [
        Range(m.start, min(m.end, stable_end)) for m in missing if m.start < stable_end
    ]
    tainted = {
        t
        for m in stable_missing
        if any(m.contains(int(d)) for d in dropped)
        for t in bars([m], interval)
    }
    want = bars(stable_missing, interval) - tainted - bars(unsettled, interval)
    assert bars(gap_ranges, interval) == want
    known = [
        *bars_ts.tolist(),
        *dropped.tolist(),
        *([earliest_ts] if earliest_ts is not None else []),
    ]
    for gap in gaps:
        assert not bars([gap.range], interval) & set(bars_ts.tolist())
        before = [t for t in known if t < gap.range.end]
        assert gap.reason == (REASON_NO_BARS if before else REASON_BEFORE_LISTING)


# ------------------------------------------------------------------- bar-grid origin
#
# A grid `origin + k * interval` is the epoch grid moved by `origin`: every result with
# `origin_s=o` equals the epoch-grid result on inputs shifted by `-o`, shifted back by `+o`.

WEEK, MONDAY = 604_800, 345_600
origins = st.integers(min_value=-100, max_value=100)


def shift(r: Range, by: int) -> Range:
    return Range(r.start + by, r.end + by)


def shift_all(items: list[Range], by: int) -> list[Range]:
    return [shift(r, by) for r in items]


def grid_bars(ranges: list[Range], interval_s: int, origin_s: int) -> set[int]:
    return {t for t in points(ranges) if (t - origin_s) % interval_s == 0}


@given(ranges(), intervals, origins)
def test_align_range_with_origin_is_the_shifted_epoch_alignment(
    window: Range, interval: int, origin: int
) -> None:
    aligned = align_range(window, interval, origin_s=origin)
    assert aligned == shift(align_range(shift(window, -origin), interval), origin)
    assert (aligned.start - origin) % interval == 0 and (aligned.end - origin) % interval == 0
    assert grid_bars([aligned], interval, origin) == grid_bars([window], interval, origin)
    assert align_range(window, interval, origin_s=origin + interval) == aligned  # origin mod i


@given(range_lists, range_lists, ranges(), intervals, origins)
def test_missing_and_ratios_with_origin_are_shifted_epoch_results(
    covered: list[Range], gaps: list[Range], window: Range, interval: int, origin: int
) -> None:
    o = origin
    missing = missing_ranges(covered, window, interval, gaps, origin_s=o)
    base = missing_ranges(shift_all(covered, -o), shift(window, -o), interval, shift_all(gaps, -o))
    assert missing == shift_all(base, o)
    assert all((r.start - o) % interval == 0 and (r.end - o) % interval == 0 for r in missing)
    expected = grid_bars([window], interval, o)
    done = grid_bars(covered, interval, o) | grid_bars(gaps, interval, o)
    assert grid_bars(missing, interval, o) == expected - done

    cov = coverage_ratio(covered, window, interval, origin_s=o)
    assert cov == coverage_ratio(shift_all(covered, -o), shift(window, -o), interval)
    comp = completeness_ratio(covered, gaps, window, interval, origin_s=o)
    assert comp == completeness_ratio(
        shift_all(covered, -o), shift_all(gaps, -o), shift(window, -o), interval
    )
    assert bar_count(covered, interval, origin_s=o) == bar_count(shift_all(covered, -o), interval)
    assert bar_count(covered, interval, origin_s=o) == len(grid_bars(covered, interval, o))
    if expected:
        present = grid_bars(covered, interval, o) & expected
        assert cov == len(present) / len(expected)


@settings(max_examples=200)
@given(
    st.lists(st.integers(0, 30), max_size=20),
    st.lists(st.integers(0, 30), max_size=4),
    ranges(),
    st.one_of(st.none(), st.integers(-10, 40)),
    origins,
)
def test_classify_empty_windows_with_origin_is_the_shifted_epoch_result(
    bar_slots: list[int],
    dropped_slots: list[int],
    fetched: Range,
    earliest: int | None,
    origin: int,
) -> None:
    interval = 10
    bars_ts = np.array(sorted(set(bar_slots)), dtype=np.int64) * interval + origin
    dropped = np.array(dropped_slots, dtype=np.int64) * interval + origin
    earliest_ts = None if earliest is None else earliest * interval + origin
    stable_end = fetched.start + (fetched.end - fetched.start) // 2
    gaps = classify_empty_windows(
        fetched, bars_ts, interval, dropped, earliest_ts, origin_s=origin, stable_end_s=stable_end
    )
    base = classify_empty_windows(
        shift(fetched, -origin),
        bars_ts - origin,
        interval,
        dropped - origin,
        None if earliest_ts is None else earliest_ts - origin,
        stable_end_s=stable_end - origin,
    )
    assert gaps == [LedgerGap(shift(g.range, origin), g.reason) for g in base]


def test_weekly_grid_opens_on_mondays() -> None:
    monday = 1_704_067_200  # 2024-01-01, a Monday
    assert monday % WEEK == MONDAY
    january = R(monday, monday + 31 * 86_400)  # [2024-01-01, 2024-02-01)
    # Five Mondays open in January; the last bar (Jan 29) closes on Feb 5.
    assert align_range(january, WEEK, origin_s=MONDAY) == R(monday, monday + 5 * WEEK)
    assert january.bars(WEEK, origin_s=MONDAY) == 5
    # The epoch (Thursday) grid would put the bars on Thursdays instead.
    assert align_range(january, WEEK).start == monday + 3 * 86_400
    covered = [R(monday, monday + 2 * WEEK), R(monday + 3 * WEEK, monday + 5 * WEEK)]
    assert missing_ranges(covered, january, WEEK, origin_s=MONDAY) == [
        R(monday + 2 * WEEK, monday + 3 * WEEK)
    ]
    assert coverage_ratio(covered, january, WEEK, origin_s=MONDAY) == 0.8
    assert missing_ranges(covered, january, WEEK) != []  # the Thursday grid counts other bars
